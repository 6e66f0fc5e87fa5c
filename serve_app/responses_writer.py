"""Engine chunks -> a Responses API object, or its typed stream events.

The answer is read as chat reads it (serve_app.chat_writer's `ChoiceState`: text, or tool
calls from `<tool_call>` blocks or structured outputs); the text becomes an output message
and each call a `function_call` item. Streams send OpenAI's events in OpenAI's order:
`response.created`, `response.in_progress`, then per item `response.output_item.added`,
its deltas (`response.output_text.delta` after `response.content_part.added`, or
`response.function_call_arguments.delta`), their `.done` events and
`response.output_item.done`, and last `response.completed` (or `response.incomplete` when
`max_output_tokens` cut it off) with the whole response. A failure after the stream began
is an `error` event, then `response.failed`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from serve_app.chat_writer import ChoiceState, OutputSpec
from serve_app.engine_api import EngineChunk
from serve_app.protocol import APIError
from serve_app.responses_protocol import (
    IncompleteDetails,
    OutputFunctionCall,
    OutputItem,
    OutputMessage,
    OutputText,
    ResponseError,
    ResponseObject,
    ResponseUsage,
)
from serve_app.tool_calls import CallDelta

logger = logging.getLogger("ray.serve")

ItemStatus = Literal["completed", "incomplete"]
Event = tuple[str, dict[str, Any]]  # an event's type and its fields


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass
class _Output:
    """The output items as they are made, and the events that make them."""

    items: list[OutputItem] = field(default_factory=list)
    _open: OutputItem | None = None

    def text(self, delta: str) -> list[Event]:
        events = []
        if not isinstance(self._open, OutputMessage):
            events += self.close()
            message = OutputMessage(id=_item_id("msg"), status="in_progress", content=[])
            events += self._add(message)
            message.content.append(OutputText(text=""))
            events.append(
                ("response.content_part.added", {**self._where(), "part": OutputText(text="")})
            )
        assert isinstance(self._open, OutputMessage)
        self._open.content[0].text += delta
        events.append(("response.output_text.delta", {**self._where(), "delta": delta}))
        return events

    def call(self, delta: CallDelta) -> list[Event]:
        events = []
        if delta.id is not None:  # a new call
            events += self.close()
            events += self._add(
                OutputFunctionCall(
                    id=_item_id("fc"),
                    call_id=delta.id,
                    name=delta.name or "",
                    arguments="",
                    status="in_progress",
                )
            )
        assert isinstance(self._open, OutputFunctionCall)
        if delta.arguments:
            self._open.arguments += delta.arguments
            events.append(
                (
                    "response.function_call_arguments.delta",
                    {
                        "item_id": self._open.id,
                        "output_index": self._index,
                        "delta": delta.arguments,
                    },
                )
            )
        return events

    def close(self, status: ItemStatus = "completed") -> list[Event]:
        """Ends the open item, if any: its `.done` events."""
        item, self._open = self._open, None
        if item is None:
            return []
        item.status = status
        index = len(self.items) - 1
        if isinstance(item, OutputMessage):
            where = {"item_id": item.id, "output_index": index, "content_index": 0}
            part = item.content[0]
            events = [
                ("response.output_text.done", {**where, "text": part.text}),
                ("response.content_part.done", {**where, "part": part}),
            ]
        else:
            events = [
                (
                    "response.function_call_arguments.done",
                    {"item_id": item.id, "output_index": index, "arguments": item.arguments},
                )
            ]
        return [*events, ("response.output_item.done", {"output_index": index, "item": item})]

    def _add(self, item: OutputItem) -> list[Event]:
        self.items.append(item)
        self._open = item
        return [
            ("response.output_item.added", {"output_index": self._index, "item": item.model_dump()})
        ]

    @property
    def _index(self) -> int:
        return len(self.items) - 1

    def _where(self) -> dict[str, Any]:
        assert self._open is not None
        return {"item_id": self._open.id, "output_index": self._index, "content_index": 0}


@dataclass
class ResponsesWriter:
    response: ResponseObject  # in progress, with the request's settings
    spec: OutputSpec
    prompt_tokens: int
    _sequence: int = 0

    def _read(self, state: ChoiceState, output: _Output, chunk: EngineChunk) -> list[Event]:
        content, deltas = state.consume(chunk)
        events = output.text(content) if content else []
        for delta in deltas:
            events += output.call(delta)
        return events

    def _finish(self, state: ChoiceState, output: _Output) -> list[Event]:
        incomplete = state.finish_reason == "length"
        events = output.close("incomplete" if incomplete else "completed")
        self.response.output = output.items
        self.response.status = "incomplete" if incomplete else "completed"
        if incomplete:
            self.response.incomplete_details = IncompleteDetails(reason="max_output_tokens")
        self.response.usage = ResponseUsage(
            input_tokens=self.prompt_tokens,
            output_tokens=state.tokens,
            total_tokens=self.prompt_tokens + state.tokens,
        )
        return events

    async def collect(self, chunks: AsyncIterator[EngineChunk]) -> ResponseObject:
        state, output = ChoiceState(0, self.spec), _Output()
        async for chunk in chunks:
            self._read(state, output, chunk)
        self._finish(state, output)
        return self.response

    async def stream(self, chunks: AsyncIterator[EngineChunk]) -> AsyncIterator[str]:
        yield self._event("response.created", {"response": self.response})
        yield self._event("response.in_progress", {"response": self.response})
        state, output = ChoiceState(0, self.spec), _Output()
        try:
            async for chunk in chunks:
                for name, fields in self._read(state, output, chunk):
                    yield self._event(name, fields)
        except Exception as error:
            if not isinstance(error, APIError):
                logger.exception("engine stream failed")
                error = APIError(500, "the engine failed mid-stream", type="server_error")
            detail = error.detail
            yield self._event(
                "error", {"code": detail.code, "message": detail.message, "param": detail.param}
            )
            self.response.status = "failed"
            self.response.error = ResponseError(
                code=detail.code or "server_error", message=detail.message
            )
            yield self._event("response.failed", {"response": self.response})
            return
        for name, fields in self._finish(state, output):
            yield self._event(name, fields)
        done = (
            "response.incomplete" if self.response.status == "incomplete" else "response.completed"
        )
        yield self._event(done, {"response": self.response})

    def _event(self, name: str, fields: dict[str, Any]) -> str:
        """One SSE event, `event:` naming its type as OpenAI sends it."""
        payload = {"type": name, "sequence_number": self._sequence}
        for key, value in fields.items():
            payload[key] = value.model_dump() if isinstance(value, BaseModel) else value
        self._sequence += 1
        return f"event: {name}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"
