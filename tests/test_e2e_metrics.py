"""Metrics end to end: requests through Serve's proxy and a router app of their own, then a
scrape of Ray's Prometheus endpoint. Each router metric must count exactly these requests,
with the right labels; the engine's vLLM metrics must be there with their node group."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from serve_app.access import digest
from serve_app.prompt.classifier import classify

from .conftest import ROOT

pytestmark = pytest.mark.e2e

APP = "observed"
MODEL = "athene-v2-chat"
KEYS = {"open": "sk-athene-observed", "limited": "sk-athene-observed-once"}
MATH = "How many r's are in the word strawberry?"
GREETING = "Hello there! How are you today?"
# Long enough to fill whole KV-cache blocks: sent twice, the second reads them from the
# prefix cache, so the hit counter exists.
DOCUMENT = "The lighthouse keeper wrote in his log every evening. " * 80 + "Summarize."
Sample = tuple[str, dict[str, str], float]


def scrape(url: str) -> list[Sample]:
    text = httpx.get(url, timeout=10).text
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum over the series of `name` whose labels include `labels`."""
    return sum(
        value
        for sample_name, sample_labels, value in samples
        if sample_name == name and labels.items() <= sample_labels.items()
    )


def eventually(url: str, ready: Callable[[list[Sample]], bool], within_s: float = 60):
    """The first scrape for which `ready` holds: metrics reach the endpoint a report
    interval (1 s in the test stack) after they are recorded."""
    deadline = time.monotonic() + within_s
    while True:
        samples = scrape(url)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(1)


@pytest.fixture(scope="module")
def observed(stack, tmp_path_factory) -> dict:
    """A router app with API keys, sent a known set of requests; what they returned."""
    keys_file = tmp_path_factory.mktemp("keys") / "keys.yaml"
    keys_file.write_text(
        yaml.safe_dump(
            [
                {"id": "open", "sha256": digest(KEYS["open"])},
                {"id": "limited", "sha256": digest(KEYS["limited"]), "requests_per_minute": 1},
            ]
        )
    )
    with stack.router_app(APP, access={"keys_file": str(keys_file)}) as url:
        client = httpx.Client(base_url=url, timeout=120)

        def chat(key: str | None, text: str, **fields) -> httpx.Response:
            headers = {"Authorization": f"Bearer {KEYS[key]}"} if key else {}
            body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
            return client.post("/v1/chat/completions", json={**body, **fields}, headers=headers)

        answered = [
            chat("open", MATH, max_tokens=8, stream=True, stream_options={"include_usage": True}),
            chat(
                "open", GREETING, max_tokens=8, stream=True, stream_options={"include_usage": True}
            ),
            chat("open", MATH, max_tokens=6),
            chat("limited", GREETING, max_tokens=5),
            chat("open", DOCUMENT, max_tokens=2),
            chat("open", DOCUMENT, max_tokens=2),
        ]
        refused = [
            chat(None, GREETING),  # 401
            chat("limited", GREETING),  # 429: one a minute
            chat("open", GREETING, model="gpt-4"),  # 404 unknown model
            chat("open", GREETING, max_tokens=-1),  # 400
            client.get("/v1/nope", headers={"Authorization": f"Bearer {KEYS['open']}"}),  # 404
        ]
        texts = [MATH, GREETING, MATH, GREETING, DOCUMENT, DOCUMENT]
        yield {"answered": answered, "refused": refused, "texts": texts}


def usage(response: httpx.Response) -> dict:
    if response.headers["content-type"].startswith("text/event-stream"):
        lines = [line for line in response.text.splitlines() if line.startswith("data: {")]
        return yaml.safe_load(lines[-1].removeprefix("data: "))["usage"]
    return response.json()["usage"]


def test_the_requests_were_answered_as_the_test_expects(observed):
    assert [r.status_code for r in observed["answered"]] == [200] * 6
    assert [r.status_code for r in observed["refused"]] == [401, 429, 404, 400, 404]


def test_requests_count_by_route_model_node_group_and_status(stack, observed):
    chat = {"application": APP, "route": "/v1/chat/completions"}
    samples = eventually(
        stack.metrics_url, lambda s: total(s, "ray_athene_requests_total", application=APP) >= 11
    )
    served = {**chat, "model": MODEL, "node_group": "cpu"}
    assert total(samples, "ray_athene_requests_total", **served, status="200") == 6
    # Refused before a node group was picked: no node group; no model before it was checked.
    unrouted = {**chat, "node_group": "none"}
    assert total(samples, "ray_athene_requests_total", **unrouted, model="none", status="401") == 1
    assert total(samples, "ray_athene_requests_total", **unrouted, model="none", status="404") == 1
    assert total(samples, "ray_athene_requests_total", **unrouted, model=MODEL, status="429") == 1
    assert total(samples, "ray_athene_requests_total", **unrouted, status="400") == 1
    # An unknown path is "other", so a scanner cannot grow a series per path.
    other = {"application": APP, "route": "other", "status": "404"}
    assert total(samples, "ray_athene_requests_total", **other) == 1
    assert total(samples, "ray_athene_requests_total", application=APP) == 11


def test_rejections_count_by_cause(stack, observed):
    samples = eventually(
        stack.metrics_url,
        lambda s: total(s, "ray_athene_rejections_total", application=APP) >= 5,
    )
    causes = {"auth": 1, "rate_limit": 1, "validation": 3}
    for cause, count in causes.items():
        assert total(samples, "ray_athene_rejections_total", application=APP, cause=cause) == count
    assert total(samples, "ray_athene_rejections_total", application=APP) == 5


def test_latency_histograms_and_token_counters(stack, observed):
    group = {"application": APP, "model": MODEL, "node_group": "cpu"}
    samples = eventually(
        stack.metrics_url,
        lambda s: total(s, "ray_athene_e2e_latency_seconds_count", **group) >= 6,
    )
    # TTFT and inter-token latency: the two streamed answers only.
    assert total(samples, "ray_athene_time_to_first_token_seconds_count", **group) == 2
    assert total(samples, "ray_athene_inter_token_latency_seconds_count", **group) == 2
    assert total(samples, "ray_athene_e2e_latency_seconds_count", **group, status="200") == 6
    # Every observation is in a bucket: the +Inf bucket holds them all.
    ttft_inf = {**group, "le": "+Inf"}
    assert total(samples, "ray_athene_time_to_first_token_seconds_bucket", **ttft_inf) == 2
    used = [usage(r) for r in observed["answered"]]
    prompt = sum(u["prompt_tokens"] for u in used)
    completion = sum(u["completion_tokens"] for u in used)
    assert completion == 8 + 8 + 6 + 5 + 2 + 2
    assert total(samples, "ray_athene_prompt_tokens_total", **group) == prompt
    assert total(samples, "ray_athene_completion_tokens_total", **group) == completion


def test_step_by_step_decisions_count_by_outcome_and_reason(stack, observed):
    samples = eventually(
        stack.metrics_url,
        lambda s: total(s, "ray_athene_step_by_step_decisions_total", application=APP) >= 6,
    )
    expected: dict[tuple[str, str], int] = {}
    for text in observed["texts"]:
        verdict = classify([{"role": "user", "content": text}])
        key = ("yes" if verdict.applies else "no", verdict.reason)
        expected[key] = expected.get(key, 0) + 1
    assert ("yes", classify([{"role": "user", "content": MATH}]).reason) in expected and (
        "no",
        "greeting",
    ) in expected
    for (applied, reason), count in expected.items():
        labels = {"application": APP, "applied": applied, "reason": reason}
        assert total(samples, "ray_athene_step_by_step_decisions_total", **labels) == count


def test_engine_metrics_carry_their_node_group(stack, observed):
    cpu = {"node_group": "cpu", "model_name": MODEL}
    samples = eventually(
        stack.metrics_url,
        lambda s: total(s, "ray_vllm_time_to_first_token_seconds_count", **cpu) >= 6,
    )
    for gauge in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc"):
        assert any(
            name == f"ray_vllm_{gauge}" and cpu.items() <= labels.items()
            for name, labels, _ in samples
        ), gauge
    assert total(samples, "ray_vllm_prefix_cache_queries_total", **cpu) > 0
    assert total(samples, "ray_vllm_prefix_cache_hits_total", **cpu) > 0  # DOCUMENT, twice
    assert total(samples, "ray_vllm_generation_tokens_total", **cpu) >= 31
    # The wait at the router for an engine slot, recorded by the engine deployment.
    queued = total(samples, "ray_athene_router_queue_seconds_count", deployment="cpu")
    assert queued >= 6


DASHBOARD = ROOT / "k8s" / "base" / "dashboards" / "athene.json"
# Series only the Ray autoscaler's status report creates: the CPU stack runs no autoscaler.
# tests/test_e2e_autoscaling.py finds them on its fake-GPU-node cluster.
AUTOSCALER_METRICS = frozenset({"ray_cluster_active_nodes", "ray_cluster_pending_nodes"})


def dashboard_metrics() -> set[str]:
    document = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in document["panels"] for t in panel.get("targets", [])]
    exprs += [v.get("definition", "") for v in document["templating"]["list"]]
    return {name for expr in exprs for name in re.findall(r"\bray_[a-z0-9_]+", expr)}


def test_the_dashboard_queries_only_metrics_the_scrape_has(stack, observed):
    wanted = dashboard_metrics() - AUTOSCALER_METRICS
    samples = eventually(
        stack.metrics_url, lambda s: wanted <= {name for name, _, _ in s}, within_s=30
    )
    assert wanted - {name for name, _, _ in samples} == set()
