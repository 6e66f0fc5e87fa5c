"""The cache-aware request router's state and choice on their own (serve_app.prefix_index),
and its class as Serve loads it."""

from __future__ import annotations

import random

from serve_app.prefix_index import PrefixIndex, SessionIndex, block_hashes, choose

SYSTEM = list(range(1000, 1064))  # a shared 64-token system prompt: 4 blocks of 16


def test_block_hashes_chain_over_everything_before():
    a = block_hashes([*SYSTEM, 1, 2, 3], 16)
    b = block_hashes([*SYSTEM, 9, 9, 9], 16)
    assert len(a) == 4 and a == b  # the partial last block is not cached
    assert block_hashes([7, *SYSTEM[1:]], 16)[1:] != a[1:]  # same block, other prefix


def test_the_longest_leading_run_wins_and_the_index_is_bounded():
    index = PrefixIndex(block_size=16, max_blocks=10)
    turn1 = [*SYSTEM, *range(32)]  # 6 blocks
    turn2 = [*turn1, *range(100, 132)]  # the next turn resends it all: 8 blocks
    index.record(block_hashes(SYSTEM, 16), "r2")  # another conversation, same system prompt
    index.record(block_hashes(turn1, 16), "r1")
    matched = index.matches(block_hashes(turn2, 16), ["r1", "r2", "r3"])
    assert matched == {"r1": 6, "r2": 4, "r3": 0}
    index.record(block_hashes(turn2, 16), "r1")
    assert len(index) <= 10  # least recently used blocks go first
    index.forget(["r1"])
    assert index.matches(block_hashes(turn2, 16), ["r1", "r2"])["r1"] == 0


def test_choice_prefers_the_cache_then_the_session_then_the_shortest_queue():
    queues = {"r1": 2, "r2": 0, "r3": 1}
    assert choose({"r1": 6, "r2": 4, "r3": 0}, 8, queues, "r3", max_imbalance=8) == "r1"
    assert choose({"r1": 0, "r2": 0, "r3": 0}, 8, queues, "r3", max_imbalance=8) == "r3"
    assert choose({"r1": 4, "r2": 4, "r3": 0}, 8, queues, None, max_imbalance=8) == "r2"
    # Nothing cached and no session: Serve's default decides.
    assert choose({"r1": 0, "r2": 0}, 8, queues, None, max_imbalance=8) is None


def test_a_shared_system_prompt_alone_does_not_pull_everyone_to_one_replica():
    queues = {"r1": 0, "r2": 0}
    # 2 of 10 blocks (the system prompt) match r1: the default spreads new conversations.
    assert choose({"r1": 2, "r2": 0}, 10, queues, None, max_imbalance=8) is None
    assert choose({"r1": 2, "r2": 0}, 10, queues, "r2", max_imbalance=8) == "r2"
    assert choose({"r1": 5, "r2": 0}, 10, queues, None, max_imbalance=8) == "r1"


def test_the_load_guard_never_waits_behind_a_busy_replica():
    matched = {"r1": 6, "r2": 0}
    assert choose(matched, 8, {"r1": 8, "r2": 0}, None, max_imbalance=8) == "r1"
    assert choose(matched, 8, {"r1": 9, "r2": 0}, None, max_imbalance=8) is None
    assert choose({"r1": 0, "r2": 0}, 8, {"r1": 9, "r2": 0}, "r1", max_imbalance=8) is None


def test_sessions_are_bounded_and_forget_replicas_that_left():
    sessions = SessionIndex(max_sessions=2)
    for name, replica in (("a", "r1"), ("b", "r2"), ("c", "r1")):
        sessions.record(name, replica)
    assert sessions.get("a") is None and sessions.get("c") == "r1"
    sessions.forget(["r1"])
    assert sessions.get("c") is None and sessions.get("b") == "r2"
    assert sessions.get(None) is None


def test_a_replay_keeps_its_conversations_on_their_replicas():
    """Conversations that resend their history (growing prefixes) spread over replicas by
    the default choice on their first turn, then stay where their prefix is cached."""
    rng = random.Random(1)
    index = PrefixIndex(block_size=16)
    replicas = ["r1", "r2"]
    conversations = {c: [*SYSTEM, *rng.sample(range(5000), 40)] for c in range(20)}
    home: dict[int, str] = {}
    for turn in range(4):
        for c, prompt in conversations.items():
            queues = {r: sum(1 for h in home.values() if h == r) for r in replicas}
            hashes = block_hashes(prompt, 16)
            matched = index.matches(hashes, replicas)
            chosen = choose(matched, len(hashes), queues, None, max_imbalance=8)
            chosen = chosen or min(replicas, key=queues.get)
            if turn:
                assert chosen == home[c]
            home[c] = chosen
            index.record(hashes, chosen)
            prompt.extend(rng.sample(range(5000), 40))
    assert set(home.values()) == set(replicas)


def test_serve_loads_the_router_class_from_the_config():
    from ray import serve

    from serve_app.app import engine_deployment_options
    from serve_app.cache_router import CLASS_PATH, CacheAwareRouter
    from serve_app.config import NodeGroupConfig, TracingConfig
    from serve_app.engine import EngineReplica

    options = engine_deployment_options(
        NodeGroupConfig(name="g", request_router="cache_aware"), TracingConfig()
    )
    config = serve.deployment(EngineReplica).options(**options)._deployment_config
    assert config.request_router_config.request_router_class == CLASS_PATH
    assert config.request_router_config.get_request_router_class() is CacheAwareRouter
    # It hashes prompts in the engine's KV blocks: vLLM's CPU default, or engine_args'.
    assert config.request_router_config.request_router_kwargs == {"block_size": 128}
    gpu = NodeGroupConfig(
        name="g", accelerator_type="H100", request_router="cache_aware"
    ).kv_block_size
    pinned = NodeGroupConfig(
        name="g", request_router="cache_aware", engine_args={"block_size": 32}
    ).kv_block_size
    assert (gpu, pinned) == (16, 32)
    default = engine_deployment_options(NodeGroupConfig(name="g"), TracingConfig())
    assert "request_router_config" not in default
