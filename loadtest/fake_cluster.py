"""A Ray cluster with the autoscaler on fake GPU nodes, on one machine: the autoscaling test's
stand-in for KubeRay's worker groups.

Ray's fake multi-node provider launches each "node" as a raylet on this host, with the
resources of its node type (fake `GPU`s and the group's `accelerator_type:X`), and removes
it when idle: the same StandardAutoscaler and resource-demand logic that scales KubeRay's
worker pods. `ray.cluster_utils.AutoscalingCluster` does this too, but it runs
`ray stop --force` (every Ray process on the host, a CI run's included) and its wheel lacks
the default node-type file. This cluster has its own temp dir and ports, and stops only
the processes under that dir.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

FAKE_HEAD_NODE_TYPE = "ray.head.default"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def autoscaler_config(
    node_types: dict[str, dict[str, Any]], gcs_address: str, idle_timeout_s: float, head_cpus: int
) -> dict[str, Any]:
    """The full cluster config the autoscaler's monitor reads (it merges no defaults):
    Ray's fake_multi_node/example.yaml with our node types."""
    return {
        "cluster_name": "fake-gpu",
        "max_workers": sum(t["max_workers"] for t in node_types.values()),
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            FAKE_HEAD_NODE_TYPE: {
                "resources": {"CPU": head_cpus},
                "node_config": {},
                "max_workers": 0,
            },
            **{
                name: {"node_config": {}, "min_workers": 0, **spec}
                for name, spec in node_types.items()
            },
        },
        "head_node_type": FAKE_HEAD_NODE_TYPE,
        "auth": {},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_s / 60,
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


def processes_under(temp_dir: Path) -> list[psutil.Process]:
    """Every process of the Ray cluster started with `--temp-dir=temp_dir`: those whose
    command line names that dir (gcs_server, raylet, dashboard, workers...) and their
    children (replica actors' engine processes, fake nodes' workers). This process is
    never among them."""
    marker = str(temp_dir)
    roots: list[psutil.Process] = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in process.info["cmdline"] or ()):
                roots.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found = {p.pid: p for p in roots}
    for process in roots:
        try:
            found.update({c.pid: c for c in process.children(recursive=True)})
        except psutil.NoSuchProcess:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def stop_processes_under(temp_dir: Path, grace_s: float = 10, rounds: int = 3) -> None:
    """SIGTERM, then SIGKILL after `grace_s`, to that cluster's processes only: never
    `ray stop`, which stops every Ray on the host. Again while any is left: a raylet may
    have been starting a worker as it was stopped."""
    for _ in range(rounds):
        processes = processes_under(temp_dir)
        if not processes:
            return
        for process in processes:
            with suppress(psutil.NoSuchProcess):
                process.terminate()
        _, alive = psutil.wait_procs(processes, timeout=grace_s)
        for process in alive:
            with suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(alive, timeout=5)


@dataclass
class FakeGpuCluster:
    address: str
    temp_dir: Path
    metrics_url: str = ""  # the head's Prometheus endpoint (Ray's, Serve's, the autoscaler's)

    def processes(self) -> list[psutil.Process]:
        return processes_under(self.temp_dir)

    def stop(self) -> None:
        stop_processes_under(self.temp_dir)


@contextmanager
def fake_gpu_cluster(
    node_types: dict[str, dict[str, Any]],
    env: dict[str, str],
    idle_timeout_s: float = 6,
    head_cpus: int = 2,
    temp_dir: str | None = None,
) -> Iterator[FakeGpuCluster]:
    """A head node (no GPUs) running the autoscaler over `node_types` (each: `resources`,
    `max_workers`), with `env` in every Ray process; stopped on exit, even on failure."""
    from ray._private.services import get_node_ip_address

    ray_bin = Path(sys.executable).parent / "ray"
    # Short: Ray's socket paths live under it and must fit in 107 characters.
    root = Path(temp_dir or tempfile.mkdtemp(prefix="fakegpu-", dir="/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"{get_node_ip_address()}:{port}"
    config_file = root / "autoscaler.json"
    config_file.write_text(
        json.dumps(autoscaler_config(node_types, address, idle_timeout_s, head_cpus))
    )
    process_env = {
        **os.environ,
        **env,
        # `ray start` turns Ray's token auth on by itself whenever ~/.ray/auth_token exists
        # (a local ray.init writes one), and a driver that imported Ray before cannot
        # switch to it. A throwaway test cluster: no auth, decided here, not by that file.
        "RAY_AUTH_MODE": "disabled",
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "PATH": f"{ray_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    process_env.pop("RAY_ADDRESS", None)
    ports = {
        "--port": port,
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
        "--ray-client-server-port": free_port(),
    }
    host = address.rsplit(":", 1)[0]
    metrics_url = f"http://{host}:{ports['--metrics-export-port']}/metrics"
    cluster = FakeGpuCluster(address=address, temp_dir=root, metrics_url=metrics_url)
    try:
        started = subprocess.run(
            [
                str(ray_bin),
                "start",
                "--head",
                *(f"{flag}={value}" for flag, value in ports.items()),
                f"--num-cpus={head_cpus}",
                "--num-gpus=0",
                f"--temp-dir={root}",
                f"--autoscaling-config={config_file}",
                "--include-dashboard=false",
                "--disable-usage-stats",
            ],
            env=process_env,
            capture_output=True,
            text=True,
        )
        if started.returncode:
            raise RuntimeError(f"ray start failed:\n{started.stdout}\n{started.stderr}")
        yield cluster
    finally:
        cluster.stop()
        time.sleep(1)
        shutil.rmtree(root, ignore_errors=True)
