"""What a request asks of the engine: sampling fields, and for chat structured outputs.

Fields the client left out are not sent, so the engine applies the model's
generation_config.json defaults (Qwen2.5: temperature 0.7, top_p 0.8, top_k 20,
repetition_penalty 1.05) exactly as vLLM's own server does.
"""

from __future__ import annotations

from typing import Any

from serve_app.chat_writer import OutputSpec
from serve_app.protocol import (
    ChatCompletionRequest,
    GenerationRequest,
    NamedToolChoice,
    ToolDefinition,
)

# Request fields that are vLLM SamplingParams fields of the same name and meaning.
SAMPLING_FIELDS = (
    "n",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "seed",
    "stop_token_ids",
    "logit_bias",
)


def sampling_fields(body: GenerationRequest) -> dict[str, Any]:
    fields = {name: getattr(body, name) for name in SAMPLING_FIELDS}
    fields["stop"] = body.stop_strings or None
    if body.min_tokens:
        fields["min_tokens"] = body.min_tokens
    if body.ignore_eos:
        fields["ignore_eos"] = True
    fields["logprobs"] = body.top_logprobs_asked
    return {name: value for name, value in fields.items() if value is not None}


def plan_output(body: ChatCompletionRequest) -> tuple[OutputSpec, dict[str, Any] | None]:
    """How to read the answer, and the structured-outputs constraint that makes it so.

    `tool_choice` none keeps the answer as text (the tools stay in the prompt: see
    `prompt_tools`); auto (the default with tools) parses
    `<tool_call>` blocks; a named function or `required` constrain the output to JSON of the
    allowed calls, so even a weak model returns valid calls."""
    choice = body.tool_choice or ("auto" if body.tools else "none")
    if isinstance(choice, NamedToolChoice):
        tool = next(t for t in body.tools or () if t.function.name == choice.function.name)
        spec = OutputSpec("named", body.tool_names, tool.function.name, body.parallel_tool_calls)
        return spec, {"json": tool.function.parameters or {"type": "object"}}
    spec = OutputSpec(choice, body.tool_names, None, body.parallel_tool_calls)
    if choice == "required":
        return spec, {"json": _calls_schema(body)}
    if body.response_format is None or body.response_format.type == "text":
        return spec, None
    if body.response_format.type == "json_object":
        return spec, {"json_object": True}
    return spec, {"json": body.response_format.json_schema.schema_}


def prompt_tools(
    body: ChatCompletionRequest, spec: OutputSpec, exclude_when_none: bool
) -> list[ToolDefinition] | None:
    """The tools the prompt shows. With tool_choice none they stay, as vLLM and OpenAI keep
    them (and bill them): the model may not call a tool, not that it cannot see them; vLLM's
    `--exclude-tools-when-tool-choice-none` is the config's `exclude_when_none`."""
    return None if spec.tool_mode == "none" and exclude_when_none else body.tools


def _calls_schema(body: ChatCompletionRequest) -> dict[str, Any]:
    """A JSON array of {"name", "arguments"} objects, one of the offered tools each."""
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"enum": [tool.function.name]},
                "arguments": tool.function.parameters or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in body.tools or ()
    ]
    schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": options}}
    if not body.parallel_tool_calls:
        schema["maxItems"] = 1
    return schema
