"""Raw samples -> the run's figures, under vLLM `bench serve`'s key names (`p99_ttft_ms`,
`median_tpot_ms`, `output_throughput`, `request_goodput` ...). Percentiles come from the raw
samples, not from Locust's rounded statistics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from loadtest.slo import RequestTargets
from loadtest.stream import Sample

PERCENTILES = (50, 90, 95, 99)


def distribution(name: str, values: Sequence[float]) -> dict[str, float | None]:
    """mean/median/std and the percentiles of one metric, in ms; None when there is no value."""
    array = np.asarray(values, dtype=float)
    stats: dict[str, float | None] = {}
    for label, fn in (("mean", np.mean), ("median", np.median), ("std", np.std)):
        stats[f"{label}_{name}_ms"] = float(fn(array)) if array.size else None
    for p in PERCENTILES:
        stats[f"p{p}_{name}_ms"] = float(np.percentile(array, p)) if array.size else None
    return stats


def summarize(
    samples: Sequence[Sample], duration_s: float, goodput: RequestTargets
) -> dict[str, Any]:
    """The whole run, then each workload kind; throughputs divide by the run's wall clock."""
    ok = [s for s in samples if s.ok]
    output_tokens = sum(s.output_tokens or 0 for s in ok)
    input_tokens = sum(s.prompt_tokens or 0 for s in ok)
    judged = goodput != RequestTargets()
    good = sum(goodput.met_by(s) for s in samples) if judged else None
    summary: dict[str, Any] = {
        "duration": duration_s,
        "completed": len(ok),
        "failed": len(samples) - len(ok),
        "error_rate": (len(samples) - len(ok)) / len(samples) if samples else None,
        "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "request_throughput": len(ok) / duration_s,
        "request_goodput": good / duration_s if good is not None else None,
        "goodput_ratio": good / len(samples) if good is not None and samples else None,
        "output_throughput": output_tokens / duration_s,
        "total_token_throughput": (input_tokens + output_tokens) / duration_s,
        **_latencies(ok),
        "errors": dict(Counter(s.error for s in samples if not s.ok).most_common()),
        "prompt_policy": dict(Counter(_policy(s.prompt_policy) for s in ok).most_common()),
    }
    summary["by_workload"] = {
        kind: {
            "completed": sum(s.ok for s in group),
            "failed": sum(not s.ok for s in group),
            **_latencies([s for s in group if s.ok]),
        }
        for kind, group in _grouped(samples).items()
    }
    return summary


def _latencies(ok: Sequence[Sample]) -> dict[str, float | None]:
    return {
        **distribution("ttft", [s.ttft_ms for s in ok if s.ttft_ms is not None]),
        **distribution("tpot", [s.tpot_ms for s in ok if s.tpot_ms is not None]),
        **distribution("itl", [gap for s in ok for gap in s.itl_ms]),
        **distribution("e2el", [s.e2e_ms for s in ok if s.e2e_ms is not None]),
    }


def _grouped(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.workload, []).append(sample)
    return dict(sorted(groups.items()))


def _policy(header: str | None) -> str:
    """`X-Prompt-Policy` without its reason: what the router did (e.g. `step-by-step`)."""
    return (header or "absent").split(";")[0].strip()
