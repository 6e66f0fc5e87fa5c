"""Which engine replica holds which prompt prefixes: the state of the cache-aware request
router (serve_app.cache_router), kept apart from Ray Serve so it can be read and tested alone.

A prompt is cut into blocks of `block_size` token ids, and each block is named by a hash
chained over the blocks before it, as vLLM's prefix cache names its KV blocks: two prompts
share a block's hash only if they share everything up to its end. The index remembers, for
each block hash, the replicas a prompt holding it was sent to; the longest run of a prompt's
leading blocks a replica has seen is how much of its prefill that replica can skip. It is
bounded (least recently used blocks go first) and forgets replicas that left.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def block_hashes(token_ids: Sequence[int], block_size: int) -> list[int]:
    """One chained hash per whole block of the prompt (a partial last block is not cached)."""
    hashes: list[int] = []
    previous = 0
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        previous = hash((previous, tuple(token_ids[start : start + block_size])))
        hashes.append(previous)
    return hashes


@dataclass
class PrefixIndex:
    block_size: int = 16
    max_blocks: int = 200_000  # ~3M tokens of prompts remembered per router process
    _holders: OrderedDict[int, set[str]] = field(default_factory=OrderedDict)

    def matches(self, hashes: Sequence[int], replicas: Iterable[str]) -> dict[str, int]:
        """For each replica, how many of the prompt's leading blocks it has seen."""
        matched = dict.fromkeys(replicas, 0)
        alive = set(matched)
        for depth, block in enumerate(hashes):
            alive &= self._holders.get(block, set())
            if not alive:
                break
            for replica in alive:
                matched[replica] = depth + 1
        return matched

    def record(self, hashes: Sequence[int], replica: str) -> None:
        """The prompt went to `replica`: its blocks are (or will be) in that replica's cache."""
        for block in hashes:
            holders = self._holders.get(block)
            if holders is None:
                self._holders[block] = {replica}
            else:
                holders.add(replica)
                self._holders.move_to_end(block)
        while len(self._holders) > self.max_blocks:
            self._holders.popitem(last=False)

    def forget(self, replicas: Iterable[str]) -> None:
        """Replicas that left: their caches went with them."""
        gone = set(replicas)
        for block in list(self._holders):
            holders = self._holders[block]
            holders -= gone
            if not holders:
                del self._holders[block]

    def __len__(self) -> int:
        return len(self._holders)


@dataclass
class SessionIndex:
    """The replica each session (a caller's `user`) was last sent to, bounded (LRU)."""

    max_sessions: int = 100_000
    _last: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def get(self, session: str | None) -> str | None:
        return self._last.get(session) if session else None

    def record(self, session: str | None, replica: str) -> None:
        if not session:
            return
        self._last[session] = replica
        self._last.move_to_end(session)
        while len(self._last) > self.max_sessions:
            self._last.popitem(last=False)

    def forget(self, replicas: Iterable[str]) -> None:
        gone = set(replicas)
        for session in [s for s, replica in self._last.items() if replica in gone]:
            del self._last[session]


def choose(
    matched: dict[str, int],
    blocks: int,
    queue_lengths: dict[str, int],
    session_replica: str | None,
    max_imbalance: int,
    min_share: float = 0.5,
) -> str | None:
    """The replica to prefer: the longest prefix match, then the session's last replica,
    then the shortest queue. None (let the default router choose) when the best match is
    under `min_share` of the prompt's `blocks` and no session applies: a shared system
    prompt alone must not pull every new conversation to one replica (SGLang's cache-aware
    router and Ray's prefix router balance so too); and None when the preferred replica's
    queue is more than `max_imbalance` longer than the shortest: a cache hit is not worth
    waiting behind a busy replica."""
    if not matched:
        return None
    best = max(
        matched,
        key=lambda r: (matched[r], r == session_replica, -queue_lengths.get(r, 0)),
    )
    if matched[best] < min_share * blocks or matched[best] == 0:
        if session_replica not in matched:
            return None
        best = session_replica
    shortest = min(queue_lengths.get(r, 0) for r in matched)
    if queue_lengths.get(best, 0) - shortest > max_imbalance:
        return None
    return best
