"""`make bench-routing`: Serve's default request router against the cache-aware one
(serve_app/cache_router.py), side by side in one run, on the ShareGPT replay.

Three phases, each on a fresh Ray with the CPU config's engine (so every phase starts with
cold caches): one engine replica (the hit rate a single cache reaches: the reference), then
two replicas with Serve's default router, then two with the cache-aware one. Every phase
replays the same conversations (`loadtest/workloads/sharegpt.yaml`: real ShareGPT turns, the
real earlier answers as history) from the same simulated users, each conversation with its
own `user` (the session key). Reported per phase: vLLM's prefix-cache hit rate (hit tokens
over queried tokens, from the engines' metrics), TTFT p50 / p95 at the client, and the
requests each replica served (Serve's per-replica counter).

    python -m benchmarks.routing [--users 4] [--conversations 5] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import random
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from loadtest.local_stack import cpu_app_args, local_stack
from loadtest.workload import PromptBank, Workload

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench-results"
PHASES = (
    ("one replica", 1, "power_of_two"),
    ("default", 2, "power_of_two"),
    ("cache-aware", 2, "cache_aware"),
)


def app_args(replicas: int, router: str) -> dict[str, Any]:
    args = cpu_app_args()
    (group,) = args["node_groups"]
    group = copy.deepcopy(group)
    group["autoscaling_config"] = {"min_replicas": replicas, "max_replicas": replicas}
    group["request_router"] = router
    args["node_groups"] = [group]
    return args


async def replay(base_url: str, args: argparse.Namespace) -> list[float]:
    """Every user plays its conversations in turn; the TTFT of every request, in seconds."""
    workload = Workload.load("sharegpt")
    bank = PromptBank()
    model = httpx.get(f"{base_url}/v1/models", timeout=30).json()["data"][0]["id"]
    ttfts: list[float] = []

    async def user(number: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(f"{args.seed}:{number}")
        for index in range(args.conversations):
            conversation = workload.start(rng, bank)
            while True:
                body = conversation.request(model)
                body.update(max_tokens=args.max_tokens, ignore_eos=True)
                body["user"] = f"user-{number}-{index}"
                started = time.perf_counter()
                first = None
                async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
                    reply.raise_for_status()
                    async for line in reply.aiter_lines():
                        if first is None and line.startswith("data: {"):
                            choices = json.loads(line.removeprefix("data: "))["choices"]
                            if choices and choices[0]["delta"].get("content"):
                                first = time.perf_counter() - started
                ttfts.append(first if first is not None else time.perf_counter() - started)
                if not conversation.reply(""):
                    break
                await asyncio.sleep(rng.expovariate(1 / args.think_s))

    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        await asyncio.gather(*(user(n, client) for n in range(args.users)))
    return ttfts


def engine_counts(metrics_url: str) -> tuple[float, float, dict[str, float]]:
    """(prefix-cache hit tokens, queried tokens, requests per engine replica)."""
    from prometheus_client.parser import text_string_to_metric_families

    hits = queries = 0.0
    per_replica: dict[str, float] = {}
    text = httpx.get(metrics_url, timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ray_vllm_prefix_cache_hits_total":
                hits += sample.value
            elif sample.name == "ray_vllm_prefix_cache_queries_total":
                queries += sample.value
            elif (
                sample.name == "ray_serve_deployment_request_counter_total"
                and sample.labels.get("deployment") == "cpu"
            ):
                replica = sample.labels["replica"]
                per_replica[replica] = per_replica.get(replica, 0) + sample.value
    return hits, queries, per_replica


def settled_counts(metrics_url: str, requests: int) -> tuple[float, float, dict[str, float]]:
    """The counts once every request reached the metrics (they are reported each second)."""
    deadline = time.monotonic() + 60
    while True:
        counts = engine_counts(metrics_url)
        if sum(counts[2].values()) >= requests or time.monotonic() > deadline:
            return counts
        time.sleep(1)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--conversations", type=int, default=5, help="per user")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--think-s", type=float, default=1.0, help="mean pause between turns")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for name, replicas, router in PHASES:
        print(f"==> {name}: {replicas} engine replica(s), request_router {router}", flush=True)
        with local_stack(app_args(replicas, router)) as (base_url, metrics_url):
            ttfts = asyncio.run(replay(base_url, args))
            hits, queries, per_replica = settled_counts(metrics_url, len(ttfts))
        served = sorted(per_replica.values())
        row = {
            "phase": name,
            "requests": len(ttfts),
            "hit_rate": hits / queries if queries else 0.0,
            "ttft_p50_ms": 1000 * statistics.median(ttfts),
            "ttft_p95_ms": 1000 * percentile(ttfts, 0.95),
            "per_replica": served,
            "spread": served[-1] / served[0] if served and served[0] else float("inf"),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    one, default, aware = rows
    lines = [
        "| phase | requests | prefix-cache hit rate | TTFT p50 ms | TTFT p95 ms | requests per replica |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
        *(
            f"| {r['phase']} | {r['requests']} | {r['hit_rate']:.3f} | {r['ttft_p50_ms']:.1f} | "
            f"{r['ttft_p95_ms']:.1f} | {' / '.join(f'{n:.0f}' for n in r['per_replica'])} |"
            for r in rows
        ),
        "",
        f"- hit rate, cache-aware / one replica: {aware['hit_rate'] / one['hit_rate']:.3f} "
        f"(target >= 0.9); default / one replica: {default['hit_rate'] / one['hit_rate']:.3f}",
        f"- TTFT p50, cache-aware / default: {aware['ttft_p50_ms'] / default['ttft_p50_ms']:.3f} "
        "(target < 1)",
        f"- requests per replica, most / fewest: cache-aware {aware['spread']:.2f}, default "
        f"{default['spread']:.2f} (target <= 1.3)",
    ]
    text = "\n".join(lines)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"routing-{stamp}"
    out.mkdir(parents=True)
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    print(text)
    print(f"==> {out / 'results.json'}")


if __name__ == "__main__":
    main()
