"""Engine chunks -> OpenAI completions: one JSON body, or SSE chunks ending `[DONE]`.

A batch of P prompts with n choices each has P x n choices; choice i belongs to prompt
i // n (vLLM's numbering). With `echo` a choice's text starts with its prompt, and with
`logprobs` its logprobs start with the prompt's (the first prompt token has none); with
`max_tokens` 0 the prompt is all there is (scoring a text, as evaluation harnesses do).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from serve_app.chat_writer import SSE_DONE, TextEvents, guarded, sse, token_usage
from serve_app.completions_protocol import Completion, CompletionChoice, CompletionLogprobs
from serve_app.engine_api import EngineChunk
from serve_app.protocol import Usage

LOGPROB_FLOOR = -9999.0  # what OpenAI and vLLM send for -inf (JSON has no infinity)

# A token's text, logprob and alternatives; the prompt's first token has no logprob.
Entry = tuple[str, float | None, list[tuple[str, float]]]


@dataclass(frozen=True, slots=True)
class PromptEcho:
    """What `echo` puts before a choice's output: the prompt's text and token ids."""

    text: str
    token_ids: list[int]


@dataclass
class _ChoiceState:
    index: int
    echo: PromptEcho | None  # until the choice's first chunk carries it out
    next_offset: int = 0  # where the next token starts in the choice's text (text_offset)
    tokens: int = 0


@dataclass
class CompletionWriter:
    request_id: str
    model: str
    prompts: list[PromptEcho]
    n: int
    echo: bool
    echo_only: bool  # max_tokens 0: the prompt alone, the engine's one token dropped
    logprobs: int | None
    decode: Callable[[int], str]  # a prompt token's text where vLLM gives no logprob entry
    include_usage: bool = False
    continuous_usage: bool = False
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self._text = TextEvents(
            lambda index, text: self._event([CompletionChoice(index=index, text=text)], None)
        )

    @property
    def prompt_tokens(self) -> int:
        return sum(len(prompt.token_ids) for prompt in self.prompts)

    def _choices(self) -> list[_ChoiceState]:
        return [
            _ChoiceState(i, self.prompts[i // self.n] if self.echo else None)
            for i in range(len(self.prompts) * self.n)
        ]

    def _piece(self, state: _ChoiceState, chunk: EngineChunk) -> CompletionChoice:
        """This chunk of the choice: its text and logprobs, after the echoed prompt if due."""
        text = chunk.text
        entries: list[Entry] = list(chunk.logprobs or ())
        if self.echo_only:
            text, entries = "", []
        else:
            state.tokens += chunk.num_tokens
        prompt_entries: list[Entry] = []
        if state.echo is not None:
            text = state.echo.text + text
            prompt_entries = [
                entry or (self.decode(token_id), None, [])
                for token_id, entry in zip(
                    state.echo.token_ids, chunk.prompt_logprobs or (), strict=False
                )
            ]
            state.echo = None
        logprobs = None
        if self.logprobs is not None:
            logprobs = self._logprobs(state, [*prompt_entries, *entries])
        return CompletionChoice(
            index=state.index, text=text, logprobs=logprobs, finish_reason=chunk.finish_reason
        )

    def _logprobs(self, state: _ChoiceState, entries: list[Entry]) -> CompletionLogprobs:
        """OpenAI's shape: top_logprobs holds the token itself and its `logprobs` best
        alternatives (vLLM's reading); offsets run on from the choice's previous chunk."""
        out = CompletionLogprobs()
        for token, logprob, alternatives in entries:
            out.tokens.append(token)
            out.text_offset.append(state.next_offset)
            state.next_offset += len(token)
            if logprob is None:
                out.token_logprobs.append(None)
                out.top_logprobs.append(None)
                continue
            out.token_logprobs.append(max(logprob, LOGPROB_FLOOR))
            top = {token: max(logprob, LOGPROB_FLOOR)}
            for alternative, alt_logprob in alternatives:
                top.setdefault(alternative, max(alt_logprob, LOGPROB_FLOOR))
            out.top_logprobs.append(top)
        return out

    async def collect(self, chunks: AsyncIterator[EngineChunk]) -> Completion:
        choices = self._choices()
        answers = [CompletionChoice(index=state.index, text="") for state in choices]
        if self.logprobs is not None:
            for answer in answers:
                answer.logprobs = CompletionLogprobs()
        async for chunk in chunks:
            piece = self._piece(choices[chunk.index], chunk)
            answer = answers[chunk.index]
            answer.text += piece.text
            answer.finish_reason = piece.finish_reason or answer.finish_reason
            if piece.logprobs is not None and answer.logprobs is not None:
                for name in CompletionLogprobs.model_fields:
                    getattr(answer.logprobs, name).extend(getattr(piece.logprobs, name))
        return Completion(
            id=self.request_id,
            created=self.created,
            model=self.model,
            choices=answers,
            usage=token_usage(self.prompt_tokens, sum(state.tokens for state in choices)),
        )

    async def stream(self, chunks: AsyncIterator[EngineChunk]) -> AsyncIterator[str]:
        choices = self._choices()
        async for event in guarded(self._pieces(chunks, choices)):
            yield event
        if self.include_usage:
            yield self._event([], self._usage(choices))
        yield SSE_DONE

    async def _pieces(
        self, chunks: AsyncIterator[EngineChunk], choices: list[_ChoiceState]
    ) -> AsyncIterator[str]:
        plain = not (
            self.logprobs is not None or self.echo or self.echo_only or self.continuous_usage
        )
        async for chunk in chunks:
            state = choices[chunk.index]
            if plain and chunk.text and chunk.finish_reason is None:
                state.tokens += chunk.num_tokens
                yield self._text.event(state.index, chunk.text)
                continue
            piece = self._piece(state, chunk)
            if piece.text or piece.finish_reason or (piece.logprobs and piece.logprobs.tokens):
                yield self._event([piece], self._usage(choices) if self.continuous_usage else None)

    def _usage(self, choices: list[_ChoiceState]) -> Usage:
        return token_usage(self.prompt_tokens, sum(state.tokens for state in choices))

    def _event(self, pieces: list[CompletionChoice], usage: Usage | None) -> str:
        return sse(
            Completion(
                id=self.request_id,
                created=self.created,
                model=self.model,
                choices=pieces,
                usage=usage,
            )
        )
