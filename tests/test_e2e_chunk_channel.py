"""The chunk channel in the running stack (real router, Serve and vLLM engine): concurrent
streams take it, all of a router's streams share one connection to the engine replica, and
each gets all its tokens. Every other streaming test of the suite runs through it too
(streamed text equal to the non-streamed answer, usage, disconnects, timeouts, failures)."""

from __future__ import annotations

import asyncio
import json

import httpx
import psutil
import pytest

from serve_app.chunk_channel import ChannelOpen
from serve_app.engine_api import EngineRequest

from .conftest import replica_processes

pytestmark = pytest.mark.e2e

MODEL = "athene-v2-chat"
QUESTION = [{"role": "user", "content": "Count from one to twenty."}]
BODY = {"model": MODEL, "messages": QUESTION, "max_tokens": 24, "ignore_eos": True}


def channel_port(stack) -> int:
    """The engine replica's channel, as it names it to a router: a short stream that asks
    for it (under a router id nobody connects with; its chunks are dropped)."""
    probe = EngineRequest("channel-probe", [1, 2, 3], max_tokens=2, stream=True, channel="probe")
    items = stack.engine_handle("cpu").options(stream=True).generate.remote(probe)
    (address,) = [item for item in items if isinstance(item, ChannelOpen)]
    return address.port


async def streamed(client: httpx.AsyncClient) -> tuple[str, dict]:
    text, usage = "", {}
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            data = line.removeprefix("data: ")
            if not data.startswith("{"):
                continue
            event = json.loads(data)
            for choice in event["choices"]:
                text += choice["delta"].get("content") or ""
            usage = event.get("usage") or usage
    return text, usage


def test_concurrent_streams_share_one_channel_and_get_every_token(stack) -> None:
    engine, _ = replica_processes(stack.app_name, "cpu")
    router, _ = replica_processes(stack.app_name, "router")

    async def run() -> list[tuple[str, dict]]:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=120) as client:
            return await asyncio.gather(*(streamed(client) for _ in range(4)))

    for text, usage in asyncio.run(run()):
        assert text and usage["completion_tokens"] == BODY["max_tokens"]
    # One connection from the router replica carried all four streams, and it stays open.
    port = channel_port(stack)
    into_channel = [
        c.raddr.port
        for c in engine.net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
    ]
    from_router = {c.laddr.port for c in router.net_connections(kind="tcp") if c.raddr}
    assert len(into_channel) == 1 and set(into_channel) <= from_router
