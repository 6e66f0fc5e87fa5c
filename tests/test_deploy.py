"""`python -m serve_app.deploy` on recorded RayService objects (tests/data/rayservice/),
whose status must validate against the KubeRay v1.7.0 CRD so the fixtures stay what the
operator writes, plus the no-cluster path (exit 2, one line, no traceback). With
--dashboard, on the Ray dashboard's recorded answers to KubeRay's
`GET /api/serve/applications/?api_type=declarative` (tests/data/serve_details/), served by
a local stub so the real HTTP path runs. No cluster needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest
import yaml

from serve_app import deploy
from tests.fake_clock import FakeClock

from .conftest import ROOT, free_port
from .test_k8s import crds_dir, strict

RECORDED = ROOT / "tests/data/rayservice"
SCENARIOS = ("healthy", "initializing", "upgrading", "failed")
# The dev-cpu overlay's serveConfigV2 submitted to a Ray 2.60 head the way KubeRay submits it
# (tests/test_e2e_kuberay_submit.py), the dashboard's answers recorded, then trimmed to what
# a reader needs (the app's args, topology and controller metrics dropped): a config with a
# typo (deploy_failed), the good one while being built (building), while its engine replica
# starts (starting) and settled (running); and a redeploy whose old replicas still serve
# (updating).
SERVE_DETAILS = ROOT / "tests/data/serve_details"


def recorded(scenario: str) -> deploy.Observed:
    """The RayService and the RayClusters recorded with it, as the API would return them."""
    service, *clusters = yaml.safe_load_all((RECORDED / f"{scenario}.yaml").read_text())
    return service, {cluster["metadata"]["name"]: cluster for cluster in clusters}


def replay(*scenarios: str) -> deploy.Fetch:
    """A Fetch answering with each scenario in turn, then the last one forever."""
    answers: Iterator[str] = iter(scenarios)
    last = [scenarios[0]]

    def fetch(namespace: str, name: str) -> deploy.Observed:
        last[0] = next(answers, last[0])
        return recorded(last[0])

    return fetch


@cache
def status_validator(kind: str) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load((crds_dir() / f"ray.io_{kind}.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = strict(version["schema"]["openAPIV3Schema"]["properties"]["status"])
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_recorded_status_matches_the_crd(scenario: str) -> None:
    service, clusters = recorded(scenario)
    assert service["kind"] == "RayService" and "status" in service
    errors = sorted(status_validator("rayservices").iter_errors(service["status"]), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    # Every RayCluster the status names is recorded, and only those.
    named = {
        service["status"].get(f"{role}ServiceStatus", {}).get("rayClusterName")
        for role in ("active", "pending")
    } - {None}
    assert set(clusters) == named
    assert all(c["kind"] == "RayCluster" for c in clusters.values())


def test_the_validator_catches_a_misspelt_status_field() -> None:
    service, _ = recorded("healthy")
    service["status"]["numServeEndpoint"] = 3
    assert not status_validator("rayservices").is_valid(service["status"])


def run(
    capsys: pytest.CaptureFixture[str], argv: list[str], fetch: deploy.Fetch
) -> tuple[int, str]:
    code = deploy.main(argv, fetch=fetch)
    return code, capsys.readouterr().out


def test_status_healthy(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, ["status"], replay("healthy"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "RayService athene/athene: READY, 3 serve endpoints"
    assert "  UpgradeInProgress: False (NoPendingCluster)" in out
    assert "active cluster athene-7xk2p: ready, 3/3 worker pods ready" in lines
    assert "  worker group h100-tp4: replicas 2 (min 1, max 2)" in lines
    assert "  worker group a100-tp8: replicas 1 (min 1, max 2)" in lines
    assert "  app athene: RUNNING" in lines
    for deployment in ("router", "h100-tp4", "a100-tp8"):
        assert f"    {deployment}: HEALTHY" in lines
    assert "pending cluster" not in out
    assert deploy.summarize(*recorded("healthy")).settled


def test_status_initializing_names_the_unhealthy_deployment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = run(capsys, ["status"], replay("initializing"))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "RayService athene/athene: NOT READY (Initializing), 0 serve endpoints"
    assert "active cluster" not in out
    assert "pending cluster athene-q4m8d: not ready, 2/3 worker pods ready" in lines
    assert any("RayClusterPodsProvisioning" in line for line in lines)
    assert "  app athene: UNHEALTHY" in lines
    assert "    The deployments ['a100-tp8'] are UNHEALTHY." in lines
    unhealthy = lines.index("    a100-tp8: UNHEALTHY")
    assert lines[unhealthy + 1].startswith("      A replica's health check failed.")
    updating = lines.index("    h100-tp4: UPDATING")
    assert "taken more than 30s to be scheduled" in lines[updating + 1]
    assert "    router: HEALTHY" in lines


def test_status_mid_upgrade_shows_both_clusters(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, ["status"], replay("upgrading"))
    assert code == 0  # the old cluster still serves
    lines = out.splitlines()
    assert lines[0] == "RayService athene/athene: READY, 2 serve endpoints, upgrade in progress"
    assert "  UpgradeInProgress: True (BothActivePendingClustersExist)" in out
    active = lines.index("active cluster athene-7xk2p: ready, 2/2 worker pods ready")
    pending = lines.index("pending cluster athene-m2v9r: not ready, 1/2 worker pods ready")
    assert active < pending
    assert "applications: not reported while a pending cluster exists" in lines[active + 3]
    assert "  app athene: DEPLOYING" in lines[pending:]
    assert "    a100-tp8: UPDATING" in lines[pending:]
    assert not deploy.summarize(*recorded("upgrading")).settled


def test_status_failed_keeps_the_last_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, ["status"], replay("failed"))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "RayService athene/athene: FAILED (InitializingTimeout), 0 serve endpoints"
    assert "timeout of 45m0s" in lines[1]
    assert "    a100-tp8: DEPLOY_FAILED" in lines
    # The traceback is clipped, but its cause (the last line) is kept.
    assert lines[-1].strip().startswith("torch.OutOfMemoryError: CUDA out of memory.")
    assert any(line.strip().startswith("... (") for line in lines)


def test_status_not_found(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, ["status", "-n", "athene-dev"], lambda namespace, name: None)
    assert code == 1
    assert out.startswith("RayService athene-dev/athene not found")


def test_stale_status_is_not_settled() -> None:
    service, clusters = recorded("healthy")
    service["metadata"]["generation"] = 4  # applied, not yet seen by the operator
    summary = deploy.summarize(service, clusters)
    assert summary.is_ready and not summary.settled
    assert "status is for generation 3, spec is at 4" in deploy.headline(summary)


def test_wait_until_settled(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    fetch = replay("initializing", "initializing", "upgrading", "healthy")
    code = deploy.wait(fetch, "athene", "athene", 600, 10, clock=clock, sleep=clock.sleep)
    out = capsys.readouterr().out
    assert code == 0
    assert clock.now == 30
    # One headline per change, then the final status.
    assert out.count("NOT READY (Initializing)") == 1
    assert out.count("upgrade in progress") == 1
    assert out.splitlines()[-1] == "    a100-tp8: HEALTHY"


def test_wait_times_out_with_the_last_status(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    fetch = replay("upgrading")
    code = deploy.wait(fetch, "athene", "athene", 45, 10, clock=clock, sleep=clock.sleep)
    out = capsys.readouterr().out
    assert code == 1
    assert clock.now == 45
    assert "pending cluster athene-m2v9r" in out
    assert out.splitlines()[-1] == "timed out after 45 s"


def test_wait_stops_on_a_terminal_failure(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    fetch = replay("initializing", "failed")
    code = deploy.wait(fetch, "athene", "athene", 2700, 10, clock=clock, sleep=clock.sleep)
    out = capsys.readouterr().out
    assert code == 1
    assert clock.now == 10
    assert out.splitlines()[-1] == "failed: KubeRay gave up"


def cli(tmp_path: Path, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE_")}
    env.update(KUBECONFIG=str(kubeconfig), HOME=str(tmp_path))  # no ~/.kube/config either
    return subprocess.run(
        [sys.executable, "-m", "serve_app.deploy", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", [["status"], ["wait", "--timeout", "5"]])
def test_no_cluster_configured(tmp_path: Path, command: list[str]) -> None:
    result = cli(tmp_path, tmp_path / "missing-kubeconfig", *command)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: no Kubernetes cluster configured")


def test_connection_refused(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "unused"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    result = cli(tmp_path, kubeconfig, "status")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr == (
        f"error: cannot reach the Kubernetes API at https://127.0.0.1:{port}: "
        "[Errno 111] Connection refused\n"
    )


# ---- --dashboard: the Serve REST API, as KubeRay reads it --------------------------------


def serve_details(name: str) -> dict:
    return json.loads((SERVE_DETAILS / f"{name}.json").read_text())


class DashboardStub:
    """A local HTTP server answering like a Ray dashboard: each GET gets the next of
    `answers` (status, body), the last one forever; the requests it saw are kept."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, str]] = [(200, json.dumps(serve_details("running")))]
        self.requests: list[tuple[str, dict[str, str]]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.requests.append((self.path, dict(self.headers)))
                status, body = stub.answers[0] if len(stub.answers) == 1 else stub.answers.pop(0)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def serve(self, *names: str) -> None:
        self.answers = [(200, json.dumps(serve_details(name))) for name in names]


@pytest.fixture
def dashboard(monkeypatch: pytest.MonkeyPatch) -> Iterator[DashboardStub]:
    for variable in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(variable, raising=False)
    stub = DashboardStub()
    stub.thread.start()
    try:
        yield stub
    finally:
        stub.server.shutdown()
        stub.server.server_close()


def test_recorded_details_convert_to_statuses_the_crd_accepts() -> None:
    """The converted status is in the shape KubeRay writes: it validates against the CRD."""
    schema = status_validator("rayservices")
    for name in ("deploy_failed", "building", "starting", "running", "updating"):
        status = deploy.dashboard_rayservice(serve_details(name), "http://h:8265")["status"]
        # Conditions aside: KubeRay's carry a lastTransitionTime no single answer has.
        status = {key: value for key, value in status.items() if key != "conditions"}
        errors = sorted(schema.iter_errors(status), key=str)
        assert not errors, f"{name}: " + "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_application_statuses_copy_what_the_operator_copies() -> None:
    assert deploy.application_statuses(serve_details("starting")) == {
        "athene": {
            "status": "DEPLOYING",
            "serveDeploymentStatuses": {
                "cpu": {"status": "UPDATING"},
                "router": {"status": "UPDATING"},
            },
        }
    }
    # An application without a name is KubeRay's "default".
    details = {"applications": {"": {"status": "RUNNING", "deployments": {}}}}
    assert deploy.application_statuses(details) == {"default": {"status": "RUNNING"}}


def test_dashboard_status_settled(capsys: pytest.CaptureFixture[str], dashboard) -> None:
    code = deploy.main(["status", "--dashboard", dashboard.url])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines == [
        f"Serve at {dashboard.url}: READY, 1 serve endpoints",
        "  Ready: True (NonZeroServeEndpoints)",
        "  UpgradeInProgress: False (NoPendingCluster)",
        f"active cluster {dashboard.url}: pods not visible through the dashboard",
        "  app athene: RUNNING",
        "    cpu: HEALTHY",
        "    router: HEALTHY",
    ]
    # Exactly the operator's request: its path and query, no token when none is set.
    ((path, headers),) = dashboard.requests
    assert path == "/api/serve/applications/?api_type=declarative"
    assert "x-ray-authorization" not in {key.lower() for key in headers}
    assert deploy.summarize(*deploy.dashboard_fetch(dashboard.url)("", "")).settled


def test_dashboard_token_header_as_the_operator_sends_it(
    capsys: pytest.CaptureFixture[str], dashboard, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    assert deploy.main(["status", "--dashboard", dashboard.url.removeprefix("http://")]) == 0
    (_, headers), *_ = dashboard.requests
    assert {k.lower(): v for k, v in headers.items()}["x-ray-authorization"] == "Bearer s3cret"


def test_dashboard_status_while_the_engine_starts(
    capsys: pytest.CaptureFixture[str], dashboard
) -> None:
    dashboard.serve("starting")
    code = deploy.main(["status", "--dashboard", dashboard.url])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert lines[0] == f"Serve at {dashboard.url}: NOT READY (Initializing), 1 serve endpoints"
    assert lines[1] == (
        "  Ready: False (Initializing) not serving yet: athene/cpu, athene/router "
        "(no running replica)"
    )
    assert lines[4:] == ["  app athene: DEPLOYING", "    cpu: UPDATING", "    router: UPDATING"]


def test_dashboard_status_while_the_app_is_built(
    capsys: pytest.CaptureFixture[str], dashboard
) -> None:
    dashboard.serve("building")
    assert deploy.main(["status", "--dashboard", dashboard.url]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "  Ready: False (Initializing) not serving yet: athene (no deployments yet)"
    assert "  app athene: DEPLOYING" in lines


def test_dashboard_status_deploy_failed_keeps_the_cause(
    capsys: pytest.CaptureFixture[str], dashboard
) -> None:
    dashboard.serve("deploy_failed")
    assert deploy.main(["status", "--dashboard", dashboard.url]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "  app athene: DEPLOY_FAILED" in lines
    # The builder's traceback, clipped to its head and its cause.
    assert any(line.strip().startswith("... (") for line in lines)
    assert "node_groups.0.autoscaling_config.max_replica" in lines[-1]


def test_dashboard_status_mid_redeploy_serves_but_is_not_settled(
    capsys: pytest.CaptureFixture[str], dashboard
) -> None:
    """The old replicas answer while Serve replaces them: ready (as KubeRay keeps Ready
    True through an in-place update), but `wait` goes on."""
    dashboard.serve("updating")
    assert deploy.main(["status", "--dashboard", dashboard.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Serve at {dashboard.url}: READY, 1 serve endpoints"
    assert lines[4:] == ["  app athene: DEPLOYING", "    cpu: UPDATING", "    router: UPDATING"]
    assert not deploy.summarize(*deploy.dashboard_fetch(dashboard.url)("", "")).settled


def test_dashboard_wait_until_settled(capsys: pytest.CaptureFixture[str], dashboard) -> None:
    dashboard.serve("building", "starting", "updating", "running")
    clock = FakeClock()
    fetch = deploy.dashboard_fetch(dashboard.url)
    code = deploy.wait(fetch, "", "", 600, 2, clock=clock, sleep=clock.sleep)
    out = capsys.readouterr().out
    assert code == 0
    assert clock.now == 6
    assert out.count("NOT READY (Initializing)") == 1  # one headline per change
    assert out.splitlines()[-1] == "    router: HEALTHY"


def test_dashboard_wait_times_out(capsys: pytest.CaptureFixture[str], dashboard) -> None:
    dashboard.serve("starting")
    clock = FakeClock()
    fetch = deploy.dashboard_fetch(dashboard.url)
    assert deploy.wait(fetch, "", "", 10, 2, clock=clock, sleep=clock.sleep) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "timed out after 10 s"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ((404, "404: Not Found"), "answered 404 Not Found: 404: Not Found"),
        ((200, "<html>hello</html>"), "did not answer like a Ray dashboard"),
        ((200, json.dumps({"jobs": []})), "did not answer like a Ray dashboard"),
    ],
)
def test_dashboard_that_is_not_one(
    capsys: pytest.CaptureFixture[str], dashboard, answer: tuple[int, str], error: str
) -> None:
    dashboard.answers = [answer]
    assert deploy.main(["status", "--dashboard", dashboard.url]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and error in captured.err


@pytest.mark.parametrize("command", [["status"], ["wait", "--timeout", "5"]])
def test_dashboard_unreachable(tmp_path: Path, command: list[str]) -> None:
    port = free_port()  # nothing listens there
    result = cli(
        tmp_path,
        tmp_path / "missing-kubeconfig",
        *command,
        "--dashboard",
        f"http://127.0.0.1:{port}",
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"error: cannot reach the Ray dashboard at http://127.0.0.1:{port}: "
        "[Errno 111] Connection refused\n"
    )
