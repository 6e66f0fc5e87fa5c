"""The chunk channel (serve_app.chunk_channel) on real sockets, without Ray: what the router
relies on, that each stream gets exactly its chunks in order and then ends, that one engine
step's chunks for a router leave as one frame, that the engine call's errors and a lost
connection end the streams with an error instead of leaving them waiting, and that a frame
can load no class. End to end, every streamed request of the e2e tests goes through it."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator
from typing import Any

import pytest

from serve_app.chunk_channel import (
    ChannelClient,
    ChannelOpen,
    ChannelServer,
    coalesce,
    decode,
    encode,
    read_frame,
)
from serve_app.engine_api import EngineChunk, EngineRequest, EngineUnavailableError


def request(request_id: str, channel: str | None) -> EngineRequest:
    return EngineRequest(request_id, [1, 2], max_tokens=8, stream=True, channel=channel)


def chunk(text: str, last: bool = False) -> EngineChunk:
    return EngineChunk(0, text, 1, "length" if last else None, None)


async def engine_call(
    server: ChannelServer,
    engine_request: EngineRequest,
    texts: list[str],
    step: asyncio.Event | None = None,
    fail: Exception | None = None,
) -> AsyncIterator[Any]:
    """An engine replica's streaming call, as Serve hands it to the router: the server's
    stream over chunks that wait for `step` (when given) before each one."""

    async def chunks() -> AsyncIterator[EngineChunk]:
        for i, text in enumerate(texts):
            if step is not None:
                await step.wait()
            yield chunk(text, last=i == len(texts) - 1)
        if fail is not None:
            raise fail

    async for item in server.stream(engine_request, chunks()):
        yield item


async def read_all(client: ChannelClient, request_id: str, call: AsyncIterator[Any]) -> list[str]:
    return [c.text async for c in client.chunks(request_id, call)]


def test_each_stream_gets_its_own_chunks_in_order_then_ends() -> None:
    async def run() -> list[list[str]]:
        server, client = ChannelServer("127.0.0.1"), ChannelClient()
        readers = []
        for i in range(3):
            rid = f"r{i}"
            client.expect(rid)
            texts = [f"{rid}-{k}" for k in range(5)]
            call = engine_call(server, request(rid, client.router_id), texts)
            readers.append(read_all(client, rid, call))
        return await asyncio.wait_for(asyncio.gather(*readers), 10)

    # Each stream's text, in order (chunks that came in together arrive merged).
    got = asyncio.run(run())
    assert ["".join(texts) for texts in got] == [
        "".join(f"r{i}-{k}" for k in range(5)) for i in range(3)
    ]


def test_one_engine_step_leaves_as_one_frame_for_all_of_a_routers_streams() -> None:
    async def run() -> list[list[tuple[str, Any]]]:
        server = ChannelServer("127.0.0.1")
        address = await server.address()
        reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.write(encode("router-a"))
        step = asyncio.Event()
        calls = [engine_call(server, request(f"r{i}", "router-a"), ["x"], step) for i in range(4)]
        for call in calls:  # each call carries the channel's address, and only that
            assert isinstance(await anext(call), ChannelOpen)
        pumps = [asyncio.ensure_future(anext(call, None)) for call in calls]
        await asyncio.sleep(0)  # each pump runs on to its wait for the step (no I/O on the way)
        step.set()  # one "engine step" wakes all four streams at once
        frames = [await asyncio.wait_for(read_frame(reader), 5)]
        assert await asyncio.gather(*pumps) == [None] * 4  # the calls end once all is put
        writer.close()
        return frames

    (frame,) = asyncio.run(run())
    # Every stream's first chunk (x, the last) and its end marker, in one frame.
    assert sorted({rid for rid, _ in frame}) == ["r0", "r1", "r2", "r3"]
    for rid in ("r0", "r1", "r2", "r3"):
        entries = [entry for r, entry in frame if r == rid]
        assert [e and e[1] for e in entries] == ["x", None]


@pytest.mark.parametrize("failure", [EngineUnavailableError("engine died"), KeyError("bug")])
def test_an_engine_failure_mid_stream_ends_it_with_an_error_after_its_chunks(
    failure: Exception,
) -> None:
    async def run() -> list[str]:
        server, client = ChannelServer("127.0.0.1"), ChannelClient()
        client.expect("r")
        texts = ["a", "b", "c"]
        call = engine_call(server, request("r", client.router_id), texts, fail=failure)
        seen: list[str] = []
        with pytest.raises(EngineUnavailableError, match=str(failure.args[0])):
            async for c in client.chunks("r", call):
                seen.append(c.text)
        return seen

    assert "".join(asyncio.run(asyncio.wait_for(run(), 5))) == "abc"


def test_the_engine_calls_own_error_after_the_switch_ends_the_stream() -> None:
    async def run() -> list[str]:
        server, client = ChannelServer("127.0.0.1"), ChannelClient()
        client.expect("r")
        address = await server.address()

        read = asyncio.Event()

        async def call() -> AsyncIterator[Any]:  # Serve fails the call: the replica died
            yield address
            server.put(client.router_id, "r", chunk("a"))
            await read.wait()
            raise ConnectionError("replica died")

        seen: list[str] = []
        with pytest.raises(ConnectionError):
            async for c in client.chunks("r", call()):
                seen.append(c.text)
                read.set()
        return seen

    assert asyncio.run(asyncio.wait_for(run(), 5)) == ["a"]


def test_a_refusal_before_the_first_chunk_reaches_the_stream_with_its_type() -> None:
    class RefusedError(Exception):
        pass

    async def run() -> list[str]:
        server, client = ChannelServer("127.0.0.1"), ChannelClient()
        client.expect("r")
        call = engine_call(server, request("r", client.router_id), [], fail=RefusedError("n=0"))
        with pytest.raises(RefusedError, match="n=0"):
            return await read_all(client, "r", call)

    asyncio.run(asyncio.wait_for(run(), 5))


def test_an_engine_stream_without_chunks_ends_through_the_channel() -> None:
    async def run() -> list[str]:
        server, client = ChannelServer("127.0.0.1"), ChannelClient()
        client.expect("r")
        return await read_all(client, "r", engine_call(server, request("r", client.router_id), []))

    assert asyncio.run(asyncio.wait_for(run(), 5)) == []


def test_a_lost_connection_fails_the_open_streams() -> None:
    async def run() -> None:
        server, client = ChannelServer("127.0.0.1"), ChannelClient()
        client.expect("r")
        address = await server.address()

        async def call() -> AsyncIterator[Any]:  # one chunk, then an engine that goes quiet
            yield address
            server.put(client.router_id, "r", chunk("a"))
            await asyncio.Event().wait()

        stream = client.chunks("r", call())
        assert (await anext(stream)).text == "a"
        waiting = asyncio.ensure_future(anext(stream))
        for writer in list(server._writers.values()):
            writer.transport.abort()  # the engine replica's side goes away
        with pytest.raises(EngineUnavailableError):
            await asyncio.wait_for(waiting, 5)

    asyncio.run(run())


def test_an_engine_that_yields_chunks_is_read_as_before() -> None:
    async def run() -> list[str]:
        server, client = ChannelServer("127.0.0.1"), ChannelClient()
        client.expect("r")
        call = engine_call(server, request("r", None), ["a", "b"])  # no channel asked
        return await read_all(client, "r", call)

    assert asyncio.run(asyncio.wait_for(run(), 5)) == ["a", "b"]


def test_frames_for_a_released_stream_are_dropped() -> None:
    async def run() -> list[str]:
        server, client = ChannelServer("127.0.0.1"), ChannelClient()
        client.expect("gone")
        client.expect("kept")
        gone = engine_call(server, request("gone", client.router_id), ["a", "b", "c"])
        assert isinstance(await anext(gone), ChannelOpen)
        client.release("gone")  # its caller left before reading
        kept = engine_call(server, request("kept", client.router_id), ["k"])
        pump = asyncio.ensure_future(anext(gone, None))
        texts = await read_all(client, "kept", kept)
        pump.cancel()
        return texts

    assert asyncio.run(asyncio.wait_for(run(), 5)) == ["k"]


def test_a_frame_can_load_no_class() -> None:
    assert decode(encode(("r", (0, "a", 1, None, None)))[4:]) == ("r", (0, "a", 1, None, None))
    with pytest.raises(pickle.UnpicklingError):
        decode(pickle.dumps(chunk("a")))  # a NamedTuple is a class: refused


def test_what_came_in_together_leaves_as_one_chunk_per_choice() -> None:
    lp = ("t", -0.5, [])
    items = [
        EngineChunk(0, "a", 1, None, [lp]),
        EngineChunk(0, "b", 2, None, [lp, lp]),
        EngineChunk(1, "x", 1, None, None),  # another choice: not merged across
        EngineChunk(1, "y", 1, "length", None),
        EngineChunk(1, "z", 1, None, None),  # after a finished chunk: kept apart
        None,
    ]
    assert list(coalesce(items)) == [
        EngineChunk(0, "ab", 3, None, [lp, lp, lp]),
        EngineChunk(1, "xy", 2, "length", None),
        EngineChunk(1, "z", 1, None, None),
        None,
    ]


def test_chunks_put_before_the_router_connects_arrive_merged() -> None:
    async def run() -> list[tuple[str, int]]:
        server, client = ChannelServer("127.0.0.1"), ChannelClient()
        client.expect("r")
        # The engine makes all four before the router connects: they wait in its outbox and
        # arrive together, as for a router that fell behind.
        made = [
            item async for item in engine_call(server, request("r", client.router_id), list("abcd"))
        ]

        async def replay() -> AsyncIterator[Any]:
            for item in made:
                yield item

        return [(c.text, c.num_tokens) async for c in client.chunks("r", replay())]

    # Ready together: one chunk.
    assert asyncio.run(asyncio.wait_for(run(), 5)) == [("abcd", 4)]
