"""On vLLM's CPU build the engine's worker has its core to itself: the stack's other
processes (router, engine replica, vLLM's scheduler, Ray's daemons) run on the cores it
leaves free (serve_app.cpu_cores); the process that started Ray is left where it was."""

from __future__ import annotations

import os

import psutil
import pytest

from serve_app.cpu_cores import is_worker

from .conftest import Stack, replica_processes, thread_cores

pytestmark = pytest.mark.skipif(
    (os.cpu_count() or 1) < 2, reason="needs two cores: one for the worker, one free"
)


def test_the_stacks_processes_leave_the_engine_workers_core_to_it(stack: Stack) -> None:
    router, _ = replica_processes(stack.app_name, "router")
    engine, engine_children = replica_processes(stack.app_name, "cpu")
    workers = [p for p in engine_children if is_worker(p)]
    taken = {core for worker in workers for core in worker.cpu_affinity()}
    node = set(engine.parent().cpu_affinity())  # the raylet's: every core of the node
    assert workers and taken < node  # vLLM bound its worker to a core of its own
    scheduler = [p for p in engine_children if p.name() == "VLLM::EngineCore"]
    gcs = [p for p in psutil.Process().children(recursive=True) if p.name() == "gcs_server"]
    others = [router, engine, *scheduler, *gcs]
    assert len(others) == 4
    cores = {process.name(): thread_cores(process) for process in others}
    assert all(c and not c & taken for threads in cores.values() for c in threads.values()), cores
    driver = thread_cores(psutil.Process())  # the test process, which started Ray: untouched
    assert all(c == node for c in driver.values()), driver
