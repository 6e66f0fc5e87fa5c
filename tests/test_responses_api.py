"""/v1/responses on its own: a request read as the chat request it amounts to, and engine
chunks -> a Responses object or its typed events, in OpenAI's order."""

from __future__ import annotations

import asyncio
import json

import pytest

from serve_app.chat_writer import OutputSpec
from serve_app.engine_api import EngineChunk
from serve_app.protocol import APIError
from serve_app.responses_protocol import ResponseObject, ResponsesRequest
from serve_app.responses_writer import ResponsesWriter

TIME_TOOL = {
    "type": "function",
    "name": "get_time",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
}
CALL = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>'


def request(**fields) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "m", "input": "Hi", **fields})


def test_input_and_instructions_are_chat_messages():
    chat = request(
        instructions="Be brief.",
        input=[
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": [{"type": "input_text", "text": "Time in UTC?"}]},
            {"type": "function_call", "call_id": "c1", "name": "get_time", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "12:00"},
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Midi.", "annotations": []}],
            },
        ],
        tools=[TIME_TOOL],
        max_output_tokens=20,
    ).to_chat()
    roles = [m.role for m in chat.messages]
    assert roles == ["system", "system", "user", "assistant", "tool", "assistant"]
    assert chat.messages[0].content == "Be brief."
    assert [c.id for c in chat.messages[3].tool_calls] == ["c1", "c2"]  # one turn, two calls
    assert chat.messages[4].tool_call_id == "c1" and chat.messages[4].content == "12:00"
    assert chat.messages[5].text() == "Midi."
    assert chat.max_tokens == 20
    assert chat.tools[0].function.name == "get_time"
    assert chat.tools[0].function.parameters == TIME_TOOL["parameters"]


def test_tool_choice_and_text_format_in_chats_nesting():
    chat = request(
        tools=[TIME_TOOL], tool_choice={"type": "function", "name": "get_time"}
    ).to_chat()
    assert chat.tool_choice.function.name == "get_time"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    chat = request(
        text={"format": {"type": "json_schema", "name": "x", "schema": schema}}
    ).to_chat()
    assert chat.response_format.type == "json_schema"
    assert chat.response_format.json_schema.schema_ == schema


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"store": True}, "store"),
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": []}, "input"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format"),
    ],
)
def test_what_a_stateless_server_refuses(fields, param):
    with pytest.raises(APIError) as refused:
        request(**fields).to_chat()
    assert refused.value.status == 400 and refused.value.detail.param == param


PLAIN = OutputSpec()


def writer(spec: OutputSpec = PLAIN, **fields) -> ResponsesWriter:
    body = request(**fields)
    return ResponsesWriter(ResponseObject.for_request(body, "resp_1", "m"), spec, 5)


async def _chunks(pieces: list[str], finish: str = "stop"):
    for i, piece in enumerate(pieces):
        yield EngineChunk(0, piece, 1, finish if i == len(pieces) - 1 else None, None)


def events(w: ResponsesWriter, pieces, finish: str = "stop") -> list[dict]:
    async def run() -> list[str]:
        return [event async for event in w.stream(_chunks(pieces, finish))]

    parsed = []
    for raw in asyncio.run(run()):
        head, data = raw.rstrip("\n").split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert head == f"event: {event['type']}"
        parsed.append(event)
    assert [e["sequence_number"] for e in parsed] == list(range(len(parsed)))
    return parsed


def test_text_answer_whole_and_streamed():
    whole = asyncio.run(writer().collect(_chunks(["Hel", "lo"])))
    assert whole.status == "completed"
    (message,) = whole.output
    assert message.type == "message" and message.content[0].text == "Hello"
    assert whole.usage.model_dump()["input_tokens"] == 5 and whole.usage.output_tokens == 2
    streamed = events(writer(), ["Hel", "lo"])
    assert [e["type"] for e in streamed] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert streamed[2]["item"]["content"] == []
    assert "".join(e["delta"] for e in streamed if e["type"].endswith("text.delta")) == "Hello"
    final = streamed[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["output"][0]["id"] == streamed[2]["item"]["id"]


def test_a_tool_call_is_a_function_call_item_with_argument_deltas():
    spec = OutputSpec("auto", frozenset({"get_time"}))
    pieces = [
        "Let me check.",
        "\n<tool_call>\n",
        '{"name": "get_time", ',
        '"arguments": {"zone"',
        ': "UTC"}}\n</tool_call>',
    ]
    streamed = events(writer(spec, tools=[TIME_TOOL]), pieces)
    types = [e["type"] for e in streamed]
    assert types.count("response.output_item.added") == 2
    call_added = [e for e in streamed if e["type"] == "response.output_item.added"][1]
    assert call_added["item"]["type"] == "function_call"
    assert call_added["item"]["name"] == "get_time" and call_added["output_index"] == 1
    arguments = "".join(e["delta"] for e in streamed if e["type"].endswith("arguments.delta"))
    assert json.loads(arguments) == {"zone": "UTC"}
    final = streamed[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["message", "function_call"]
    assert final["output"][1]["arguments"] == arguments
    whole = asyncio.run(writer(spec, tools=[TIME_TOOL]).collect(_chunks(pieces)))
    assert whole.output[1].arguments == arguments and whole.output[1].call_id.startswith("call_")


def test_cut_off_by_max_output_tokens_is_incomplete():
    streamed = events(writer(), ["Hel"], finish="length")
    assert streamed[-1]["type"] == "response.incomplete"
    response = streamed[-1]["response"]
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"


def test_a_failure_mid_stream_is_an_error_event_then_failed():
    async def failing():
        yield EngineChunk(0, "Hel", 1, None, None)
        raise APIError(504, "too slow", type="server_error", code="timeout")

    async def run() -> list[str]:
        return [e async for e in writer().stream(failing())]

    raw = asyncio.run(run())
    error = json.loads(raw[-2].split("data: ", 1)[1])
    failed = json.loads(raw[-1].split("data: ", 1)[1])
    assert error["type"] == "error" and error["code"] == "timeout"
    assert failed["type"] == "response.failed" and failed["response"]["status"] == "failed"
