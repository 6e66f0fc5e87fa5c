"""KubeRay's submission path, for real: the `dev-cpu` overlay's serveConfigV2, exactly as
kustomize renders it, submitted to a Ray head started like the overlay's head pod, the way
the KubeRay v1.7 operator submits it, then watched the way the operator watches it.

What the operator does, from its source (ray-operator/controllers/ray/):
- common/pod.go (generateRayStartCommand, setMissingRayStartParams, convertParamMap): each
  pod runs `ray start [--head]` with the group's rayStartParams as `--key=value` (sorted;
  "true"/"false" as bare switches), num-cpus/memory from the container's limits when not
  given, dashboard-host 0.0.0.0, metrics-export-port 8080 and --block.
- rayservice_controller.go (updateServeDeployment): serveConfigV2 YAML -> map -> Go's
  json.Marshal; resubmitted whenever the string differs from the one it last submitted.
- utils/dashboardclient/dashboard_httpclient.go: UpdateDeployments is
  `PUT /api/serve/applications/` with `Content-Type: application/json` (plus
  `x-ray-authorization` under token auth); GetServeDetails is
  `GET /api/serve/applications/?api_type=declarative`, whose applications' and deployments'
  status and message getAndCheckServeStatus copies into the RayService status; a cluster is
  ready when every application is RUNNING.

Here the test is the operator and the pods share one host: every port is a free one, the
dashboard and Serve's proxy listen on 127.0.0.1 (Ray's own node address is this host's),
the cluster has its own --temp-dir and is stopped through its own processes only
(loadtest/fake_cluster.py), never `ray stop`. Nothing runs Ray in the pytest process: the
session `stack` may run beside this cluster. The waiting is `python -m serve_app.deploy
wait --dashboard URL`, so that path runs for real too.

The second test changes an autoscaling bound of the engine, under traffic, and asks for an
in-place update: no failed request, the engine replica kept. That holds because the
rendering puts each group's bounds under Serve's `deployments:` options, not in the
application's args (serve_app.config.serve_document).
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from loadtest.fake_cluster import free_port, processes_under, stop_processes_under
from serve_app import deploy
from serve_app.devmodel import ensure_dev_model
from serve_app.serve_env import SERVE_ENV

from .conftest import wait_for
from .test_k8s import rayservice

pytestmark = pytest.mark.e2e

OVERLAY = "dev-cpu"
MODEL = "athene-v2-chat"
BIN = Path(sys.executable).parent  # the venv's: `ray`, `serve`, and on the pods' PATH
# The first deployment loads the engine (40-80 s alone; more on a shared CI machine).
DEPLOY_TIMEOUT_S = 600
UPDATE_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 60
# rayStartParams naming a port or an interface: a pod has its own network namespace, this
# test shares the host with other clusters, so each gets a free port on 127.0.0.1.
PORT_PARAMS = (
    "port",
    "node-manager-port",
    "object-manager-port",
    "dashboard-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
    "ray-client-server-port",
)
# (No node-ip-address: Ray replaces 127.0.0.1 with this host's own address anyway.)
HOST_PARAMS = ("dashboard-host",)
HEAD_ONLY_PARAMS = ("port", "dashboard-port", "ray-client-server-port", "dashboard-host")
Doc = dict[str, Any]


# ---- what the operator computes from the rendered RayService ----------------------------


def quantity(value: str) -> float:
    """A Kubernetes quantity ("2", "500m", "4Gi", "1G") as a number."""
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    units |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()
    return float(number) * units.get(unit, 1)


def ray_start_params(group: Doc, head: bool) -> dict[str, str]:
    """The group's rayStartParams completed as KubeRay completes them (common/pod.go),
    without --block: here `ray start` returns once its node is up."""
    params = {key: str(value) for key, value in (group.get("rayStartParams") or {}).items()}
    limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    if "num-cpus" not in params and "cpu" in limits:
        params["num-cpus"] = str(int(-(-quantity(limits["cpu"]) // 1)))  # Go's Value(): ceil
    if "memory" not in params and "memory" in limits:
        params["memory"] = str(int(quantity(limits["memory"])))
    if head:
        params.setdefault("dashboard-host", "0.0.0.0")
    params.setdefault("metrics-export-port", "8080")
    params.setdefault("dashboard-agent-listen-port", "52365")
    return params


def ray_start_command(params: dict[str, str], head: bool) -> list[str]:
    """KubeRay's convertParamMap, run without a shell: the values' shell quoting undone."""
    command = [str(BIN / "ray"), "start", *(["--head"] if head else [])]
    for key in sorted(params):
        value = params[key]
        if value.lower() in ("true", "false") and key not in (
            "log-color",
            "include-dashboard",
            "include-log-monitor",
        ):
            command += [f"--{key}"] if value.lower() == "true" else []
        else:
            command.append(f"--{key}={' '.join(shlex.split(value))}")
    return command


def go_json(document: Any) -> bytes:
    """Go's json.Marshal of the map KubeRay unmarshals serveConfigV2 into: keys sorted, no
    spaces, UTF-8, and <, >, & escaped as Go does for HTML safety."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        text = text.replace(char, escaped)
    return text.encode()


# ---- the cluster: head and worker pods as processes -------------------------------------


@dataclass
class KubeRayCluster:
    temp_dir: Path
    gcs_address: str
    dashboard_url: str
    serve_url: str

    def submit(self, serve_config_v2: str) -> None:
        """UpdateDeployments, as the operator sends it."""
        response = httpx.put(
            f"{self.dashboard_url}{deploy.SERVE_DETAILS_PATH}",
            content=go_json(yaml.safe_load(serve_config_v2)),
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        assert 200 <= response.status_code <= 299, f"{response.status_code} {response.text}"

    def details(self) -> Doc:
        """GetServeDetails: the same GET the operator sends, through serve_app.deploy."""
        return deploy.serve_details(self.dashboard_url)

    def wait_settled(self, timeout_s: float) -> None:
        """`python -m serve_app.deploy wait --dashboard URL`: every application RUNNING,
        every deployment HEALTHY, a healthy proxy."""
        url, timeout = self.dashboard_url, str(timeout_s)
        code = deploy.main(["wait", "--dashboard", url, "--timeout", timeout, "--interval", "1"])
        assert code == 0, f"not settled within {timeout_s} s: {json.dumps(self.details())[:3000]}"


def _run(command: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{shlex.join(command)}:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def service() -> Doc:
    return rayservice(OVERLAY)


@contextmanager
def kuberay_cluster(service: Doc) -> Iterator[KubeRayCluster]:
    """The RayService's head pod and its worker pod (the dev-cpu head has num-cpus 0: the
    engine replica needs the worker), with Serve's proxy on a free port; stopped even on
    failure, and nothing of it left running."""
    ensure_dev_model()  # the pods' image carries it; here the build task would race for it
    spec = service["spec"]["rayClusterConfig"]
    (worker_group,) = spec["workerGroupSpecs"]
    # Ray's socket paths live under the temp dir and must fit in 107 characters.
    temp_dir = Path(tempfile.mkdtemp(prefix="krs-", dir="/tmp"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update(SERVE_ENV)
    # `ray start` turns token auth on by itself when ~/.ray/auth_token exists (any local
    # ray.init writes one): a throwaway cluster decides here, not that file.
    env["RAY_AUTH_MODE"] = "disabled"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    local = {"temp-dir": str(temp_dir), "disable-usage-stats": "true"}
    local |= {param: "127.0.0.1" for param in HOST_PARAMS}

    head = ray_start_params(spec["headGroupSpec"], head=True)
    head |= {param: str(free_port()) for param in PORT_PARAMS} | local
    gcs_address = f"127.0.0.1:{head['port']}"
    worker = ray_start_params(worker_group, head=False) | {"address": gcs_address}
    worker |= {p: str(free_port()) for p in PORT_PARAMS if p not in HEAD_ONLY_PARAMS}
    worker |= {key: value for key, value in local.items() if key != "dashboard-host"}

    serve_port = free_port()
    started = KubeRayCluster(
        temp_dir=temp_dir,
        gcs_address=gcs_address,
        dashboard_url=f"http://127.0.0.1:{head['dashboard-port']}",
        serve_url=f"http://127.0.0.1:{serve_port}",
    )
    proxy_location = yaml.safe_load(service["spec"]["serveConfigV2"]).get("proxy_location")
    try:
        for command in (ray_start_command(head, True), ray_start_command(worker, False)):
            _run(command, env)
        # Serve's HTTP port: KubeRay owns http_options (serve_app/kube.py leaves them out of
        # serveConfigV2), so the PUT would start Serve on its default 0.0.0.0:8000, which
        # this shared host may be using, and Serve reads no variable for its default port
        # (only RAY_SERVE_DEFAULT_HTTP_HOST). So Serve is started first, with the defaults
        # the PUT would use but a free port on 127.0.0.1 and the config's proxy_location;
        # the dashboard's PUT handler then keeps the running instance's HTTP options (it
        # only logs that they differ) and deploys the submitted config unchanged.
        serve_start = [str(BIN / "serve"), "start", "--address", gcs_address]
        serve_start += ["--http-host", "127.0.0.1", "--http-port", str(serve_port)]
        serve_start += ["--proxy-location", proxy_location] if proxy_location else []
        _run(serve_start, env)
        yield started
    finally:
        stop_processes_under(temp_dir)
        left = [process.pid for process in processes_under(temp_dir)]
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"processes of the test cluster still running: {left}"


@pytest.fixture(scope="module")
def cluster(service: Doc) -> Iterator[KubeRayCluster]:
    with kuberay_cluster(service) as started:
        yield started


# ---- traffic ----------------------------------------------------------------------------


def chat(base_url: str, content: str = "Hello! Who are you?") -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 8,
            "ignore_eos": True,
        },
        timeout=REQUEST_TIMEOUT_S,
    )


def answer(response: httpx.Response) -> str:
    """The assistant's text of a chat completion, "" when there is none."""
    try:
        return response.json()["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


@dataclass
class Outcome:
    started: float
    finished: float
    status: int  # 0: no HTTP answer
    detail: str  # why it failed: "" when it answered 200 with text

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.detail


class Traffic:
    """Clients sending chat requests back to back until stopped; every outcome kept."""

    def __init__(self, base_url: str, clients: int = 2) -> None:
        self.base_url = base_url
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                response = chat(self.base_url)
            except httpx.HTTPError as error:
                self.outcomes.append(Outcome(started, time.monotonic(), 0, repr(error)))
                continue
            status, detail = response.status_code, ""
            if status != 200 or not answer(response):
                detail = response.text[:300] or "empty answer"
            self.outcomes.append(Outcome(started, time.monotonic(), status, detail))

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT_S + 5)

    def completed(self) -> int:
        return len(self.outcomes)

    def overlapping(self, start: float, end: float) -> list[Outcome]:
        return [o for o in self.outcomes if o.started <= end and o.finished >= start]


# ---- the tests -------------------------------------------------------------------------


def engine_group(serve_config: Doc) -> tuple[Doc, Doc]:
    """The application and its (only) node group's args in a parsed serveConfigV2."""
    (application,) = serve_config["applications"]
    (group,) = application["args"]["node_groups"]
    return application, group


def engine_autoscaling(serve_config: Doc) -> Doc:
    """The engine group's autoscaling_config in a serveConfigV2: Serve's options for the
    deployment named after the group (`applications[].deployments[]`), where the rendering
    puts it (serve_app.config.serve_document) so that Serve applies a change in place."""
    application, group = engine_group(serve_config)
    (options,) = [o for o in application.get("deployments") or () if o["name"] == group["name"]]
    return options["autoscaling_config"]


def engine_details(cluster: KubeRayCluster, serve_config: Doc) -> Doc | None:
    """The engine deployment in the Serve details; None while the application is being
    rebuilt (Serve lists no deployments then)."""
    application, group = engine_group(serve_config)
    app = cluster.details()["applications"].get(application["name"]) or {}
    return (app.get("deployments") or {}).get(group["name"])


@pytest.fixture(scope="module")
def deployed(service: Doc, cluster: KubeRayCluster) -> str:
    """The rendered serveConfigV2 submitted as KubeRay submits it, waited for with
    `python -m serve_app.deploy wait --dashboard URL`: what that printed."""
    cluster.submit(service["spec"]["serveConfigV2"])  # the string, as rendered
    printed = io.StringIO()
    with redirect_stdout(printed):
        cluster.wait_settled(DEPLOY_TIMEOUT_S)
    return printed.getvalue()


def test_rendered_config_submitted_like_kuberay_deploys_and_answers(
    service: Doc, cluster: KubeRayCluster, deployed: str
) -> None:
    application, group = engine_group(yaml.safe_load(service["spec"]["serveConfigV2"]))
    lines = deployed.splitlines()
    assert lines[-3] == f"  app {application['name']}: RUNNING"
    assert sorted(lines[-2:]) == [
        f"    {name}: HEALTHY" for name in sorted((group["name"], "router"))
    ]
    response = chat(cluster.serve_url)
    assert response.status_code == 200, response.text
    assert answer(response), response.text


def test_autoscaling_bound_change_applies_in_place_under_traffic(
    service: Doc, cluster: KubeRayCluster, deployed: str
) -> None:
    """Serve hashes an application's args into its code version: a change there rebuilds the
    app and replaces every replica (measured before the bounds moved out of the args: about
    a minute, the engine restarted, most requests answered 503). A deployment option is
    applied to the running replicas: the engine replica must stay, and every request pass."""
    submitted = yaml.safe_load(service["spec"]["serveConfigV2"])
    autoscaling = engine_autoscaling(submitted)
    before = engine_details(cluster, submitted)
    assert before is not None
    replicas_before = sorted(r["replica_id"] for r in before["replicas"])
    bound = autoscaling["max_replicas"] + 1

    # The change: the engine group's max_replicas + 1, submitted as a YAML string like the
    # rendered one (serveConfigV2 is a string in the RayService).
    changed = json.loads(json.dumps(submitted))
    engine_autoscaling(changed)["max_replicas"] = bound

    def applied() -> bool:
        details = engine_details(cluster, changed)
        return (
            details is not None
            and details["deployment_config"]["autoscaling_config"]["max_replicas"] == bound
        )

    with Traffic(cluster.serve_url) as traffic:
        wait_for(lambda: traffic.completed() >= 2, REQUEST_TIMEOUT_S, "traffic before the update")
        update_started = time.monotonic()
        cluster.submit(yaml.safe_dump(changed, sort_keys=False))
        wait_for(applied, UPDATE_TIMEOUT_S, f"max_replicas {bound} in the Serve details")
        with redirect_stdout(io.StringIO()):
            cluster.wait_settled(UPDATE_TIMEOUT_S)
        update_done = time.monotonic()
        settled = traffic.completed()
        wait_for(lambda: traffic.completed() >= settled + 2, REQUEST_TIMEOUT_S, "traffic after")

    during = traffic.overlapping(update_started, update_done)
    failed = [o for o in traffic.outcomes if not o.ok]
    after = engine_details(cluster, changed)
    replicas_after = sorted(r["replica_id"] for r in after["replicas"]) if after else []
    slowest = max((o.finished - o.started for o in during), default=0.0)
    summary = (
        f"update took {update_done - update_started:.1f} s, "
        f"{len(traffic.outcomes)} requests, {len(during)} during it (slowest {slowest:.1f} s), "
        f"{len(failed)} failed"
    )
    print(summary)
    assert during, f"no request was in flight during the update ({summary})"
    problems = []
    if replicas_after != replicas_before:
        problems.append(f"engine replicas replaced: {replicas_before} -> {replicas_after}")
    if failed:
        statuses = sorted({o.status for o in failed})
        problems.append(
            f"{len(failed)} of {len(traffic.outcomes)} requests failed (HTTP {statuses}), "
            f"first: {failed[0].detail[:200]}"
        )
    assert not problems, f"{summary}: " + "; ".join(problems)
