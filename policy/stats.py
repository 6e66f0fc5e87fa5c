"""Precision and recall with 95% intervals, on a sample and re-weighted to the traffic mix."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959964


def wilson(hits: int, total: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (well-behaved near 0 and 1, unlike p ± 2se)."""
    if total == 0:
        return (math.nan, math.nan)
    p = hits / total
    centre = (p + Z95**2 / (2 * total)) / (1 + Z95**2 / total)
    half = Z95 * math.sqrt(p * (1 - p) / total + Z95**2 / (4 * total**2)) / (1 + Z95**2 / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Scored:
    label: bool
    said: bool
    weight: float = 1.0  # how many turns of the traffic mix this sampled turn stands for
    stratum: str = ""


@dataclass(frozen=True)
class Report:
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float
    precision_ci: tuple[float, float]
    recall: float
    recall_ci: tuple[float, float]


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def sample_report(rows: Sequence[Scored]) -> Report:
    tp = sum(r.label and r.said for r in rows)
    fp = sum(r.said and not r.label for r in rows)
    fn = sum(r.label and not r.said for r in rows)
    tn = len(rows) - tp - fp - fn
    return Report(
        tp,
        fp,
        fn,
        tn,
        _ratio(tp, tp + fp),
        wilson(tp, tp + fp),
        _ratio(tp, tp + fn),
        wilson(tp, tp + fn),
    )


def _weighted(rows: Sequence[Scored]) -> tuple[float, float]:
    tp = sum(r.weight for r in rows if r.label and r.said)
    return (
        _ratio(tp, sum(r.weight for r in rows if r.said)),
        _ratio(tp, sum(r.weight for r in rows if r.label)),
    )


def weighted_report(rows: Sequence[Scored], rounds: int = 2000, seed: int = 0) -> Report:
    """Precision and recall with every row counted `weight` times, and 95% intervals from a
    stratified bootstrap (each stratum resampled with its own size, seeded)."""
    precision, recall = _weighted(rows)
    by_stratum: dict[str, list[Scored]] = defaultdict(list)
    for row in rows:
        by_stratum[row.stratum].append(row)
    rng = random.Random(seed)
    precisions, recalls = [], []
    for _ in range(rounds):
        resample = [rng.choice(group) for group in by_stratum.values() for _ in group]
        p, r = _weighted(resample)
        precisions.append(p)
        recalls.append(r)
    counts = sample_report(rows)
    return Report(
        counts.tp,
        counts.fp,
        counts.fn,
        counts.tn,
        precision,
        _percentiles(precisions),
        recall,
        _percentiles(recalls),
    )


def _percentiles(values: list[float]) -> tuple[float, float]:
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return (math.nan, math.nan)
    return (values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))])
