"""The capacity planner (loadtest/capacity.py): its copy of Serve's policy against Ray's own
functions, and the simulated behaviour a team sizing GPUs relies on. No Ray cluster."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import pytest
import ray
import ray.serve.autoscaling_policy as ray_policy
import yaml
from ray.serve._private.autoscaling_state import DeploymentAutoscalingState
from ray.serve._private.common import DeploymentID
from ray.serve._private.constants import (
    SERVE_AUTOSCALING_DECISION_COUNTERS_KEY as COUNTERS,
)
from ray.serve._private.constants import (
    SERVE_AUTOSCALING_DECISION_TIMESTAMP_KEY as TIMESTAMP,
)
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from loadtest import capacity
from loadtest.capacity import (
    DelayState,
    RateCurve,
    ReplicaProfile,
    Scenario,
    Workload,
    decide,
    simulate,
)
from loadtest.slo import RequestTargets
from serve_app.config import ServeAutoscaling

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "loadtest" / "planning"
# A fixed profile for the planner's own behaviour (the shipped ones change with measurements).
ESTIMATES = ROOT / "tests" / "data" / "h100-tp4-estimates.yaml"

# ---------------------------------------------------------------------------------------------
# The policy copy against Ray's code


def test_ray_version_is_the_one_the_policy_was_copied_from():
    assert ray.__version__ == "2.60.0", (
        "loadtest.capacity.decide copies Ray Serve 2.60's autoscaling policy: re-read "
        "ray/serve/autoscaling_policy.py and _private/autoscaling_state.py, update the copy, "
        "then this pin"
    )


def _context(cfg: AutoscalingConfig, running: int, target: int, total: float, state: dict):
    return AutoscalingContext(
        deployment_id=DeploymentID(name="engine", app_name="app"),
        deployment_name="engine",
        app_name="app",
        current_num_replicas=running,
        target_num_replicas=target,
        running_replicas=[],
        total_num_requests=total,
        total_queued_requests=0.0,
        aggregated_metrics={},
        raw_metrics={},
        capacity_adjusted_min_replicas=cfg.min_replicas,
        capacity_adjusted_max_replicas=cfg.max_replicas,
        policy_state=state,
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=None,
        config=cfg,
    )


def _ray_bounds(cfg: AutoscalingConfig) -> DeploymentAutoscalingState:
    """The controller's own apply_bounds, without its metrics gauges (no target capacity)."""
    state = object.__new__(DeploymentAutoscalingState)
    state._config, state._target_capacity, state._target_capacity_direction = cfg, None, None
    return state


CONFIGS = [
    AutoscalingConfig(min_replicas=0, max_replicas=4, target_ongoing_requests=2,
                      upscale_delay_s=3, downscale_delay_s=5),
    AutoscalingConfig(min_replicas=1, max_replicas=4, target_ongoing_requests=24,
                      upscale_delay_s=30, downscale_delay_s=900),
    AutoscalingConfig(min_replicas=0, max_replicas=10, target_ongoing_requests=3.5,
                      upscale_delay_s=2, downscale_delay_s=6, downscale_to_zero_delay_s=11,
                      upscaling_factor=1.7, downscaling_factor=0.4),
    AutoscalingConfig(min_replicas=2, max_replicas=8, target_ongoing_requests=1,
                      upscale_delay_s=0, downscale_delay_s=0, upscaling_factor=0.3,
                      downscaling_factor=2.5),
    AutoscalingConfig(min_replicas=0, max_replicas=3, initial_replicas=2,
                      target_ongoing_requests=5, upscale_delay_s=1.5, downscale_delay_s=4,
                      downscale_to_zero_delay_s=0, upscale_smoothing_factor=2.0),
]  # fmt: skip


@pytest.mark.parametrize(
    "cfg", CONFIGS, ids=lambda c: f"min{c.min_replicas}-t{c.target_ongoing_requests}"
)
def test_decisions_match_ray_tick_by_tick(cfg: AutoscalingConfig):
    """Ray's chain as the controller runs it (wrapped policy, policy_state carried, ceil of a
    float, apply_bounds) and `decide`, on the same random sequences: identical decisions and
    identical delay state at every tick."""
    wrapped = ray_policy._apply_autoscaling_config(ray_policy.default_autoscaling_policy)
    bounds = _ray_bounds(cfg)
    rng = random.Random(f"policy-{cfg.target_ongoing_requests}")
    clock = [0.0]
    fake_time = types.SimpleNamespace(time=lambda: clock[0])
    # _apply_delay_logic reads the module's `time.time()`: give that module a simulated clock.
    with mock.patch.object(ray_policy, "time", fake_time):
        for _ in range(80):  # sequences per config, 60 ticks each
            clock[0] = rng.uniform(1e3, 2e9)
            target = bounds.apply_bounds(rng.randint(0, cfg.max_replicas))
            running = rng.randint(0, target)
            ray_state: dict = {}
            mine = DelayState()
            for _tick in range(60):
                roll = rng.random()
                if roll < 0.25:
                    total = 0.0
                elif roll < 0.35:  # a spike
                    total = rng.uniform(5, 20) * cfg.target_ongoing_requests * cfg.max_replicas
                else:
                    total = rng.uniform(0, 2.5) * cfg.target_ongoing_requests * max(1, target)
                if rng.random() < 0.3:
                    total = float(round(total))
                decision, ray_state = wrapped(
                    _context(cfg, running, target, total, ray_state.copy())
                )
                if isinstance(decision, float):
                    decision = math.ceil(decision)
                expected = bounds.apply_bounds(decision)

                assert decide(cfg, total, running, target, mine, clock[0]) == expected
                assert (mine.counter, mine.since) == (
                    ray_state.get(COUNTERS, 0),
                    ray_state.get(TIMESTAMP),
                )
                target = expected
                # Replicas start or stop towards the target, sometimes one at a time; rarely one dies.
                if running != target:
                    running += (1 if target > running else -1) * rng.randint(
                        1, abs(target - running)
                    )
                if running and rng.random() < 0.03:
                    running -= 1
                clock[0] += rng.choice((0.1, 1.0, 1.0, 2.5, 7.0))


def test_the_quick_check_figures():
    """The hand check recorded when the planner was designed, through Ray and through `decide`."""
    cfg = CONFIGS[0]
    assert ray_policy.default_autoscaling_policy(_context(cfg, 1, 1, 7, {})) == (3.5, {})
    assert ray_policy.default_autoscaling_policy(_context(cfg, 0, 0, 3, {})) == (1, {})
    assert ray_policy.default_autoscaling_policy(_context(cfg, 0, 0, 0, {})) == (0, {})
    state = DelayState()
    decisions = [decide(cfg, 7, 1, 1, state, 1000.0 + t) for t in range(4)]
    assert decisions == [1, 1, 1, 4]
    assert decide(cfg, 3, 0, 0, DelayState(), 0.0) == 1  # from zero: no delay


# ---------------------------------------------------------------------------------------------
# The simulation

TARGETS = RequestTargets(ttft_ms=450, tpot_ms=40)
# Two replicas per 8-GPU node (TP 4); flat-ish latency so capacity is easy to reason about.
PROFILE = ReplicaProfile(
    description="test",
    gpus_per_node=8,
    node_startup_s=300,
    replica_startup_s=120,
    node_idle_timeout_s=600,
    min_nodes=0,
    latency=[
        {"concurrency": 1, "ttft_s": 0.1, "tpot_s": 0.02},
        {"concurrency": 16, "ttft_s": 0.2, "tpot_s": 0.03},
        {"concurrency": 64, "ttft_s": 0.8, "tpot_s": 0.08},
    ],
)


def _scenario(profile: ReplicaProfile = PROFILE, max_ongoing=32, max_queued=-1, **autoscaling):
    settings = {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 4,
                "upscale_delay_s": 30, "downscale_delay_s": 300} | autoscaling  # fmt: skip
    return Scenario(
        autoscaling=ServeAutoscaling(**settings),
        max_ongoing_requests=max_ongoing,
        max_queued_requests=max_queued,
        replicas_per_node=2,
        profile=profile,
        targets=TARGETS,
    )


def _steady(segments: list[tuple[float, float]], tokens: int = 50) -> Workload:
    """Evenly spaced arrivals: (duration_s, req/s) after one another."""
    arrivals, start = [], 0.0
    for duration, rate in segments:
        count = int(duration * rate)
        arrivals += [start + (i + 0.5) / rate for i in range(count)]
        start += duration
    return Workload(arrivals, [tokens] * len(arrivals), start, "test")


def test_load_below_one_replica_keeps_min_replicas():
    # 0.5 req/s of ~1.1 s requests: ~0.6 ongoing against a target of 4 per replica.
    run = simulate(_steady([(3600, 0.5)]), _scenario())
    assert run.decisions == []
    assert run.summary.peak_replicas == 1 and run.summary.peak_nodes == 1
    assert run.summary.attainment == 1.0
    assert run.summary.gpu_hours == pytest.approx(8.0)


def test_a_spike_scales_up_after_the_delay_and_down_after_the_downscale_delay():
    # 10 req/s of ~1.5 s requests is ~15 ongoing: 4 replicas at target 4.
    run = simulate(_steady([(600, 0.5), (1200, 10), (3000, 0.5)]), _scenario())
    (up_at, up_to), *rest = run.decisions
    # Upscale delay, plus the metric lag: a 6 s sample and a 10 s push before the mean moves.
    assert 600 + 30 <= up_at <= 600 + 30 + 20 and up_to == 4
    down_at, down_to = rest[-1]
    assert down_to == 1
    assert 1800 + 300 <= down_at <= 1800 + 300 + 40
    assert all(t < 1800 or t >= 1800 + 300 for t, _ in rest)


def test_nodes_come_for_pending_replicas_and_go_after_the_idle_timeout():
    run = simulate(_steady([(600, 0.5), (1200, 10), (3000, 0.5)]), _scenario())
    (up_at, _), *_, (down_at, _) = run.decisions
    launches = [(t, n) for t, event, n in run.node_log if event == "launch"]
    # Target 4 at two replicas per node with one node warm: one slot free there, so one node
    # is launched for the two replicas still pending, at once.
    assert launches == [(up_at, 1)]
    assert (up_at + PROFILE.node_startup_s, "ready", 1) in run.node_log
    # The new node's replicas run replica_startup_s after it is ready.
    ready_timeline = [p for p in run.timeline if p["running_replicas"] == 4]
    first_four = ready_timeline[0]["t"]
    assert up_at + 300 + 120 <= first_four <= up_at + 300 + 120 + 10
    # Back to one replica: the emptier node is freed first and removed after the idle timeout.
    assert (down_at + PROFILE.node_idle_timeout_s, "remove", 1) in run.node_log
    assert run.summary.peak_nodes == 2


def test_scale_from_zero_queues_the_first_request_for_a_cold_start():
    scenario = _scenario(min_replicas=0, max_replicas=2, downscale_to_zero_delay_s=120)
    run = simulate(Workload([1000.0], [20], 4000.0, "one"), scenario)
    summary = run.summary
    assert summary.rejected == 0 and summary.unfinished == 0
    cold = PROFILE.node_startup_s + PROFILE.replica_startup_s
    assert cold <= summary.wait_p50_s <= cold + 20  # plus up to a sample and a push
    assert run.decisions[0][1] == 1 and run.decisions[-1][1] == 0
    assert 1000 + cold + 120 <= run.decisions[-1][0] <= 1000 + cold + 120 + 40
    assert [event for _, event, _ in run.node_log] == ["launch", "ready", "remove"]


def test_from_zero_the_metric_pipeline_sets_when_the_cold_start_begins():
    """Samples every 6 s (look_back 30 s x 0.2), pushes every 10 s, and an extra push when a
    request queues with no replica running (Serve's router does the same)."""
    scenario = _scenario(min_replicas=0, max_replicas=2)
    # Alone, a request at 1000 s is first seen in the 1002 s sample, pushed at 1010 s.
    alone = simulate(Workload([1000.0], [20], 2000.0, "one"), scenario)
    assert alone.decisions[0] == (1010.0, 1)
    # A second one at 1005.5 s pushes that sample at once: the decision comes at the next tick.
    pair = simulate(Workload([1000.0, 1005.5], [20, 20], 2000.0, "two"), scenario)
    assert pair.decisions[0] == (1006.0, 1)
    # ...but only once a sample has seen the queue: at 1003 + 1006.5 s, the next one is 1008 s.
    late = simulate(Workload([1003.0, 1006.5], [20, 20], 2000.0, "two"), scenario)
    assert late.decisions[0] == (1010.0, 1)


def test_max_queued_requests_bounds_the_queue():
    burst = Workload([1.0] * 10, [500] * 10, 600.0, "burst")
    scenario = _scenario(min_replicas=1, max_replicas=1, max_ongoing=2, max_queued=3)
    summary = simulate(burst, scenario).summary
    assert summary.rejected == 5  # 2 on the replica, 3 queued
    assert summary.unfinished == 0
    assert summary.attainment <= 0.5
    assert not summary.meets(summary.attainment)  # any 503 misses the goal


def test_a_stopped_replica_drains_before_its_node_idles():
    # Three warm replicas (nodes: 2 + 1), each streaming one ~60 s answer; the load wants one
    # replica after 10 s, so two stop while busy and finish their answers first.
    scenario = _scenario(initial_replicas=3, max_replicas=3, downscale_delay_s=10)
    run = simulate(Workload([1.0, 1.0, 1.0], [3000] * 3, 1500.0, "long"), scenario)
    assert run.summary.good == 3
    (down_at, target), *_ = run.decisions
    assert target == 1 and down_at < 30
    removals = [t for t, event, _ in run.node_log if event == "remove"]
    assert removals and removals[0] >= 1 + 3000 * 0.02 + PROFILE.node_idle_timeout_s


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_static_gpu_hours_are_whole_nodes_for_the_whole_window(replicas: int):
    workload = _steady([(7200, 2)])
    fixed = _scenario(min_replicas=replicas, max_replicas=replicas, initial_replicas=replicas)
    summary = simulate(workload, fixed).summary
    assert summary.gpu_hours == pytest.approx(math.ceil(replicas / 2) * 8 * 2.0)
    assert summary.peak_replicas == replicas


def test_static_baseline_is_the_fewest_replicas_that_meet_the_goal():
    workload = _steady([(3600, 20)])  # ~45 ongoing: past one replica's max_ongoing of 32
    n, run = capacity.static_baseline(workload, _scenario(), 0.99)
    assert n >= 2 and run.summary.meets(0.99)
    fewer = _scenario(min_replicas=n - 1, max_replicas=n - 1, initial_replicas=n - 1)
    assert not simulate(workload, fewer).summary.meets(0.99)


def _diurnal() -> Workload:
    """Six hours: quiet, a peak of ~65 ongoing requests (two nodes' worth), quiet again."""
    hour = 3600
    curve = RateCurve(points=[(0, 0.2), (hour, 0.2), (1.5 * hour, 10), (3 * hour, 10),
                              (3.5 * hour, 0.2), (6 * hour, 0.2)])  # fmt: skip
    arrivals = capacity.poisson_arrivals(curve, seed=1)
    return Workload(arrivals, capacity.draw_tokens(len(arrivals), 200, 1), 6 * hour, "diurnal")


def test_autoscaling_costs_fewer_gpu_hours_than_static_at_peak():
    workload, scenario = _diurnal(), _scenario()
    run = simulate(workload, scenario)
    n, static = capacity.static_baseline(workload, scenario, 0.99)
    assert n >= 3 and static.summary.meets(0.99)
    assert run.summary.meets(0.99)
    assert run.summary.gpu_hours < 0.8 * static.summary.gpu_hours


def test_poisson_arrivals_follow_the_curve_and_the_seed():
    curve = RateCurve(points=[(0, 0), (1000, 20), (2000, 0)])
    arrivals = capacity.poisson_arrivals(curve, seed=3)
    assert arrivals == capacity.poisson_arrivals(curve, seed=3)
    assert arrivals == sorted(arrivals) and arrivals[0] >= 0 and arrivals[-1] <= 2000
    assert abs(len(arrivals) - 20000) < 4 * math.sqrt(20000)
    early = sum(t < 500 for t in arrivals)  # an eighth of the area
    assert abs(early - 2500) < 4 * math.sqrt(2500)
    tokens = capacity.draw_tokens(50000, 256, 0)
    assert min(tokens) >= 1 and abs(sum(tokens) / len(tokens) - 256) < 5


def test_sweep_recommends_settings_that_meet_the_goal():
    workload, scenario = _diurnal(), _scenario()
    grid = {"target_ongoing_requests": [8, 16, 32], "upscale_delay_s": [0, 30],
            "downscale_delay_s": [300], "min_replicas": [1]}  # fmt: skip
    ranked = capacity.rank(capacity.sweep(workload, scenario, grid), 0.99)
    assert len(ranked) == 6
    best_settings, best = ranked[0]
    assert best.meets(0.99)
    meeting = [s.gpu_hours for _, s in ranked if s.meets(0.99)]
    assert best.gpu_hours == min(meeting)
    snippet = capacity.recommendation("g", scenario.autoscaling, best_settings)
    recommended = ServeAutoscaling(**yaml.safe_load(snippet)["autoscaling_config"])
    again = dataclasses.replace(scenario, autoscaling=recommended)
    assert simulate(workload, again).summary == best


# ---------------------------------------------------------------------------------------------
# Inputs and the command line


def test_shipped_profile_and_bench_results_load(tmp_path: Path):
    profile = ReplicaProfile.model_validate(yaml.safe_load((SHIPPED / "h100-tp4.yaml").read_text()))
    assert "derived from measured" in profile.description
    assert profile.at(0) == profile.at(1) and profile.at(1000) == profile.at(128)
    ttft, tpot = profile.at(20)
    assert 0.10 < ttft < 0.13 and 0.028 < tpot < 0.033

    # `make bench`'s results.json rows: the stack's on random prompts, per concurrency and
    # round, beside vLLM's own server's, the ShareGPT runs and the Locust client's, which the
    # profile must ignore.
    def row(system: str, concurrency: int, ttft_ms: float, tpot_ms: float, **more) -> dict:
        return {
            "client": "bench serve random", "system": system, "concurrency": concurrency,
            "median_ttft_ms": ttft_ms, "median_tpot_ms": tpot_ms, **more,
        }  # fmt: skip

    bench = tmp_path / "results.json"
    rows = [
        row("stack", 1, 100, 20, round=0),
        row("stack", 1, 120, 30, round=1),
        row("stack", 1, 140, 25, round=2),
        row("stack", 4, 200, 40),
        row("vllm", 1, 1, 1),
        row("stack", 1, 1, 1, client="locust"),
        row("stack", 1, 1, 1, client="bench serve sharegpt"),
    ]
    bench.write_text(json.dumps({"rows": rows}))
    measured = capacity.profile_from_bench(bench, profile)
    assert [(p.concurrency, p.ttft_s, p.tpot_s) for p in measured.latency] == [
        (1, 0.12, 0.025),  # the median over rounds
        (4, 0.2, 0.04),
    ]
    assert measured.replica_startup_s == profile.replica_startup_s


def test_shipped_profiles_are_derived_from_the_measured_step_times():
    """The committed profiles are what loadtest.gpu_profile derives (no hand edits), and the
    derivation keeps the measurement's floor: never faster than the scaled measured step."""
    from loadtest import gpu_profile

    assert gpu_profile.main(["check"]) == 0
    shard, _ = gpu_profile._measured()
    for group in gpu_profile.GROUPS:
        table = gpu_profile.latency_table(group)
        tpots = [row["tpot_s"] for row in table]
        assert tpots == sorted(tpots)  # more sequences, slower steps
        decode_scale, _ = gpu_profile.GPU_SCALE[group.gpu]
        for row in table:
            floor = gpu_profile.decode_ms(shard, group.tp, row["concurrency"], 1128) * decode_scale
            assert row["tpot_s"] * 1000 > floor + 4  # + all-reduces and scheduling
    # The measured H200 TP-4 step at batch 64, 1k context, is 15.6 ms: interpolation hits it.
    assert gpu_profile.decode_ms(shard, 4, 64, 1024) == pytest.approx(15.587)


def test_cli_plans_and_sweeps_on_the_shipped_files(tmp_path: Path, capsys):
    out, png = tmp_path / "plan.json", tmp_path / "plan.png"
    status = capacity.main([
        "--config", str(ROOT / "serve_config.yaml"), "--group", "h100-tp4",
        "--profile", str(ESTIMATES),
        "--rate-curve", str(SHIPPED / "spike.yaml"),
        "--slo", str(ROOT / "loadtest" / "slo" / "interactive.yaml"),
        "--json", str(out), "--plot", str(png),
        "--sweep", "--grid-target", "24", "--grid-upscale", "0",
        "--grid-downscale", "900", "--grid-min", "2,4",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    # The 2-hour example's spike outruns a 14-minute cold start: only 4 warm replicas meet it.
    assert status == 0
    assert "GPU-hours autoscaled / static" in printed and "(deployed)" not in printed
    assert result["inputs"]["group"] == "h100-tp4"
    assert result["autoscaled"]["summary"]["requests"] == result["static"]["requests"] > 10000
    assert [row["min_replicas"] for row in result["sweep"]] == [4, 2]
    assert "min_replicas: 4" in result["recommendation"] and "min_replicas: 4" in printed
    assert result["autoscaled"]["timeline"][1]["t"] == 10.0
    assert png.read_bytes().startswith(b"\x89PNG")


def test_module_entry_point_exits_1_without_a_recommendation_and_2_on_bad_input(tmp_path):
    command = [sys.executable, "-m", "loadtest.capacity", "--profile", str(ESTIMATES),
               "--rate-curve", str(SHIPPED / "spike.yaml"), "--config", str(ROOT / "serve_config.yaml")]  # fmt: skip
    sweep = ["--sweep", "--grid-target", "24", "--grid-upscale", "0", "--grid-downscale", "900",
             "--grid-min", "2", "--check-seeds", "0"]  # fmt: skip
    done = subprocess.run([*command, *sweep], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and "no setting meets the goal" in done.stdout
    bad = subprocess.run([*command, "--group", "tpu"], cwd=ROOT, capture_output=True, text=True)
    assert (
        bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    )


def test_cli_reads_a_trace(tmp_path: Path, capsys):
    trace = tmp_path / "trace.csv"
    rows = [f"{1.8e9 + i * 0.5},{'' if i % 2 else 100}" for i in range(2000)]
    trace.write_text("timestamp,output_tokens\n" + "\n".join(rows) + "\n")
    out = tmp_path / "plan.json"
    argv = ["--profile", str(SHIPPED / "h100-tp4.yaml"), "--trace", str(trace),
            "--config", str(ROOT / "serve_config.yaml"), "--json", str(out)]  # fmt: skip
    assert capacity.main(argv) == 0
    summary = json.loads(out.read_text())["autoscaled"]["summary"]
    assert summary["requests"] == 2000 and summary["attainment"] == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("node_startup_s"), "node_startup_s: Field required"),
        (lambda d: d["latency"].reverse(), "concurrency must be strictly increasing"),
        (lambda d: d.update(gpus_per_node=2), "TP 4 does not fit a 2-GPU node"),
    ],
)
def test_bad_profile_exits_2_with_the_reason(tmp_path: Path, capsys, change, message):
    document = yaml.safe_load((SHIPPED / "h100-tp4.yaml").read_text())
    change(document)
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump(document))
    argv = ["--profile", str(profile), "--rate-curve", str(SHIPPED / "spike.yaml"),
            "--config", str(ROOT / "serve_config.yaml")]  # fmt: skip
    assert capacity.main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate-curve", "missing.yaml"], "cannot read missing.yaml"),
        (["--rate-curve", "{curve}"], "times must start at 0 and increase"),
        (["--trace", "{curve}"], "needs a 'timestamp' column"),
        (["--rate-curve", str(SHIPPED / "spike.yaml"), "--group", "tpu"], "no node group 'tpu'"),
    ],
)
def test_bad_traffic_or_group_exits_2(tmp_path: Path, capsys, args, message):
    curve = tmp_path / "curve.yaml"
    curve.write_text("points: [[0, 1], [10, 2], [5, 1]]\n")
    args = [a.replace("{curve}", str(curve)) for a in args]
    argv = ["--profile", str(SHIPPED / "h100-tp4.yaml"), "--config",
            str(ROOT / "serve_config.yaml"), *args]  # fmt: skip
    assert capacity.main(argv) == 2
    assert message in capsys.readouterr().err
