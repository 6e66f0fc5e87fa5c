"""The CPU stack in this process: Ray, Serve and an app built from a serve config's args, on
free ports, with its metrics endpoint reporting every second. The test session's stack
(tests/conftest.py) and `make dashboard` (loadtest/dashboard.py) both run on it."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from loadtest.fake_cluster import free_port
from serve_app.config import load_serve_config
from serve_app.serve_env import SERVE_ENV

CPU_CONFIG = Path(__file__).resolve().parents[1] / "serve_config.cpu.yaml"
READY_TIMEOUT_S = 600


def cpu_app_args() -> dict[str, Any]:
    """serve_config.cpu.yaml's application args, a copy to change freely."""
    document, _ = load_serve_config(CPU_CONFIG)
    return copy.deepcopy(document["applications"][0]["args"])


def wait_ready(base_url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"the stack at {base_url} was not ready within {timeout_s} s")


def direct_ingress_env() -> dict[str, str]:
    """Serve's direct-ingress ports moved from 30000 up to a free range: another stack on the
    machine may hold 30000 (Serve skips a port in use and tries the next). And a router
    replica that stops (an app deleted or redeployed) drains its requests but is not held
    open 30 s more: that wait is for a load balancer to deregister it, and none is here."""
    low = free_port()
    return {
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(low),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(min(low + 100, 65535)),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
    }


def router_port(app_name: str, timeout_s: float = 60) -> int:
    """The port on which the app's router replica serves HTTP itself (Serve's direct ingress),
    once it does: the way in that skips Serve's proxy, as callers on Kubernetes take it."""
    import ray
    from ray.serve._private.common import RequestProtocol
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        groups = ray.get(controller.get_target_groups.remote(app_name=app_name))
        # Until the router runs, Serve lists the proxy instead, with no ingress deployment.
        ports = [
            target.port
            for group in groups
            if group.ingress_deployment_name and group.protocol == RequestProtocol.HTTP
            for target in group.targets
        ]
        if len(ports) == 1:
            return ports[0]
        time.sleep(0.5)
    raise TimeoutError(f"{app_name}'s router had no port of its own within {timeout_s} s")


def router_url(app_name: str) -> str:
    return f"http://127.0.0.1:{router_port(app_name)}"


@contextmanager
def local_stack(args: dict[str, Any], name: str = "athene") -> Iterator[tuple[str, str]]:
    """(base URL, metrics URL) of the app at /, ready; Ray and Serve stopped on exit, even on
    failure, and the environment restored. Serve's settings (serve_app.serve_env) are set
    before Ray starts: its processes read them at start-up."""
    env = SERVE_ENV | direct_ingress_env()
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    import ray
    from ray import serve

    from serve_app.app import build_app

    port, metrics_port = free_port(), free_port()
    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        _metrics_export_port=metrics_port,
        # Processes report their metrics every second instead of every 10: scrapes see them.
        _system_config={"metrics_report_interval_ms": 1000},
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(args), name=name, route_prefix="/")
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url)
        yield base_url, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        serve.shutdown()
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
