"""Each engine group's running-replica count, pushed by Serve's controller.

Serve's own handles learn their deployment's running replicas from the controller's long poll
(`DEPLOYMENT_TARGETS`): the controller answers a held call when the set changes. The router
listens to the same broadcast instead of polling `serve.status()`, which builds the whole
instance's details (and pickles and parses them) on every read: every 2 s that took 1.6% of
a core in the router and more in the controller (docs/performance.md), and a change reached
the router up to 2 s late. Pushed, it arrives as the controller makes it, and an idle router
holds one call. The long poll is Serve's internal API (ray is pinned in pyproject.toml):
tests/test_e2e_scale_to_zero.py checks the router's view follows a group Serve scales from
one replica to none and back, tests/test_e2e_failures.py that a group that died is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from ray.serve._private.common import DeploymentID, DeploymentTargetInfo
from ray.serve._private.long_poll import LongPollClient, LongPollNamespace
from ray.serve.context import _get_global_client
from ray.serve.handle import DeploymentHandle


def watch_running_replicas(
    handles: dict[str, DeploymentHandle], observe: Callable[[str, int], None], client_id: str
) -> LongPollClient:
    """Calls `observe(group, running)` on this event loop with each group's count, at once
    and on every change, until the returned client is stopped."""

    groups: dict[DeploymentID, list[str]] = {}
    for group, handle in handles.items():  # two groups may front one deployment
        deployment = DeploymentID(name=handle.deployment_name, app_name=handle.app_name)
        groups.setdefault(deployment, []).append(group)

    def update(deployment: DeploymentID, targets: DeploymentTargetInfo) -> None:
        for group in groups[deployment]:
            observe(group, len(targets.running_replicas))

    listeners = {
        (LongPollNamespace.DEPLOYMENT_TARGETS, deployment): partial(update, deployment)
        for deployment in groups
    }
    controller = _get_global_client()._controller  # type: ignore[union-attr]
    return LongPollClient(
        controller,
        listeners,  # type: ignore[arg-type]
        call_in_event_loop=asyncio.get_running_loop(),
        client_id=client_id,
    )
