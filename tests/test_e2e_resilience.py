"""Overload, time limits and disconnects, end to end through HAProxy and the real router.

Timeouts and disconnects run on the real engine (its running + waiting count must return to
0: nothing keeps generating for a caller who is gone). The overload test uses a fake engine
that holds every request until released: it must control timing, which the real one cannot.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from ray import serve

from serve_app.engine_api import EngineChunk, EngineRequest

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


@pytest.fixture(scope="module")
def blocked(stack, tmp_path_factory):
    """A router app whose one engine replica takes 2 requests and its caller queues 2 more;
    the fake engine answers only once the flag file exists (a call to it would queue too)."""
    flag = tmp_path_factory.mktemp("blocked") / "release"

    class HeldEngine:
        async def generate(self, request: EngineRequest):
            while not flag.exists():
                await asyncio.sleep(0.02)
            yield EngineChunk(0, "released", 1, "stop", None)

    engine = serve.deployment(HeldEngine).options(
        name="cpu", max_ongoing_requests=2, max_queued_requests=2
    )
    with stack.router_app("blocked", engines={"cpu": engine.bind()}) as url:
        yield url, flag


def test_overload_is_503_with_retry_after_at_once_and_the_queue_completes(blocked):
    url, release = blocked
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

    async def timed(client: httpx.AsyncClient) -> tuple[float, httpx.Response]:
        started = time.monotonic()
        response = await client.post("/v1/chat/completions", json=body)
        return time.monotonic() - started, response

    async def flood() -> list[tuple[float, httpx.Response]]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            held = [asyncio.create_task(timed(client)) for _ in range(4)]
            await asyncio.sleep(1.0)  # the first 4 fill the replica and the queue
            refused = await asyncio.gather(*(timed(client) for _ in range(6)))
            assert not any(task.done() for task in held), "held requests must wait, not fail"
            release.touch()
            return refused + list(await asyncio.gather(*held))

    answers = asyncio.run(flood())
    refused, served = answers[:6], answers[6:]
    for seconds, response in refused:
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "overloaded"
        assert seconds < 0.1, f"a capacity refusal took {seconds * 1000:.0f} ms"
    for _, response in served:
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "released"
