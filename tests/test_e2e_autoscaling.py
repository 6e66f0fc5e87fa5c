"""Autoscaling end to end: a load spike scales the engine deployment and the GPU nodes up, and
silence scales both back to zero (loadtest/autoscale.py on Ray's fake multi-node autoscaler).

The scenario runs in its own process with its own Ray cluster (the session's stack keeps
running beside it); the test reads the timeline it records. About 5 minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from loadtest.autoscale import AUTOSCALING, SPIKE_CLIENTS
from loadtest.fake_cluster import FakeGpuCluster

from .conftest import ROOT

pytestmark = pytest.mark.e2e

SCENARIO_TIMEOUT_S = 840


@pytest.fixture(scope="module")
def timeline(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("autoscale")
    temp_dir = tempfile.mkdtemp(prefix="fakegpu-", dir="/tmp")  # short: Ray's socket paths
    scenario = subprocess.Popen(
        [sys.executable, "-m", "loadtest.autoscale", "--out", str(out), "--temp-dir", temp_dir],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = scenario.communicate(timeout=SCENARIO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        scenario.terminate()  # it stops its cluster on SIGTERM
        output, _ = scenario.communicate(timeout=60)
    finally:
        if scenario.poll() is None:
            scenario.kill()
        cluster = FakeGpuCluster(address="", temp_dir=Path(temp_dir))
        left = [process.pid for process in cluster.processes()]
        cluster.stop()  # whatever is left over, so a failure here leaks nothing either
    assert scenario.returncode == 0, output[-5000:]
    assert not left, f"the scenario left its cluster's processes running: {left}"
    return {**json.loads((out / "timeline.json").read_text()), "plot": out / "timeline.png"}


def during(timeline: dict, phase: str) -> list[dict]:
    return [s for s in timeline["samples"] if s["phase"] == phase]


def test_at_rest_a_scale_to_zero_group_holds_no_replica_and_no_gpu_node(timeline):
    for sample in during(timeline, "idle"):
        assert (sample["running_replicas"], sample["gpu_nodes"]) == (0, 0), sample


def test_the_first_request_waits_for_a_node_and_an_engine_and_succeeds(timeline):
    first = timeline["requests"][0]
    assert (first["phase"], first["status"]) == ("cold start", 200), first
    cold = during(timeline, "cold start")
    assert any(s["pending_nodes"] for s in cold), "no GPU node was launched for the replica"
    assert cold[-1]["gpu_nodes"] == 1 and cold[-1]["running_replicas"] == 1, cold[-1]


def test_a_spike_scales_replicas_then_gpu_nodes_up(timeline):
    spike = during(timeline, "spike")
    most = AUTOSCALING["max_replicas"]
    assert max(s["in_flight"] for s in spike) == SPIKE_CLIENTS
    assert max(s["target_replicas"] for s in spike) == most
    assert max(s["running_replicas"] for s in spike) == most
    # Two replicas fill a node: the third needed a second one, launched on demand.
    assert max(s["gpu_nodes"] for s in spike) == 2
    assert any(s["pending_nodes"] for s in spike)


def test_every_request_succeeds_while_the_cluster_scales(timeline):
    failed = [r for r in timeline["requests"] if r["status"] != 200]
    assert not failed, failed[:5]
    assert sum(r["phase"] == "spike" for r in timeline["requests"]) > 3 * SPIKE_CLIENTS


def test_after_the_load_serve_scales_to_zero_and_the_idle_nodes_are_removed(timeline):
    silence = during(timeline, "silence")
    end = silence[-1]
    assert (end["target_replicas"], end["running_replicas"], end["gpu_nodes"]) == (0, 0, 0), end
    # Nodes go only after their replicas: never a replica without a node to run on.
    for sample in timeline["samples"]:
        assert sample["running_replicas"] <= 2 * sample["gpu_nodes"], sample


def test_the_timeline_is_plotted(timeline):
    assert timeline["plot"].stat().st_size > 10_000


def test_the_head_exports_nodes_per_worker_group_for_the_dashboard(timeline):
    """The dashboard's GPU-node panel reads ray_cluster_active_nodes and _pending_nodes by
    node_type (the CPU stack has no autoscaler, so tests/test_e2e_metrics.py leaves these to
    this test): the active count must follow the nodes."""
    from ray.dashboard.modules.reporter.reporter_agent import METRICS_GAUGES

    from .test_e2e_metrics import AUTOSCALER_METRICS

    assert "ray_cluster_active_nodes" in timeline["cluster_metric_names"]
    assert any(s.get("metric_active_nodes") == 2 for s in during(timeline, "spike"))
    # Pending nodes are exported only while a launch is in flight when the head reports
    # (every 5 s), and a fake node launches in 2-3 s, so a run may never show one (a GPU
    # node's 5-15 minutes always do). Both names and their node_type label are Ray's own:
    for name in AUTOSCALER_METRICS:
        assert "node_type" in METRICS_GAUGES[name.removeprefix("ray_")]._view.columns, name
