"""/v1/completions on its own: the request's rules, engine chunks (as the engine sends them) ->
OpenAI completions bodies and SSE events, and the merging of a batch's engine streams."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import ValidationError

from serve_app.completions_protocol import CompletionRequest
from serve_app.completions_writer import CompletionWriter, PromptEcho
from serve_app.engine_api import EngineChunk
from serve_app.protocol import APIError

PROMPT = PromptEcho("Hi there", [100, 200])
# vLLM gives no logprob for the prompt's first token; the writer decodes its text.
PROMPT_LOGPROBS = [None, (" there", -2.5, [(" there", -2.5), (" you", -3.0)])]


def request(**fields) -> CompletionRequest:
    return CompletionRequest.model_validate({"model": "m", "prompt": "Hi", **fields})


@pytest.mark.parametrize(
    ("prompt", "batch"),
    [
        ("Hi", ["Hi"]),
        (["Hi", "Yo"], ["Hi", "Yo"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1, 2], [3]], [[1, 2], [3]]),
    ],
)
def test_every_prompt_form_is_a_batch(prompt, batch):
    assert request(prompt=prompt).prompts == batch


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"suffix": "end"}, "suffix"),
        ({"best_of": 3}, "best_of"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": ["a", ""]}, "prompt"),
        ({"prompt": [[1], []]}, "prompt"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 0, "echo": True, "stream": True}, "max_tokens"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
def test_what_the_route_refuses_names_the_field(fields, param):
    with pytest.raises(APIError) as refused:
        request(**fields).check()
    assert refused.value.status == 400 and refused.value.detail.param == param


def test_what_it_accepts():
    request(best_of=2, n=2).check()
    request(max_tokens=0, echo=True).check()
    assert request().requested_max_tokens == 16  # OpenAI's default
    assert request(max_tokens=None).requested_max_tokens == 16  # vLLM reads null so
    assert request(max_tokens=0, echo=True).requested_max_tokens == 1
    with pytest.raises(ValidationError):
        request(prompt=[1, "a"])
    with pytest.raises(ValidationError):
        request(logprobs=True)  # an integer here, unlike chat's


def writer(**fields) -> CompletionWriter:
    defaults = {
        "request_id": "cmpl-1",
        "model": "m",
        "prompts": [PROMPT],
        "n": 1,
        "echo": False,
        "echo_only": False,
        "logprobs": None,
        "decode": {100: "Hi", 200: " there"}.__getitem__,
    }
    return CompletionWriter(**{**defaults, **fields})


async def _chunks(*chunks: EngineChunk):
    for chunk in chunks:
        yield chunk


def collect(w: CompletionWriter, *chunks: EngineChunk):
    return asyncio.run(w.collect(_chunks(*chunks)))


def stream(w: CompletionWriter, *chunks) -> list[dict]:
    async def run() -> list[str]:
        return [event async for event in w.stream(_chunks(*chunks))]

    raw = asyncio.run(run())
    assert raw[-1] == "data: [DONE]\n\n"
    return [json.loads(event.removeprefix("data: ")) for event in raw[:-1]]


OUT = [
    EngineChunk(0, " you", 1, None, [(" you", -0.5, [(" you", -0.5), (" me", -1.0)])]),
    EngineChunk(0, "!", 1, "stop", [("!", -0.25, [("!", -0.25), (".", -2.0)])]),
]


def test_a_plain_completion_with_its_usage():
    body = collect(writer(), *OUT)
    assert body.object == "text_completion"
    assert body.choices[0].text == " you!"
    assert body.choices[0].finish_reason == "stop"
    assert body.choices[0].logprobs is None
    assert body.usage.model_dump() == {
        "prompt_tokens": 2,
        "completion_tokens": 2,
        "total_tokens": 4,
    }


def test_logprobs_in_openais_completions_shape():
    logprobs = collect(writer(logprobs=1), *OUT).choices[0].logprobs
    assert logprobs.tokens == [" you", "!"]
    assert logprobs.token_logprobs == [-0.5, -0.25]
    assert logprobs.top_logprobs == [{" you": -0.5, " me": -1.0}, {"!": -0.25, ".": -2.0}]
    assert logprobs.text_offset == [0, 4]  # offsets run on across the engine's chunks


def test_echo_puts_the_prompt_and_its_logprobs_first():
    first = OUT[0]._replace(prompt_logprobs=PROMPT_LOGPROBS)
    choice = collect(writer(echo=True, logprobs=1), first, OUT[1]).choices[0]
    assert choice.text == "Hi there you!"
    assert choice.logprobs.tokens == ["Hi", " there", " you", "!"]
    assert choice.logprobs.token_logprobs == [None, -2.5, -0.5, -0.25]
    assert choice.logprobs.top_logprobs[0] is None
    assert choice.logprobs.text_offset == [0, 2, 8, 12]
    assert "".join(choice.logprobs.tokens) == choice.text


def test_max_tokens_zero_with_echo_is_the_prompt_alone():
    one = EngineChunk(0, " you", 1, "length", [(" you", -0.5, [])], PROMPT_LOGPROBS)
    body = collect(writer(echo=True, echo_only=True, logprobs=0), one)
    assert body.choices[0].text == "Hi there"
    assert body.choices[0].logprobs.token_logprobs == [None, -2.5]
    assert body.usage.completion_tokens == 0  # the engine's one token is not sent or billed


def test_a_batch_numbers_choices_prompt_by_prompt():
    prompts = [PROMPT, PromptEcho("Yo", [300])]
    chunks = [
        EngineChunk(index, f"<{index}>", 1, "stop", None)
        for index in (3, 0, 2, 1)  # merged() numbers them; they come in any order
    ]
    body = collect(writer(prompts=prompts, n=2, echo=True), *chunks)
    assert [c.text for c in body.choices] == ["Hi there<0>", "Hi there<1>", "Yo<2>", "Yo<3>"]
    assert body.usage.prompt_tokens == 3  # each prompt counted once, whatever n


def test_the_stream_with_usage_and_done():
    events = stream(writer(include_usage=True), *OUT)
    assert [e["choices"][0]["text"] for e in events[:-1]] == [" you", "!"]
    assert all(e["object"] == "text_completion" for e in events)
    assert [e["choices"][0]["finish_reason"] for e in events[:-1]] == [None, "stop"]
    assert events[-1]["choices"] == []
    assert events[-1]["usage"]["completion_tokens"] == 2


def test_plain_text_events_are_the_bytes_pydantic_writes():
    """The hot path (text, no logprobs, no echo) writes what the model's dump would."""
    from serve_app.completions_protocol import Completion, CompletionChoice

    text = 'é "q" \\ \n\x01 😀'
    w = writer(n=2)

    async def run() -> list[str]:
        chunks = _chunks(EngineChunk(1, text, 1, None, None), EngineChunk(0, text, 2, None, None))
        return [event async for event in w.stream(chunks)]

    expected = [
        "data: "
        + Completion(
            id="cmpl-1",
            created=w.created,
            model="m",
            choices=[CompletionChoice(index=index, text=text)],
        ).model_dump_json()
        + "\n\n"
        for index in (1, 0)
    ]
    assert asyncio.run(run())[:2] == expected


def test_an_engine_failure_mid_stream_is_an_error_event_then_done():
    async def failing():
        yield OUT[0]
        raise APIError(503, "an engine replica failed", type="server_error")

    async def run() -> list[str]:
        return [event async for event in writer().stream(failing())]

    raw = asyncio.run(run())
    assert json.loads(raw[-2].removeprefix("data: "))["error"]["message"].startswith("an engine")
    assert raw[-1] == "data: [DONE]\n\n"
