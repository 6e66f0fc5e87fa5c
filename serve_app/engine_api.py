"""What crosses the router -> engine hop: token ids in, text deltas out.

Kept apart from serve_app.engine so the router never imports vLLM. Plain values only:
every chunk is pickled once per hop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

# One sampled token's logprob: (token text, logprob, [(alternative text, logprob), ...]).
TokenLogprob = tuple[str, float, list[tuple[str, float]]]


@dataclass(frozen=True, slots=True)
class EngineRequest:
    request_id: str
    prompt_token_ids: list[int]
    max_tokens: int
    # Streaming requests get a chunk per engine step; the others one chunk per choice.
    stream: bool
    # vLLM SamplingParams fields the client set; the rest come from generation_config.json.
    sampling: dict[str, Any] = field(default_factory=dict)
    # vLLM StructuredOutputsParams fields (json schema, json_object...), if any.
    structured_outputs: dict[str, Any] | None = None
    # Wall-clock time the router sent it: the engine replica measures how long it waited in
    # Serve's queue at the router for a free replica slot (serve_app.engine_metrics).
    dispatched_at: float = 0.0
    # W3C trace headers of the router's span (serve_app.tracing): vLLM's span joins it.
    trace_headers: dict[str, str] | None = None
    # The caller's session (its `user`): the cache-aware request router's tie-breaker.
    session: str | None = None
    # The router replica's id when a stream's chunks should come through its chunk channel
    # (serve_app.chunk_channel); None: yielded by the call itself.
    channel: str | None = None


class EngineChunk(NamedTuple):
    index: int  # which of the n choices
    text: str  # new text since the previous chunk of this choice
    num_tokens: int  # new output tokens since the previous chunk of this choice
    finish_reason: str | None  # "stop" or "length" on the choice's last chunk
    logprobs: list[TokenLogprob] | None  # one entry per new token, when asked for
    # Per prompt token (None for the first, which has no logprob), when prompt_logprobs is
    # asked for: on the first chunk of each choice only.
    prompt_logprobs: list[TokenLogprob | None] | None = None


class EngineUnavailableError(RuntimeError):
    """The replica's vLLM engine is dead (its process died): the call can be retried on
    another replica, or once Serve has replaced this one (check_health fails meanwhile)."""


class EngineRequestError(ValueError):
    """vLLM refused the request's sampling parameters (say `n` > 1 with greedy sampling):
    the caller's mistake, answered 400 naming `param` as vLLM's server does."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        # Read as attributes: past the Ray hop the error is a RayTaskError subclass whose
        # str() is the remote traceback, while attributes reach the original.
        self.message = message
        self.param = param
