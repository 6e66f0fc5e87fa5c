"""Engine chunks -> OpenAI chat responses: one JSON body, or SSE chunks ending `[DONE]`.

Each of the `n` choices keeps its own state: token count, finish reason, logprobs, and how
its text is read. Plain requests pass text through. With `tools` and `tool_choice` auto,
`<tool_call>` blocks become tool calls (serve_app.tool_calls). With `tool_choice` required
or a named function, structured outputs made the engine write JSON (one call's arguments,
or a list of calls), which becomes the tool calls at the end of the choice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
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
from serve_app.tool_calls import ParsedCall, ToolCallStream, new_call_id, parse_block

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
    calls: int = 0
    _buffer: list[str] = field(default_factory=list)  # forced tool modes: the JSON so far
    _tools: ToolCallStream | None = None

    def __post_init__(self) -> None:
        if self.spec.tool_mode == "auto":
            self._tools = ToolCallStream(self.spec.tool_names)

    def consume(self, chunk: EngineChunk) -> tuple[str, list[ParsedCall]]:
        """The content to show and the calls completed by this chunk."""
        self.tokens += chunk.num_tokens
        content, calls = "", []
        if self._tools is not None:
            content, calls = self._tools.feed(chunk.text)
        elif self.spec.tool_mode in ("named", "required"):
            self._buffer.append(chunk.text)
        else:
            content = chunk.text
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            rest, end_calls = self._finish()
            content, calls = content + rest, calls + end_calls
        calls = self._allowed(calls)
        if self.calls and self.finish_reason == "stop":
            self.finish_reason = "tool_calls"
        return content, calls

    def _finish(self) -> tuple[str, list[ParsedCall]]:
        if self._tools is not None:
            return self._tools.finish(), []
        if self.spec.tool_mode in ("named", "required"):
            text = "".join(self._buffer)
            calls = _forced_calls(text, self.spec)
            return ("", calls) if calls else (text, [])
        return "", []

    def _allowed(self, calls: list[ParsedCall]) -> list[ParsedCall]:
        if not self.spec.parallel_tool_calls:
            calls = calls[: max(0, 1 - self.calls)]
        self.calls += len(calls)
        return calls


def _forced_calls(text: str, spec: OutputSpec) -> list[ParsedCall]:
    """The JSON that structured outputs forced: the named tool's arguments, or a list of
    {"name", "arguments"} calls for `required`. Empty when it did not finish (length)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return []
    if spec.tool_mode == "named":
        if not isinstance(value, dict):
            return []
        return [
            ParsedCall(new_call_id(), spec.named_tool or "", json.dumps(value, ensure_ascii=False))
        ]
    if not isinstance(value, list):
        return []
    calls = [parse_block(json.dumps(call), spec.tool_names) for call in value]
    return [call for call in calls if call is not None]


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

    def _choices(self) -> list[ChoiceState]:
        return [ChoiceState(index, self.spec) for index in range(self.n)]

    async def collect(self, chunks: AsyncIterator[EngineChunk]) -> ChatCompletion:
        choices = self._choices()
        texts: list[list[str]] = [[] for _ in choices]
        calls: list[list[ParsedCall]] = [[] for _ in choices]
        logprobs: list[list[TokenLogprob]] = [[] for _ in choices]
        async for chunk in chunks:
            content, new_calls = choices[chunk.index].consume(chunk)
            texts[chunk.index].append(content)
            calls[chunk.index].extend(new_calls)
            logprobs[chunk.index].extend(chunk.logprobs or ())
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
        """SSE events as OpenAI sends them; errors after the 200 travel as an event."""
        choices = self._choices()
        for state in choices:
            role = DeltaMessage(role="assistant", content="")
            yield self._event([ChunkChoice(index=state.index, delta=role)], choices)
        async for event in guarded(self._deltas(chunks, choices)):
            yield event
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
            first_call = state.calls - len(calls)  # this choice's tool-call index
            delta = DeltaMessage(
                content=content or None,
                tool_calls=[_delta_call(first_call + i, c) for i, c in enumerate(calls)] or None,
            )
            if delta.content is not None or delta.tool_calls or chunk.logprobs:
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


def _delta_call(index: int, call: ParsedCall) -> DeltaToolCall:
    return DeltaToolCall(
        index=index,
        id=call.id,
        type="function",
        function=DeltaFunctionCall(name=call.name, arguments=call.arguments),
    )


SSE_DONE = "data: [DONE]\n\n"


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
