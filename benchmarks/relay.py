"""`make bench-relay`: what relaying tokens at GPU rates costs the graph's hops.

On this machine the engine is the bottleneck (tens of tokens/s), so the router and Serve's
proxy never see the rates a GPU replica streams (thousands of tokens/s). Here a **stand-in
engine** takes the GPU engine's place, in this benchmark only: an engine deployment that
streams deltas on a schedule, S streams at T ms per token, as a TP replica's steps would
(every stream gets a token each step). The real router relays them to a light client
(asyncio sockets, no HTTP library) that timestamps each event; the stand-in sends its chunks
as the engine replica does, through the router's chunk channel (serve_app.chunk_channel).
The graphs, side by side at each rate: `direct`, the router reached at its replica's own
port (Serve's direct ingress: the way in on Kubernetes); `router`, the same router through
Serve's proxy (the way in of `serve run`'s :8000); `per-message`, that with the channel off
(one Serve message per chunk); the floor, Serve's per-message hops with a pass-through
ingress in the router's place (Serve's own cost per token).

For rising rates it reports, per graph: tokens/s delivered; CPU-seconds per 1,000 tokens in
the proxy, ingress (router or pass-through) and stand-in processes (psutil); the latency each
token picked up on the way (client arrival - the time the stand-in's step made it, written
into the token: p50 / p99), the added inter-token latency (the gap between a stream's tokens
at the client minus T: p50 / p99); and the TTFT the hops add.

    python -m benchmarks.relay [--streams 16 64 128] [--step-ms 20] [--seconds 10]
                              [--graphs router per-message floor direct]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import psutil
import ray
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from loadtest.local_stack import cpu_app_args
from serve_app.app import router_deployment
from serve_app.chunk_channel import ChannelOpen, ChannelServer
from serve_app.config import parse_app_config
from serve_app.engine_api import EngineChunk, EngineRequest
from serve_app.serve_env import SERVE_ENV

MODEL = "athene-v2-chat"


class StandInEngine:
    """The GPU engine's stand-in (this benchmark only): every request gets a token each
    `step_ms`, as a replica stepping all its sequences at once. The tokens its steps made
    since it was last read go out as one chunk, as vLLM's output collector merges the deltas
    its reader has not taken yet; each token's text is the time its step made it, so the
    client can measure what the hops added."""

    def __init__(self, step_ms: float) -> None:
        self.step_s = step_ms / 1000
        self.channel = ChannelServer("127.0.0.1")

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineChunk | ChannelOpen]:
        """As the engine replica's: the chunks yielded, or through the router's channel."""
        async for item in self.channel.stream(request, self._steps(request)):
            yield item

    async def _steps(self, request: EngineRequest) -> AsyncIterator[EngineChunk]:
        loop = asyncio.get_running_loop()
        start, wall, most = loop.time(), time.time(), request.max_tokens
        sent = 0
        while sent < most:
            due = min(most, int((loop.time() - start) / self.step_s) + 1)
            if due == sent:
                await asyncio.sleep(start + sent * self.step_s - loop.time())
                continue
            text = "".join(f"{wall + k * self.step_s:.6f} " for k in range(sent, due))
            yield EngineChunk(0, text, due - sent, "length" if due == most else None, None)
            sent = due

    def num_unfinished_requests(self) -> int:
        return 0


floor_api = FastAPI()


@serve.ingress(floor_api)
class PassThrough:
    """The floor: Serve's same two hops (stand-in -> ingress replica -> proxy) with none of
    the router's work, each chunk relayed as a minimal SSE event. What it costs per token is
    Serve's, not this project's."""

    def __init__(self, engine: DeploymentHandle) -> None:
        self.engine = engine.options(stream=True)

    @floor_api.post("/v1/chat/completions")
    async def chat(self, request: Request) -> StreamingResponse:
        most = (await request.json())["max_tokens"]
        chunks = self.engine.generate.remote(EngineRequest("floor", [0], most, stream=True))

        async def events() -> AsyncIterator[str]:
            async for chunk in chunks:
                yield f'data: {{"choices":[{{"delta":{{"content":{json.dumps(chunk.text)}}}}}]}}\n\n'
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


async def stream(port: int, prefix: str, max_tokens: int) -> list[tuple[float, float]]:
    """One streamed chat request over a raw socket: (send time, arrival time) per token."""
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "go"}],
            "max_tokens": max_tokens,
            "stream": True,
            "step_by_step": "off",
        }
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {prefix}/v1/chat/completions HTTP/1.1\r\nHost: bench\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    tokens: list[tuple[float, float]] = []
    while line := await reader.readline():
        if line.startswith(b"data: {"):
            arrived = time.time()
            event = json.loads(line[6:])
            for choice in event.get("choices", ()):
                for sent in (choice["delta"].get("content") or "").split():
                    tokens.append((float(sent), arrived))
    writer.close()
    return tokens


# The graphs measured side by side: (Serve application, route prefix, ingress deployment).
# `direct` is the router application reached at its replica's own HTTP port (Serve's direct
# ingress, the way in on Kubernetes); `router` is the same app through Serve's proxy.
GRAPHS = {
    "router": ("router", "", "router"),
    "per-message": ("per-message", "/per-message", "router"),
    "floor": ("floor", "/floor", "PassThrough"),
    "direct": ("router", "", "router"),
}


def processes(graph: str) -> dict[str, psutil.Process]:
    """The proxy, the graph's ingress replica and its stand-in's replica, by role."""
    app, _, ingress = GRAPHS[graph]
    wanted = {
        "proxy": "ProxyActor",
        "ingress": f"ServeReplica:{app}:{ingress}",
        "engine": f"ServeReplica:{app}:cpu",
    }
    if graph == "direct":
        del wanted["proxy"]
    found: dict[str, psutil.Process] = {}
    for process in psutil.process_iter(["cmdline"]):
        title = " ".join(process.info["cmdline"] or ())
        for role, marker in wanted.items():
            if marker in title:
                found[role] = process
    return found


def cpu_seconds(found: dict[str, psutil.Process]) -> dict[str, float]:
    return {role: sum(p.cpu_times()[:2]) for role, p in found.items()}


async def level(
    port: int, graph: str, streams: int, step_ms: float, seconds: float
) -> dict[str, Any]:
    max_tokens = int(seconds * 1000 / step_ms)
    found = processes(graph)
    before, started = cpu_seconds(found), time.perf_counter()
    results = await asyncio.gather(
        *(stream(port, GRAPHS[graph][1], max_tokens) for _ in range(streams))
    )
    elapsed = time.perf_counter() - started
    used = {role: seconds - before[role] for role, seconds in cpu_seconds(found).items()}
    delivered = sum(len(tokens) for tokens in results)
    latency = [arrived - sent for tokens in results for sent, arrived in tokens]
    # Between a stream's tokens at the client, over the stand-in's step: merged tokens
    # arrive together (gap 0), so p50 sits at -step_ms once the hops fall behind.
    gaps = [
        (b[1] - a[1]) * 1000 - step_ms for tokens in results for a, b in itertools.pairwise(tokens)
    ]
    first = [tokens[0][1] - tokens[0][0] for tokens in results if tokens]

    def pct(values: list[float], share: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    return {
        "graph": graph,
        "streams": streams,
        "step_ms": step_ms,
        "offered_tokens_s": streams * 1000 / step_ms,
        "tokens_s": delivered / elapsed,
        "cpu_ms_per_1000": {r: 1e6 * s / max(delivered, 1) for r, s in used.items()},
        "hop_latency_ms": (1000 * statistics.median(latency), 1000 * pct(latency, 0.99)),
        "added_itl_ms": (statistics.median(gaps), pct(gaps, 0.99)),
        "hop_ttft_ms": 1000 * statistics.median(first),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[16, 64, 128, 256])
    parser.add_argument("--step-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--graphs", nargs="+", choices=tuple(GRAPHS), default=list(GRAPHS))
    parser.add_argument(
        "--serve-env",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="Serve settings over serve_app.serve_env's, to measure a lever against a run without",
    )
    args = parser.parse_args()

    from loadtest.local_stack import direct_ingress_env, free_port, router_port

    os.environ.update(SERVE_ENV | direct_ingress_env())
    os.environ.update(setting.split("=", 1) for setting in args.serve_env)

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        # No logical CPU: Ray's two here would not hold the graphs' four replicas.
        light = {"max_ongoing_requests": 4096, "ray_actor_options": {"num_cpus": 0}}
        engine = serve.deployment(StandInEngine, name="cpu", **light)
        router = {"num_replicas": 1, "max_ongoing_requests": 4096}
        config = parse_app_config({**cpu_app_args(), "router": router})
        per_message = parse_app_config(
            {**cpu_app_args(), "router": {**router, "chunk_channel": False}}
        )
        apps = {
            "router": router_deployment(config).bind(config, {"cpu": engine.bind(args.step_ms)}),
            "per-message": router_deployment(per_message).bind(
                per_message, {"cpu": engine.bind(args.step_ms)}
            ),
            "floor": serve.deployment(PassThrough, **light).bind(engine.bind(args.step_ms)),
        }
        for app in {GRAPHS[graph][0] for graph in args.graphs}:
            serve.run(apps[app], name=app, route_prefix=GRAPHS[app][1] or "/")
        # `direct` goes to the router replica's own port, the others through the proxy.
        ports = {g: router_port(GRAPHS[g][0]) if g == "direct" else port for g in args.graphs}
        # Side by side: at each rate, one graph after the other.
        rows = [
            asyncio.run(level(ports[graph], graph, streams, args.step_ms, args.seconds))
            for streams in args.streams
            for graph in args.graphs
        ]
    finally:
        serve.shutdown()
        ray.shutdown()
    print(
        "| streams | graph | offered tok/s | delivered tok/s | CPU ms / 1k tok: proxy, "
        "ingress, stand-in | hop latency p50 / p99 ms | added ITL p50 / p99 ms | hop TTFT ms |"
    )
    print("| ---: | --- | ---: | ---: | --- | --- | --- | ---: |")
    for r in rows:
        cpu = r["cpu_ms_per_1000"]
        print(
            f"| {r['streams']} | {r['graph']} | {r['offered_tokens_s']:.0f} | "
            f"{r['tokens_s']:.0f} | {cpu.get('proxy', 0):.0f}, {cpu.get('ingress', 0):.0f}, "
            f"{cpu.get('engine', 0):.0f} | "
            f"{r['hop_latency_ms'][0]:.1f} / {r['hop_latency_ms'][1]:.1f} | "
            f"{r['added_itl_ms'][0]:.1f} / {r['added_itl_ms'][1]:.1f} | {r['hop_ttft_ms']:.1f} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
