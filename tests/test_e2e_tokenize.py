"""End to end: vLLM's /tokenize and /detokenize on the real router and Ray Serve, against the
chat route's own prompt (usage.prompt_tokens) and the real Qwen tokenizer."""

from __future__ import annotations

import httpx
import openai
import pytest
from transformers import AutoTokenizer

pytestmark = pytest.mark.e2e

MODEL = "athene-v2-chat"
MATH = [{"role": "user", "content": "What is 17 * 23 + 4?"}]
GREETING = [{"role": "user", "content": "Hello there! How are you today?"}]


@pytest.fixture(scope="module")
def post(stack):
    def send(route: str, **body) -> httpx.Response:
        return httpx.post(f"{stack.base_url}/{route}", json=body, timeout=60)

    return send


@pytest.fixture(scope="module")
def tokenizer(dev_model_dir):
    return AutoTokenizer.from_pretrained(dev_model_dir)


def chat_prompt_tokens(stack, messages, **fields) -> int:
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=1, extra_body=fields
    )
    return answer.usage.prompt_tokens


def test_a_prompt_is_tokenized_as_the_tokenizer_does(post, tokenizer, stack):
    text = "How many r's are in strawberry?"
    answer = post("tokenize", model=MODEL, prompt=text, return_token_strs=True)
    assert answer.status_code == 200
    body = answer.json()
    assert body["tokens"] == tokenizer.encode(text)
    assert body["count"] == len(body["tokens"])
    assert body["max_model_len"] == stack.config.model.max_model_len
    assert body["token_strs"] == tokenizer.convert_ids_to_tokens(body["tokens"])
    assert "token_strs" in post("tokenize", prompt=text).json()  # model is optional, as vLLM's


@pytest.mark.parametrize(("messages", "policy"), [(MATH, "step-by-step"), (GREETING, "none")])
def test_messages_are_the_chat_routes_prompt_with_the_policys_decision(
    post, stack, messages, policy
):
    answer = post("tokenize", model=MODEL, messages=messages)
    assert answer.headers["x-prompt-policy"] == policy
    assert answer.json()["count"] == chat_prompt_tokens(stack, messages)
    off = post("tokenize", model=MODEL, messages=messages, step_by_step="off")
    assert off.headers["x-prompt-policy"] == "none"
    assert off.json()["count"] == chat_prompt_tokens(stack, messages, step_by_step="off")
    if policy == "step-by-step":
        assert off.json()["count"] < answer.json()["count"]


def test_generation_prompt_and_continuing_the_last_message(post, tokenizer):
    with_prompt = post("tokenize", messages=GREETING, step_by_step="off").json()["tokens"]
    without = post(
        "tokenize", messages=GREETING, step_by_step="off", add_generation_prompt=False
    ).json()["tokens"]
    assert with_prompt[: len(without)] == without
    assert tokenizer.decode(with_prompt[len(without) :]) == "<|im_start|>assistant\n"
    partial = [*GREETING, {"role": "assistant", "content": "I am"}]
    continued = post(
        "tokenize",
        messages=partial,
        step_by_step="off",
        add_generation_prompt=False,
        continue_final_message=True,
    ).json()["tokens"]
    assert tokenizer.decode(continued).endswith("<|im_start|>assistant\nI am")


def test_tools_are_in_the_tokenized_prompt(post):
    tool = {"type": "function", "function": {"name": "get_time", "parameters": {}}}
    plain = post("tokenize", messages=GREETING).json()["count"]
    assert post("tokenize", messages=GREETING, tools=[tool]).json()["count"] > plain


def test_detokenize_reverses_tokenize(post):
    text = "Athene-V2-Chat: 17 \u00d7 23 = 391. \u2713 caf\u00e9"
    tokens = post("tokenize", prompt=text).json()["tokens"]
    answer = post("detokenize", model=MODEL, tokens=tokens)
    assert answer.status_code == 200
    assert answer.json() == {"prompt": text}


@pytest.mark.parametrize(
    ("route", "body", "status", "param"),
    [
        ("detokenize", {"tokens": [1, 10**9]}, 400, "tokens"),
        ("detokenize", {"tokens": [-1]}, 400, "tokens"),
        ("tokenize", {"prompt": "hi", "model": "gpt-4o"}, 404, "model"),
        ("tokenize", {"prompt": "hi", "messages": GREETING}, 400, None),
        ("tokenize", {"messages": []}, 400, None),
        (
            "tokenize",
            {"messages": GREETING, "continue_final_message": True},
            400,
            "continue_final_message",
        ),
        ("tokenize", {"messages": GREETING, "step_by_step": "maybe"}, 400, None),
    ],
)
def test_bad_input_gets_an_openai_shaped_error(post, route, body, status, param):
    answer = post(route, **body)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["message"]
    if param is not None:
        assert error["param"] == param
