"""`make bench`'s idle-CPU figure: it counts every process of a server's tree, children
included, by program name (a Ray worker's title, not "python")."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from benchmarks.serving import _label, idle_cpu

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
