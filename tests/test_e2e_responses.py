"""End to end: POST /v1/responses with the official `openai` client (its stream helper checks
the event order and rebuilds the response from the events), on the real router, Ray Serve
and the vLLM CPU engine. The dummy model's words are random: structured outputs make
answers finish, so the tests can assert `completed`."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from .test_e2e_openai_parity import LIGHTS as CHAT_LIGHTS
from .test_e2e_openai_parity import TIME as CHAT_TIME

pytestmark = pytest.mark.e2e

MODEL = "athene-v2-chat"
YES_NO = {
    "type": "json_schema",
    "name": "verdict",
    "schema": {
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    },
}
# Chat's tools, in the Responses API's flat shape.
TIME, LIGHTS = ({"type": "function", **tool["function"]} for tool in (CHAT_TIME, CHAT_LIGHTS))


@pytest.fixture(scope="module")
def client(stack):
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="unused", max_retries=0)


def chat_prompt_tokens(client, messages, **fields) -> int:
    answer = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1, **fields)
    return answer.usage.prompt_tokens


def test_a_text_answer_with_the_chat_routes_prompt(client):
    answer = client.responses.create(
        model=MODEL, input="Say hello.", instructions="Be brief.", max_output_tokens=6
    )
    assert answer.object == "response" and answer.id.startswith("resp_")
    assert answer.status == "incomplete" and answer.incomplete_details.reason == "max_output_tokens"
    (message,) = answer.output
    assert message.type == "message" and answer.output_text == message.content[0].text
    assert answer.usage.output_tokens == 6
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello."},
    ]
    assert answer.usage.input_tokens == chat_prompt_tokens(client, messages)  # same template
    assert answer.usage.total_tokens == answer.usage.input_tokens + 6
    assert answer.store is False and answer.max_output_tokens == 6


def test_the_stream_events_rebuild_the_answer(client):
    with client.responses.stream(
        model=MODEL, input="Is water wet? Answer in JSON.", text={"format": YES_NO}
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert final.status == "completed"
    assert json.loads(final.output_text) in ({"answer": "yes"}, {"answer": "no"})
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "name": "get_time"}])
def test_function_calls_whole_and_streamed(client, tool_choice):
    fields = {
        "model": MODEL,
        "input": "What time is it in UTC?",
        "tools": [TIME, LIGHTS],
        "tool_choice": tool_choice,
        "parallel_tool_calls": False,
        "max_output_tokens": 120,
    }
    whole = client.responses.create(**fields)
    (call,) = [item for item in whole.output if item.type == "function_call"]
    assert call.call_id.startswith("call_") and call.status == "completed"
    arguments = json.loads(call.arguments)
    if call.name == "get_time":
        assert arguments["zone"] in ("UTC", "CET")
    else:
        assert call.name == "set_lights" and isinstance(arguments["on"], bool)
    with client.responses.stream(**fields) as stream:
        events = list(stream)
        final = stream.get_final_response()
    (streamed,) = [item for item in final.output if item.type == "function_call"]
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(pieces) > 1 and "".join(pieces) == streamed.arguments  # as generated
    json.loads(streamed.arguments)


def test_a_function_call_and_its_output_as_history(client):
    answer = client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "What time is it in UTC?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_time",
                "arguments": '{"zone": "UTC"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "12:00"},
        ],
        tools=[TIME],
        max_output_tokens=3,
    )
    assert answer.usage.input_tokens > 0 and answer.output


def test_the_policy_decides_as_on_the_chat_route(client):
    raw = client.responses.with_raw_response.create(
        model=MODEL, input="How many r's are in the word strawberry?", max_output_tokens=1
    )
    assert raw.headers["x-prompt-policy"] == "step-by-step"
    off = client.responses.with_raw_response.create(
        model=MODEL,
        input="How many r's are in the word strawberry?",
        max_output_tokens=1,
        extra_body={"step_by_step": "off"},
    )
    assert off.headers["x-prompt-policy"] == "none"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": "hi", "store": True}, 400, "store"),
        ({"input": "hi", "previous_response_id": "resp_abc"}, 400, "previous_response_id"),
        ({"input": []}, 400, "input"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            400,
            "input",
        ),
        ({"input": "hi", "max_output_tokens": 9000}, 400, "max_output_tokens"),
        ({"input": "hi", "tool_choice": "required"}, 400, "tool_choice"),
        ({"input": "hi", "reasoning": {"effort": "high"}}, 400, "reasoning"),
        ({"input": "hi", "temperature": 3}, 400, "temperature"),
        ({"input": "hi", "model": "gpt-4o"}, 404, "model"),
    ],
)
def test_bad_input_gets_an_openai_shaped_error(stack, body, status, param):
    response = httpx.post(
        f"{stack.base_url}/v1/responses", json={"model": MODEL, **body}, timeout=60
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] is not None and error["param"].startswith(param), error
