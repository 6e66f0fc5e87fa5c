"""End to end: the CPU app (real router, real Ray Serve, real vLLM engine on the tiny dev
model) driven with the official `openai` client, as a frontend would."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from serve_app.config import TEMPLATES_DIR

pytestmark = pytest.mark.e2e

MODEL = "athene-v2-chat"
GREETING = [{"role": "user", "content": "Hello there! How are you today?"}]
MATH = [{"role": "user", "content": "What is 17 * 23 + 4?"}]


@pytest.fixture(scope="module")
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def expected_prompt_tokens(dev_model_dir):
    """Prompt length as transformers itself renders and tokenizes it with Qwen2.5's template."""
    tokenizer = AutoTokenizer.from_pretrained(dev_model_dir)
    template = (TEMPLATES_DIR / "qwen2_5.jinja").read_text()

    def count(messages: list[dict]) -> int:
        encoded = tokenizer.apply_chat_template(
            messages, chat_template=template, add_generation_prompt=True, return_dict=True
        )
        return len(encoded["input_ids"])

    return count


def test_probes_and_model_list(stack, client):
    assert httpx.get(f"{stack.base_url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.base_url}/ready")
    assert ready.status_code == 200
    assert ready.json()["running_replicas"] == {"cpu": 1}
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_retrieve_a_model_and_404_for_another(client):
    card = client.models.retrieve(MODEL)
    assert card.model_dump() == client.models.list().data[0].model_dump()
    assert (card.id, card.object) == (MODEL, "model")
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("gpt-4o")
    error = raised.value.body
    assert (error["code"], error["param"], error["type"]) == (
        "model_not_found",
        "model",
        "invalid_request_error",
    )


def test_non_streaming_usage_is_exact(client, expected_prompt_tokens):
    response = client.chat.completions.create(model=MODEL, messages=GREETING, max_tokens=12)
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "length"  # random weights: it never stops by itself
    assert response.usage.prompt_tokens == expected_prompt_tokens(GREETING)
    assert response.usage.completion_tokens == 12
    assert response.usage.total_tokens == response.usage.prompt_tokens + 12


def test_max_completion_tokens_is_honoured(client):
    response = client.chat.completions.create(
        model=MODEL, messages=GREETING, max_completion_tokens=5
    )
    assert response.usage.completion_tokens == 5
    assert response.choices[0].finish_reason == "length"


@pytest.mark.smoke  # the one end-to-end chat of `make test-fast`
def test_streaming_matches_non_streaming_and_reports_usage(client, expected_prompt_tokens):
    kwargs = {"model": MODEL, "messages": GREETING, "max_tokens": 16, "seed": 7}
    whole = client.chat.completions.create(**kwargs).choices[0].message.content

    stream = client.chat.completions.create(
        **kwargs, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole  # same seed, same request: same output, streamed or not
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert all(c.usage is None for c in chunks[:-1])
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert (usage.prompt_tokens, usage.completion_tokens) == (expected_prompt_tokens(GREETING), 16)


def test_sse_wire_format_ends_with_done(stack):
    body = {"model": MODEL, "messages": GREETING, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{stack.base_url}/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    for line in events[:-1]:
        assert json.loads(line.removeprefix("data: "))["object"] == "chat.completion.chunk"


@pytest.mark.parametrize("stream", [False, True])
def test_request_id_is_echoed_once(stack, stream):
    """Load tests and logs join on it: one header, the caller's value (else a fresh one)."""
    body = {"model": MODEL, "messages": GREETING, "max_tokens": 2, "stream": stream}
    url = f"{stack.base_url}/v1/chat/completions"
    sent = httpx.post(url, json=body, headers={"X-Request-Id": "frontend-42"})
    fresh = httpx.post(url, json=body)
    assert sent.headers.get_list("x-request-id") == ["frontend-42"]
    assert len(fresh.headers.get_list("x-request-id")) == 1
    assert fresh.headers["x-request-id"] != "frontend-42"


def test_stop_string_is_honoured(client):
    text = (
        client.chat.completions.create(model=MODEL, messages=GREETING, max_tokens=24, seed=3)
        .choices[0]
        .message.content
    )
    stop = text[len(text) // 2 :][:3]
    stopped = client.chat.completions.create(
        model=MODEL, messages=GREETING, max_tokens=24, seed=3, stop=[stop]
    ).choices[0]
    assert stopped.finish_reason == "stop"
    assert stopped.message.content == text[: text.index(stop)]


def test_policy_header_for_math_and_greeting(client, expected_prompt_tokens):
    math = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MATH, max_tokens=2
    )
    assert math.headers["x-prompt-policy"] == "step-by-step"
    greeting = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=GREETING, max_tokens=2
    )
    assert greeting.headers["x-prompt-policy"] == "none"
    # The instruction really reached the prompt: the math prompt grew by its tokens.
    assert math.parse().usage.prompt_tokens > expected_prompt_tokens(MATH)
    assert greeting.parse().usage.prompt_tokens == expected_prompt_tokens(GREETING)


def test_policy_overrides_by_header_and_body(client):
    forced_off = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MATH, max_tokens=2, extra_headers={"X-Step-By-Step": "off"}
    )
    assert forced_off.headers["x-prompt-policy"] == "none"
    forced_on = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=GREETING, max_tokens=2, extra_body={"step_by_step": "on"}
    )
    assert forced_on.headers["x-prompt-policy"] == "step-by-step"


def test_context_overflow_is_a_400_naming_both_numbers(client, expected_prompt_tokens):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=GREETING, max_tokens=8192)
    message = caught.value.body["message"]
    assert str(expected_prompt_tokens(GREETING)) in message and "8192" in message
    assert caught.value.body["code"] == "context_length_exceeded"

    too_long = [{"role": "user", "content": "word " * 9000}]
    with pytest.raises(openai.BadRequestError, match="maximum context length is 8192"):
        client.chat.completions.create(model=MODEL, messages=too_long)


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=GREETING)
    assert caught.value.body["code"] == "model_not_found"
    assert caught.value.body["param"] == "model"


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        (b"{not json", None),
        (json.dumps({"model": MODEL}).encode(), "messages"),
        (json.dumps({"model": MODEL, "messages": []}).encode(), "messages"),
        (
            json.dumps({"model": MODEL, "messages": GREETING, "temperature": 9}).encode(),
            "temperature",
        ),
        (json.dumps({"model": MODEL, "messages": GREETING, "bogus": 1}).encode(), "bogus"),
        # Found by the fuzzer (a 500 from vLLM's SamplingParams): explicit and default max_tokens.
        (
            json.dumps(
                {"model": MODEL, "messages": GREETING, "min_tokens": 5, "max_tokens": 2}
            ).encode(),
            "min_tokens",
        ),
        (
            json.dumps({"model": MODEL, "messages": GREETING, "min_tokens": 9000}).encode(),
            "min_tokens",
        ),
        (
            json.dumps({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}).encode(),
            "messages.0.role",
        ),
    ],
)
def test_bad_requests_get_openai_shaped_400(stack, payload, param):
    response = httpx.post(
        f"{stack.base_url}/v1/chat/completions",
        content=payload,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
    if param == "bogus":
        assert error["message"] == "bogus: unsupported field"


def test_disconnect_mid_stream_aborts_the_engine_request(stack):
    body = {"model": MODEL, "messages": GREETING, "max_tokens": 4000, "stream": True}
    with httpx.stream("POST", f"{stack.base_url}/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
        assert stack.engine_unfinished() == 1  # the long answer is being generated
    # The client is gone; the engine must drop the request long before 4000 tokens.
    deadline = time.monotonic() + 20
    while stack.engine_unfinished() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stack.engine_unfinished() == 0
