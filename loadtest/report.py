"""One run folder -> `report.html`: a single self-contained page (plots inlined as PNG) that
says at a glance whether the run met its SLOs, and shows how latency, throughput and errors
moved during it. `python -m loadtest.report RUN_DIR` redraws it from the saved files."""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

# The Agg canvas with the object API, no pyplot: no GUI, no global figure registry, nothing
# to close, and the Locust process's matplotlib state is left alone.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patheffects import withStroke
from matplotlib.ticker import MaxNLocator

Row = dict[str, Any]

# Workload classes keep one colour in every plot; red and grey are kept for SLOs and axes.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
SLO_COLOUR, SECONDARY_COLOUR = "#d62728", "#555555"
ROLLING = {"color": "black", "lw": 2, "path_effects": [withStroke(linewidth=4, foreground="w")]}
STYLE = {
    "font.size": 11,
    "axes.titlesize": 13,
    "axes.titleweight": "bold",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "legend.fontsize": 9,
    "savefig.dpi": 100,
}
FIGSIZE = (10, 4)
MAX_ERROR_KINDS = 7  # more distinct messages than this are stacked as "other"
MAX_SPAN_S = 2 * 86400  # a stray timestamp (0, a typo) must not stretch the time axes to 1970


def _num(value: Any) -> float | None:
    """A finite number or None: the files may hold nulls, and a crashed run odd values."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _read_jsonl(path: Path, unused: str = "") -> list[Row]:
    """The objects of a JSON-lines file, less an `unused` key (the ITL lists of a long run are
    large); a run killed mid-write leaves a torn last line, skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            row.pop(unused, None)
            rows.append(row)
    return rows


def _read_summary(path: Path) -> Row:
    try:
        return _dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _dict(value: Any) -> Row:
    """A mapping from the summary, or an empty one when the key is missing or malformed."""
    return value if isinstance(value, dict) else {}


def _gate_list(slo: Row) -> list[Row]:
    gates = slo.get("gates")
    return [gate for gate in gates if isinstance(gate, dict)] if isinstance(gates, list) else []


def _mpl(text: str, limit: int = 60) -> str:
    """Data text safe as a matplotlib label: `$` would start mathtext, `_x` hides a legend."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$").lstrip("_") or "?"


def _png(fig: Figure, alt: str) -> str:
    """The figure as an inline `<img>`, so the page needs no side files."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _figure(title: str) -> tuple[Figure, Any]:
    fig = Figure(figsize=FIGSIZE, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    return fig, ax


def _empty(ax: Any, message: str, keep_x: bool = False) -> None:
    """Say why a plot is blank rather than leave a bare frame."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_yticks([])
    if not keep_x:
        ax.set_xticks([])


def _legend(fig: Figure, *axes: Any) -> None:
    """One legend for all axes, under the plot: it never hides data, and the time plots keep
    the same width so their x axes line up down the page."""
    handles, labels = [], []
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    if handles:
        column_px = 6 * max(map(len, labels)) + 40  # ~6 px a character at 9 pt
        ncols = max(1, min(len(handles), 4, 900 // column_px))
        legend = fig.legend(handles, labels, loc="outside lower center", ncols=ncols, markerscale=2)
        for handle in legend.legend_handles:  # faint scatter dots still need a readable key
            handle.set_alpha(1)


def _threshold(summary: Row, metric: str) -> tuple[float | None, str]:
    """The SLO line for `metric` (ttft|tpot): its p95 gate, else the per-request goodput target."""
    slo = _dict(summary.get("slo"))
    for gate in _gate_list(slo):
        names = f"{gate.get('name', '')} {gate.get('metric', '')}"
        value = _num(gate.get("threshold"))
        if (f"p95_{metric}" in names or f"{metric}_p95" in names) and value is not None:
            return value, f"SLO p95 {gate.get('op', '<=')} {value:g} ms"
    value = _num(_dict(slo.get("goodput")).get(f"{metric}_ms"))
    return value, f"goodput target {value:g} ms" if value is not None else ""


def _series(
    rows: Sequence[Row], time_key: str, key: str, t0: float, div: float
) -> list[tuple[float, float]]:
    """(time since start, value) of the rows that have both, in time order, for step lines."""
    return sorted(
        ((t - t0) / div, v)
        for row in rows
        if (t := _num(row.get(time_key))) is not None and (v := _num(row.get(key))) is not None
    )


def _time_unit(span_s: float) -> tuple[float, str]:
    """Minutes once a run is long enough that seconds become unreadable tick labels."""
    return (60.0, "min") if span_s > 900 else (1.0, "s")


def _ok_values(samples: Sequence[Row], key: str, kinds: Iterable[str]) -> dict[str, np.ndarray]:
    """Per class, (send time, value) rows of the successful requests that have the value; the
    time is NaN when the sample has none (the distributions still count it)."""
    rows: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
    for s in samples:
        value, start = _num(s.get(key)), _num(s.get("start"))
        if s.get("ok") and value is not None and value > 0 and s["workload"] in rows:
            rows[s["workload"]].append((np.nan if start is None else start, value))
    return {kind: np.array(r, dtype=float).reshape(-1, 2) for kind, r in rows.items()}


def plot_distribution(
    samples: Sequence[Row], key: str, name: str, summary: Row, colours: dict[str, str]
) -> str:
    """ECDF per workload class: each curve crosses the 95% line at that class's p95, so
    classes, the overall p95 and the SLO compare on one picture; log x when tails are long."""
    fig, ax = _figure(f"{name} distribution per workload class")
    values = {kind: np.sort(rows[:, 1]) for kind, rows in _ok_values(samples, key, colours).items()}
    everything = np.concatenate([v for v in values.values() if v.size] or [np.empty(0)])
    if not everything.size:
        _empty(ax, f"no {name} value among successful requests")
        return _png(fig, f"{name} distribution")
    for kind, v in values.items():
        if v.size:
            label = f"{_mpl(kind)} (n={v.size}, p95 {np.percentile(v, 95):,.0f} ms)"
            y = np.arange(1, v.size + 1) / v.size * 100
            ax.step(v, y, where="post", color=colours[kind], lw=2, label=label)
    p95 = float(np.percentile(everything, 95))
    ax.axhline(95, color="grey", ls=":", lw=1)
    ax.axvline(p95, color="black", ls=":", lw=1.5, label=f"p95 all classes {p95:,.0f} ms")
    limit, label = _threshold(summary, key.removesuffix("_ms"))
    if limit is not None:
        ax.axvline(limit, color=SLO_COLOUR, ls="--", lw=2, label=label)
    if _wide([everything.min(), everything.max(), limit]):
        ax.set_xscale("log")
    ax.set_xlabel(f"{name} (ms{', log scale' if ax.get_xscale() == 'log' else ''})")
    ax.set_ylabel("requests at or below (%)")
    ax.set_ylim(0, 101)
    _legend(fig, ax)
    return _png(fig, f"{name} distribution")


def _wide(values: Sequence[float | None]) -> bool:
    """Log scale when the data and the SLO line span more than 20x (else one squashes)."""
    present = [v for v in values if v is not None and v > 0]
    return bool(present) and max(present) / min(present) > 20


def _rolling(x: np.ndarray, y: np.ndarray, window: float, end: float) -> tuple[np.ndarray, ...]:
    """p50/p95 of y over a centred window of x; needs 3 points to say anything."""
    order = np.argsort(x)
    x, y = x[order], y[order]
    grid = np.arange(0.0, end + 1e-9, max(window / 5, 1.0))
    p50, p95 = np.full(grid.size, np.nan), np.full(grid.size, np.nan)
    for i, t in enumerate(grid):
        lo, hi = np.searchsorted(x, t - window / 2), np.searchsorted(x, t + window / 2, "right")
        if hi - lo >= 3:
            p50[i], p95[i] = np.percentile(y[lo:hi], [50, 95])
    return grid, p50, p95


def plot_latency_over_time(
    samples: Sequence[Row],
    timeline: Sequence[Row],
    t0: float,
    span: float,
    summary: Row,
    colours: dict[str, str],
) -> str:
    """TTFT of every request by send time with rolling p50/p95, against the offered load
    (users, or the open-loop rate), so a latency climb lines up with what caused it."""
    fig, ax = _figure("Time to first token over the run, with the offered load")
    div, unit = _time_unit(span)
    by_kind = {k: r[~np.isnan(r[:, 0])] for k, r in _ok_values(samples, "ttft_ms", colours).items()}
    count = sum(len(rows) for rows in by_kind.values())
    dots = {"s": 16 if count < 2000 else 8, "alpha": min(0.7, max(0.3, 800 / max(count, 1)))}
    for kind, rows in by_kind.items():
        if rows.size:
            x, v = rows[:, 0] - t0, rows[:, 1]
            ax.scatter(x / div, v, color=colours[kind], label=_mpl(kind), lw=0, **dots)
    if points := [rows for rows in by_kind.values() if rows.size]:
        x, v = np.concatenate(points).T
        x -= t0
        window = max(5.0, span / 40)
        grid, p50, p95 = _rolling(x, v, window, span)
        ax.plot(grid / div, p50, label=f"rolling p50 ({window:.0f} s)", **ROLLING)
        ax.plot(grid / div, p95, ls="-.", label=f"rolling p95 ({window:.0f} s)", **ROLLING)
        limit, label = _threshold(summary, "ttft")
        if limit is not None:
            ax.axhline(limit, color=SLO_COLOUR, ls="--", lw=2, label=label)
        if _wide([v.min(), v.max(), limit]):
            ax.set_yscale("log")
        ax.set_ylabel(f"TTFT (ms{', log scale' if ax.get_yscale() == 'log' else ''})")
    else:
        _empty(ax, "no successful request", keep_x=True)
    load, load_label = _series(timeline, "t", "rate", t0, div), "open-loop target rate (req/s)"
    if not load:  # closed loop; without a timeline each request still tells its user count
        load_label = "Locust users"
        load = _series(timeline, "t", "users", t0, div) or _series(
            samples, "start", "users", t0, div
        )
    twin = ax.twinx()
    if load:
        lx, ly = np.array(load).T
        twin.step(lx, ly, where="post", color=SECONDARY_COLOUR, lw=1.5, label=load_label)
        twin.set_ylim(0, max(ly.max() * 1.15, 1))
    twin.set_ylabel(load_label, color=SECONDARY_COLOUR)
    twin.grid(False)
    ax.set_xlim(0, span / div)
    ax.set_xlabel(f"time since start ({unit}), by request send time")
    _legend(fig, ax, twin)
    return _png(fig, "TTFT over time")


def _floats(value: Any) -> np.ndarray:
    """A list of numbers from the file as an array (null -> NaN); anything else is empty."""
    if not isinstance(value, list):
        return np.empty(0)
    try:
        return np.asarray(value, dtype=float).reshape(len(value))
    except (TypeError, ValueError):
        return np.array([np.nan if (x := _num(v)) is None else x for v in value])


def _chunk_tokens(sample: Row) -> tuple[np.ndarray, np.ndarray]:
    """Arrival (epoch s) and tokens of each content chunk. Counted tokens stay where usage
    reported them; the rest of `output_tokens` is spread over the chunks without a count (all
    of them when usage came only at the end). Arrays, as long runs hold millions of chunks."""
    start, output = _num(sample.get("start")), _num(sample.get("output_tokens"))
    at = _floats(sample.get("chunk_ms")) / 1000
    if start is None or not at.size:
        end = _num(sample.get("e2e_ms"))
        if start is None or end is None or not output:
            return np.empty(0), np.empty(0)
        return np.array([start + end / 1000]), np.array([output])
    counts = np.full(at.size, np.nan)
    given = _floats(sample.get("chunk_tokens"))[: at.size]
    counts[: given.size] = given
    missing = np.isnan(counts)
    known = float(np.nansum(counts))
    rest = max((output if output is not None else known) - known, 0.0)
    tokens = np.nan_to_num(counts)
    if missing.any():
        tokens[missing] += rest / missing.sum()
    else:
        tokens[-1] += rest
    return start + at, tokens


def plot_throughput(samples: Sequence[Row], timeline: Sequence[Row], t0: float, span: float) -> str:
    """Output tokens/s and completed requests/s in 1-second bins, with requests in flight: a
    saturated server shows flat tokens/s while in-flight keeps growing."""
    fig, ax = _figure("Throughput over the run (1-second bins)")
    div, unit = _time_unit(span)
    bins = int(span)
    ok = [s for s in samples if s.get("ok")]
    arrivals, counts = zip(*map(_chunk_tokens, ok), strict=True) if ok else ((), ())
    done = [
        start - t0 + (_num(s.get("e2e_ms")) or 0.0) / 1000
        for s in ok
        if (start := _num(s.get("start"))) is not None
    ]
    edges = np.arange(bins + 1)
    at, weights = np.concatenate([np.empty(0), *arrivals]), np.concatenate([np.empty(0), *counts])
    tokens = np.histogram(at - t0, edges, weights=weights)[0]
    requests = np.histogram(done, edges)[0]
    ax.fill_between(edges[:-1] / div, tokens, step="post", color="#1f77b4", alpha=0.35, lw=0)
    ax.step(edges[:-1] / div, tokens, where="post", color="#1f77b4", lw=1, label="output tokens/s")
    ax.set_ylabel("output tokens/s", color="#1f77b4")
    ax.set_ylim(bottom=0)
    twin = ax.twinx()
    label = "completed requests/s"
    twin.step(edges[:-1] / div, requests, where="post", color="#2ca02c", lw=1.5, label=label)
    if flight := _series(timeline, "t", "in_flight", t0, div):
        fx, fy = np.array(flight).T
        style = {"color": SECONDARY_COLOUR, "ls": "--", "lw": 1.5}
        twin.step(fx, fy, where="post", label="requests in flight", **style)
    twin.set_ylabel("requests (per s / in flight)")
    twin.yaxis.set_major_locator(MaxNLocator(integer=True))
    twin.set_ylim(bottom=0)
    twin.grid(False)
    ax.set_xlim(0, span / div)
    ax.set_xlabel(f"time since start ({unit})")
    _legend(fig, ax, twin)
    return _png(fig, "throughput over time")


def _error_kind(sample: Row) -> str:
    """The message when there is one (it starts with the status); else the bare status."""
    if sample.get("error"):
        return str(sample["error"])
    status = sample.get("status")
    return "connection error (status 0)" if not status else f"HTTP {status}"


def plot_errors(samples: Sequence[Row], t0: float, span: float) -> str:
    """Failed requests per time bin, stacked by message, to tell a burst from a steady trickle
    and overload (503) from a broken connection (status 0)."""
    fig, ax = _figure("Failed requests over the run")
    failed = [s for s in samples if not s.get("ok") and _num(s.get("start")) is not None]
    if not failed:
        _empty(ax, "no failed requests")
        return _png(fig, "errors over time")
    div, unit = _time_unit(span)
    # About 100 bars at most, however long the run, each a round number of seconds.
    width = next((w for w in (1, 2, 5, 10, 15, 30, 60, 120, 300) if w >= span / 100), 600)
    edges = np.arange(0, span + width, width)
    kinds = [_error_kind(s) for s in failed]
    shown = [kind for kind, _ in Counter(kinds).most_common(MAX_ERROR_KINDS)]
    stacks: dict[str, list[float]] = {kind: [] for kind in [*shown, "other"]}
    for s, kind in zip(failed, kinds, strict=True):
        stacks[kind if kind in stacks else "other"].append(s["start"] - t0)
    colours = matplotlib.colormaps["Dark2"]
    bottom = np.zeros(edges.size - 1)
    for i, (kind, times) in enumerate((k, t) for k, t in stacks.items() if t):
        counts = np.histogram(times, edges)[0]
        style = {"align": "edge", "edgecolor": "white", "lw": 0.3, "color": colours(i % 8)}
        ax.bar(edges[:-1] / div, counts, width / div, bottom, label=_mpl(kind), **style)
        bottom += counts
    ax.set_xlim(0, span / div)
    ax.set_xlabel(f"time since start ({unit}), by request send time")
    ax.set_ylabel(f"failed requests per {width} s")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _legend(fig, ax)
    return _png(fig, "errors over time")


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    """A figure for a table cell; the placeholder shows it was missing, not zero."""
    number = _num(value)
    if number is None:
        return "—" if value is None else html.escape(str(value))
    return f"{number:,.{digits}f}{unit}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Cells are HTML already (escaped where they carry data)."""
    header = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{header}</tr>{body}</table>"


def _gates(slo: Row) -> str:
    """Each gate's value against its threshold, coloured, so the reason for FAIL is in sight."""
    rows = []
    for gate in _gate_list(slo):
        name = str(gate.get("name", "?"))
        unit, digits = (" ms", 1) if name.endswith("_ms") else ("", 4)
        verdict = "pass" if gate.get("passed") else "fail"
        rows.append(
            [
                html.escape(name),
                _fmt(gate.get("value"), unit, digits),
                f"{html.escape(str(gate.get('op', '')))} {_fmt(gate.get('threshold'), unit, digits)}",
                f'<span class="{verdict}">{verdict.upper()}</span>',
            ]
        )
    return _table(["gate", "measured", "needs", "verdict"], rows) if rows else ""


def _key_figures(summary: Row) -> str:
    s = summary
    ratio, error_rate = _num(s.get("goodput_ratio")), _num(s.get("error_rate"))
    rows = [
        [
            "requests ok / failed",
            f"{_fmt(s.get('completed'), digits=0)} / {_fmt(s.get('failed'), digits=0)}",
        ],
        ["error rate", _fmt(error_rate * 100 if error_rate is not None else None, " %", 2)],
        ["request throughput", _fmt(s.get("request_throughput"), " req/s", 2)],
        ["output throughput", _fmt(s.get("output_throughput"), " tok/s")],
        ["total token throughput", _fmt(s.get("total_token_throughput"), " tok/s")],
        [
            "goodput",
            _fmt(s.get("request_goodput"), " req/s", 2)
            + (f" ({ratio * 100:.1f} % of requests good)" if ratio is not None else ""),
        ],
    ]
    latency = [
        [name] + [_fmt(s.get(f"{p}_{key}_ms"), " ms") for p in ("median", "p95", "p99")]
        for name, key in (("TTFT", "ttft"), ("TPOT", "tpot"), ("ITL", "itl"), ("E2EL", "e2el"))
    ]
    policy = _dict(s.get("prompt_policy"))
    note = ", ".join(f"{html.escape(str(k))}: {_fmt(v, digits=0)}" for k, v in policy.items())
    return (
        _table(["figure", "value"], rows)
        + _table(["latency", "median", "p95", "p99"], latency)
        + (f"<p>Prompt policy of successful requests — {note}</p>" if note else "")
    )


def _workloads(summary: Row, colours: dict[str, str]) -> str:
    keys = ("completed", "failed", "median_ttft_ms", "p95_ttft_ms", "median_tpot_ms", "p95_tpot_ms")
    rows = [
        [
            f'<span class="dot" style="background:{colours.get(kind, "#999")}"></span>'
            + html.escape(str(kind))
        ]
        + [_fmt(figures.get(k), *((" ms", 1) if k.endswith("_ms") else ("", 0))) for k in keys]
        for kind, figures in _dict(summary.get("by_workload")).items()
        if isinstance(figures, dict)
    ]
    head = ["class", "ok", "failed", "TTFT median", "TTFT p95", "TPOT median", "TPOT p95"]
    return _table(head, rows) if rows else "<p>No per-workload figures.</p>"


def _error_table(samples: Sequence[Row], summary: Row) -> str:
    counts = Counter(_error_kind(s) for s in samples if not s.get("ok"))
    if not counts and isinstance(summary.get("errors"), dict):
        counts = Counter({str(k): int(_num(v) or 0) for k, v in summary["errors"].items()})
    total = max(sum(counts.values()), 1)
    rows = [
        [f"<code>{html.escape(kind)}</code>", str(n), f"{n / total * 100:.1f} %"]
        for kind, n in counts.most_common()
    ]
    return _table(["error", "count", "share"], rows) if rows else "<p>No failed requests.</p>"


CSS = """body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1060px;padding:1em;color:#222}
table{border-collapse:collapse;margin:.6em 1.5em .6em 0;display:inline-table;vertical-align:top}
td,th{border:1px solid #ddd;padding:.3em .7em;text-align:right}td:first-child,th:first-child{text-align:left}
th{background:#f4f4f4}.banner{font-size:2em;font-weight:bold;padding:.4em .8em;border-radius:6px;color:#fff}
.PASS{background:#2ca02c}.FAIL{background:#d62728}.NONE{background:#888}.pass{color:#2ca02c;font-weight:bold}
.fail{color:#d62728;font-weight:bold}.dot{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.4em}
img{max-width:100%;display:block;margin:1em 0}code{white-space:pre-wrap;word-break:break-word}"""


def render(summary: Row, samples: Sequence[Row], timeline: Sequence[Row]) -> str:
    """The whole page; each plot is drawn in isolation so one bad input cannot lose the report."""
    samples = [{**s, "workload": str(s.get("workload") or "unknown")} for s in samples]
    kinds = sorted({s["workload"] for s in samples} | set(_dict(summary.get("by_workload"))))
    colours = {kind: PALETTE[i % len(PALETTE)] for i, kind in enumerate(kinds)}
    times = [t for s in samples if (t := _num(s.get("start"))) is not None]
    times += [t for p in timeline if (t := _num(p.get("t"))) is not None]
    middle = float(np.median(times)) if times else 0.0
    times = [t for t in times if abs(t - middle) < MAX_SPAN_S / 2]
    t0 = min(times, default=0.0)
    ends = [
        t + (_num(s.get("e2e_ms")) or 0) / 1000
        for s in samples
        if (t := _num(s.get("start"))) is not None
    ]
    last = min(max([*times, *ends], default=t0), t0 + MAX_SPAN_S)
    span = float(math.floor(last - t0) + 1)  # whole seconds, past the last event
    plots: list[Callable[[], str]] = [
        lambda: plot_distribution(samples, "ttft_ms", "TTFT", summary, colours),
        lambda: plot_distribution(samples, "tpot_ms", "TPOT", summary, colours),
        lambda: plot_latency_over_time(samples, timeline, t0, span, summary, colours),
        lambda: plot_throughput(samples, timeline, t0, span),
        lambda: plot_errors(samples, t0, span),
    ]
    images = []
    with matplotlib.rc_context(STYLE):
        for draw in plots:
            try:
                images.append(draw())
            except Exception as error:  # a report with a hole beats no report at the end of a run
                images.append(
                    f"<p class=fail>Could not draw this plot: {html.escape(repr(error))}</p>"
                )
    slo = _dict(summary.get("slo"))
    passed = slo.get("passed")
    verdict = "PASS" if passed is True else "FAIL" if passed is False else "NONE"
    broken = ", ".join(
        html.escape(str(g.get("name"))) for g in _gate_list(slo) if not g.get("passed")
    )
    banner = {"PASS": "PASS — all SLO gates met", "NONE": "no SLO configured"}.get(
        verdict, f"FAIL — broken: {broken or 'see gates'}"
    )
    date = summary.get("date") or (
        datetime.fromtimestamp(t0, UTC).isoformat(timespec="seconds") if times else "—"
    )
    facts = [
        ["target", html.escape(str(summary.get("target", "—")))],
        ["load", html.escape(str(summary.get("load", "—")))],
        ["duration", _fmt(summary.get("duration"), " s")],
        ["date", html.escape(str(date))],
    ]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Load test report — {verdict}</title>
<style>{CSS}</style></head><body>
<h1>Load test report</h1><div class="banner {verdict}">{banner}</div>
{_table(["run", ""], facts)}{_gates(slo)}
<h2>Key figures</h2>{_key_figures(summary)}
<h2>Latency</h2>{images[0]}{images[1]}{images[2]}
<h2>Throughput</h2>{images[3]}
<h2>Errors</h2>{images[4]}{_error_table(samples, summary)}
<h2>Per workload class</h2>{_workloads(summary, colours)}
</body></html>
"""


def write_report(run_dir: Path) -> Path:
    """Read the run folder's files (any of them may be missing) and write `report.html`."""
    run_dir = Path(run_dir)
    page = render(
        _read_summary(run_dir / "summary.json"),
        _read_jsonl(run_dir / "samples.jsonl", unused="itl_ms"),
        _read_jsonl(run_dir / "timeline.jsonl"),
    )
    path = run_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Redraw a load-test run's report.html.")
    parser.add_argument("run_dir", type=Path, help="the run folder (holds samples.jsonl ...)")
    args = parser.parse_args(argv)
    if not args.run_dir.is_dir():
        parser.error(f"not a folder: {args.run_dir}")
    print(write_report(args.run_dir))


if __name__ == "__main__":
    main()
