"""`make bench`'s CPU figures (idle, and per output token during the runs): they count every
process of a server's tree, children included, by program name (a Ray worker's title, not
"python")."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from benchmarks.serving import CONTROL, _label, cpu_lines, idle_cpu, paired_lines

# A parent that sleeps and one child that spins: the spinning child's CPU must show up under
# its own name, though the process measured is the parent.
SPINNER = "import time\nwhile True: pass"
PARENT = f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {SPINNER!r}])\ntime.sleep(60)"


def test_a_busy_child_counts_towards_its_server_and_a_sleeping_parent_does_not():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], start_new_session=True)
    try:
        server = psutil.Process(parent.pid)
        deadline = time.monotonic() + 30
        while not server.children() and time.monotonic() < deadline:
            time.sleep(0.05)  # the child is started by the parent: wait until it exists
        shares = idle_cpu(server, 1.0)
    finally:
        for member in psutil.Process(parent.pid).children(recursive=True):
            member.kill()
        parent.kill()
        parent.wait()
    spinner = _label([sys.executable, "-c", SPINNER])
    assert shares[spinner] > 30  # a busy loop; at least a share of one core on a loaded host
    assert sum(share for name, share in shares.items() if name != spinner) < 10


def test_programs_are_named_by_what_runs_not_by_the_interpreter():
    assert _label(["ray::ServeReplica:athene:router"]) == "ray::ServeReplica:athene:router"
    assert _label(["/usr/bin/gcs_server", "--port=1"]) == "gcs_server"
    assert _label(["/venv/bin/python3", "-u", "/ray/dashboard/dashboard.py", "--x"]) == (
        "dashboard.py"
    )
    assert _label(["python", "-m", "benchmarks.vllm_cli", "serve"]) == "benchmarks.vllm_cli"


def test_cpu_per_token_is_the_median_over_rounds_and_the_server_total_leaves_the_client_out():
    def run(round_: int, worker: float, router: float) -> dict:
        cpu = {"VLLM::Worker": worker, "ray::ServeReplica:athene:router": router, "client": 9.0}
        return {
            "client": "bench serve random",
            "concurrency": 16,
            "system": "stack",
            "round": round_,
            "cpu_ms_per_token": cpu,
        }

    text = cpu_lines([run(0, 4.0, 0.5), run(1, 6.0, 0.25), run(2, 5.0, 1.0)])
    assert text == (
        "- random c=16 stack: server 5.50 ms "
        "(client 9.00, VLLM::Worker 5.00, ray::ServeReplica:athene:router 0.50)"
    )


def _run(system: str, round_: int, rps: float, ttft: float, beside: str | None = "stack") -> dict:
    """One `bench serve random` run at concurrency 16, as `make bench` records it."""
    return {
        "client": "bench serve random",
        "concurrency": 16,
        "system": system,
        "round": round_,
        "beside": beside,
        "request_throughput": rps,
        "median_ttft_ms": ttft,
    }


def test_each_round_is_compared_with_its_own_vllm_run_and_the_median_taken():
    # vLLM slow in round 1, the stack slow in round 2: the medians of each system (1.0 and
    # 1.0) would call it level; each round's pair says the stack was ahead in two of three.
    rows = [
        _run("vllm", 0, 1.0, 30.0),
        _run("stack", 0, 1.1, 34.0),
        _run("vllm", 1, 0.8, 30.0),
        _run("stack", 1, 1.0, 31.0),
        _run("vllm", 2, 1.0, 30.0),
        _run("stack", 2, 0.8, 36.0),
        _run("bare", 0, 2.0, 1.0, beside=None),
    ]
    assert paired_lines(rows, ["stack"]) == (
        "- random c=16 stack / vllm: **1.100x** req/s (1.100, 1.250, 0.800), "
        "TTFT p50 **+4.0 ms** (+4.0, +1.0, +6.0)"
    )


def test_each_contender_is_paired_with_the_vllm_run_beside_it_not_another():
    # One round: vLLM's server runs beside the stack, then again beside the A/A control, and
    # the host slowed down in between: each ratio must use its own vLLM run.
    rows = [
        _run("vllm", 0, 1.0, 30.0),
        _run("stack", 0, 0.9, 34.0),
        _run("vllm", 0, 0.5, 40.0, beside=CONTROL),
        _run(CONTROL, 0, 0.6, 41.0, beside=CONTROL),
    ]
    assert paired_lines(rows, ["stack", CONTROL]).splitlines() == [
        "- random c=16 stack / vllm: **0.900x** req/s (0.900), TTFT p50 **+4.0 ms** (+4.0)",
        f"- random c=16 {CONTROL} / vllm: **1.200x** req/s (1.200), TTFT p50 **+1.0 ms** (+1.0)",
    ]
