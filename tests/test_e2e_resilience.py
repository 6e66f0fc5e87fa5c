"""Overload, time limits and disconnects, end to end through the real router.

Disconnects are checked through both ways in: the router replica's own port (Serve's direct
ingress, what callers on Kubernetes reach) and Serve's proxy (`serve run`'s :8000): each
must see the caller leave.

Timeouts and disconnects run on the real engine: its running + waiting count must return to
0, so nothing keeps generating for a caller who is gone. Where a test must hold requests at
a chosen point (a full queue, a caller leaving before the first token), a fake engine holds
them: the real one answers too fast to catch in between.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from ray import serve

from loadtest.local_stack import router_url
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


@pytest.fixture(params=["router", "proxy"])
def way_in(request, stack) -> str:
    return stack.base_url if request.param == "router" else stack.proxy_url


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


def test_a_completions_batch_over_the_timeout_is_504_and_every_prompt_aborted(stack, hurried_url):
    body = {
        "model": MODEL,
        "prompt": ["Once upon a time", "In a galaxy far away"],
        "max_tokens": 4000,
        "ignore_eos": True,
    }
    response = httpx.post(f"{hurried_url}/v1/completions", json=body, timeout=60)
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "timeout"
    wait_until_idle(stack, within_s=5)


def test_fifty_streams_cut_after_their_first_chunk_leave_the_engine_idle(stack, way_in):
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
        async with httpx.AsyncClient(base_url=way_in, limits=limits, timeout=120) as client:
            await asyncio.gather(*(cut_after_first_chunk(client) for _ in range(50)))

    asyncio.run(run())
    wait_until_idle(stack, within_s=5)


def test_a_non_streaming_caller_gone_mid_answer_aborts_the_engine_request(stack, way_in):
    async def leave_once_generating() -> None:
        async with httpx.AsyncClient(base_url=way_in, timeout=120) as client:
            answer = asyncio.create_task(client.post("/v1/chat/completions", json=LONG))
            while await asyncio.to_thread(stack.engine_unfinished) == 0:
                assert not answer.done(), answer.result().text
            await asyncio.sleep(0.5)  # a few tokens into the 4000
            answer.cancel()  # closes the connection

    asyncio.run(leave_once_generating())
    wait_until_idle(stack, within_s=5)


class HeldEngine:
    """Fake engine (controls timing): holds every request until `release` exists, and writes
    `held-<n>` when one starts waiting and `cancelled-<n>` when its caller gives up."""

    def __init__(self, marks: Path) -> None:
        self.marks = marks
        self.count = 0

    async def generate(self, request: EngineRequest):
        self.count += 1
        name = str(self.count)
        (self.marks / f"held-{name}").touch()
        try:
            while not (self.marks / "release").exists():
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            (self.marks / f"cancelled-{name}").touch()
            raise
        yield EngineChunk(0, "released", 1, "stop", None)


@pytest.fixture(params=["router", "proxy"])
def held(request, stack, tmp_path):
    """A router app in front of one HeldEngine replica that runs 2 requests and lets its
    callers queue 2 more (`max_ongoing_requests`, `max_queued_requests`), reached through
    its router's own port or Serve's proxy."""
    engine = serve.deployment(HeldEngine).options(
        name="cpu",
        max_ongoing_requests=2,
        max_queued_requests=2,
        ray_actor_options={"num_cpus": 0},
    )
    with stack.router_app("held", engines={"cpu": engine.bind(tmp_path)}) as url:
        yield (f"{router_url('held')}/held" if request.param == "router" else url), tmp_path


def marks(directory: Path, prefix: str) -> int:
    return len(list(directory.glob(f"{prefix}-*")))


def test_a_caller_gone_before_the_first_token_cancels_the_engine_call(held):
    url, marked = held

    async def leave_while_held() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            request = client.build_request(
                "POST", "/v1/chat/completions", json={**LONG, "stream": True}
            )
            answer = asyncio.create_task(client.send(request, stream=True))
            while marks(marked, "held") == 0:
                await asyncio.sleep(0.02)
            assert not answer.done()  # no headers yet: nothing has been generated
            answer.cancel()

    asyncio.run(leave_while_held())
    deadline = time.monotonic() + 5
    while marks(marked, "cancelled") == 0:
        assert time.monotonic() < deadline, "the engine call outlived its caller"
        time.sleep(0.05)


def test_overload_is_503_with_retry_after_at_once_and_the_queue_completes(held):
    url, marked = held
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

    async def timed(client: httpx.AsyncClient) -> tuple[float, httpx.Response]:
        started = time.monotonic()
        response = await client.post("/v1/chat/completions", json=body)
        return time.monotonic() - started, response

    async def flood() -> tuple[list, list]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            # 2 running in the engine, then 2 queued for it. (Sent together, Serve may count
            # all 4 as queued at once and refuse 2 of them: it says it may refuse early.)
            queued = [asyncio.create_task(timed(client)) for _ in range(2)]
            while marks(marked, "held") < 2:
                await asyncio.sleep(0.02)
            queued += [asyncio.create_task(timed(client)) for _ in range(2)]
            await asyncio.sleep(0.5)
            refused = [await timed(client) for _ in range(6)]  # each timed on its own
            assert not any(task.done() for task in queued), "queued requests must wait"
            (marked / "release").touch()
            return refused, list(await asyncio.gather(*queued))

    refused, served = asyncio.run(flood())
    for seconds, response in refused:
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        error = response.json()["error"]
        assert error["code"] == "overloaded" and error["type"] == "server_error"
        assert seconds < 0.1, f"a capacity refusal took {seconds * 1000:.0f} ms"
    for _, response in served:
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "released"
