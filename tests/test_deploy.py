"""`python -m serve_app.deploy` on recorded RayService objects (tests/data/rayservice/),
whose status must validate against the KubeRay v1.7.0 CRD so the fixtures stay what the
operator writes, plus the no-cluster path (exit 2, one line, no traceback). No cluster
needed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
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
