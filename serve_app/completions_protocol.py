"""OpenAI's legacy completions wire shapes (`POST /v1/completions`), with vLLM's extra fields.

For callers that render their own prompts: the prompt goes to the engine as is (no chat
template, no step-by-step policy), as text or token ids, one prompt or a batch.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field

from serve_app.protocol import APIError, GenerationRequest, Usage

Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(GenerationRequest):
    prompt: Prompt
    # OpenAI's default; 0 with echo returns the prompt alone (scoring it, with logprobs).
    max_tokens: int | None = Field(16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    add_special_tokens: bool = True
    best_of: int | None = Field(None, ge=1)
    suffix: str | None = None

    def check(self) -> None:
        super().check()
        if self.suffix is not None:
            raise APIError(
                400,
                "suffix is not supported: the model has no fill-in-the-middle prompt",
                param="suffix",
            )
        if self.best_of is not None and self.best_of != self.n:
            raise APIError(
                400,
                "best_of is not supported (vLLM's engine dropped it): ask for n choices and "
                "pick among them",
                param="best_of",
            )
        if not self.prompts:
            raise APIError(400, "prompt must not be empty", param="prompt")
        if self.max_tokens == 0 and not self.echo:
            raise APIError(400, "max_tokens may be 0 only with echo", param="max_tokens")
        if self.max_tokens == 0 and self.stream:
            raise APIError(400, "max_tokens 0 cannot be streamed", param="max_tokens")

    @property
    def prompts(self) -> list[str | list[int]]:
        """The batch: each prompt as text or as token ids. Empty ones make it empty."""
        prompt = self.prompt
        if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
            batch = [prompt]
        else:
            batch = list(prompt)
        return batch if batch and all(batch) else []

    def prompt_for_log(self) -> Prompt:
        return self.prompt

    def sizes(self) -> dict[str, int]:
        return {"prompt": len(self.prompts), **super().sizes()}

    @property
    def requested_max_tokens(self) -> int:
        """16 when null (vLLM's reading); 1 for 0, as the engine makes one token at least."""
        return max(16 if self.max_tokens is None else self.max_tokens, 1)

    @property
    def top_logprobs_asked(self) -> int | None:
        return self.logprobs


class CompletionLogprobs(BaseModel):
    """OpenAI's completions logprobs: per token its text, logprob, the top alternatives and
    where it starts in the choice's text. Prompt tokens (echo) have no logprob for the first."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
