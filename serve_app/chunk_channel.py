"""The engine -> router hop of streamed chunks: one TCP connection per engine replica and
router replica, one frame per engine step with the new chunks of all that router's streams.

Serve relays each yield of a streaming call as a message of its own: about 0.5 ms of CPU on
each side per message (`make bench-relay`). A GPU replica makes a token for every running
sequence each 15-25 ms step, so one message per token costs cores, in the router and in the
engine replica, whose event loop also runs vLLM's output processing. Here a step's chunks
for one router leave as one frame, and nothing waits to fill it: the frame goes once every
stream woken by the step has put its chunks (the next pass of the event loop).

The Serve call stays, and stays open until the stream ends: it picks the replica (load
accounting, back pressure, the cache-aware request router) and cancelling it aborts the
request in the engine. It carries only the channel's address, at once, so the router is
connected while the engine computes the first token; every chunk, the first too, the end
of the stream and an engine failure after the first chunk (as its message) come in order
through the channel. An error before the first chunk (the engine's refusal, with its type
and so its status) ends the call itself, and the router raises it for the stream: the
first token crosses one TCP hop instead of a Serve message (0.7 ms on this machine). An
engine that yields every chunk (a test's fake) is read as before.

Frames are pickles of plain tuples, read with an unpickler that loads no class at all.
"""

from __future__ import annotations

import asyncio
import io
import logging
import pickle
import struct
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from serve_app.engine_api import EngineChunk, EngineRequest, EngineUnavailableError

logger = logging.getLogger("ray.serve")

LENGTH = struct.Struct("!I")
# How long an engine replica keeps chunks for a router that has not connected (a router
# replica that died between its call and its connection) before dropping them.
UNCLAIMED_S = 60.0
# A router that stops reading while the engine writes on: past this much unsent, its
# connection is cut (its streams end with an error) instead of the engine's memory growing.
MAX_UNSENT_BYTES = 64 * 1024 * 1024

# In a frame: (request id, the chunk as a tuple), (request id, None): the stream is done, or
# (request id, message): the engine failed mid-stream.
Entry = tuple[str, tuple[Any, ...] | str | None]


@dataclass(frozen=True, slots=True)
class ChannelOpen:
    """The engine replica's answer to a streaming call that asked for the channel."""

    host: str
    port: int


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a chunk frame may not load {module}.{name}")


def encode(value: Any) -> bytes:
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return LENGTH.pack(len(payload)) + payload


def decode(payload: bytes) -> Any:
    return _PlainUnpickler(io.BytesIO(payload)).load()


async def read_frame(reader: asyncio.StreamReader) -> Any:
    (length,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
    return decode(await reader.readexactly(length))


# ---- engine replica side -------------------------------------------------------------------


class ChannelServer:
    """In an engine replica: routers connect and name themselves; each router's chunks wait
    in its outbox until the event loop's next pass, then leave as one frame."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._server: asyncio.Server | None = None
        self._starting: asyncio.Lock | None = None
        self._writers: dict[str, asyncio.StreamWriter] = {}
        self._outboxes: dict[str, list[Entry]] = {}
        self._flush_pending = False

    async def address(self) -> ChannelOpen:
        """Where routers connect; listening starts with the first stream that asks."""
        if self._server is None:
            self._starting = self._starting or asyncio.Lock()
            async with self._starting:
                if self._server is None:
                    self._server = await asyncio.start_server(self._accept, self.host, 0)
                    logger.info("chunk channel listening on %s", self._server.sockets[0])
        return ChannelOpen(self.host, self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        router = ""
        try:
            router = await read_frame(reader)
            if not isinstance(router, str):
                return
            self._writers[router] = writer
            self._flush()  # what was put before it connected
            await reader.read()  # until the router goes away
        except (OSError, asyncio.IncompleteReadError, pickle.UnpicklingError):
            pass
        finally:
            if self._writers.get(router) is writer:
                del self._writers[router]
                self._outboxes.pop(router, None)
            writer.close()

    def put(self, router: str, request_id: str, item: EngineChunk | str | None) -> None:
        """A chunk, the end (None) or the failure's message (str) of one stream."""
        self._outboxes.setdefault(router, []).append(
            (request_id, tuple(item) if isinstance(item, EngineChunk) else item)
        )
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)
        if not isinstance(item, EngineChunk) and router not in self._writers:
            asyncio.get_running_loop().call_later(UNCLAIMED_S, self._drop_unclaimed, router)

    def _flush(self) -> None:
        self._flush_pending = False
        for router in [r for r in self._outboxes if r in self._writers]:
            writer = self._writers[router]
            writer.write(encode(self._outboxes.pop(router)))
            if writer.transport.get_write_buffer_size() > MAX_UNSENT_BYTES:
                logger.warning("router %s stopped reading its chunks: cutting it off", router)
                writer.transport.abort()

    def _drop_unclaimed(self, router: str) -> None:
        if router not in self._writers:
            self._outboxes.pop(router, None)

    async def stream(
        self, request: EngineRequest, chunks: AsyncIterator[EngineChunk]
    ) -> AsyncIterator[EngineChunk | ChannelOpen]:
        """An engine's streaming call: the chunks themselves, or, when the router asked for
        the channel, the channel's address, then every chunk through it. Returns once the
        last one is put, so Serve counts the request as ongoing until then; a failure after
        the first chunk goes through the channel too, in order, one before it raises here."""
        router = request.channel
        if router is None or not request.stream:
            async for chunk in chunks:
                yield chunk
            return
        # The engine takes the prompt before the address leaves (one pass of the event loop
        # runs the task up to its wait for the first token): the Serve message then overlaps
        # the first token's computation instead of going before it.
        first = asyncio.ensure_future(anext(chunks, None))
        try:
            await asyncio.sleep(0)
            yield await self.address()
            chunk = await first  # a refusal raises here, and so through the call
        finally:
            first.cancel()  # the call was cancelled: so is the engine request (once done, a no-op)
        try:
            while chunk is not None:
                self.put(router, request.request_id, chunk)
                chunk = await anext(chunks, None)
        except Exception as error:
            if not isinstance(error, EngineUnavailableError):
                logger.exception("engine stream %s failed", request.request_id)
            self.put(router, request.request_id, str(error) or repr(error))
        else:
            self.put(router, request.request_id, None)


# ---- router replica side -------------------------------------------------------------------

InboxItem = EngineChunk | BaseException | None


class _Inbox:
    """One stream's chunks (then None, or an error) as the connection's reader sorts them in."""

    __slots__ = ("items", "ready")

    def __init__(self) -> None:
        self.items: deque[InboxItem] = deque()
        self.ready = asyncio.Event()

    def put(self, item: InboxItem) -> None:
        self.items.append(item)
        self.ready.set()

    async def take(self) -> list[InboxItem]:
        """Everything that has come in, once something has."""
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        items = list(self.items)
        self.items.clear()
        return items


def coalesce(items: list[InboxItem]) -> Iterator[InboxItem]:
    """Items that came in together, a choice's consecutive chunks merged into one (as vLLM's
    output collector merges the deltas its reader has not taken): a router that fell behind
    sends one SSE event per choice for what is ready, not one per engine step. Nothing waits
    to be merged."""
    held: EngineChunk | None = None
    for item in items:
        if held is not None:
            if (
                isinstance(item, EngineChunk)
                and item.index == held.index
                and held.finish_reason is None
            ):
                held = _joined(held, item)
                continue
            yield held
            held = None
        if isinstance(item, EngineChunk):
            held = item
        else:
            yield item
    if held is not None:
        yield held


def _joined(first: EngineChunk, later: EngineChunk) -> EngineChunk:
    logprobs = None
    if first.logprobs is not None or later.logprobs is not None:
        logprobs = (first.logprobs or []) + (later.logprobs or [])
    return EngineChunk(
        first.index,
        first.text + later.text,
        first.num_tokens + later.num_tokens,
        later.finish_reason,
        logprobs,
        first.prompt_logprobs,
    )


@dataclass
class _Connection:
    reader_task: asyncio.Task[None]  # held: the event loop keeps only a weak reference
    requests: set[str] = field(default_factory=set)


class ChannelClient:
    """In a router replica: one connection per engine replica, opened on first use; its
    reader sorts the frames' chunks into the streams' inboxes."""

    def __init__(self) -> None:
        self.router_id = uuid.uuid4().hex
        self._inboxes: dict[str, _Inbox] = {}
        self._connections: dict[ChannelOpen, asyncio.Future[_Connection]] = {}

    def expect(self, request_id: str) -> None:
        """Registers a stream before its engine call goes out, so no frame finds it absent."""
        self._inboxes[request_id] = _Inbox()

    def release(self, request_id: str) -> None:
        """The stream is over (or never started): later frames for it are dropped."""
        self._inboxes.pop(request_id, None)

    async def chunks(
        self, request_id: str, response: AsyncIterator[Any]
    ) -> AsyncIterator[EngineChunk]:
        """The stream's chunks: from the engine call until it names its channel, then from
        the channel. The engine's failure, the call's error and a lost connection end it
        with an error."""
        inbox = self._inboxes[request_id]
        watcher: asyncio.Task[None] | None = None
        connection: _Connection | None = None
        try:
            async for item in response:
                if isinstance(item, ChannelOpen):
                    connection = await self._connection(item)
                    break
                yield item
            else:
                return  # the call carried the whole stream
            connection.requests.add(request_id)
            watcher = asyncio.ensure_future(_watch(response, inbox))
            while True:
                for item in coalesce(await inbox.take()):
                    if item is None:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield item
        finally:
            if connection is not None:
                connection.requests.discard(request_id)
            if watcher is not None:
                watcher.cancel()

    async def _connection(self, address: ChannelOpen) -> _Connection:
        opening = self._connections.get(address)
        if opening is None:
            opening = self._connections[address] = asyncio.ensure_future(self._open(address))
        try:
            return await asyncio.shield(opening)
        except OSError:
            self._connections.pop(address, None)
            raise EngineUnavailableError(
                f"cannot reach the engine replica's chunk channel at {address}"
            ) from None

    async def _open(self, address: ChannelOpen) -> _Connection:
        reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.write(encode(self.router_id))
        return _Connection(asyncio.ensure_future(self._read(address, reader, writer)))

    async def _read(
        self, address: ChannelOpen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        inboxes = self._inboxes
        try:
            while True:
                for request_id, item in await read_frame(reader):
                    inbox = inboxes.get(request_id)
                    if inbox is None:  # a stream its caller already left
                        continue
                    if isinstance(item, tuple):
                        inbox.put(EngineChunk(*item))
                    else:
                        inbox.put(None if item is None else EngineUnavailableError(item))
        except (OSError, asyncio.IncompleteReadError, pickle.UnpicklingError) as error:
            logger.warning("chunk channel to %s closed: %r", address, error)
        finally:
            writer.close()
            opened = self._connections.pop(address, None)
            connection = opened.result() if opened is not None and opened.done() else None
            for request_id in connection.requests if connection else ():
                inbox = inboxes.get(request_id)
                if inbox is not None:
                    inbox.put(EngineUnavailableError("the engine replica's channel closed"))


async def _watch(response: AsyncIterator[Any], inbox: _Inbox) -> None:
    """Waits out the engine call; its own error (the replica died, Serve failed the call) goes
    to the stream's inbox. A normal end says nothing: the channel's end marker ends the
    stream."""
    try:
        async for _ in response:
            pass
    except Exception as error:  # handed to the stream's reader, which raises it
        inbox.put(error)
