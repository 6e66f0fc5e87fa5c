"""The load-test report: one self-contained HTML page from a run folder, whatever the run left
behind (a failing SLO, only failures, no timeline, no SLO). Synthetic data, no network."""

from __future__ import annotations

import base64
import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest.report import _chunk_tokens, write_report

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_760_000_000.0
PLOTS = 5  # TTFT and TPOT distributions, latency, throughput and errors over time
SCRIPT_ERROR = "0 connection refused <script>alert('x')</script>"
IMAGE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _sample(i: int, workload: str, ok: bool, status: int, error: str | None) -> dict[str, Any]:
    rng = random.Random(i)
    ttft = rng.uniform(80, 1500) if ok else None
    chunks = [ttft + 40 * k for k in range(20)] if ok else []
    return {
        "request_id": f"req-{i}",
        "workload": workload,
        "turn": None,
        "start": T0 + i * 0.75,
        "scheduled": None,
        "status": status,
        "ok": ok,
        "error": error,
        "ttft_ms": ttft,
        "tpot_ms": 40.0 + rng.uniform(0, 10) if ok else None,
        "e2e_ms": chunks[-1] if ok else 5.0,
        "itl_ms": [40.0] * 19 if ok else [],
        "chunk_ms": chunks,
        "chunk_tokens": [None] * len(chunks),
        "prompt_tokens": 50 if ok else None,
        "output_tokens": 25 if ok else None,
        "prompt_policy": "step-by-step; reason=math" if workload == "math" else "none",
        "users": 1 + i // 10,
    }


def _summary(**extra: Any) -> dict[str, Any]:
    return {
        "duration": 32.0,
        "completed": 34,
        "failed": 6,
        "error_rate": 0.15,
        "request_throughput": 1.06,
        "output_throughput": 26.5,
        "request_goodput": None,
        "median_ttft_ms": 700.0,
        "p95_ttft_ms": 1400.0,
        "p99_ttft_ms": 1480.0,
        "errors": {"503 Service Unavailable": 4, SCRIPT_ERROR: 2},
        "by_workload": {
            "short_chat": {"completed": 17, "failed": 3, "median_ttft_ms": 650.0},
            "math": {"completed": 17, "failed": 3, "p95_tpot_ms": 49.0},
        },
        "target": "http://127.0.0.1:8000",
        "load": "closed-loop, 4 users",
        **extra,
    }


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """40 requests over 30 s in two classes; 4 refused with 503, 2 connection errors."""
    samples = []
    for i in range(40):
        workload = "short_chat" if i % 2 else "math"
        if i in (11, 12, 13, 14):
            samples.append(_sample(i, workload, False, 503, "503 Service Unavailable"))
        elif i in (30, 31):
            samples.append(_sample(i, workload, False, 0, SCRIPT_ERROR))
        else:
            samples.append(_sample(i, workload, True, 200, None))
    _write_jsonl(tmp_path / "samples.jsonl", samples)
    timeline = [
        {"t": T0 + s, "users": 1 + s // 8, "rate": None, "in_flight": s % 4} for s in range(32)
    ]
    _write_jsonl(tmp_path / "timeline.jsonl", timeline)
    slo = {
        "passed": False,
        "gates": [
            {
                "name": "ttft_p95_ms",
                "metric": "p95_ttft_ms",
                "value": 1400.0,
                "op": "<=",
                "threshold": 1000.0,
                "passed": False,
            },
            {
                "name": "max_error_rate",
                "metric": "error_rate",
                "value": 0.15,
                "op": "<=",
                "threshold": 0.2,
                "passed": True,
            },
        ],
        "goodput": {"ttft_ms": None, "tpot_ms": None, "e2el_ms": None},
    }
    (tmp_path / "summary.json").write_text(json.dumps(_summary(slo=slo)))
    return tmp_path


def _assert_self_contained(page: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page
    images = IMAGE.findall(page)
    assert len(images) == PLOTS
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in images)
    assert "Could not draw" not in page


def test_report_of_a_failing_run(run_dir: Path) -> None:
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    page = path.read_text()
    _assert_self_contained(page)
    assert '<div class="banner FAIL">FAIL — broken: ttft_p95_ms</div>' in page
    gate_row = re.search(r"<tr><td>ttft_p95_ms</td>.*?</tr>", page)
    assert gate_row and 'class="fail">FAIL' in gate_row.group(0)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "short_chat" in page and "math" in page and "503 Service Unavailable" in page


@pytest.mark.parametrize("files", ["all_failed", "nothing"])
def test_report_of_a_degenerate_run(tmp_path: Path, files: str) -> None:
    """Only failures, an empty timeline and no SLO, or an empty folder: still a whole page."""
    if files == "all_failed":
        samples = [_sample(i, "tool_call", False, 503 if i % 2 else 0, None) for i in range(6)]
        _write_jsonl(tmp_path / "samples.jsonl", samples)
        (tmp_path / "timeline.jsonl").write_text("")
        summary = {"completed": 0, "failed": 6, "error_rate": 1.0, "by_workload": {}}
        (tmp_path / "summary.json").write_text(json.dumps(summary))
    page = write_report(tmp_path).read_text()
    _assert_self_contained(page)
    assert "no SLO configured" in page
    if files == "all_failed":
        assert "HTTP 503" in page and "connection error (status 0)" in page


def test_tokens_are_spread_over_chunks_without_counts() -> None:
    sample = {"start": T0, "chunk_ms": [100.0, 200.0, 300.0, 400.0], "output_tokens": 9}
    sample["chunk_tokens"] = [None, None, None, None]  # usage only in the final event
    at, tokens = _chunk_tokens(sample)
    assert at == pytest.approx([T0 + 0.1, T0 + 0.2, T0 + 0.3, T0 + 0.4])
    assert tokens.tolist() == [2.25] * 4
    sample["chunk_tokens"] = [1, None, 3, None]  # counted tokens stay where usage said
    assert _chunk_tokens(sample)[1].tolist() == [1, 2.5, 3, 2.5]
    del sample["chunk_ms"]  # no chunks: all tokens land when the stream ended
    sample["e2e_ms"] = 2000.0
    assert [a.tolist() for a in _chunk_tokens(sample)] == [[T0 + 2.0], [9.0]]


def test_command_line_prints_the_report_path(run_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.report", str(run_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip() == str(run_dir / "report.html")
    assert (run_dir / "report.html").is_file()
