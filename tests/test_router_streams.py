"""The router's stream helpers on streams these tests control (a fake engine: the tests must
decide the timing): merged() for batches, _until() for the request's deadline."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.engine_api import EngineChunk
from serve_app.protocol import APIError
from serve_app.router import _until, merged


def test_merged_numbers_each_prompts_choices_and_ends_with_all():
    async def engine(texts: list[str], delay: float):
        for index, text in enumerate(texts):
            await asyncio.sleep(delay)
            yield EngineChunk(index, text, 1, "stop", None)

    async def run() -> list[tuple[int, str]]:
        streams = [engine(["a0", "a1"], 0.02), engine(["b0", "b1"], 0.005)]
        return [(chunk.index, chunk.text) async for chunk in merged(streams, 2)]

    assert sorted(asyncio.run(run())) == [(0, "a0"), (1, "a1"), (2, "b0"), (3, "b1")]


def test_merged_stops_the_others_when_one_fails_or_the_reader_leaves():
    stopped: list[str] = []

    async def endless(name: str):
        try:
            while True:
                await asyncio.sleep(0.001)
                yield EngineChunk(0, name, 1, None, None)
        finally:
            stopped.append(name)

    async def failing():
        await asyncio.sleep(0.01)
        raise APIError(503, "gone", type="server_error")
        yield  # an async generator

    async def fail() -> None:
        async for _ in merged([endless("a"), failing()], 1):
            pass

    with pytest.raises(APIError):
        asyncio.run(fail())
    assert stopped == ["a"]

    async def leave() -> None:
        stream = merged([endless("b"), endless("c")], 1)
        await anext(stream)
        await stream.aclose()

    asyncio.run(leave())
    assert sorted(stopped) == ["a", "b", "c"]


async def _chunks_then_silence(count: int, stopped: list[str]):
    try:
        for i in range(count):
            yield EngineChunk(0, str(i), 1, None, None)
        await asyncio.Event().wait()  # an engine that never answers again
    finally:
        stopped.append("engine")


def _until_now_plus(seconds: float, stream):
    return _until(asyncio.get_running_loop().time() + seconds, seconds, stream)


@pytest.mark.parametrize("before", [0, 2])
def test_the_deadline_is_a_504_and_stops_the_engine_call(before):
    stopped: list[str] = []

    async def run() -> list[str]:
        got = []
        async for chunk in _until_now_plus(0.05, _chunks_then_silence(before, stopped)):
            got.append(chunk.text)
        return got

    with pytest.raises(APIError) as raised:
        asyncio.run(run())
    assert raised.value.status == 504 and raised.value.detail.code == "timeout"
    assert stopped == ["engine"]


def test_a_reader_slower_than_the_deadline_gets_the_504_next():
    stopped: list[str] = []

    async def run() -> None:
        stream = _until_now_plus(0.05, _chunks_then_silence(5, stopped))
        await anext(stream)
        await asyncio.sleep(0.1)  # writing to a slow client, say
        await anext(stream)

    with pytest.raises(APIError):
        asyncio.run(run())


def test_a_caller_who_leaves_is_not_a_timeout():
    stopped: list[str] = []

    async def run() -> None:
        reading = asyncio.Event()

        async def read() -> None:
            async for _ in _until_now_plus(10, _chunks_then_silence(1, stopped)):
                reading.set()  # then it waits for the silent engine

        task = asyncio.create_task(read())
        await reading.wait()
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(run())
    assert stopped == ["engine"]
