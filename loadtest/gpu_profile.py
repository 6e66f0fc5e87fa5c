"""Replica profiles for the capacity planner (`loadtest.capacity --profile`), derived from
measured GPU step times instead of typed-in estimates.

    python -m loadtest.gpu_profile          print the derived latency tables
    python -m loadtest.gpu_profile write    rewrite loadtest/planning/<group>.yaml
    python -m loadtest.gpu_profile check    exit 1 if a committed profile is stale

The measurements (`loadtest/planning/measured/`, one H200's share of a Qwen2.5-72B step) give
the decode step by batch and context and the prefill time per prompt token at TP 2, 4 and 8.
A replica's step at concurrency c adds, each from its source:

- decode: the measured step for c sequences at the mean context (prompt + half the output),
  interpolated in batch and context, scaled to the group's GPU (`GPU_SCALE`, from the
  measurements' notes: an H100 has ~0.7x an H200's memory bandwidth, so decode x1.4 and
  prefill x1.0; an A100 80GB ~0.4x of both, x2.4);
- all-reduces: 2 per layer x 80 layers per step, ~19 us each over NVLink (the notes' "about
  2-4 ms per step at TP 4", taken at its middle; the same per operation at other TP sizes);
- scheduling: 1 ms (the notes' 1-3 ms for scheduling and sampling, less sampling);
- sampling: measured over the 152k vocabulary by batch (top-k first, as vLLM samples with
  Athene's top_k 20), scaled like decode;
- prefill sharing the steps (chunked prefill): in steady state every request brings `PROMPT`
  prompt tokens per `OUTPUT` output tokens, so each step also prefills c x PROMPT/OUTPUT
  tokens at the measured per-token cost of a 2048-token chunk.

TPOT(c) is that step. TTFT(c) is the new prompt's prefill, plus the step it joins, plus the
stack's hops (`STACK_S`). Queueing past `max_ongoing_requests` is the planner's own part.
"""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from loadtest.capacity import ReplicaProfile

PLANNING = Path(__file__).parent / "planning"
MEASURED = PLANNING / "measured"

GPU_SCALE = {"H200": (1.0, 1.0), "H100": (1.4, 1.0), "A100": (2.4, 2.4)}  # (decode, prefill)
ALLREDUCES_PER_STEP = 2 * 80
ALLREDUCE_MS = 3.0 / ALLREDUCES_PER_STEP
SCHEDULER_MS = 1.0
PROMPT = 1000  # chat prompts of ~500-1500 tokens (the planner's traffic)
OUTPUT = 256  # business-day.yaml's mean output
STACK_S = 0.010  # the router and proxy hops at TTFT (make bench: within ~10 ms of vLLM's own)
CONCURRENCY = (1, 8, 16, 24, 32, 40, 48, 56, 64, 96, 128)


@dataclass(frozen=True)
class Group:
    """A serve_config.yaml node group and what its nodes take to come up (still estimates:
    no cluster has been timed)."""

    name: str
    gpu: str
    tp: int
    node_startup_s: float
    replica_startup_s: float
    min_nodes: int
    max_nodes: int
    note: str


GROUPS = (
    Group(
        "h100-tp4",
        "H100",
        4,
        480,
        360,
        1,
        2,
        "8 x H100-80GB SXM nodes, two TP-4 replicas each (k8s worker group h100-tp4: 1-2 nodes)",
    ),
    Group(
        "a100-tp8",
        "A100",
        8,
        480,
        480,
        1,
        3,
        "8 x A100-80GB nodes, one TP-8 replica each (k8s worker group a100-tp8: 1-3 nodes, "
        "shared with a100-tp8-128k)",
    ),
)


def _measured() -> tuple[dict, dict]:
    shard = json.loads((MEASURED / "h200-qwen72b-shard.json").read_text())
    sampling = json.loads((MEASURED / "h200-sampling.json").read_text())
    return shard, sampling


def _interpolate(points: list[tuple[float, float]], x: float) -> float:
    """Linear between measured points, extended along the last segment past the ends."""
    points = sorted(points)
    if x <= points[0][0]:
        (x0, y0), (x1, y1) = points[0], points[1]
    else:
        pairs = list(itertools.pairwise(points))
        (x0, y0), (x1, y1) = next(((a, b) for a, b in pairs if x <= b[0]), pairs[-1])
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def decode_ms(shard: dict, tp: int, batch: float, context: float) -> float:
    """The measured decode step at `tp`, interpolated in batch, then in context."""
    by_context: dict[int, list[tuple[float, float]]] = {}
    for row in shard["decode"]:
        if row["tp"] == tp:
            by_context.setdefault(row["context"], []).append((row["batch"], row["step_ms"]))
    return _interpolate(
        [(ctx, _interpolate(rows, batch)) for ctx, rows in by_context.items()], context
    )


def prefill_ms_per_token(shard: dict, tp: int) -> float:
    (row,) = [r for r in shard["prefill"] if r["tp"] == tp and r["tokens"] == 2048]
    return row["prefill_ms"] / row["tokens"]


def sampling_ms(sampling: dict, batch: float) -> float:
    return _interpolate([(r["batch"], r["topk_first_ms"]) for r in sampling["rows"]], batch)


def latency_table(group: Group) -> list[dict[str, float]]:
    shard, sampling = _measured()
    decode_scale, prefill_scale = GPU_SCALE[group.gpu]
    per_token = prefill_ms_per_token(shard, group.tp) * prefill_scale
    context = PROMPT + OUTPUT / 2
    table = []
    for c in CONCURRENCY:
        step = (
            decode_ms(shard, group.tp, c, context) * decode_scale
            + ALLREDUCES_PER_STEP * ALLREDUCE_MS
            + SCHEDULER_MS
            + sampling_ms(sampling, c) * decode_scale
            + c * PROMPT / OUTPUT * per_token
        )
        ttft_s = (PROMPT * per_token + step) / 1000 + STACK_S
        table.append(
            {"concurrency": c, "ttft_s": round(ttft_s, 3), "tpot_s": round(step / 1000, 4)}
        )
    return table


HEADER = """\
# GENERATED by `python -m loadtest.gpu_profile write` from the measured GPU step times in
# loadtest/planning/measured/ (one H200's share of a Qwen2.5-72B step); do not edit: change
# loadtest/gpu_profile.py and regenerate (tests/test_capacity.py fails when this drifts).
#
# Replica profile for `python -m loadtest.capacity`: one Athene-V2-Chat-72B replica (BF16,
# vLLM, TP {tp}) of serve_config.yaml's {name} group on {note}.
#
# latency (derived, each term's source in loadtest/gpu_profile.py): TPOT is the decode step of
# c sequences at {context} tokens of context, measured on an H200 at TP {tp} and scaled to the
# {gpu} (decode x{decode_scale}, prefill x{prefill_scale}), + {allreduce:.1f} ms of all-reduces + {scheduler:.1f} ms of
# scheduling + measured sampling + chunked prefill sharing the steps ({prompt}-token prompts per
# {output} output tokens). TTFT is the prompt's prefill + the step it joins + {stack:.0f} ms of hops.
# node_startup_s and replica_startup_s are still estimates (no cluster has been timed).
"""


def render(group: Group) -> str:
    decode_scale, prefill_scale = GPU_SCALE[group.gpu]
    profile = ReplicaProfile(
        description=f"{group.gpu} TP{group.tp}, Athene-V2-Chat-72B BF16 - latency derived "
        "from measured H200 step times",
        gpus_per_node=8,
        node_startup_s=group.node_startup_s,
        replica_startup_s=group.replica_startup_s,
        node_idle_timeout_s=600,
        min_nodes=group.min_nodes,
        max_nodes=group.max_nodes,
        latency=latency_table(group),
    )
    header = HEADER.format(
        tp=group.tp,
        name=group.name,
        note=group.note,
        context=int(PROMPT + OUTPUT / 2),
        gpu=group.gpu,
        decode_scale=decode_scale,
        prefill_scale=prefill_scale,
        allreduce=ALLREDUCES_PER_STEP * ALLREDUCE_MS,
        scheduler=SCHEDULER_MS,
        prompt=PROMPT,
        output=OUTPUT,
        stack=STACK_S * 1000,
    )
    body = yaml.safe_dump(profile.model_dump(), sort_keys=False, width=100)
    return header + body


def path_of(group: Group) -> Path:
    return PLANNING / f"{group.name}.yaml"


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "print"
    if command == "write":
        for group in GROUPS:
            path_of(group).write_text(render(group))
            print(f"==> wrote {path_of(group).relative_to(PLANNING.parent.parent)}")
        return 0
    if command == "check":
        stale = [g.name for g in GROUPS if path_of(g).read_text() != render(g)]
        for name in stale:
            print(f"{name}: stale, run `python -m loadtest.gpu_profile write`", file=sys.stderr)
        return 1 if stale else 0
    for group in GROUPS:
        print(f"{group.name} ({group.gpu} TP {group.tp}):")
        for row in latency_table(group):
            print(
                f"  c={row['concurrency']:>3}  TTFT {row['ttft_s'] * 1000:6.1f} ms  "
                f"TPOT {row['tpot_s'] * 1000:5.1f} ms"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
