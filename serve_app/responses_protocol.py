"""OpenAI's Responses API wire shapes (`POST /v1/responses`), stateless.

A request is read as the chat request it amounts to (`ResponsesRequest.to_chat`): the
`instructions` as a system turn, the `input` items as messages (a function call and its
output as the assistant's tool call and the tool's answer), `tools` and `tool_choice` in
chat's nesting, `text.format` as `response_format`. So it gets the chat route's template,
policy, limits and tool-call reading, and only the shapes differ. The server keeps no
state: `store: true` and `previous_response_id` are refused.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from serve_app.protocol import (
    APIError,
    ChatCompletionRequest,
    ChatMessage,
    FunctionCall,
    FunctionDefinition,
    JsonSchema,
    NamedFunction,
    NamedToolChoice,
    ResponseFormat,
    StepByStepSwitch,
    Strict,
    TextPart,
    ToolCall,
    ToolDefinition,
)

# Where a chat field's refusal points in a Responses request.
PARAMS_FROM_CHAT = {
    "messages": "input",
    "max_tokens": "max_output_tokens",
    "response_format": "text.format",
}

# --- request ---------------------------------------------------------------------------


class InputText(Strict):
    type: Literal["input_text", "output_text"]
    text: str
    annotations: list[Any] | None = None  # on output_text echoed back from an answer


class InputMessage(Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[InputText]
    id: str | None = None  # on an answer's message sent back as history
    status: str | None = None


class FunctionCallItem(Strict):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(Strict):
    type: Literal["function_call_output"]
    call_id: str
    output: str
    id: str | None = None
    status: str | None = None


InputItem = InputMessage | FunctionCallItem | FunctionCallOutputItem


class FunctionTool(Strict):
    type: Literal["function"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunctionChoice(Strict):
    type: Literal["function"]
    name: str


class TextFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextConfig(Strict):
    format: TextFormat | None = None


class ResponsesRequest(Strict):
    model: str
    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice | None = None
    parallel_tool_calls: bool = True
    text: TextConfig | None = None
    stream: bool = False
    store: bool = False
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    user: str | None = Field(None, max_length=256)
    truncation: Literal["disabled"] | None = None
    step_by_step: StepByStepSwitch | None = Field(
        None, description="Per-request override of the step-by-step prompt policy."
    )

    def check(self) -> None:
        if self.store:
            raise APIError(
                400,
                "store: true is not supported: this server keeps no responses (send store: "
                "false, or leave it out, and keep the conversation on your side)",
                param="store",
            )
        if self.previous_response_id is not None:
            raise APIError(
                400,
                "previous_response_id is not supported: this server keeps no responses; send "
                "the earlier turns in input",
                param="previous_response_id",
            )
        if isinstance(self.input, list) and not self.input:
            raise APIError(400, "input must not be empty", param="input")
        text_format = self.text and self.text.format
        if text_format and text_format.type == "json_schema" and text_format.schema_ is None:
            raise APIError(400, "a json_schema format needs its schema", param="text.format")

    def to_chat(self) -> ChatCompletionRequest:
        """The chat request this amounts to (see the module's docstring)."""
        self.check()
        return ChatCompletionRequest(
            model=self.model,
            messages=self._messages(),
            max_tokens=self.max_output_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stream=self.stream,
            user=self.user,
            tools=[
                ToolDefinition(
                    type="function",
                    function=FunctionDefinition(
                        name=tool.name,
                        description=tool.description,
                        parameters=tool.parameters,
                        strict=tool.strict,
                    ),
                )
                for tool in self.tools
            ]
            if self.tools
            else None,
            tool_choice=(
                NamedToolChoice(type="function", function=NamedFunction(name=self.tool_choice.name))
                if isinstance(self.tool_choice, NamedFunctionChoice)
                else self.tool_choice
            ),
            parallel_tool_calls=self.parallel_tool_calls,
            response_format=self._response_format(),
            step_by_step=self.step_by_step,
        )

    def _messages(self) -> list[ChatMessage]:
        messages = (
            [ChatMessage(role="system", content=self.instructions)] if self.instructions else []
        )
        items = (
            [InputMessage(role="user", content=self.input)]
            if isinstance(self.input, str)
            else self.input
        )
        for item in items:
            if isinstance(item, InputMessage):
                role = "system" if item.role == "developer" else item.role
                content = item.content
                if isinstance(content, list):
                    content = [TextPart(type="text", text=part.text) for part in content]
                messages.append(ChatMessage(role=role, content=content))
            elif isinstance(item, FunctionCallItem):
                call = ToolCall(
                    id=item.call_id, function=FunctionCall(name=item.name, arguments=item.arguments)
                )
                last = messages[-1] if messages else None
                if last is not None and last.role == "assistant" and last.tool_calls:
                    last.tool_calls.append(call)  # parallel calls: one assistant turn
                else:
                    messages.append(ChatMessage(role="assistant", tool_calls=[call]))
            else:
                messages.append(
                    ChatMessage(role="tool", content=item.output, tool_call_id=item.call_id)
                )
        return messages

    def _response_format(self) -> ResponseFormat | None:
        text_format = self.text and self.text.format
        if text_format is None:
            return None
        if text_format.type != "json_schema":
            return ResponseFormat(type=text_format.type)
        return ResponseFormat(
            type="json_schema",
            json_schema=JsonSchema(
                name=text_format.name or "answer",
                description=text_format.description,
                schema=text_format.schema_,
                strict=text_format.strict,
            ),
        )


# --- response --------------------------------------------------------------------------


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class OutputFunctionCall(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"]


OutputItem = OutputMessage | OutputFunctionCall


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseError(BaseModel):
    code: str
    message: str


class ResponseObject(BaseModel):
    """What OpenAI answers, with the request's settings echoed as it does."""

    id: str
    object: Literal["response"] = "response"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    usage: ResponseUsage | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    store: bool = False
    previous_response_id: None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    user: str | None = None
    truncation: Literal["disabled"] = "disabled"

    @classmethod
    def for_request(cls, body: ResponsesRequest, response_id: str, model: str) -> ResponseObject:
        """An in-progress response carrying the request's settings."""
        return cls(
            id=response_id,
            status="in_progress",
            model=model,
            instructions=body.instructions,
            max_output_tokens=body.max_output_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            tools=[tool.model_dump(exclude_none=True) for tool in body.tools or ()],
            tool_choice=(
                body.tool_choice.model_dump()
                if isinstance(body.tool_choice, NamedFunctionChoice)
                else body.tool_choice or ("auto" if body.tools else "none")
            ),
            parallel_tool_calls=body.parallel_tool_calls,
            text=body.text.model_dump(exclude_none=True, by_alias=True)
            if body.text and body.text.format
            else {"format": {"type": "text"}},
            metadata=body.metadata or {},
            user=body.user,
        )
