"""`make serve`: `serve run CONFIG` with a console that says what it is doing.

It deploys a serve config exactly as `serve run` does (same Serve calls, same config
validation), but starts Ray itself with fixed dashboard and metrics ports, keeps the
engine's start-up noise in Ray's log files, prints each deployment's state as it changes,
and prints one ready block (API, metrics, dashboard, a curl to try) once the router's
`/ready` answers 200. Ctrl-C (or SIGTERM) shuts Serve and Ray down.

    python -m serve_app.launch serve_config.cpu.yaml [--http-port N] [--router-port 30000]
        [--metrics-port 8080] [--dashboard-port 8265]

Exit codes: 0 after a clean shutdown; 1 if the config is invalid, the deployment failed or
it was not ready within --ready-timeout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from serve_app.config import ConfigError, load_serve_config, serve_document
from serve_app.serve_env import SERVE_ENV, router_port_env

# Ray's and KubeRay's defaults (the head pod's ports in k8s/), so the URLs read the same; the
# router's own port is the one the router pods in k8s/ serve on.
METRICS_PORT, DASHBOARD_PORT, ROUTER_PORT = 8080, 8265, 30000
READY_TIMEOUT_S = 900
POLL_INTERVAL_S = 1.0


def say(line: str) -> None:
    print(line, flush=True)


def try_request(base_url: str, model: str) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "How many r are in strawberry?"}],
        "max_tokens": 64,  # the dev model's random weights never stop on their own
    }
    return (
        f"curl {base_url}/v1/chat/completions -H 'Content-Type: application/json' "
        f"-d '{json.dumps(body)}'"
    )


def ready_block(
    seconds: float, base_url: str, router_url: str, model: str, metrics: str, dashboard: str
) -> str:
    return "\n".join(
        [
            f"==> ready in {seconds:.0f} s",
            f'    API        {base_url}/v1  (OpenAI-compatible, model "{model}")',
            f"    router     {router_url}/v1  (the same API on the router's own port: one hop "
            "fewer, the way in on Kubernetes)",
            f"    metrics    curl {metrics}",
            f"    dashboard  {dashboard}{token_hint()}",
            f"    try        {try_request(base_url, model)}",
            "    stop       Ctrl-C",
        ]
    )


def token_hint() -> str:
    """Ray turns on token auth for a local start once it has a token: say where it is."""
    token = Path.home() / ".ray" / "auth_token"
    if os.environ.get("RAY_AUTH_MODE") == "disabled" or not token.is_file():
        return ""
    return f"  (sign in with the token in {token})"


def deployment_states(status: Any, app_name: str) -> str:
    """'router HEALTHY, cpu UPDATING' for one application of `serve.status()`."""
    app = status.applications.get(app_name)
    if app is None:
        return "not deployed yet"
    states = [f"{name} {d.status.value}" for name, d in sorted(app.deployments.items())]
    return ", ".join(states) or app.status.value


class StopRequestedError(Exception):
    """Ctrl-C or SIGTERM."""


def _stop(signum: int, frame: Any) -> None:
    raise StopRequestedError


def wait_until_ready(
    app_name: str, base_url: str, timeout_s: float, started: float
) -> tuple[bool, str]:
    """Print each change of the deployments' states; (True, "") once /ready answers 200,
    (False, why) if the application failed to deploy or the time ran out."""
    from ray import serve

    last = ""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            status = serve.status()
            app = status.applications.get(app_name)
            line = f"==> {app_name}: {deployment_states(status, app_name)}"
            if line != last:
                say(f"{line}  ({time.monotonic() - started:.0f} s)")
                last = line
            if app is not None and app.status == "DEPLOY_FAILED":
                return False, app.message
            if app is not None and app.status == "RUNNING":
                try:
                    if client.get(f"{base_url}/ready").status_code == 200:
                        return True, ""
                except httpx.HTTPError:
                    pass
            time.sleep(POLL_INTERVAL_S)
    return False, f"not ready within {timeout_s:g} s"


def serve_config(
    path: Path,
    http_port: int | None,
    router_port: int,
    metrics_port: int,
    dashboard_port: int,
    ready_timeout_s: float,
) -> int:
    import ray
    from ray.serve._private import api as serve_api
    from ray.serve._private.constants import SERVE_NAMESPACE
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    document, app_config = load_serve_config(path)
    config = ServeDeploySchema.model_validate(serve_document(document))  # as KubeRay's
    http_options = config.http_options.model_dump()
    if http_port is not None:
        http_options["port"] = http_port
    base_url = f"http://localhost:{http_options['port']}"
    app = config.applications[0]
    prefix = "" if app.route_prefix in (None, "/") else app.route_prefix
    app_url, router_url = base_url + prefix, f"http://localhost:{router_port}{prefix}"
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    dashboard = f"http://127.0.0.1:{dashboard_port}"

    started = time.monotonic()
    # Ray's processes read them when they start.
    os.environ.update(SERVE_ENV | router_port_env(router_port))
    say(f"==> starting Ray: dashboard {dashboard}, metrics {metrics}")
    context = ray.init(
        address="local",
        namespace=SERVE_NAMESPACE,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        _metrics_export_port=metrics_port,
        log_to_driver=False,  # the engine's start-up output stays in Ray's log files
        logging_level=logging.WARNING,  # this console says what happens, in its own words
    )
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    say(f"    (engine and Ray logs: {Path(context.address_info['session_dir']) / 'logs'})")
    try:
        client = serve_api.serve_start(
            http_options=http_options,
            proxy_location=config.proxy_location,
            grpc_options=gRPCOptions(**config.grpc_options.model_dump()),
            controller_options=config.controller_options,
        )
        names = ", ".join(a.name for a in config.applications)
        say(f"==> deploying {path.name}: applications {names}")
        client.deploy_apps(config, _blocking=False)
        ready, why = wait_until_ready(app.name, app_url, ready_timeout_s, started)
        if not ready:
            say(f"==> failed: {why}")
            return 1
        say(
            ready_block(
                time.monotonic() - started,
                app_url,
                router_url,
                app_config.model.id,
                metrics,
                dashboard,
            )
        )
        while True:
            time.sleep(3600)
    except StopRequestedError:
        # Serve's direct ingress holds the router open 30 s for load balancers to notice.
        say("==> stopping Serve and Ray (about 30 s: the router drains as behind a balancer)")
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        from ray import serve

        serve.shutdown()
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serve_app.launch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("--http-port", type=int, help="instead of the config's http_options.port")
    parser.add_argument("--router-port", type=int, default=ROUTER_PORT)
    parser.add_argument("--metrics-port", type=int, default=METRICS_PORT)
    parser.add_argument("--dashboard-port", type=int, default=DASHBOARD_PORT)
    parser.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S, metavar="SECONDS")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        return serve_config(
            args.config,
            args.http_port,
            args.router_port,
            args.metrics_port,
            args.dashboard_port,
            args.ready_timeout,
        )
    except ConfigError as error:
        say(f"==> {error}")
        return 1
    except StopRequestedError:  # before Serve started: Ray's exit hooks stop what ray.init started
        return 0


if __name__ == "__main__":
    sys.exit(main())
