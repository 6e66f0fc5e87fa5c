"""Shared fixtures. The end-to-end stack (Ray + Serve + the real vLLM CPU engine on the
tiny dev model) starts once per session and is always shut down, even on failure."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from loadtest.local_stack import CPU_CONFIG, cpu_app_args, local_stack, router_url, wait_ready
from serve_app.config import AppConfig, load_serve_config, parse_app_config
from serve_app.devmodel import ensure_dev_model

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` once `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.5)


@pytest.fixture(scope="session")
def dev_model_dir() -> Path:
    return ensure_dev_model()


@dataclass
class Stack:
    base_url: str  # the router replica's own port (Serve's direct ingress), as on Kubernetes
    proxy_url: str  # Serve's proxy, the way in of `serve run`'s :8000, and of other apps here
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

        config = parse_app_config({**cpu_app_args(), **sections})
        engines = engines or {"cpu": self.engine_handle("cpu")}
        serve.run(
            router_deployment(config).bind(config, engines),
            name=name,
            route_prefix=f"/{name}",
            logging_config=logging_config,
        )
        url = f"{self.proxy_url}/{name}"
        wait_ready(url)  # its view of the engine replicas is fresh
        return url

    @contextmanager
    def app(self, name: str, args: dict) -> Iterator[str]:
        """A second application (its own engines) built from `args` at /`name` beside this
        stack, deleted afterwards: its base URL."""
        from ray import serve

        from serve_app.app import build_app

        try:  # deleted even when it fails to start: its replicas would hold resources
            serve.run(build_app(args), name=name, route_prefix=f"/{name}")
            yield f"{self.proxy_url}/{name}"
        finally:
            serve.delete(name)

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
    _, config = load_serve_config(CPU_CONFIG)
    with local_stack(cpu_app_args()) as (proxy_url, metrics_url):
        yield Stack(
            base_url=router_url("athene"),
            proxy_url=proxy_url,
            app_name="athene",
            config=config,
            metrics_url=metrics_url,
        )


def replica_processes(app: str, deployment: str) -> tuple[psutil.Process, list[psutil.Process]]:
    """The engine replica's actor process and its vLLM children (engine core, workers). Ray
    titles it `ray::ServeReplica:<app>:<name>`, plus `.<method>` while it runs a call. Only
    this test's Ray counts (this process started it, so its processes descend from this
    one): another stack on the machine has replicas of the same title."""
    title = f"ray::ServeReplica:{app}:{deployment}"
    (replica,) = [
        p
        for p in psutil.Process().children(recursive=True)
        if (_cmdline(p) or [""])[0].split(".")[0] == title
    ]
    return replica, replica.children(recursive=True)


def thread_cores(process: psutil.Process) -> dict[int, set[int]]:
    """The cores each thread of `process` may run on, by thread id (threads that ended since
    they were listed are left out)."""
    cores = {}
    for thread in process.threads():
        with suppress(ProcessLookupError):
            cores[thread.id] = os.sched_getaffinity(thread.id)
    return cores


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # gone, or a zombie, since it was listed
        return []
