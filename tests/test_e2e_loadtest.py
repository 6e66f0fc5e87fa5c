"""End to end: Locust, headless, against the running CPU app, as `make loadtest` runs it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
LOCUST = Path(sys.executable).parent / "locust"


def locust(stack, run_dir: Path, *args: str, files: str = "loadtest/locustfile.py"):
    return subprocess.run(
        [
            str(LOCUST),
            "-f",
            files,
            "--headless",
            "--host",
            stack.base_url,
            "--run-dir",
            str(run_dir),
            "--csv",
            str(run_dir / "locust"),
            "--only-summary",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_smoke_run_against_the_cpu_app(stack, tmp_path):
    result = locust(
        stack,
        tmp_path,
        "-u",
        "4",
        "-r",
        "4",
        "-t",
        "30s",
        "--slo-file",
        "loadtest/slo/cpu-dev.yaml",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"report: {tmp_path / 'report.html'}" in result.stdout
    for name in (
        "samples.jsonl",
        "timeline.jsonl",
        "summary.json",
        "report.html",
        "locust_stats.csv",
    ):
        assert (tmp_path / name).stat().st_size > 0, name

    samples = rows(tmp_path / "samples.jsonl")
    summary = json.loads((tmp_path / "summary.json").read_text())
    ok = [s for s in samples if s["ok"]]
    assert summary["failed"] == 0 and summary["slo"]["passed"] is True
    assert len(ok) == len(samples) == summary["completed"] >= 4  # answers run 100+ tokens
    assert sum(s["ttft_ms"] is not None for s in samples) == len(ok)
    assert all(s["output_tokens"] == sum(s["chunk_tokens"]) for s in ok)
    assert len({s["request_id"] for s in samples}) == len(samples)
    # Under load the router still adds the step-by-step prompt to math and not to everyday
    # chat (long documents and conversations may go either way: their questions count things).
    expected = {"math": "step-by-step", "short_chat": "none"}
    for sample in samples:
        assert sample["prompt_policy"] in ("none", "step-by-step")
        assert sample["prompt_policy"] == expected.get(sample["workload"], sample["prompt_policy"])
    # Locust's own table carries TTFT/TPOT/ITL rows beside the requests, one TTFT per request.
    with (tmp_path / "locust_stats.csv").open() as handle:
        stats = {
            (row["Type"], row["Name"]): int(row["Request Count"]) for row in csv.DictReader(handle)
        }
    # (Locust rewrites its CSV each second, so it may miss the last second's requests.)
    for (kind, name), count in stats.items():
        if kind == "POST":
            assert stats[("TTFT", name)] == count
    assert 0 < sum(count for (kind, _), count in stats.items() if kind == "TTFT") <= len(ok)
    assert any(kind == "ITL" for kind, _ in stats) and any(kind == "TPOT" for kind, _ in stats)
    timeline = rows(tmp_path / "timeline.jsonl")
    assert len(timeline) >= 25 and timeline[-1]["users"] == 4


def test_open_loop_spike_and_a_broken_slo_exit_1(stack, tmp_path):
    result = locust(
        stack,
        tmp_path,
        "--shape",
        "spike",
        "--request-rate",
        "2",
        "-u",
        "4",
        "-t",
        "10s",
        "--slo-ttft-p95-ms",
        "0.01",
        "--workload",
        "tests/data/loadtest_short.yaml",
        files="loadtest/locustfile.py,loadtest/shape.py",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SLO FAILED ttft_p95_ms: p95_ttft_ms = " in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["slo"]["passed"] is False
    assert summary["load"].startswith("open-loop Poisson 2 req/s")
    samples = rows(tmp_path / "samples.jsonl")
    assert samples and all(s["scheduled"] is not None for s in samples)
    # The spike shape moves the arrival rate: a quarter of the peak, then the peak.
    rates = {point["rate"] for point in rows(tmp_path / "timeline.jsonl")}
    assert {0.5, 2.0} <= rates


def test_the_sharegpt_replay_sends_real_conversations_turn_by_turn(stack, tmp_path):
    """`make loadtest WORKLOAD=sharegpt` runs against the stack: real conversations, answered,
    past their first turn (the replay's own logic: tests/test_loadtest_units.py)."""
    result = locust(
        stack, tmp_path, "-u", "2", "-r", "2", "-t", "25s", "--workload", "sharegpt",
        "--slo-file", "loadtest/slo/cpu-dev.yaml",
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stdout + result.stderr  # SLOs aside
    samples = rows(tmp_path / "samples.jsonl")
    assert samples and all(s["workload"] == "sharegpt" and s["ok"] for s in samples)
    assert max(s["turn"] for s in samples) >= 2, [s["turn"] for s in samples]
    later = [s["prompt_tokens"] for s in samples if s["turn"] >= 2]
    assert min(later) > 20  # a later turn carries the conversation before it
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failed"] == 0


def test_unreachable_server_fails_fast_with_a_hint(tmp_path):
    result = subprocess.run(
        [
            str(LOCUST),
            "-f",
            "loadtest/locustfile.py",
            "--headless",
            "-t",
            "5s",
            "--host",
            "http://127.0.0.1:9",
            "--run-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "is the server up (make serve)?" in result.stderr
