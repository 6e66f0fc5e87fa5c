"""OpenAI API parity end to end: every field a frontend sends works as in OpenAI / vLLM,
or is refused with a 400 naming it. The dummy model's words are random, so the tests use
logit_bias, seeds and structured outputs to make outcomes certain."""

from __future__ import annotations

import json

import openai
import pytest

pytestmark = pytest.mark.e2e

MODEL = "athene-v2-chat"
HELLO = [{"role": "user", "content": "Say hello."}]
HELLO_TOKEN = 9707  # "Hello"
ENDOFTEXT, IM_END = 151643, 151645

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "celsius": {"type": "boolean"}},
            "required": ["city", "celsius"],
            "additionalProperties": False,
        },
    },
}
LIGHTS = {
    "type": "function",
    "function": {
        "name": "set_lights",
        "parameters": {
            "type": "object",
            "properties": {"on": {"type": "boolean"}},
            "required": ["on"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="unused", max_retries=0)


def chat(client, **kwargs):
    return client.chat.completions.create(model=MODEL, messages=HELLO, **kwargs)


def test_generation_config_defaults_reach_the_engine(stack):
    defaults = stack.engine_handle("cpu").generation_defaults.remote().result()
    assert defaults == {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}


def test_n_choices_with_exact_usage(client):
    response = chat(client, n=3, max_tokens=4)
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in response.choices)
    assert response.usage.completion_tokens == 12


def test_n_choices_stream_with_their_index(client):
    chunks = list(chat(client, n=2, max_tokens=3, stream=True))
    texts = {0: "", 1: ""}
    finishes = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert finishes == {0: "length", 1: "length"}
    assert texts[0] and texts[1]


def test_same_seed_same_output_other_seed_other_output(client):
    first = chat(client, seed=11, max_tokens=12).choices[0].message.content
    again = chat(client, seed=11, max_tokens=12).choices[0].message.content
    other = chat(client, seed=12, max_tokens=12).choices[0].message.content
    assert first == again != other


def test_logit_bias_and_stop_token_ids(client):
    forced = chat(client, max_tokens=3, logit_bias={str(HELLO_TOKEN): 100}, temperature=1)
    assert forced.choices[0].message.content == "Hello" * 3
    stopped = chat(
        client,
        max_tokens=3,
        logit_bias={str(HELLO_TOKEN): 100},
        extra_body={"stop_token_ids": [HELLO_TOKEN]},
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == ""


@pytest.mark.parametrize("end_token", [ENDOFTEXT, IM_END])
def test_engine_stops_on_both_qwen_end_tokens(client, end_token):
    response = chat(client, max_tokens=8, logit_bias={str(end_token): 100})
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.completion_tokens == 1
    assert response.choices[0].message.content == ""


def test_min_tokens_and_ignore_eos(client):
    bias = {str(IM_END): 100}
    held = chat(client, max_tokens=8, logit_bias=bias, extra_body={"min_tokens": 3})
    assert held.usage.completion_tokens == 4  # three forced tokens, then the end token
    ignored = chat(client, max_tokens=5, logit_bias=bias, extra_body={"ignore_eos": True})
    assert (ignored.choices[0].finish_reason, ignored.usage.completion_tokens) == ("length", 5)


def test_sampling_fields_are_accepted(client):
    response = chat(
        client,
        max_tokens=4,
        temperature=0.5,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        user="user-1234",
        extra_body={"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.2},
    )
    assert response.usage.completion_tokens == 4


def test_logprobs_in_openai_shape(client):
    response = chat(client, max_tokens=5, logprobs=True, top_logprobs=3, seed=5)
    content = response.choices[0].logprobs.content
    assert len(content) == 5
    for entry in content:
        assert entry.logprob <= 0
        assert entry.bytes == list(entry.token.encode())
        assert len(entry.top_logprobs) == 3
        ranked = [alt.logprob for alt in entry.top_logprobs]
        assert ranked == sorted(ranked, reverse=True)


def test_logprobs_while_streaming(client):
    chunks = list(chat(client, max_tokens=5, logprobs=True, top_logprobs=2, stream=True))
    entries = [
        e
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for e in c.choices[0].logprobs.content
    ]
    assert len(entries) == 5
    assert all(len(e.top_logprobs) == 2 for e in entries)


def test_json_object_response_format(client):
    # A free-form object from random weights may ramble past any max_tokens, so bias the
    # model toward the token "{}": unconstrained it repeats it (not JSON), constrained it
    # must stop after one complete object.
    empty_object = {"6257": 100}
    loose = chat(client, max_tokens=4, logit_bias=empty_object).choices[0].message.content
    assert loose == "{}" * 4
    constrained = chat(
        client, max_tokens=40, logit_bias=empty_object, response_format={"type": "json_object"}
    )
    assert constrained.choices[0].finish_reason == "stop"
    assert json.loads(constrained.choices[0].message.content) == {}


def test_json_schema_response_format(client):
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "integer"},
            "unit": {"type": "string", "enum": ["m", "s"]},
        },
        "required": ["answer", "unit"],
        "additionalProperties": False,
    }
    response = chat(
        client,
        max_tokens=150,
        response_format={"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}},
    )
    value = json.loads(response.choices[0].message.content)
    assert set(value) == {"answer", "unit"}
    assert isinstance(value["answer"], int) and value["unit"] in ("m", "s")


def test_continuous_usage_stats(client):
    chunks = list(
        chat(
            client,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True, "continuous_usage_stats": True},
        )
    )
    counts = [c.usage.completion_tokens for c in chunks if c.usage is not None]
    assert counts == sorted(counts) and counts[-1] == 4
    assert all(c.usage is not None for c in chunks)


def test_required_tool_choice_returns_valid_calls(client):
    # Enum and boolean arguments only: the random model cannot ramble inside a free string.
    response = chat(
        client,
        max_tokens=120,
        tools=[LIGHTS, TIME],
        tool_choice="required",
        parallel_tool_calls=False,
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert len(choice.message.tool_calls) == 1  # parallel_tool_calls=False: at most one
    for call in choice.message.tool_calls:
        arguments = json.loads(call.function.arguments)
        assert call.id.startswith("call_") and call.type == "function"
        if call.function.name == "set_lights":
            assert isinstance(arguments["on"], bool) and set(arguments) == {"on"}
        else:
            assert call.function.name == "get_time" and arguments["zone"] in ("UTC", "CET")


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "get_time"}}]
)
def test_streamed_tool_call_arguments_reassemble_to_the_whole_answer(client, tool_choice):
    """The name in a call's first delta, then its arguments token by token; joined, they are
    the non-streamed call of the same seed."""
    fields = {
        "max_tokens": 120,
        "tools": [LIGHTS, TIME],
        "tool_choice": tool_choice,
        "parallel_tool_calls": False,
        "seed": 11,
        "temperature": 1.0,
    }
    (whole,) = chat(client, **fields).choices[0].message.tool_calls
    chunks = list(chat(client, stream=True, **fields))
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or ())]
    assert deltas[0].id.startswith("call_") and deltas[0].function.name == whole.function.name
    assert all(d.id is None and d.function.name is None for d in deltas[1:])
    assert {d.index for d in deltas} == {0}
    assert len(deltas) > 2  # streamed as generated, not in one piece at the end
    assert "".join(d.function.arguments for d in deltas) == whole.function.arguments
    json.loads(whole.function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_tool_call_markup_comes_back_as_content(client, stream):
    # Bias the model into writing "<tool_call>" over and over: never a valid block.
    kwargs = {"max_tokens": 3, "tools": [TIME], "logit_bias": {"151657": 100}}
    if stream:
        chunks = list(chat(client, stream=True, **kwargs))
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
        finish = chunks[-1].choices[0].finish_reason
    else:
        message = chat(client, **kwargs).choices[0]
        content, finish = message.message.content, message.finish_reason
        assert not message.message.tool_calls
    assert (content, finish) == ("<tool_call>" * 3, "length")


def test_tool_choice_none_keeps_the_tools_in_the_prompt(client):
    """As vLLM (unless --exclude-tools-when-tool-choice-none) and OpenAI, who bill them."""
    plain = chat(client, max_tokens=1).usage.prompt_tokens
    with_tools = chat(client, max_tokens=1, tools=[WEATHER]).usage.prompt_tokens
    none = chat(client, max_tokens=1, tools=[WEATHER], tool_choice="none")
    assert none.usage.prompt_tokens == with_tools > plain
    assert not none.choices[0].message.tool_calls


def test_tool_call_history_is_accepted(client):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Paris", "celsius": true}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18}'},
    ]
    response = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], max_tokens=3
    )
    assert response.usage.completion_tokens == 3


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tools": []}, "tools"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"extra_body": {"chat_template_kwargs": {"messages": []}}}, "chat_template_kwargs"),
        ({"extra_body": {"top_k": -5}}, "top_k"),
        ({"n": 0}, "n"),
        ({"logit_bias": {"9707": 500}}, "logit_bias"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"logit_bias": {"999999": 5}}, "logit_bias"),
        ({"extra_body": {"stop_token_ids": [-1]}}, "stop_token_ids"),
    ],
)
def test_invalid_combinations_are_400_naming_the_field(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, max_tokens=2, **kwargs)
    assert caught.value.body["param"] == param
