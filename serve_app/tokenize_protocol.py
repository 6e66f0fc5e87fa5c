"""vLLM's `/tokenize` and `/detokenize` wire shapes (its `entrypoints/openai` protocol).

`/tokenize` takes either a `prompt` (encoded as is) or chat `messages` (rendered as the chat
route would: the step-by-step policy, the template, the tools), and answers the token ids,
their count and the context length; `/detokenize` turns token ids back into text.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from serve_app.protocol import ChatMessage, StepByStepSwitch, Strict, ToolDefinition


class TokenizePromptRequest(Strict):
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool = False


class TokenizeChatRequest(Strict):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    add_special_tokens: bool = False
    return_token_strs: bool = False
    tools: list[ToolDefinition] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    step_by_step: StepByStepSwitch | None = None


TokenizeRequest = TokenizeChatRequest | TokenizePromptRequest


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(Strict):
    model: str | None = None
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    prompt: str
