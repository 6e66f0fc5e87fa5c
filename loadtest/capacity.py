"""Capacity planner: replay a day of traffic against Serve's autoscaler before paying for GPUs.

    python -m loadtest.capacity --group h100-tp4 --profile loadtest/planning/h100-tp4.yaml \\
        --rate-curve loadtest/planning/business-day.yaml [--sweep] [--json OUT] [--plot OUT.png]

A discrete-event simulation on a simulated clock (deterministic for a seed) of one engine
deployment: Poisson arrivals (or a trace), Serve's handle queue, replicas serving by processor
sharing at the profile's latency for their concurrency, Serve's autoscaling policy fed the
metrics Serve really sees, and the Ray autoscaler adding and removing GPU nodes. It reports SLO
attainment (the goodput targets of `loadtest/slo/*.yaml`), queueing and GPU-hours, against the
cheapest static provisioning that meets the goal on the same arrivals; `--sweep` tries a grid
of settings and recommends the cheapest that meets the goal (checked on other seeds too).

The policy maths (`decide`) copies Ray Serve 2.60's default policy as the controller applies it;
tests/test_capacity.py checks it against Ray's own functions. Approximations, each smaller than
the profile's own uncertainty:
- routing: the running replica with the fewest requests (Serve: power of two choices);
- one handle queue (Serve: one per router replica, each with max_queued_requests);
- prefill is work on the replica's shared decode clock, ttft(c)/tpot(c) tokens' worth: exact at
  constant concurrency, approximate while it changes;
- the controller and the Ray autoscaler act every second (Serve's loop: 0.1 s; autoscaler ~5 s);
- the controller averages the handle's whole last report (Serve narrows the window to start at
  a just-started replica's first sample);
- replicas are packed onto the fullest ready node, gpus_per_node // tensor_parallel_size each;
- a draining replica finishes its requests however long they take (no graceful timeout).
"""

from __future__ import annotations

import argparse
import csv
import heapq
import itertools
import json
import math
import os
import random
import statistics
import sys
import time
from bisect import bisect_right
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ray.serve.config import AutoscalingConfig

from loadtest.slo import SLO, RequestTargets
from serve_app.config import ConfigError, NodeGroupConfig, load_serve_config

# Serve 2.60's metric plumbing (_private/constants.py, router.py): the handle records running +
# queued every look_back_period_s * 0.2 (at most every metrics_interval_s) and pushes the
# samples of the last look_back_period_s every metrics_interval_s.
RECORD_INTERVAL_FACTOR = 0.2
DELAY_EPS_S = 1e-6  # autoscaling_policy._DELAY_ELAPSED_EPS_S
TICK_S = 1.0
TIMELINE_STEP_S = 10.0
MAX_DRAIN_S = 6 * 3600.0  # after the traffic ends, how long the last requests may take


class PlannerInputError(ValueError):
    """A bad input file or option: `main` prints it and exits 2."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- inputs ----------------------------------------------------------------------------------


class LatencyPoint(Strict):
    concurrency: int = Field(ge=1, description="requests on the replica, prefill or decode")
    ttft_s: float = Field(gt=0, description="time to first token of a request admitted at it")
    tpot_s: float = Field(gt=0, description="time per output token of every request at it")


class ReplicaProfile(Strict):
    """One replica's speed, and the time it takes to get one."""

    description: str
    gpus_per_node: int = Field(8, ge=1)
    node_startup_s: float = Field(ge=0, description="GPU node provisioning + image pull")
    replica_startup_s: float = Field(ge=0, description="weights load + engine start")
    node_idle_timeout_s: float = Field(600, ge=0, description="autoscaler idleTimeoutSeconds")
    min_nodes: int = Field(0, ge=0, description="the worker group's minReplicas")
    max_nodes: int | None = Field(None, ge=1, description="default: enough for max_replicas")
    latency: list[LatencyPoint] = Field(min_length=1)

    @model_validator(mode="after")
    def _increasing(self) -> ReplicaProfile:
        levels = [p.concurrency for p in self.latency]
        if levels != sorted(set(levels)):
            raise ValueError("latency: concurrency must be strictly increasing")
        return self

    def at(self, concurrency: float) -> tuple[float, float]:
        """(ttft_s, tpot_s), linear in concurrency, clamped at the table's ends."""
        points = self.latency
        i = bisect_right([p.concurrency for p in points], concurrency)
        if i in (0, len(points)):
            edge = points[0 if i == 0 else -1]
            return edge.ttft_s, edge.tpot_s
        lo, hi = points[i - 1], points[i]
        w = (concurrency - lo.concurrency) / (hi.concurrency - lo.concurrency)
        return lo.ttft_s + w * (hi.ttft_s - lo.ttft_s), lo.tpot_s + w * (hi.tpot_s - lo.tpot_s)


class RateCurve(Strict):
    """Requests per second at points in time (s), linear in between."""

    description: str = ""
    points: list[tuple[float, float]] = Field(min_length=2)

    @model_validator(mode="after")
    def _valid(self) -> RateCurve:
        times = [t for t, _ in self.points]
        if times[0] != 0 or any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError("points: times must start at 0 and increase")
        if any(rate < 0 for _, rate in self.points):
            raise ValueError("points: rates must be >= 0")
        return self


class Workload(NamedTuple):
    arrivals: list[float]  # sorted, seconds from 0
    tokens: list[int]  # output tokens of each request
    horizon_s: float  # the traffic window; GPU-hours are billed over [0, horizon_s]
    description: str


@dataclass(frozen=True)
class Scenario:
    """One engine deployment as the planner runs it."""

    autoscaling: AutoscalingConfig
    max_ongoing_requests: int
    max_queued_requests: int  # -1: unbounded
    replicas_per_node: int
    profile: ReplicaProfile
    targets: RequestTargets

    def tuned(self, **settings: Any) -> Scenario:
        return replace(self, autoscaling=self.autoscaling.model_copy(update=settings))


def _read_yaml(path: str | Path) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise PlannerInputError(f"cannot read {path}: {error}") from None


def _validated(model: type[BaseModel], document: Any, path: str | Path) -> Any:
    try:
        return model.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in error.errors()
        )
        raise PlannerInputError(f"{path}: {problems}") from None


def profile_from_bench(path: str | Path, base: ReplicaProfile) -> ReplicaProfile:
    """`base` with the latency table of `make bench`'s results.json: the stack's TTFT p50 and
    TPOT p50 per concurrency on the random prompts (fixed lengths), median over rounds."""
    try:
        by_level: dict[int, list[dict[str, Any]]] = {}
        for row in json.loads(Path(path).read_text())["rows"]:
            if row["system"] == "stack" and row["client"] == "bench serve random":
                by_level.setdefault(int(row["concurrency"]), []).append(row)
        table = [
            {
                "concurrency": level,
                "ttft_s": statistics.median(r["median_ttft_ms"] for r in rows) / 1000,
                "tpot_s": statistics.median(r["median_tpot_ms"] for r in rows) / 1000,
            }
            for level, rows in sorted(by_level.items())
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PlannerInputError(f"cannot read bench results {path}: {error!r}") from None
    return _validated(ReplicaProfile, {**base.model_dump(), "latency": table}, path)


def load_group(config_path: str | Path, name: str | None) -> NodeGroupConfig:
    try:
        _, app = load_serve_config(config_path)
    except ConfigError as error:
        raise PlannerInputError(str(error)) from None
    groups = {g.name: g for g in app.node_groups}
    group = groups.get(name) if name else app.node_groups[0]
    if group is None:
        raise PlannerInputError(f"{config_path}: no node group {name!r} (have {sorted(groups)})")
    cfg = group.autoscaling_config
    if not cfg.policy.is_default_policy_function() or cfg.aggregation_function != "mean":
        raise PlannerInputError("only Serve's default policy with mean aggregation is simulated")
    return group


def poisson_arrivals(curve: RateCurve, seed: int) -> list[float]:
    """An inhomogeneous Poisson process by inversion: unit-exponential steps of the cumulative
    rate, solved exactly on each linear piece."""
    rng, arrivals = random.Random(seed), []
    need = rng.expovariate(1.0)
    for (t0, r0), (t1, r1) in itertools.pairwise(curve.points):
        length = t1 - t0
        area, used, slope = (r0 + r1) / 2 * length, 0.0, (r1 - r0) / (2 * length)
        while used + need <= area:
            used += need
            # r0*s + slope*s^2 = used, in the form that stays stable as slope -> 0
            s = 2 * used / (r0 + math.sqrt(max(0.0, r0 * r0 + 4 * slope * used)))
            arrivals.append(t0 + min(s, length))
            need = rng.expovariate(1.0)
        need -= area - used
    return arrivals


def draw_tokens(count: int, mean: float, seed: int) -> list[int]:
    """Output lengths, geometric with this mean (>= 1): answers mostly short, with a long tail."""
    if mean <= 1:
        return [1] * count
    rng, log_q = random.Random(f"{seed}-tokens"), math.log(1 - 1 / mean)
    return [1 + int(math.log(1.0 - rng.random()) / log_q) for _ in range(count)]


def read_trace(path: str | Path) -> tuple[list[float], list[int | None]]:
    """Arrival times (from 0) and output tokens (None: draw one) from a CSV with `timestamp`
    [, `output_tokens`] columns, or from a load test's samples.jsonl."""
    try:
        text = Path(path).read_text()
        if str(path).endswith(".jsonl"):
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            pairs = [(r.get("scheduled") or r["start"], r.get("output_tokens")) for r in rows]
        else:
            reader = csv.DictReader(text.splitlines())
            if "timestamp" not in (reader.fieldnames or []):
                raise PlannerInputError(f"trace {path} needs a 'timestamp' column (seconds)")
            pairs = [(row["timestamp"], row.get("output_tokens")) for row in reader]
        pairs = sorted((float(t), int(n) if n else None) for t, n in pairs)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PlannerInputError(f"cannot read trace {path}: {error!r}") from None
    if not pairs:
        raise PlannerInputError(f"trace {path} has no requests")
    return [t - pairs[0][0] for t, _ in pairs], [n for _, n in pairs]


# --- Serve's policy, in simulated time ---------------------------------------------------------


@dataclass
class DelayState:
    """The controller's policy_state: `__decision_counters` and `__decision_timestamp`."""

    counter: int = 0
    since: float | None = None

    def reset(self) -> None:
        self.counter, self.since = 0, None


def decide(
    config: AutoscalingConfig,
    total_requests: float,
    running: int,
    target: int,
    state: DelayState,
    now: float,
) -> int:
    """The controller's next target: Ray Serve 2.60's `_apply_autoscaling_config(
    replica_queue_length_autoscaling_policy)`, its `math.ceil` and `apply_bounds` (no target
    capacity) from ray/serve/autoscaling_policy.py and _private/autoscaling_state.py. It compares
    with the current *target*, not the running count. Re-check when Ray is upgraded."""
    if running == 0 and total_requests > 0:  # _get_cold_start_scale_up_replicas
        desired = max(math.ceil(1 * config.get_upscaling_factor()), target)
    else:
        if running == 0:
            desired = math.ceil(target)
        else:
            per_replica = config.get_target_ongoing_requests() * running
            desired = _scaled(running * (total_requests / per_replica), running, config)
        if running != 0 or desired <= 0:  # from zero towards a target: no delay
            desired = _delayed(max(0, desired), target, config, state, now)
    return max(config.min_replicas, min(config.max_replicas, desired))


def _scaled(desired: float, current: int, config: AutoscalingConfig) -> int:
    """`_apply_scaling_factors` (current > 0): the factor gains the change, at least one step."""
    delta = desired - current
    factor = config.get_upscaling_factor() if delta > 0 else config.get_downscaling_factor()
    scaled = math.ceil(current + factor * delta)
    if math.ceil(float(desired)) < current and scaled == current:
        scaled -= 1
    return scaled


def _delayed(
    desired: int, target: int, config: AutoscalingConfig, state: DelayState, now: float
) -> int:
    """`_apply_delay_logic`: a change happens once wanted for its delay since it was first
    wanted; 1 -> 0 takes downscale_to_zero_delay_s, and any other downscale stops at 1."""
    if desired == target:
        state.reset()
        return target
    if (desired > target) != (state.counter > 0):
        state.reset()  # the direction changed (or starts): the delay starts again
    state.counter += 1 if desired > target else -1
    if desired > target:
        delay = config.upscale_delay_s
    elif target == 1:
        delay = config.downscale_delay_s
        if config.downscale_to_zero_delay_s is not None:
            delay = config.downscale_to_zero_delay_s
    else:
        delay, desired = config.downscale_delay_s, max(1, desired)
    if state.since is None:
        state.since = now
    if now - state.since + DELAY_EPS_S >= delay:
        state.reset()
        return desired
    return target


# --- the simulation ----------------------------------------------------------------------------

PENDING, STARTING, RUNNING, STOPPING, GONE = "pending", "starting", "running", "stopping", "gone"
DONE, NODE_READY, REPLICA_READY, SAMPLE, PUSH, TICK = range(6)


@dataclass(slots=True, eq=False)
class Node:
    nid: int
    launched_at: float
    ready: bool
    idle_since: float | None
    replicas: list[Replica] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Replica:
    """Processor sharing on a virtual clock: `vt` counts the tokens each active request got, so
    a request ends when vt reaches its tag, O(log n) per event."""

    rid: int
    state: str = PENDING
    node: Node | None = None
    active: int = 0
    vt: float = 0.0
    vt_at: float = 0.0
    version: int = 0  # bumped when the next completion moves: older events are stale
    heap: list[tuple[float, int]] = field(default_factory=list)


@dataclass
class Summary:
    requests: int
    rejected: int
    unfinished: int
    good: int
    attainment: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    wait_p50_s: float | None
    wait_p99_s: float | None
    tpot_p50_ms: float | None
    tpot_p99_ms: float | None
    peak_replicas: int
    peak_nodes: int
    gpu_hours: float

    def meets(self, goal: float) -> bool:
        return self.attainment >= goal and self.rejected == 0 and self.unfinished == 0


class Outcome(NamedTuple):
    """A finished request, as `RequestTargets.met_by` judges it."""

    ok: bool
    ttft_ms: float
    tpot_ms: float | None
    e2e_ms: float


@dataclass
class Run:
    summary: Summary
    decisions: list[tuple[float, int]]  # (time, new target)
    node_log: list[tuple[float, str, int]]  # (time, launch | ready | remove, node id)
    timeline: list[dict[str, float]]  # every TIMELINE_STEP_S


class Simulation:
    """One scenario over one workload; `execute()` once."""

    def __init__(self, workload: Workload, scenario: Scenario) -> None:
        self.w, self.s, self.cfg = workload, scenario, scenario.autoscaling
        table = [scenario.profile.at(c) for c in range(scenario.max_ongoing_requests + 1)]
        self.ttft, self.tpot = [t for t, _ in table], [p for _, p in table]
        self.events: list[tuple[float, int, int, Any, int]] = []
        self.seq, self.rids, self.nids = itertools.count(), itertools.count(), itertools.count()
        self.queue: deque[int] = deque()
        self.pending: deque[Replica] = deque()
        self.replicas: list[Replica] = []  # every replica not gone
        self.running: list[Replica] = []  # those taking requests
        self.nodes: list[Node] = []
        self.samples: deque[tuple[float, float]] = deque()
        self.report: list[tuple[float, float]] = []
        self.state = DelayState()
        self.admitted, self.first = [0.0] * len(workload.arrivals), [0.0] * len(workload.arrivals)
        self.ttfts: list[float] = []
        self.waits: list[float] = []
        self.tpots: list[float] = []
        self.good = self.rejected = self.open = self.peak_replicas = self.peak_nodes = 0
        self.node_seconds = 0.0
        self.decisions: list[tuple[float, int]] = []
        self.node_log: list[tuple[float, str, int]] = []
        self.timeline: list[dict[str, float]] = []

    def _at(self, when: float, kind: int, obj: Any, version: int = 0) -> None:
        heapq.heappush(self.events, (when, next(self.seq), kind, obj, version))

    # requests

    def _arrive(self, r: int, now: float) -> None:
        best, fewest = None, self.s.max_ongoing_requests
        for rep in self.running:
            if rep.active < fewest:
                best, fewest = rep, rep.active
        if best is not None:
            self.open += 1
            self._admit(r, best, now)
        elif 0 <= self.s.max_queued_requests <= len(self.queue):
            self.rejected += 1  # a 503: not good
        else:
            self.open += 1
            self.queue.append(r)
            if not self.running:  # the handle's push when scaled to zero
                self._push(now)

    def _admit(self, r: int, rep: Replica, now: float) -> None:
        self._advance(rep, now)
        rep.active += 1
        ttft = self.ttft[rep.active]
        self.admitted[r], self.first[r] = now, now + ttft
        heapq.heappush(rep.heap, (rep.vt + self.w.tokens[r] - 1 + ttft / self.tpot[rep.active], r))
        self._reschedule(rep, now)

    def _advance(self, rep: Replica, now: float) -> None:
        if rep.active:
            rep.vt += (now - rep.vt_at) / self.tpot[rep.active]
        rep.vt_at = now

    def _reschedule(self, rep: Replica, now: float) -> None:
        rep.version += 1
        if rep.heap:
            at = now + max(0.0, rep.heap[0][0] - rep.vt) * self.tpot[rep.active]
            self._at(at, DONE, rep, rep.version)

    def _complete(self, rep: Replica, now: float) -> None:
        self._advance(rep, now)
        _, r = heapq.heappop(rep.heap)
        rep.active -= 1
        self.open -= 1
        arrival, tokens, first = self.w.arrivals[r], self.w.tokens[r], min(self.first[r], now)
        tpot = (now - first) / (tokens - 1) if tokens > 1 else None
        self.ttfts.append(self.first[r] - arrival)
        self.waits.append(self.admitted[r] - arrival)
        if tpot is not None:
            self.tpots.append(tpot)
        tpot_ms = tpot * 1000 if tpot is not None else None
        ttft_ms, e2e_ms = (self.first[r] - arrival) * 1000, (now - arrival) * 1000
        self.good += self.s.targets.met_by(Outcome(True, ttft_ms, tpot_ms, e2e_ms))
        if rep.state == STOPPING and rep.active == 0:
            self._remove(rep, now)
        elif rep.state == RUNNING and self.queue:
            self._admit(self.queue.popleft(), rep, now)
        else:
            self._reschedule(rep, now)

    # replicas and nodes

    def _set_target(self, target: int, now: float) -> None:
        live = [rep for rep in self.replicas if rep.state != STOPPING]
        for _ in range(target - len(live)):
            self.pending.append(Replica(next(self.rids)))
            self.replicas.append(self.pending[-1])
        # Serve stops unplaced replicas first, then those on the emptiest nodes, newest first.
        for rep in sorted(live, key=self._stop_rank)[: max(0, len(live) - target)]:
            self._stop(rep, now)
        self._place(now)

    def _stop_rank(self, rep: Replica) -> tuple[int, int, int]:
        if rep.node is None:
            return 0, 0, -rep.rid
        return 1, sum(r.state != STOPPING for r in rep.node.replicas), -rep.rid

    def _stop(self, rep: Replica, now: float) -> None:
        if rep.state == PENDING:
            self.pending.remove(rep)
            self.replicas.remove(rep)
            return
        if rep.state == RUNNING:
            self.running.remove(rep)
        if rep.active:  # graceful drain: no new requests, gone when the last one ends
            rep.state = STOPPING
        else:
            self._remove(rep, now)

    def _remove(self, rep: Replica, now: float) -> None:
        rep.state = GONE
        self.replicas.remove(rep)
        rep.node.replicas.remove(rep)
        if not rep.node.replicas:
            rep.node.idle_since = now
        self._place(now)

    def _place(self, now: float) -> None:
        while self.pending:
            free = [n for n in self.nodes if n.ready and len(n.replicas) < self.s.replicas_per_node]
            if not free:
                return
            node = max(free, key=lambda n: (len(n.replicas), -n.nid))
            rep = self.pending.popleft()
            rep.node, rep.state, node.idle_since = node, STARTING, None
            node.replicas.append(rep)
            self._at(now + self.s.profile.replica_startup_s, REPLICA_READY, rep)

    def _replica_ready(self, rep: Replica, now: float) -> None:
        if rep.state != STARTING:
            return  # stopped while it started
        rep.state, rep.vt_at = RUNNING, now
        self.running.append(rep)
        self.peak_replicas = max(self.peak_replicas, len(self.running))
        while self.queue and rep.active < self.s.max_ongoing_requests:
            self._admit(self.queue.popleft(), rep, now)

    def _launch(self, now: float, ready: bool) -> None:
        node = Node(next(self.nids), now, ready, now if ready else None)
        self.nodes.append(node)
        self.peak_nodes = max(self.peak_nodes, len(self.nodes))
        self.node_log.append((now, "ready" if ready else "launch", node.nid))
        if not ready:
            self._at(now + self.s.profile.node_startup_s, NODE_READY, node)

    def _node_ready(self, node: Node, now: float) -> None:
        node.ready, node.idle_since = True, now
        self.node_log.append((now, "ready", node.nid))
        self._place(now)

    def _autoscale_nodes(self, now: float) -> None:
        """The Ray autoscaler: nodes for every pending replica at once; idle nodes go."""
        rpn, profile = self.s.replicas_per_node, self.s.profile
        coming = sum(rpn - len(n.replicas) for n in self.nodes if not n.ready)
        max_nodes = profile.max_nodes or math.ceil(self.cfg.max_replicas / rpn)
        for _ in range(
            min(math.ceil((len(self.pending) - coming) / rpn), max_nodes - len(self.nodes))
        ):
            self._launch(now, ready=False)
        for node in list(self.nodes):
            idle_for = now - node.idle_since if node.ready and not node.replicas else -1.0
            if idle_for >= profile.node_idle_timeout_s and len(self.nodes) > profile.min_nodes:
                self.nodes.remove(node)
                self._bill(node, now)
                self.node_log.append((now, "remove", node.nid))

    def _bill(self, node: Node, end: float) -> None:
        horizon = self.w.horizon_s
        self.node_seconds += max(0.0, min(end, horizon) - min(node.launched_at, horizon))

    # metrics and the controller

    def _ongoing(self) -> float:
        return len(self.queue) + sum(rep.active for rep in self.running)

    def _push(self, now: float) -> None:
        while self.samples and self.samples[0][0] <= now - self.cfg.look_back_period_s:
            self.samples.popleft()
        self.report = list(self.samples) or [(now, self._ongoing())]

    def _observed_total(self, now: float) -> float:
        """The controller's time-weighted mean of the last report, its last sample held till now."""
        if not self.report:
            return 0.0
        area = sum(v * (t1 - t0) for (t0, v), (t1, _) in itertools.pairwise(self.report))
        last_t, last_v = self.report[-1]
        last_window = now - last_t if now > last_t else 1e-3
        return (area + last_v * last_window) / (last_t + last_window - self.report[0][0])

    def _tick(self, now: float, target: int) -> int:
        new = decide(
            self.cfg, self._observed_total(now), len(self.running), target, self.state, now
        )
        if new != target:
            self.decisions.append((now, new))
            self._set_target(new, now)
        self._autoscale_nodes(now)
        return new

    # the loop

    def _start(self) -> int:
        """Warm start: the initial target's replicas run at t=0 on ready nodes."""
        cfg, rpn = self.cfg, self.s.replicas_per_node
        target = max(cfg.min_replicas, min(cfg.max_replicas, cfg.initial_replicas or 0))
        for _ in range(max(math.ceil(target / rpn), self.s.profile.min_nodes)):
            self._launch(0.0, ready=True)
        self._set_target(target, 0.0)
        for rep in list(self.replicas):
            self._replica_ready(rep, 0.0)
        self.events.clear()
        record = min(cfg.look_back_period_s * RECORD_INTERVAL_FACTOR, cfg.metrics_interval_s)
        for kind, period in ((SAMPLE, record), (PUSH, cfg.metrics_interval_s), (TICK, TICK_S)):
            self._at(0.0, kind, period)
        return target

    def execute(self) -> Run:
        target = self._start()
        arrivals, n, i, next_timeline = self.w.arrivals, len(self.w.arrivals), 0, 0.0
        horizon, events = self.w.horizon_s, self.events
        while events:
            if i < n and arrivals[i] <= events[0][0]:
                self._arrive(i, arrivals[i])
                i += 1
                continue
            now, _, kind, obj, version = heapq.heappop(events)
            if kind == DONE and version == obj.version:
                self._complete(obj, now)
            elif kind == TICK:
                if now >= horizon and ((i == n and not self.open) or now > horizon + MAX_DRAIN_S):
                    break
                target = self._tick(now, target)
                if now >= next_timeline:
                    self._record_timeline(now, target, i)
                    next_timeline += TIMELINE_STEP_S
                self._at(now + obj, TICK, obj)
            elif kind == SAMPLE:
                self.samples.append((now, self._ongoing()))
                self._at(now + obj, SAMPLE, obj)
            elif kind == PUSH:
                self._push(now)
                self._at(now + obj, PUSH, obj)
            elif kind == NODE_READY:
                self._node_ready(obj, now)
            elif kind == REPLICA_READY:
                self._replica_ready(obj, now)
        for node in self.nodes:
            self._bill(node, horizon)
        return Run(self._summary(n), self.decisions, self.node_log, self.timeline)

    def _record_timeline(self, now: float, target: int, arrived: int) -> None:
        earlier = bisect_right(self.w.arrivals, now - TIMELINE_STEP_S)
        self.timeline.append(
            {
                "t": now,
                "arrival_rate": (arrived - earlier) / TIMELINE_STEP_S,
                "ongoing": self._ongoing(),
                "queued": len(self.queue),
                "target_replicas": target,
                "running_replicas": len(self.running),
                "nodes": len(self.nodes),
            }
        )

    def _summary(self, requests: int) -> Summary:
        percentiles = {}
        for name, values, scale in (
            ("ttft_p{}_ms", self.ttfts, 1000),
            ("wait_p{}_s", self.waits, 1),
            ("tpot_p{}_ms", self.tpots, 1000),
        ):
            values.sort()
            for q in (50, 99):
                at = min(len(values) - 1, q * len(values) // 100)
                percentiles[name.format(q)] = values[at] * scale if values else None
        return Summary(
            requests=requests,
            rejected=self.rejected,
            unfinished=self.open,
            good=self.good,
            attainment=self.good / requests if requests else 1.0,
            peak_replicas=self.peak_replicas,
            peak_nodes=self.peak_nodes,
            gpu_hours=self.node_seconds * self.s.profile.gpus_per_node / 3600,
            **percentiles,
        )


def simulate(workload: Workload, scenario: Scenario) -> Run:
    return Simulation(workload, scenario).execute()


def static_baseline(workload: Workload, scenario: Scenario, goal: float) -> tuple[int, Run]:
    """The fewest always-on replicas (on ceil(N / per-node) nodes) that meet the goal, or
    max_replicas if none does."""
    scenario = replace(scenario, profile=scenario.profile.model_copy(update={"min_nodes": 0}))
    for n in range(1, scenario.autoscaling.max_replicas + 1):
        run = simulate(workload, scenario.tuned(min_replicas=n, max_replicas=n, initial_replicas=n))
        if run.summary.meets(goal) or n == scenario.autoscaling.max_replicas:
            return n, run
    raise AssertionError("unreachable: max_replicas >= 1")


# --- the sweep ---------------------------------------------------------------------------------

SWEPT = ("target_ongoing_requests", "upscale_delay_s", "downscale_delay_s", "min_replicas")
GRID_FLAGS = ("target", "upscale", "downscale", "min")  # --grid-<flag> overrides each
Row = tuple[dict[str, float], Summary]


def default_grid(cfg: AutoscalingConfig) -> dict[str, list[float]]:
    """Around the deployed values: half to 1.25 x the target, no to double the upscale delay,
    a third to all of the downscale delay, and min_replicas or one more."""
    target = cfg.target_ongoing_requests
    return {
        "target_ongoing_requests": sorted(
            {max(1, round(target * f)) for f in (0.5, 0.75, 1, 1.25)}
        ),
        "upscale_delay_s": sorted({0.0, cfg.upscale_delay_s, 2 * cfg.upscale_delay_s}),
        "downscale_delay_s": sorted({round(cfg.downscale_delay_s / 3), cfg.downscale_delay_s}),
        "min_replicas": sorted({cfg.min_replicas, min(cfg.max_replicas, cfg.min_replicas + 1)}),
    }


def sweep(
    workload: Workload, scenario: Scenario, grid: dict[str, list[float]], jobs: int = 1
) -> list[Row]:
    """Every combination of the grid on the same arrivals, `jobs` simulations at a time."""
    combos = [dict(zip(SWEPT, v, strict=True)) for v in itertools.product(*map(grid.get, SWEPT))]
    combos = [c | {"min_replicas": int(c["min_replicas"])} for c in combos]
    combos = [c for c in combos if c["min_replicas"] <= scenario.autoscaling.max_replicas]
    scenarios = [scenario.tuned(**c, initial_replicas=None) for c in combos]
    if jobs <= 1:
        return list(zip(combos, map(_summary_of, [workload] * len(combos), scenarios), strict=True))
    with ProcessPoolExecutor(jobs) as pool:
        summaries = list(pool.map(_summary_of, [workload] * len(combos), scenarios))
    return list(zip(combos, summaries, strict=True))


def _summary_of(workload: Workload, scenario: Scenario) -> Summary:
    return simulate(workload, scenario).summary


def rank(rows: list[Row], goal: float) -> list[Row]:
    """Settings that meet the goal by GPU-hours (then attainment), then the rest by attainment."""

    def key(row: Row) -> tuple[bool, float, float]:
        s = row[1]
        return (False, s.gpu_hours, -s.attainment) if s.meets(goal) else (True, -s.attainment, 0)

    return sorted(rows, key=key)


def robust_choice(
    ranked: list[Row], scenario: Scenario, others: list[Workload], goal: float
) -> Row | None:
    """The cheapest setting that meets the goal on the sweep's arrivals and on `others` (other
    seeds), so a recommendation does not rest on one lucky draw."""
    for settings, summary in ranked:
        if not summary.meets(goal):
            return None
        tuned = scenario.tuned(**settings, initial_replicas=None)
        if all(_summary_of(w, tuned).meets(goal) for w in others):
            return settings, summary
    return None


# --- reports -----------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def comparison(auto: Summary, static: Summary, static_n: int, goal: float) -> str:
    rows = [
        ("meets the goal", lambda s: "yes" if s.meets(goal) else "NO"),
        ("requests", lambda s: f"{s.requests:,}"),
        ("rejected (503)", lambda s: f"{s.rejected:,}"),
        ("unfinished", lambda s: f"{s.unfinished:,}"),
        ("SLO attainment", lambda s: f"{s.attainment:.2%}"),
        ("TTFT p50 / p99 ms", lambda s: f"{_fmt(s.ttft_p50_ms)} / {_fmt(s.ttft_p99_ms)}"),
        ("queue wait p50 / p99 s", lambda s: f"{_fmt(s.wait_p50_s, 2)} / {_fmt(s.wait_p99_s, 2)}"),
        ("TPOT p50 / p99 ms", lambda s: f"{_fmt(s.tpot_p50_ms, 1)} / {_fmt(s.tpot_p99_ms, 1)}"),
        ("peak replicas / nodes", lambda s: f"{s.peak_replicas} / {s.peak_nodes}"),
        ("GPU-hours", lambda s: f"{s.gpu_hours:,.1f}"),
    ]
    lines = [f"{'':24}{'autoscaled':>20}{f'static ({static_n} always on)':>24}"]
    lines += [f"{name:24}{show(auto):>20}{show(static):>24}" for name, show in rows]
    ratio = auto.gpu_hours / static.gpu_hours if static.gpu_hours else float("nan")
    return "\n".join([*lines, f"GPU-hours autoscaled / static: {ratio:.2f}"])


def sweep_table(ranked: list[Row], goal: float, static: Summary, deployed: dict) -> str:
    lines = [
        f"{'target':>7}{'up s':>6}{'down s':>8}{'min':>5} {'attain':>8}{'503':>7}{'TTFT p99':>10}"
        f"{'wait p99':>10}{'peak':>6}{'GPU-h':>9}{'/static':>9}  meets"
    ]
    for settings, s in ranked:
        lines.append(
            f"{settings['target_ongoing_requests']:>7g}{settings['upscale_delay_s']:>6g}"
            f"{settings['downscale_delay_s']:>8g}{settings['min_replicas']:>5} "
            f"{s.attainment:>8.2%}{s.rejected:>7}{_fmt(s.ttft_p99_ms):>10}"
            f"{_fmt(s.wait_p99_s, 1):>10}{s.peak_replicas:>6}{s.gpu_hours:>9.1f}"
            f"{s.gpu_hours / static.gpu_hours:>9.2f}  {'yes' if s.meets(goal) else 'no '}"
            + ("  (deployed)" if settings == deployed else "")
        )
    return "\n".join(lines)


def recommendation(group: str, cfg: AutoscalingConfig, settings: dict[str, float]) -> str:
    """The node group's autoscaling_config with the chosen settings, ready to paste."""
    values = cfg.model_dump(mode="json", exclude_defaults=True, exclude={"policy"})
    values.update(settings, initial_replicas=None)
    values = {  # in the config's field order, whole numbers without ".0"
        k: int(v) if isinstance(v, float) and v.is_integer() else v
        for k in type(cfg).model_fields
        if (v := values.get(k)) is not None
    }
    block = yaml.safe_dump({"autoscaling_config": values}, sort_keys=False)
    return f"# serve_config.yaml, node group {group}:\n{block.rstrip()}"


def plot(run: Run, path: str, title: str) -> None:
    """The timeline as a PNG: traffic above, replicas and nodes below (Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    hours = [p["t"] / 3600 for p in run.timeline]
    fig = Figure(figsize=(11, 6), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(hours, [p["ongoing"] for p in run.timeline], label="ongoing (running + queued)")
    rate = top.twinx()
    rate.plot(hours, [p["arrival_rate"] for p in run.timeline], "C1", lw=0.6, label="req/s")
    top.set_title(title)
    top.legend(loc="upper left")
    rate.legend(loc="upper right")
    for key in ("target_replicas", "running_replicas", "nodes"):
        bottom.step(
            hours, [p[key] for p in run.timeline], where="post", label=key.replace("_", " ")
        )
    bottom.set_xlabel("hours")
    bottom.legend(loc="upper left")
    fig.savefig(path, format="png", dpi=100)


# --- the command line --------------------------------------------------------------------------


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not numbers separated by commas: {text!r}") from None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.capacity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--config", default="serve_config.yaml", help="serve config file")
    add("--group", help="node group (default: the first)")
    add("--profile", required=True, help="replica profile YAML (loadtest/planning/)")
    add("--profile-from-bench", metavar="JSON", help="latency from `make bench` results.json")
    traffic = parser.add_mutually_exclusive_group(required=True)
    traffic.add_argument("--rate-curve", help="YAML: points [[t_s, req_per_s], ...]")
    traffic.add_argument("--trace", help="CSV timestamp[,output_tokens] or samples.jsonl")
    add("--seed", type=int, default=0, help="of the arrivals and the drawn output lengths")
    add("--output-tokens", type=float, default=256, help="mean (geometric) where none is given")
    add("--slo", default="loadtest/slo/interactive.yaml", help="its goodput targets judge requests")
    add("--goal", type=float, default=0.99, help="fraction of good requests (and no 503s)")
    add("--json", help="write inputs, results and the timeline here")
    add("--plot", help="write the timeline as a PNG here")
    add("--sweep", action="store_true", help="try a grid of settings and recommend one")
    for key, flag in zip(SWEPT, GRID_FLAGS, strict=True):
        add(f"--grid-{flag}", type=_floats, metavar="A,B,...", help=f"sweep values of {key}")
    add("--check-seeds", type=int, default=2, help="other seeds the recommendation must pass")
    add("--jobs", type=int, default=os.cpu_count() or 1, help="sweep processes")
    args = parser.parse_args(argv)
    if not 0 < args.goal <= 1:
        parser.error("--goal must be in (0, 1]")
    return args


def make_workload(args: argparse.Namespace, seed: int) -> Workload:
    """The traffic the options describe, drawn with this seed."""
    if args.rate_curve:
        document = _read_yaml(args.rate_curve)
        document = {"points": document} if isinstance(document, list) else document
        curve = _validated(RateCurve, document, args.rate_curve)
        arrivals = poisson_arrivals(curve, seed)
        given: list[int | None] = [None] * len(arrivals)
        horizon, source = curve.points[-1][0], f"rate curve {args.rate_curve}"
    else:
        arrivals, given = read_trace(args.trace)
        horizon, source = arrivals[-1], f"trace {args.trace}"
    drawn = draw_tokens(len(arrivals), args.output_tokens, seed)
    tokens = [n if n is not None else d for n, d in zip(given, drawn, strict=True)]
    return Workload(
        arrivals,
        tokens,
        horizon,
        f"{source}: {len(arrivals):,} requests over {horizon:,.0f} s ({horizon / 3600:.1f} h) "
        f"(mean {len(arrivals) / max(horizon, 1):.2f} req/s), output tokens mean "
        f"{statistics.fmean(tokens):.0f}, seed {seed}",
    )


def build(args: argparse.Namespace) -> tuple[NodeGroupConfig, Workload, Scenario]:
    """The node group, the traffic and the scenario the options describe."""
    group = load_group(args.config, args.group)
    profile = _validated(ReplicaProfile, _read_yaml(args.profile), args.profile)
    if args.profile_from_bench:
        profile = profile_from_bench(args.profile_from_bench, profile)
    if group.tensor_parallel_size > profile.gpus_per_node:
        raise PlannerInputError(
            f"TP {group.tensor_parallel_size} does not fit a {profile.gpus_per_node}-GPU node"
        )
    try:
        targets = SLO.from_options(args.slo).goodput
    except (OSError, yaml.YAMLError, ValidationError) as error:
        raise PlannerInputError(f"cannot read SLO {args.slo}: {error}") from None
    scenario = Scenario(
        autoscaling=group.autoscaling_config,
        max_ongoing_requests=group.max_ongoing_requests,
        max_queued_requests=group.max_queued_requests,
        replicas_per_node=profile.gpus_per_node // group.tensor_parallel_size,
        profile=profile,
        targets=targets,
    )
    return group, make_workload(args, args.seed), scenario


def main(argv: list[str]) -> int:
    """Exit 0 with a plan (and, with --sweep, a recommendation); 1 when no swept setting meets
    the goal; 2 on bad input."""
    args = parse_args(argv)
    try:
        group, workload, scenario = build(args)
    except PlannerInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    started, cfg, targets = time.perf_counter(), scenario.autoscaling, scenario.targets
    settings = cfg.model_dump(mode="json", exclude={"policy"})
    print(
        f"==> {group.name}: TP {group.tensor_parallel_size}, {scenario.replicas_per_node} replicas"
        f" per {scenario.profile.gpus_per_node}-GPU node; {scenario.profile.description}\n"
        f"==> traffic: {workload.description}\n==> SLO per request: TTFT <= {targets.ttft_ms} ms,"
        f" TPOT <= {targets.tpot_ms} ms; goal {args.goal:.1%} good and no 503s\n==> autoscaling: "
        + ", ".join(f"{k} {v}" for k, v in settings.items() if v is not None)
    )
    run = simulate(workload, scenario)
    static_n, static = static_baseline(workload, scenario, args.goal)
    print(f"\n{comparison(run.summary, static.summary, static_n, args.goal)}")
    inputs = {**vars(args), "autoscaling_config": settings, "traffic": workload.description}
    result: dict[str, Any] = {
        "inputs": inputs | {"profile": scenario.profile.model_dump()},
        "autoscaled": asdict(run),
        "static": {"replicas": static_n, **asdict(static.summary)},
    }
    status = 0
    if args.sweep:
        defaults = default_grid(cfg)
        grid = {
            key: getattr(args, f"grid_{flag}") or defaults[key]
            for key, flag in zip(SWEPT, GRID_FLAGS, strict=True)
        }
        ranked = rank(sweep(workload, scenario, grid, args.jobs), args.goal)
        print(f"\n==> sweep: {len(ranked)} settings, best first")
        print(sweep_table(ranked, args.goal, static.summary, {k: settings[k] for k in SWEPT}))
        result["sweep"] = [{**row, **asdict(summary)} for row, summary in ranked]
        others = [make_workload(args, args.seed + k) for k in range(1, args.check_seeds + 1)]
        chosen = robust_choice(ranked, scenario, others, args.goal)
        if chosen:
            result["recommendation"] = recommendation(group.name, cfg, chosen[0])
            print(
                f"\n==> recommended: the cheapest setting that meets the goal here and with "
                f"{args.check_seeds} other seeds ({chosen[1].gpu_hours:.1f} GPU-hours; static "
                f"{static.summary.gpu_hours:.1f}):\n{result['recommendation']}"
            )
        else:
            print("\n==> no setting meets the goal: raise max_replicas (and nodes) or relax it")
            status = 1
    print(f"\n==> simulated in {time.perf_counter() - started:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"==> {args.json}")
    if args.plot:
        plot(run, args.plot, f"{group.name}: autoscaled as configured (seed {args.seed})")
        print(f"==> {args.plot}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
