"""serve_app.cpu_cores on real processes: a child titled as vLLM's worker (the kernel's
process name, as vLLM sets it) bound to one core, and another child beside it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from serve_app.cpu_cores import keep_off_worker_cores

from .conftest import thread_cores

# The machine's cores, not this process's: a stack started earlier in the session may have
# bound the test process to the cores its engine's worker leaves free.
CORES = set(range(os.cpu_count() or 1))
pytestmark = pytest.mark.skipif(len(CORES) < 2, reason="needs two cores: one for the worker")

# Sets the kernel's name of the process (what `ps -o comm` and psutil's name() show), then
# waits; a second thread so that every thread's binding is checked, not the main one's only.
TITLED = """
import ctypes, sys, threading, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def spawn() -> Iterator:
    started: list[subprocess.Popen] = []

    def start(title: str) -> psutil.Process:
        child = subprocess.Popen(
            [sys.executable, "-c", TITLED, title], stdout=subprocess.PIPE, text=True
        )
        started.append(child)
        assert child.stdout.readline() == "ready\n"
        return psutil.Process(child.pid)

    yield start
    for child in started:
        child.kill()
        child.wait()


def test_every_thread_but_the_workers_leaves_the_workers_core(spawn) -> None:
    worker, other = spawn("VLLM::Worker"), spawn("ray::ServeRepli")
    first, *rest = sorted(CORES)
    worker.cpu_affinity([first])

    free = keep_off_worker_cores([worker, other], CORES)

    assert free == set(rest)
    assert list(thread_cores(other).values()) == [set(rest), set(rest)]
    assert worker.cpu_affinity() == [first]


def test_workers_bound_to_no_core_of_their_own_change_nothing(spawn) -> None:
    worker, other = spawn("VLLM::Worker_TP0"), spawn("VLLM::EngineCore")
    for child in (worker, other):
        child.cpu_affinity(sorted(CORES))

    assert keep_off_worker_cores([worker, other], CORES) == set()
    assert list(thread_cores(other).values()) == [CORES, CORES]
