"""Ray Serve's process-level settings this project runs with.

Ray reads them from the environment when its processes start (controller, proxies, replicas),
so they cannot live in the serve config. `make serve` and `make bench` take them from here
(`python -m serve_app.serve_env` prints them as KEY=VALUE), the test stack sets them before
Ray starts, and the KubeRay pods carry them (k8s/base/rayservice.yaml, checked by
tests/test_k8s.py). Without them the app still runs, on Serve's default (slower) path.
Measured lever by lever in the README ("The stack against vLLM's own server").
"""

from __future__ import annotations

from pathlib import Path

SERVE_ENV = {
    # Serve's throughput mode: handle calls over gRPC instead of Ray actor calls, user code
    # and the request router on the replica's own event loop, GC frozen after start-up, and
    # ingress replicas that serve HTTP themselves ("direct ingress").
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # HAProxy (shipped with ray[serve]) in place of the Python HTTP proxy, forwarding straight
    # to the router replicas: one Python hop fewer per request and per streamed chunk.
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # Throughput mode buffers 1000 log records per process before writing them: a request's
    # log line would show up late, and a crash would lose the last ones. Write each at once.
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
}


def isolated_haproxy_env(directory: Path, stats_port: int, metrics_port: int) -> dict[str, str]:
    """HAProxy's files and side ports moved off their fixed defaults (/tmp/haproxy-serve,
    8404, 9101), so two stacks on one machine (tests, benchmarks) cannot collide."""
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(directory / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(directory / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(directory),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(directory / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(directory / "metrics.sock"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
    }


if __name__ == "__main__":
    print(" ".join(f"{key}={value}" for key, value in SERVE_ENV.items()))
