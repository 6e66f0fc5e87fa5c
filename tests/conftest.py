"""Shared fixtures. The end-to-end stack (Ray + Serve + the real vLLM CPU engine on the
tiny dev model) starts once per session and is always shut down, even on failure."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serve_app.config import AppConfig, load_serve_config, parse_app_config
from serve_app.devmodel import ensure_dev_model
from serve_app.serve_env import SERVE_ENV

ROOT = Path(__file__).resolve().parents[1]
CPU_CONFIG = ROOT / "serve_config.cpu.yaml"
READY_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def dev_model_dir() -> Path:
    return ensure_dev_model()


@dataclass
class Stack:
    base_url: str
    app_name: str
    config: AppConfig
    metrics_url: str  # Ray's Prometheus endpoint on the node (router and engine metrics)

    def engine_handle(self, group: str):
        from ray import serve

        return serve.get_deployment_handle(group, app_name=self.app_name)

    def engine_unfinished(self, group: str = "cpu") -> int:
        return self.engine_handle(group).num_unfinished_requests.remote().result()

    def deploy_router(
        self,
        name: str,
        engines: dict | None = None,
        logging_config: dict | None = None,
        **sections,
    ) -> str:
        """Deploys (or redeploys) a router application at /`name`, its config the CPU one
        with `sections` replaced, in front of this stack's engine (or of `engines`): new
        router settings without loading another model. Returns its base URL once ready."""
        from ray import serve

        from serve_app.app import router_deployment

        document, _ = load_serve_config(CPU_CONFIG)
        config = parse_app_config({**document["applications"][0]["args"], **sections})
        engines = engines or {"cpu": self.engine_handle("cpu")}
        serve.run(
            router_deployment(config).bind(config, engines),
            name=name,
            route_prefix=f"/{name}",
            logging_config=logging_config,
        )
        url = f"{self.base_url}/{name}"
        _wait_ready(url)  # its view of the engine replicas is fresh
        return url

    @contextmanager
    def router_app(self, name: str, **options) -> Iterator[str]:
        """`deploy_router`, deleted afterwards."""
        from ray import serve

        try:
            yield self.deploy_router(name, **options)
        finally:
            serve.delete(name)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """`serve_config.cpu.yaml`, deployed through the real builder on free ports, with the
    Serve settings `make serve` and the KubeRay pods use (serve_app.serve_env)."""
    saved = {key: os.environ.get(key) for key in SERVE_ENV}
    os.environ.update(SERVE_ENV)  # before Ray starts: its processes read them at start-up
    import ray
    from ray import serve

    from serve_app.app import build_app

    document, config = load_serve_config(CPU_CONFIG)
    application = document["applications"][0]
    port, metrics_port = free_port(), free_port()
    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        _metrics_export_port=metrics_port,
        # Processes report their metrics every second instead of every 10: tests scrape.
        _system_config={"metrics_report_interval_ms": 1000},
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(
            build_app(application["args"]),
            name=application["name"],
            route_prefix=application["route_prefix"],
        )
        base_url = f"http://127.0.0.1:{port}"
        _wait_ready(base_url)
        yield Stack(
            base_url=base_url,
            app_name=application["name"],
            config=config,
            metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        )
    finally:
        serve.shutdown()
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _wait_ready(base_url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"the stack at {base_url} was not ready within {READY_TIMEOUT_S} s")
