"""Overload, time limits and disconnects, end to end through HAProxy and the real router.

Timeouts and disconnects run on the real engine: its running + waiting count must return to
0, so nothing keeps generating for a caller who is gone.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e

MODEL = "athene-v2-chat"
LONG = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Tell me a very long story."}],
    "max_tokens": 4000,
    "ignore_eos": True,
}


def wait_until_idle(stack, within_s: float) -> float:
    """Seconds until the engine holds no request (running + waiting); fails past `within_s`."""
    started = time.monotonic()
    while (unfinished := stack.engine_unfinished()) > 0:
        assert time.monotonic() - started < within_s, f"{unfinished} requests still in the engine"
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def hurried_url(stack):
    with stack.router_app("hurried", router={"request_timeout_s": 2}) as url:
        yield url


def test_a_request_over_the_timeout_is_504_and_aborted_in_the_engine(stack, hurried_url):
    started = time.monotonic()
    response = httpx.post(f"{hurried_url}/v1/chat/completions", json=LONG, timeout=60)
    assert response.status_code == 504, response.text
    assert time.monotonic() - started < 10
    error = response.json()["error"]
    assert error["code"] == "timeout" and "router.request_timeout_s" in error["message"]
    wait_until_idle(stack, within_s=5)


def test_a_stream_over_the_timeout_ends_with_an_error_event_then_done(stack, hurried_url):
    with httpx.stream(
        "POST", f"{hurried_url}/v1/chat/completions", json={**LONG, "stream": True}, timeout=60
    ) as response:
        assert response.status_code == 200
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "timeout"
    assert any('"content":"' in e and '"content":""' not in e for e in events[:-2])
    wait_until_idle(stack, within_s=5)


def test_fifty_streams_cut_after_their_first_chunk_leave_the_engine_idle(stack):
    async def cut_after_first_chunk(client: httpx.AsyncClient) -> None:
        async with client.stream(
            "POST", "/v1/chat/completions", json={**LONG, "stream": True}
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    return  # closes the connection mid-stream

    async def run() -> None:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=stack.base_url, limits=limits, timeout=120) as client:
            await asyncio.gather(*(cut_after_first_chunk(client) for _ in range(50)))

    asyncio.run(run())
    wait_until_idle(stack, within_s=5)
