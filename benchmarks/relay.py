"""`make bench-relay`: what relaying tokens at GPU rates costs the graph's hops.

On this machine the engine is the bottleneck (tens of tokens/s), so the router and Serve's
proxy never see the rates a GPU replica streams (thousands of tokens/s). Here a **stand-in
engine** takes the GPU engine's place, in this benchmark only: an engine deployment that
streams deltas on a schedule, S streams at T ms per token, as a TP replica's steps would
(every stream gets a token each step). The real router and Serve's proxy relay them, as in
production, to a light client (asyncio sockets, no HTTP library) that timestamps each event.

For rising rates it reports: tokens/s delivered; CPU-seconds per 1,000 tokens in the proxy,
router and stand-in processes (psutil); the latency each token picked up on the way (client
arrival - the stand-in's send time, written into the token: p50 / p99), the added
inter-token latency (the gap between a stream's tokens at the client minus T: p50 / p99);
and the TTFT the hops add (first token at the client - its send time).

    python -m benchmarks.relay [--streams 16 64 128] [--step-ms 20] [--seconds 10]
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
from ray import serve

from loadtest.local_stack import cpu_app_args
from serve_app.app import router_deployment
from serve_app.config import parse_app_config
from serve_app.engine_api import EngineChunk, EngineRequest
from serve_app.serve_env import SERVE_ENV

MODEL = "athene-v2-chat"


class StandInEngine:
    """The GPU engine's stand-in (this benchmark only): every request gets a token each
    `step_ms`, as a replica stepping all its sequences at once; each token's text is its send
    time, so the client can measure what the hops added."""

    def __init__(self, step_ms: float) -> None:
        self.step_s = step_ms / 1000

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineChunk]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for k in range(request.max_tokens):
            await asyncio.sleep(max(0.0, start + k * self.step_s - loop.time()))
            last = k == request.max_tokens - 1
            yield EngineChunk(0, f"{time.time():.6f} ", 1, "length" if last else None, None)

    def num_unfinished_requests(self) -> int:
        return 0


async def stream(port: int, max_tokens: int) -> list[tuple[float, float]]:
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
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
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


def processes() -> dict[str, psutil.Process]:
    """The proxy, the router replica and the stand-in's replica, by role."""
    wanted = {
        "proxy": "ProxyActor",
        "router": "ServeReplica:relay:router",
        "engine": "ServeReplica:relay:cpu",
    }
    found: dict[str, psutil.Process] = {}
    for process in psutil.process_iter(["cmdline"]):
        title = " ".join(process.info["cmdline"] or ())
        for role, marker in wanted.items():
            if marker in title:
                found[role] = process
    return found


def cpu_seconds(found: dict[str, psutil.Process]) -> dict[str, float]:
    return {role: sum(p.cpu_times()[:2]) for role, p in found.items()}


async def level(port: int, streams: int, step_ms: float, seconds: float) -> dict[str, Any]:
    max_tokens = int(seconds * 1000 / step_ms)
    found = processes()
    before, started = cpu_seconds(found), time.perf_counter()
    results = await asyncio.gather(*(stream(port, max_tokens) for _ in range(streams)))
    elapsed = time.perf_counter() - started
    used = {role: seconds - before[role] for role, seconds in cpu_seconds(found).items()}
    delivered = sum(len(tokens) for tokens in results)
    latency = [arrived - sent for tokens in results for sent, arrived in tokens]
    gaps = [
        (b[1] - a[1]) * 1000 - step_ms for tokens in results for a, b in itertools.pairwise(tokens)
    ]
    first = [tokens[0][1] - tokens[0][0] for tokens in results if tokens]

    def pct(values: list[float], share: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    return {
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
    args = parser.parse_args()

    from loadtest.local_stack import free_port

    os.environ.update(SERVE_ENV)

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        config = parse_app_config(
            {**cpu_app_args(), "router": {"num_replicas": 1, "max_ongoing_requests": 4096}}
        )
        engine = serve.deployment(StandInEngine, name="cpu", max_ongoing_requests=4096)
        serve.run(
            router_deployment(config).bind(config, {"cpu": engine.bind(args.step_ms)}),
            name="relay",
            route_prefix="/",
        )
        rows = [
            asyncio.run(level(port, streams, args.step_ms, args.seconds))
            for streams in args.streams
        ]
    finally:
        serve.shutdown()
        ray.shutdown()
    print(
        "| streams | offered tok/s | delivered tok/s | CPU ms / 1k tok: proxy, router, stand-in "
        "| hop latency p50 / p99 ms | added ITL p50 / p99 ms | hop TTFT ms |"
    )
    print("| ---: | ---: | ---: | --- | --- | --- | ---: |")
    for r in rows:
        cpu = r["cpu_ms_per_1000"]
        print(
            f"| {r['streams']} | {r['offered_tokens_s']:.0f} | {r['tokens_s']:.0f} | "
            f"{cpu.get('proxy', 0):.0f}, {cpu.get('router', 0):.0f}, {cpu.get('engine', 0):.0f} | "
            f"{r['hop_latency_ms'][0]:.1f} / {r['hop_latency_ms'][1]:.1f} | "
            f"{r['added_itl_ms'][0]:.1f} / {r['added_itl_ms'][1]:.1f} | {r['hop_ttft_ms']:.1f} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
