"""A prefix- and session-aware request router for the engine deployments, on Ray Serve's
custom request router API (`request_router_config` of a deployment).

It runs inside the router ingress's replicas, which call the engines through their handles:
there every request is an `EngineRequest` whose prompt is already token ids. It prefers the
replica that was sent the longest run of the prompt's leading blocks (serve_app.prefix_index:
those blocks are in that replica's KV cache, so their prefill is skipped), then the replica
the caller's session (`user`) last went to, then the shortest queue. It falls back to Serve's
default (power of two choices) when the best match covers under half the prompt and no
session applies (a shared system prompt alone must not pull every conversation to one
replica), and when the preferred replica's queue is more than `max_imbalance` requests
longer than the shortest, so affinity never piles work on one replica. The state is per
router process, bounded, and forgets replicas that leave. Serve's default is one config
line away (`node_groups[].request_router: power_of_two`).
"""

from __future__ import annotations

from typing import Any

from ray.serve._private.common import ReplicaID
from ray.serve._private.replica_result import ReplicaResult
from ray.serve._private.request_router import PowerOfTwoChoicesRequestRouter
from ray.serve._private.request_router.common import PendingRequest
from ray.serve._private.request_router.replica_wrapper import RunningReplica

from serve_app.engine_api import EngineRequest
from serve_app.prefix_index import PrefixIndex, SessionIndex, block_hashes, choose

CLASS_PATH = f"{__name__}.CacheAwareRouter"


def _engine_request(pending: PendingRequest | None) -> EngineRequest | None:
    args = pending.args if pending is not None else None
    return args[0] if args and isinstance(args[0], EngineRequest) else None


class CacheAwareRouter(PowerOfTwoChoicesRequestRouter):
    def initialize_state(
        self,
        block_size: int = 16,  # the engines' (serve_app.app passes the group's)
        max_blocks: int = 200_000,
        max_sessions: int = 100_000,
        max_imbalance: int = 8,
        min_share: float = 0.5,
        **_: Any,
    ) -> None:
        self.prefixes = PrefixIndex(block_size, max_blocks)
        self.sessions = SessionIndex(max_sessions)
        self.max_imbalance = max_imbalance
        self.min_share = min_share

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        request = _engine_request(pending_request)
        if request is None or not candidate_replicas:
            return await super().choose_replicas(candidate_replicas, pending_request)
        hashes = block_hashes(request.prompt_token_ids, self.prefixes.block_size)
        by_id = {r.replica_id.to_full_id_str(): r for r in candidate_replicas}
        preferred = choose(
            self.prefixes.matches(hashes, by_id),
            len(hashes),
            await self._queue_lengths(candidate_replicas),
            self.sessions.get(request.session),
            self.max_imbalance,
            self.min_share,
        )
        if preferred is None:
            return await super().choose_replicas(candidate_replicas, pending_request)
        return [[by_id[preferred]]]

    async def _queue_lengths(self, replicas: list[RunningReplica]) -> dict[str, int]:
        """Each replica's queue length, from Serve's cache, probing those it lacks."""
        lengths: dict[str, int] = {}
        unknown = []
        for replica in replicas:
            known = self._replica_queue_len_cache.get(replica.replica_id)
            if known is None:
                unknown.append(replica)
            else:
                lengths[replica.replica_id.to_full_id_str()] = known
        if unknown:
            for replica, length in await self._probe_queue_lens(unknown, 0):
                if length is not None:
                    lengths[replica.replica_id.to_full_id_str()] = length
        return lengths

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: ReplicaResult
    ) -> None:
        request = _engine_request(pending_request)
        if request is None:
            return
        replica = replica_id.to_full_id_str()
        self.prefixes.record(
            block_hashes(request.prompt_token_ids, self.prefixes.block_size), replica
        )
        self.sessions.record(request.session, replica)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        before = {r.to_full_id_str() for r in self._replica_id_set}
        super().update_replicas(replicas)
        gone = before - {r.to_full_id_str() for r in self._replica_id_set}
        if gone:
            self.prefixes.forget(gone)
            self.sessions.forget(gone)
