"""Autoscaling, end to end on one machine: a load spike, then silence, against the real graph
(router, Serve, the vLLM CPU engine) on a Ray cluster whose autoscaler adds and removes fake
GPU nodes (loadtest/fake_cluster.py). It records the timeline (replicas, nodes, requests in
flight) to `timeline.json` and plots it to `timeline.png`.

    python -m loadtest.autoscale --out docs/autoscaling     (about 5 minutes)

The node group mirrors k8s/'s h100-tp4 worker group, scaled down: a production node has 8
GPUs and holds two TP-4 replicas; a fake node has 2 "GPUs" and holds two TP-1 replicas of the
tiny dev model, and the group scales to zero (`min_replicas: 0`). Serve's delays are seconds
instead of minutes, so the whole cycle fits in a test:

    0 replicas, 0 nodes -> one request (cold start: a node, then an engine) -> 8 clients in a
    closed loop -> Serve adds replicas, the autoscaler a second node -> silence -> Serve
    scales to 0, the autoscaler removes both nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loadtest.fake_cluster import FakeGpuCluster, fake_gpu_cluster, free_port
from loadtest.local_stack import cpu_app_args
from serve_app.serve_env import SERVE_ENV

APP = "athene"
GROUP = "h100"
NODE_TYPE = "h100-tp4"  # the k8s worker group this fake node type stands for
GPUS_PER_NODE = 2
AUTOSCALING = {
    "min_replicas": 0,
    "max_replicas": 3,
    "target_ongoing_requests": 2,
    "upscale_delay_s": 2,
    "downscale_delay_s": 10,
    "downscale_to_zero_delay_s": 10,
    "look_back_period_s": 4,
    "metrics_interval_s": 1,  # how often handles push their counts (10 s by default)
}
NODE_IDLE_TIMEOUT_S = 6
COLD_START_TIMEOUT_S = 300
COLD_START_SETTLE_S = 60  # the controller lists a replica RUNNING a few seconds after it answers
SPIKE_CLIENTS = 8
SPIKE_HOLD_S = 20  # keep the load on this long once every replica and node is up
SPIKE_MAX_S = 420
SILENCE_MAX_S = 240
CHAT = {
    "model": "athene-v2-chat",
    "messages": [{"role": "user", "content": "Write a short story about a lighthouse."}],
    "max_tokens": 32,
    "ignore_eos": True,
    "stream": True,
}


def node_types() -> dict[str, dict[str, Any]]:
    """The fake node type: 2 GPUs (two TP-1 replicas), tagged like the k8s worker group's
    rayStartParams, so bundles asking for accelerator_type:H100 scale it, from zero too."""
    return {
        NODE_TYPE: {
            "resources": {"CPU": GPUS_PER_NODE, "GPU": GPUS_PER_NODE, "accelerator_type:H100": 1},
            "max_workers": 2,  # the k8s group's maxReplicas
        }
    }


def app_args() -> dict[str, Any]:
    """serve_config.cpu.yaml's app with its node group turned into a fake-GPU group."""
    args = cpu_app_args()
    group = args["node_groups"][0]
    group.update(
        name=GROUP,
        accelerator_type="H100",
        tensor_parallel_size=1,
        autoscaling_config=AUTOSCALING,
        cold_start_timeout_s=COLD_START_TIMEOUT_S,
    )
    return args


@dataclass
class Outcome:
    phase: str
    started_s: float
    latency_s: float
    status: int  # 0: no HTTP answer
    error: str = ""


@dataclass
class Run:
    """What the scenario saw: one sample a second, and every request's outcome."""

    t0: float = field(default_factory=time.monotonic)
    phase: str = "idle"
    in_flight: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    cluster_metric_names: set[str] = field(default_factory=set)  # ray_cluster_* seen

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)


def observe() -> dict[str, Any]:
    """Serve's target and replica states for the group, and the cluster's GPU nodes."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_get
    from ray.serve.context import _get_global_client

    # Serve's own view: the details carry the autoscaler's target, status does not.
    details = _get_global_client().get_serve_details()
    deployment = details["applications"][APP]["deployments"][GROUP]
    states = Counter(replica["state"] for replica in deployment["replicas"])
    gpu_nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]
    # Nodes the autoscaler is launching are not Ray nodes yet: its status report has them.
    report = json.loads(_internal_kv_get("__autoscaling_status") or "{}").get(
        "autoscaler_report", {}
    )
    pending = sum(report.get("pending_launches", {}).values()) + len(
        report.get("pending_nodes", [])
    )
    return {
        "target_replicas": deployment["target_num_replicas"],
        "running_replicas": states.get("RUNNING", 0),
        "starting_replicas": states.get("STARTING", 0),
        "gpu_nodes": len(gpu_nodes),
        "pending_nodes": pending,
    }


def node_metrics(metrics_url: str) -> tuple[set[str], dict[str, float]]:
    """The head's `ray_cluster_*` series (from the autoscaler's report), which the Grafana
    dashboard plots: the names on the scrape, and this node type's active/pending counts."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(metrics_url, timeout=10).text
    series = [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("ray_cluster_")
    ]
    counts = {
        f"metric_{s.name.removeprefix('ray_cluster_')}": s.value
        for s in series
        if s.labels.get("node_type") == NODE_TYPE
    }
    return {s.name for s in series}, counts


async def sample(run: Run, metrics_url: str) -> None:
    while True:
        state = await asyncio.to_thread(observe)
        names, counts = await asyncio.to_thread(node_metrics, metrics_url)
        run.cluster_metric_names |= names
        ok = sum(o.status == 200 for o in run.outcomes)
        run.samples.append(
            {
                "t": run.now(),
                "phase": run.phase,
                "in_flight": run.in_flight,
                "answered": ok,
                "failed": len(run.outcomes) - ok,
                **state,
                **counts,
            }
        )
        await asyncio.sleep(1)


async def chat(client: httpx.AsyncClient, run: Run) -> None:
    """One streamed chat request, read to its end; its outcome is recorded either way."""
    started = time.monotonic()
    run.in_flight += 1
    status, error = 0, ""
    try:
        async with client.stream("POST", "/v1/chat/completions", json=CHAT) as response:
            body = "".join([chunk async for chunk in response.aiter_text()])
            status = response.status_code
            if status == 200 and not body.rstrip().endswith("data: [DONE]"):
                status, error = 0, "stream ended without [DONE]"
            elif status != 200:
                error = body[:300]
    except httpx.HTTPError as failure:
        error = f"{type(failure).__name__}: {failure}"
    finally:
        run.in_flight -= 1
    run.outcomes.append(
        Outcome(run.phase, started - run.t0, time.monotonic() - started, status, error)
    )


async def until(condition, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.5)
    return False


def latest(run: Run) -> dict[str, Any]:
    return run.samples[-1] if run.samples else {}


async def scenario(base_url: str, metrics_url: str, run: Run) -> None:
    sampler = asyncio.create_task(sample(run, metrics_url))
    timeout = httpx.Timeout(COLD_START_TIMEOUT_S + 60, connect=10)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout) as client:
        await until(lambda: len(run.samples) >= 3, 10)  # a few samples at rest first

        run.phase = "cold start"
        await chat(client, run)
        # The answer can come before the controller lists its replica RUNNING: the cold
        # start ends once a sample shows the replica up on its node, not at a lucky second.
        await until(lambda: latest(run).get("running_replicas") == 1, COLD_START_SETTLE_S)

        run.phase = "spike"
        stop = asyncio.Event()

        async def user() -> None:
            while not stop.is_set():
                await chat(client, run)

        users = [asyncio.create_task(user()) for _ in range(SPIKE_CLIENTS)]
        full = AUTOSCALING["max_replicas"]
        await until(lambda: latest(run).get("running_replicas") == full, SPIKE_MAX_S)
        await asyncio.sleep(SPIKE_HOLD_S)
        stop.set()
        await asyncio.gather(*users)

        run.phase = "silence"
        await until(
            lambda: latest(run).get("target_replicas") == 0 and latest(run).get("gpu_nodes") == 0,
            SILENCE_MAX_S,
        )
        await asyncio.sleep(3)
    sampler.cancel()


def deploy(cluster: FakeGpuCluster) -> str:
    import ray
    from ray import serve

    from serve_app.app import build_app

    ray.init(address=cluster.address, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    serve.run(build_app(app_args()), name=APP, route_prefix="/")
    return f"http://127.0.0.1:{port}"


def plot(timeline: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    samples = timeline["samples"]
    t = [s["t"] for s in samples]
    figure = Figure(figsize=(10, 7.5), layout="constrained")
    FigureCanvasAgg(figure)
    load, replicas, nodes = figure.subplots(3, 1, sharex=True)
    load.plot(t, [s["in_flight"] for s in samples], label="requests in flight", color="#1f77b4")
    load.plot(t, answer_rate(samples), label="answers per second (10 s mean)", color="#2ca02c")
    failed = [s["t"] for s in samples if s["failed"]]
    if failed:
        load.axvline(failed[0], color="#d62728", ls=":", label="first failed request")
    load.set_title("Load: one request after idle, a spike of 8 clients, then silence")
    replicas.step(t, [s["target_replicas"] for s in samples], where="post", label="Serve target")
    replicas.step(t, [s["running_replicas"] for s in samples], where="post", label="running")
    replicas.step(t, [s["starting_replicas"] for s in samples], where="post", label="starting")
    replicas.set_title(f"Engine replicas of node group {GROUP!r} (min 0, max 3)")
    nodes.step(t, [s["gpu_nodes"] for s in samples], where="post", label="GPU nodes up")
    nodes.step(t, [s["pending_nodes"] for s in samples], where="post", label="launching")
    nodes.set_title(f"Fake GPU nodes of type {NODE_TYPE!r} (2 GPUs, 2 replicas each)")
    nodes.set_xlabel("seconds")
    for axes in (load, replicas, nodes):
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend(loc="upper right", fontsize=9)
        for start, end, name in phases(samples):
            if name != "idle":
                axes.axvspan(start, end, color="grey", alpha=0.08 if name == "spike" else 0.03)
    for start, _, name in phases(samples):
        if name != "idle":
            load.annotate(name, (start, 1), xycoords=("data", "axes fraction"), va="top")
    figure.savefig(path, dpi=100)


def answer_rate(samples: list[dict[str, Any]], window_s: float = 10) -> list[float]:
    """Answers per second over the last `window_s` at each sample."""
    rates = []
    for sample in samples:
        past = next(s for s in samples if s["t"] >= sample["t"] - window_s)
        span = sample["t"] - past["t"]
        rates.append((sample["answered"] - past["answered"]) / span if span else 0.0)
    return rates


def phases(samples: list[dict[str, Any]]) -> list[tuple[float, float, str]]:
    """(start, end, phase) spans of the timeline."""
    spans: list[tuple[float, float, str]] = []
    for s in samples:
        if spans and spans[-1][2] == s["phase"]:
            spans[-1] = (spans[-1][0], s["t"], s["phase"])
        else:
            spans.append((s["t"], s["t"], s["phase"]))
    return spans


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.autoscale", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for timeline.json/.png")
    parser.add_argument("--temp-dir", help="the cluster's Ray temp dir (short; default: new)")
    options = parser.parse_args(argv)
    options.out.mkdir(parents=True, exist_ok=True)
    # A SIGTERM (a test's timeout) unwinds like an error: the cluster is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run = Run()
    try:
        with fake_gpu_cluster(
            node_types(), SERVE_ENV, NODE_IDLE_TIMEOUT_S, temp_dir=options.temp_dir
        ) as cluster:
            base_url = deploy(cluster)
            run = Run()
            asyncio.run(scenario(base_url, cluster.metrics_url, run))
    finally:
        timeline = {
            "node_group": GROUP,
            "node_type": {NODE_TYPE: node_types()[NODE_TYPE]},
            "autoscaling_config": AUTOSCALING,
            "node_idle_timeout_s": NODE_IDLE_TIMEOUT_S,
            "spike_clients": SPIKE_CLIENTS,
            "samples": run.samples,
            "requests": [asdict(o) for o in run.outcomes],
            "cluster_metric_names": sorted(run.cluster_metric_names),
        }
        (options.out / "timeline.json").write_text(json.dumps(timeline, indent=1))
        if run.samples:
            plot(timeline, options.out / "timeline.png")
    failed = [o for o in run.outcomes if o.status != 200]
    print(f"==> {len(run.outcomes)} requests, {len(failed)} failed; timeline in {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
