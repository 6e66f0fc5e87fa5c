"""The serving processes take their turn on the CPU like any other: Ray starts its workers at
nice 15, below its own daemons and everything else on the host, and the router, the engine
replica and the vLLM processes it spawns would inherit that (serve_app.serve_env)."""

from __future__ import annotations

from .conftest import Stack, replica_processes


def test_the_router_and_the_engine_run_at_nice_zero(stack: Stack) -> None:
    router, _ = replica_processes(stack.app_name, "router")
    engine, engine_children = replica_processes(stack.app_name, "cpu")
    vllm = [p for p in engine_children if p.cmdline()[:1] and p.cmdline()[0].startswith("VLLM::")]
    assert {p.cmdline()[0] for p in vllm} >= {"VLLM::EngineCore", "VLLM::Worker"}
    assert {p.pid: p.nice() for p in (router, engine, *vllm)} == {
        p.pid: 0 for p in (router, engine, *vllm)
    }
