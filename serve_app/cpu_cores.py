"""On vLLM's CPU build: the node's serving processes kept off the engine workers' cores.

vLLM's CPU workers bind their compute threads to cores (`VLLM_CPU_OMP_THREADS_BIND`; by
default one core per rank, the others left "for the scheduler"), but nothing keeps anything
else off those cores. The scheduler (`VLLM::EngineCore`, which spins while it waits for a
step), the replicas, Ray's daemons and Serve's controller ran wherever the kernel put them,
and each turn one took on a worker's core stopped the model's forward pass. Measured on two
cores at concurrency 16 (docs/performance.md): the worker was switched out about 40,000
times in a minute's run with everything free, 44,000-52,000 with only the engine replica's
own processes kept off, 14,000-21,000 with all of them. On GPUs the workers bind no cores
and this does nothing.
"""

from __future__ import annotations

import logging
import os

import psutil
import ray

logger = logging.getLogger("ray.serve")

WORKER_TITLE = "VLLM::Worker"  # vLLM's title for its worker processes (..._TP1 and so on)
RAYLET = "raylet"
RAY_DIR = os.path.dirname(ray.__file__) + os.sep  # where Ray's daemons' programs live


def node_processes() -> list[psutil.Process]:
    """Ray's processes on this node, as seen from a replica: the raylet's descendants (the
    replicas, Serve's controller and proxy, Ray's agents) and the daemons started beside it
    (GCS, dashboard, monitors: the children of whatever started Ray that run Ray's own code),
    with theirs. Not the raylet itself, so that the replicas it starts later get every core
    (an engine's vLLM binds its workers among the cores it is given), and not the process
    that started Ray (`serve run`, `ray start`, a test's driver): a library does not move
    its caller. Outside Ray: this process and its descendants."""
    me = psutil.Process()
    raylet = me.parent()
    root = raylet.parent() if raylet is not None and raylet.name() == RAYLET else None
    if root is None:
        return [me, *me.children(recursive=True)]
    daemons = [p for p in root.children() if p.pid != raylet.pid and _runs_ray(p)]
    return [
        *raylet.children(recursive=True),
        *(p for daemon in daemons for p in (daemon, *daemon.children(recursive=True))),
    ]


def _runs_ray(process: psutil.Process) -> bool:
    try:
        return any(word.startswith(RAY_DIR) for word in process.cmdline())
    except psutil.Error:  # gone since it was listed
        return False


def is_worker(process: psutil.Process) -> bool:
    return process.name().startswith(WORKER_TITLE)


def keep_off_worker_cores(processes: list[psutil.Process], cores: set[int]) -> set[int]:
    """Bind every thread of `processes` but vLLM's workers to the `cores` the workers leave
    free; threads and processes they start later inherit it. Returns those cores; empty when
    the workers are bound to no core of their own (GPUs, `VLLM_CPU_OMP_THREADS_BIND=nobind`)
    or leave none free."""
    taken: set[int] = set()
    others: list[psutil.Process] = []
    for process in processes:
        try:
            if is_worker(process):
                taken.update(process.cpu_affinity())
            else:
                others.append(process)
        except psutil.Error:  # gone since it was listed
            continue
    free = cores - taken
    if not taken or not free:
        return set()
    for process in others:
        try:
            for thread in process.threads():
                os.sched_setaffinity(thread.id, free)
        except (psutil.Error, OSError):  # gone since it was listed
            continue
    logger.info("vLLM's workers on cores %s; the node's other processes on %s", taken, free)
    return free
