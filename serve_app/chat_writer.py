"""Engine chunks -> OpenAI chat responses: one JSON body, or SSE chunks ending `[DONE]`.

Each of the `n` choices keeps its own state: token count, finish reason, logprobs, and how
its text is read. Plain requests pass text through. With `tools` and `tool_choice` auto,
`<tool_call>` blocks become tool calls (serve_app.tool_calls). With `tool_choice` required
or a named function, structured outputs make the engine write JSON (a list of calls, or one
call's arguments). Either way a call's name goes out in its first delta and its arguments
as they are generated.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from serve_app.engine_api import EngineChunk, TokenLogprob
from serve_app.protocol import (
    APIError,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FunctionCall,
    ResponseToolCall,
    TokenLogprobInfo,
    TopLogprob,
    Usage,
)
from serve_app.tool_calls import (
    CallDelta,
    CallListStream,
    ParsedCall,
    ToolCallStream,
    assemble,
    new_call_id,
)

logger = logging.getLogger("ray.serve")

ToolMode = Literal["none", "auto", "named", "required"]


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """How to read the model's text, decided once per request by the router."""

    tool_mode: ToolMode = "none"
    tool_names: frozenset[str] = frozenset()
    named_tool: str | None = None
    parallel_tool_calls: bool = True


@dataclass
class ChoiceState:
    index: int
    spec: OutputSpec
    tokens: int = 0
    finish_reason: str | None = None
    calls: int = 0  # tool calls started so far
    _text_calls: ToolCallStream | None = None
    _list_calls: CallListStream | None = None

    def __post_init__(self) -> None:
        if self.spec.tool_mode == "auto":
            self._text_calls = ToolCallStream(self.spec.tool_names)
        elif self.spec.tool_mode == "required":
            self._list_calls = CallListStream(self.spec.tool_names)

    def consume(self, chunk: EngineChunk) -> tuple[str, list[CallDelta]]:
        """The content to show and the tool-call deltas this chunk adds."""
        self.tokens += chunk.num_tokens
        content, deltas = "", []
        if self._text_calls is not None:
            content, deltas = self._text_calls.feed(chunk.text)
        elif self._list_calls is not None:
            deltas = self._list_calls.feed(chunk.text)
        elif self.spec.tool_mode == "named":
            deltas = self._named(chunk.text)
        else:
            content = chunk.text
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            if self._text_calls is not None:
                content += self._text_calls.finish()
        deltas = self._allowed(deltas)
        if self.calls and self.finish_reason == "stop":
            self.finish_reason = "tool_calls"
        return content, deltas

    def _named(self, text: str) -> list[CallDelta]:
        """A named tool: structured outputs made the whole answer its arguments' JSON."""
        if self.calls:
            return [CallDelta(0, None, None, text)] if text else []
        return [CallDelta(0, new_call_id(), self.spec.named_tool, text)]

    def _allowed(self, deltas: list[CallDelta]) -> list[CallDelta]:
        if not self.spec.parallel_tool_calls:
            deltas = [delta for delta in deltas if delta.index == 0]
        self.calls = max([self.calls, *(delta.index + 1 for delta in deltas)])
        return deltas


def response_tool_call(call: ParsedCall) -> ResponseToolCall:
    return ResponseToolCall(
        id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments)
    )


def choice_logprobs(entries: list[TokenLogprob]) -> ChoiceLogprobs:
    return ChoiceLogprobs(
        content=[
            TokenLogprobInfo(
                token=token,
                logprob=logprob,
                bytes=list(token.encode()),
                top_logprobs=[
                    TopLogprob(token=alt, logprob=alt_logprob, bytes=list(alt.encode()))
                    for alt, alt_logprob in alternatives
                ],
            )
            for token, logprob, alternatives in entries
        ]
    )


def token_usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


@dataclass
class ResponseWriter:
    """Everything a response needs besides the engine's chunks."""

    request_id: str
    model: str
    prompt_tokens: int
    n: int
    spec: OutputSpec
    logprobs: bool
    include_usage: bool = False
    continuous_usage: bool = False
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self._content = TextEvents(
            lambda index, text: self._event(
                [ChunkChoice(index=index, delta=DeltaMessage(content=text))]
            )
        )

    def _choices(self) -> list[ChoiceState]:
        return [ChoiceState(index, self.spec) for index in range(self.n)]

    async def collect(self, chunks: AsyncIterator[EngineChunk]) -> ChatCompletion:
        choices = self._choices()
        texts: list[list[str]] = [[] for _ in choices]
        deltas: list[list[CallDelta]] = [[] for _ in choices]
        logprobs: list[list[TokenLogprob]] = [[] for _ in choices]
        async for chunk in chunks:
            content, new_deltas = choices[chunk.index].consume(chunk)
            texts[chunk.index].append(content)
            deltas[chunk.index].extend(new_deltas)
            logprobs[chunk.index].extend(chunk.logprobs or ())
        calls = [assemble(choice_deltas) for choice_deltas in deltas]
        return ChatCompletion(
            id=self.request_id,
            created=self.created,
            model=self.model,
            choices=[
                Choice(
                    index=state.index,
                    message=AssistantMessage(
                        content=_content("".join(texts[state.index]), calls[state.index]),
                        tool_calls=[response_tool_call(c) for c in calls[state.index]],
                    ),
                    logprobs=choice_logprobs(logprobs[state.index]) if self.logprobs else None,
                    finish_reason=state.finish_reason,
                )
                for state in choices
            ],
            usage=token_usage(self.prompt_tokens, sum(state.tokens for state in choices)),
        )

    async def stream(self, chunks: AsyncIterator[EngineChunk]) -> AsyncIterator[str]:
        """SSE events as OpenAI sends them; errors after the 200 travel as an event. The
        opening role events leave in one write with the first delta's: the router starts
        the answer once the first chunk is in hand, so they wait for nothing, and the first
        token crosses the ASGI stack and the socket once instead of twice."""
        choices = self._choices()
        opening = "".join(
            self._event([ChunkChoice(index=s.index, delta=_ROLE)], choices) for s in choices
        )
        async for event in guarded(self._deltas(chunks, choices)):
            yield opening + event
            opening = ""
        if opening:
            yield opening
        if self.include_usage:
            yield self._event(
                [], usage=token_usage(self.prompt_tokens, sum(s.tokens for s in choices))
            )
        yield SSE_DONE

    async def _deltas(
        self, chunks: AsyncIterator[EngineChunk], choices: list[ChoiceState]
    ) -> AsyncIterator[str]:
        async for chunk in chunks:
            state = choices[chunk.index]
            content, calls = state.consume(chunk)
            if content and not calls and not chunk.logprobs and not self.continuous_usage:
                yield self._content.event(state.index, content)
            elif content or calls or chunk.logprobs:
                delta = DeltaMessage(
                    content=content or None, tool_calls=[_delta_call(c) for c in calls] or None
                )
                logprobs = choice_logprobs(chunk.logprobs) if chunk.logprobs else None
                yield self._event(
                    [ChunkChoice(index=state.index, delta=delta, logprobs=logprobs)], choices
                )
            if state.finish_reason is not None:
                yield self._event(
                    [
                        ChunkChoice(
                            index=state.index,
                            delta=DeltaMessage(),
                            finish_reason=state.finish_reason,
                        )
                    ],
                    choices,
                )

    def _event(
        self,
        choices: list[ChunkChoice],
        states: list[ChoiceState] | None = None,
        usage: Usage | None = None,
    ) -> str:
        if usage is None and self.continuous_usage and states is not None:
            usage = token_usage(self.prompt_tokens, sum(s.tokens for s in states))
        chunk = ChatCompletionChunk(
            id=self.request_id, created=self.created, model=self.model, choices=choices, usage=usage
        )
        return sse(chunk)


def _content(text: str, calls: list[ParsedCall]) -> str | None:
    """OpenAI sends `content: null` when a turn is only tool calls."""
    return None if calls and not text.strip() else text


def _delta_call(delta: CallDelta) -> DeltaToolCall:
    """OpenAI's shape: id, type and name in a call's first delta only."""
    return DeltaToolCall(
        index=delta.index,
        id=delta.id,
        type="function" if delta.id else None,
        function=DeltaFunctionCall(name=delta.name, arguments=delta.arguments),
    )


SSE_DONE = "data: [DONE]\n\n"
_ROLE = DeltaMessage(role="assistant", content="")


class TextEvents:
    """The SSE events of plain text deltas (most of a stream's events, at GPU rates thousands
    a second), encoded once per choice around the text: `render(index, text)` writes the
    event once with a placeholder, and each delta only JSON-encodes its text. The bytes are
    the model's own dump (tests/test_chat_writer.py)."""

    _SLOT = "athene-text-slot-5f0c"

    def __init__(self, render: Callable[[int, str], str]) -> None:
        self._render = render
        self._around: dict[int, tuple[str, str]] = {}

    def event(self, index: int, text: str) -> str:
        around = self._around.get(index)
        if around is None:
            before, after = self._render(index, self._SLOT).split(json.dumps(self._SLOT))
            around = self._around[index] = (before, after)
        return f"{around[0]}{json.dumps(text, ensure_ascii=False)}{around[1]}"


def sse(model: BaseModel) -> str:
    return f"data: {model.model_dump_json()}\n\n"


async def guarded(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """The events until the engine's stream ends; a failure after the 200 was sent travels
    as one error event in OpenAI's shape, and the stream still ends properly."""
    try:
        async for event in events:
            yield event
    except APIError as error:
        yield _error_event(error)
    except Exception:
        logger.exception("engine stream failed")
        yield _error_event(APIError(500, "the engine failed mid-stream", type="server_error"))


def _error_event(error: APIError) -> str:
    return f"data: {json.dumps(error.body())}\n\n"
