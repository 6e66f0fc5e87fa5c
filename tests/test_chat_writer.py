"""The response side on its own: engine chunks (as the engine sends them) -> OpenAI
bodies and SSE events, including tool-call deltas; and request -> vLLM SamplingParams."""

from __future__ import annotations

import asyncio
import json

import pytest
from vllm import SamplingParams

from serve_app.chat_writer import OutputSpec, ResponseWriter
from serve_app.engine_api import EngineChunk
from serve_app.protocol import ChatCompletionRequest
from serve_app.sampling import plan_output, prompt_tools, sampling_fields

TOOLS = frozenset({"get_time"})
CALL = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>'


async def _chunks(pieces: list[str], finish: str = "stop", index: int = 0):
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        yield EngineChunk(index, piece, 1, finish if last else None, None)


def writer(spec: OutputSpec, **kwargs) -> ResponseWriter:
    fields = {
        "request_id": "chatcmpl-1",
        "model": "m",
        "prompt_tokens": 7,
        "n": 1,
        "logprobs": False,
    }
    return ResponseWriter(spec=spec, **{**fields, **kwargs})


def events(spec: OutputSpec, pieces: list[str], finish: str = "stop", **kwargs) -> list[dict]:
    async def run() -> list[str]:
        return [e async for e in writer(spec, **kwargs).stream(_chunks(pieces, finish))]

    raw = split_events(asyncio.run(run()))
    assert raw[-1] == "data: [DONE]\n\n"
    return [json.loads(e.removeprefix("data: ")) for e in raw[:-1]]


def split_events(writes: list[str]) -> list[str]:
    """The SSE events of the writer's writes (one write may carry several)."""
    return [f"{event}\n\n" for event in "".join(writes).split("\n\n") if event]


def test_the_role_events_leave_with_the_first_delta_in_one_write():
    async def run() -> list[str]:
        return [e async for e in writer(OutputSpec(), n=2).stream(_chunks(["Hi", "!"]))]

    writes = asyncio.run(run())
    first = [json.loads(e.removeprefix("data: ")) for e in split_events(writes[:1])]
    deltas = [c["choices"][0]["delta"] for c in first]
    assert [(d.get("role"), d["content"]) for d in deltas] == [
        ("assistant", ""),
        ("assistant", ""),
        (None, "Hi"),
    ]
    assert len(split_events(writes)) == len(writes) + 2  # the only write with more than one


def test_auto_tools_stream_tool_call_deltas_without_markup():
    # The call arrives split across engine chunks, as tokens do.
    pieces = [
        "Sure.",
        "\n<tool",
        '_call>\n{"name": "get_time", ',
        '"arguments": {"zone": "UTC"}}\n</tool_call>',
    ]
    chunks = events(OutputSpec("auto", TOOLS), pieces)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert content == "Sure.\n"
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls") or ()]
    assert len(calls) == 1
    assert calls[0]["index"] == 0 and calls[0]["function"]["name"] == "get_time"
    assert json.loads(calls[0]["function"]["arguments"]) == {"zone": "UTC"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_parallel_tool_calls_false_keeps_the_first_call():
    body = asyncio.run(
        writer(OutputSpec("auto", TOOLS, parallel_tool_calls=False)).collect(_chunks([CALL, CALL]))
    )
    assert len(body.choices[0].message.tool_calls) == 1
    assert body.choices[0].message.content is None
    assert body.choices[0].finish_reason == "tool_calls"


def test_a_cut_off_call_stays_content_with_finish_length():
    body = asyncio.run(writer(OutputSpec("auto", TOOLS)).collect(_chunks([CALL[:30]], "length")))
    assert body.choices[0].message.content == CALL[:30]
    assert body.choices[0].message.tool_calls == []
    assert body.choices[0].finish_reason == "length"


def test_without_tools_markup_is_plain_content():
    body = asyncio.run(writer(OutputSpec()).collect(_chunks([CALL])))
    assert body.choices[0].message.content == CALL
    assert body.choices[0].finish_reason == "stop"


def test_named_tool_json_becomes_the_call():
    spec = OutputSpec("named", TOOLS, named_tool="get_time")
    chunks = events(spec, ['{"zone"', ': "CET"}'])
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls") or ()]
    # The name first, then the arguments as the engine writes them.
    assert [tc["function"]["name"] for tc in calls] == ["get_time", None]
    assert json.loads("".join(tc["function"]["arguments"] for tc in calls)) == {"zone": "CET"}


def test_usage_events():
    chunks = events(OutputSpec(), ["a", "b", "c"], include_usage=True)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert all(c["usage"] is None for c in chunks[:-1])


def request(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


@pytest.mark.parametrize(
    "text",
    [
        "Hello",
        ' "quoted" \\ back/slash',
        "tab\tnew\nline\r\x00\x1f\x7f",
        "é 漢字 😀 \u2028",
        "</s>",
    ],
)
def test_content_events_are_the_bytes_pydantic_writes(text):
    """Plain content events are encoded once per choice around the text (the relay's hot
    path); a client must not be able to tell them from the model's own dump."""
    from serve_app.protocol import ChatCompletionChunk, ChunkChoice, DeltaMessage

    async def run() -> list[str]:
        chunks = [EngineChunk(i, text, 1, None, None) for i in (0, 1, 1)]

        async def source():
            for chunk in chunks:
                yield chunk

        return [e async for e in writer(OutputSpec(), n=2).stream(source())]

    raw = split_events(asyncio.run(run()))
    expected = [
        "data: "
        + ChatCompletionChunk(
            id="chatcmpl-1",
            created=json.loads(raw[0].removeprefix("data: "))["created"],
            model="m",
            choices=[ChunkChoice(index=i, delta=DeltaMessage(content=text))],
        ).model_dump_json()
        + "\n\n"
        for i in (0, 1, 1)
    ]
    assert raw[2:5] == expected  # after the two role events


def test_request_fields_become_vllm_sampling_params():
    body = request(
        n=2,
        temperature=0.3,
        top_p=0.9,
        top_k=5,
        min_p=0.1,
        presence_penalty=0.4,
        frequency_penalty=-0.2,
        repetition_penalty=1.1,
        seed=9,
        stop=["END"],
        stop_token_ids=[42],
        logit_bias={"9707": 5},
        min_tokens=2,
        ignore_eos=True,
        logprobs=True,
        top_logprobs=4,
    )
    params = SamplingParams(**sampling_fields(body), max_tokens=16)
    assert (params.n, params.temperature, params.top_p, params.top_k, params.min_p) == (
        2,
        0.3,
        0.9,
        5,
        0.1,
    )
    assert (params.presence_penalty, params.frequency_penalty, params.repetition_penalty) == (
        0.4,
        -0.2,
        1.1,
    )
    assert (params.seed, params.stop, params.stop_token_ids) == (9, ["END"], [42])
    assert (params.logit_bias, params.min_tokens, params.ignore_eos, params.logprobs) == (
        {9707: 5},
        2,
        True,
        4,
    )


def test_fields_left_out_are_not_sent_so_generation_config_applies():
    assert sampling_fields(request()) == {"n": 1}


@pytest.mark.parametrize(
    ("fields", "mode", "constraint"),
    [
        ({}, "none", None),
        ({"response_format": {"type": "json_object"}}, "none", {"json_object": True}),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "object"}},
                }
            },
            "none",
            {"json": {"type": "object"}},
        ),
        ({"tools": [{"type": "function", "function": {"name": "get_time"}}]}, "auto", None),
        (
            {
                "tools": [{"type": "function", "function": {"name": "get_time"}}],
                "tool_choice": "none",
            },
            "none",
            None,
        ),
    ],
)
def test_plan_output(fields, mode, constraint):
    spec, structured = plan_output(request(**fields))
    assert spec.tool_mode == mode
    assert structured == constraint


@pytest.mark.parametrize(
    ("tool_choice", "exclude_when_none", "shown"),
    [("none", False, True), ("none", True, False), ("auto", True, True), (None, False, True)],
)
def test_prompt_tools_keep_the_tools_with_tool_choice_none_unless_configured(
    tool_choice, exclude_when_none, shown
):
    tools = [{"type": "function", "function": {"name": "get_time"}}]
    body = request(tools=tools, **({"tool_choice": tool_choice} if tool_choice else {}))
    spec, _ = plan_output(body)
    assert prompt_tools(body, spec, exclude_when_none) == (body.tools if shown else None)
