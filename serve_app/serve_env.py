"""Ray's and Ray Serve's process-level settings this project runs with.

Ray reads them from the environment when its processes start (controller, proxies, replicas),
so they cannot live in the serve config. `make serve` and `make bench` take them from here
(`python -m serve_app.serve_env` prints them as KEY=VALUE), the test stack sets them before
Ray starts, and the KubeRay pods carry them (k8s/base/rayservice.yaml, checked by
tests/test_k8s.py). Without them the app still runs, on Serve's default (slower) path.
Measured lever by lever in the README ("The stack against vLLM's own server").
"""

from __future__ import annotations

SERVE_ENV = {
    # Serve's throughput mode: handle calls over gRPC instead of Ray actor calls, user code
    # and the request router on the replica's own event loop, GC frozen after start-up.
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # Throughput mode's "direct ingress": each router replica serves HTTP itself, on a port of
    # its own (30000 up), so a request skips Serve's proxy and the call back to it for the
    # body: 4-5 ms less TTFT at concurrency 1 in `make bench` (docs/performance.md). Without
    # HAProxy Serve then runs one proxy, on the head only (a way in for `serve run`'s :8000
    # and KubeRay's health checks); on Kubernetes the callers reach the routers' own port
    # through a Service of the router node group (k8s/base/rayservice.yaml).
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    # The proxy's calls to the router over gRPC too. Throughput mode turns gRPC on for handle
    # calls but reads this one before it does, so the proxy stayed on Ray actor calls: about
    # 3 ms more TTFT and twice the CPU per streamed token (docs/performance.md, side by side).
    "RAY_SERVE_PROXY_USE_GRPC": "1",
    # Serve's Python proxy, not HAProxy, on :8000. HAProxy (in ray[serve]) saves a Python hop,
    # but it passes a client's disconnect on only when it next writes to that client: a
    # non-streaming answer, or one not yet started, went on generating for no one (measured
    # in tests/test_e2e_resilience.py; the cost of this choice is in the README).
    "RAY_SERVE_ENABLE_HA_PROXY": "0",
    # Throughput mode buffers 1000 log records per process before writing them: a request's
    # log line would show up late, and a crash would lose the last ones. Write each at once.
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
    # The controller's loop runs every 0.5 s, not 0.1 s: idle, it took 1.6% of a core that the
    # engine needs on a CPU host, 0.9% at 0.5 s (`make bench`'s idle figures, side by side).
    # Its work (autoscaling decisions, replica states, long-poll pushes) acts on 10 s health
    # checks and seconds-long metric windows.
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    # Ray starts its worker processes at nice 15, and with them everything this project runs
    # in them: the router, the engine replica, and vLLM's scheduler and GPU/CPU worker that it
    # spawns. Ray's own daemons (GCS, raylet, dashboard and its agent) and anything else on the
    # host stay at 0, so each of their wake-ups took the engine's turn, and vLLM's own server
    # (at 0) had no such handicap. Here the serving processes are the point of the host.
    "RAY_worker_niceness": "0",
}


def router_port_env(port: int) -> dict[str, str]:
    """Serve's direct-ingress range narrowed to the one `port`: with one router replica per
    node, that replica serves there and callers know where (`make serve`, `make bench`; the
    router pods in k8s/ carry the same with 30000)."""
    return {
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1),
    }


if __name__ == "__main__":
    print(" ".join(f"{key}={value}" for key, value in SERVE_ENV.items()))
