"""End to end: POST /v1/completions with the official `openai` client, on the real router, Ray
Serve and the vLLM CPU engine; counted against the real Qwen tokenizer. Auth, quotas and
limits on this route are in test_e2e_access, the timeout in test_e2e_resilience."""

from __future__ import annotations

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from .test_e2e_metrics import eventually, scrape, total

pytestmark = pytest.mark.e2e

MODEL = "athene-v2-chat"
PROMPT = "The capital of France is"
GREEDY = {"temperature": 0, "seed": 7}


@pytest.fixture(scope="module")
def client(stack):
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(dev_model_dir):
    return AutoTokenizer.from_pretrained(dev_model_dir)


def test_the_route_is_counted_in_the_metrics(stack, client):
    """First in the module: no other test sends this app completions whose counts might
    reach the endpoint while this one counts."""
    route = {"application": stack.app_name, "route": "/v1/completions"}
    before = total(scrape(stack.metrics_url), "ray_athene_requests_total", **route, status="200")
    for stream in (False, True):
        client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2, stream=stream)
    samples = eventually(
        stack.metrics_url,
        lambda s: total(s, "ray_athene_requests_total", **route, status="200") >= before + 2,
    )
    served = {**route, "model": MODEL, "node_group": "cpu", "status": "200"}
    assert total(samples, "ray_athene_requests_total", **served) == before + 2


def test_a_text_prompt_is_completed_as_is_with_exact_usage(client, tokenizer):
    answer = client.completions.create(
        model=MODEL, prompt=PROMPT, extra_body={"ignore_eos": True}, **GREEDY
    )
    assert answer.object == "text_completion" and answer.id.startswith("cmpl-")
    (choice,) = answer.choices
    assert choice.finish_reason == "length" and choice.text
    # No chat template, no policy: the prompt's own tokens, and 16 output tokens by default.
    assert answer.usage.prompt_tokens == len(tokenizer.encode(PROMPT))
    assert answer.usage.completion_tokens == 16
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 16


def test_token_ids_are_the_same_prompt_as_the_text(client, tokenizer):
    ids = tokenizer.encode(PROMPT)
    as_text = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, **GREEDY)
    as_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=8, **GREEDY)
    assert as_ids.choices[0].text == as_text.choices[0].text
    assert as_ids.usage == as_text.usage


def test_a_batch_with_n_numbers_choices_prompt_by_prompt(client, tokenizer):
    prompts = ["Once upon a time", "1, 2, 3, 4,"]
    answer = client.completions.create(
        model=MODEL, prompt=prompts, n=2, max_tokens=5, echo=True, temperature=1, seed=7
    )
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    assert [c.text.startswith(prompts[c.index // 2]) for c in answer.choices] == [True] * 4
    assert answer.usage.prompt_tokens == sum(len(tokenizer.encode(p)) for p in prompts)
    ids = [tokenizer.encode(p) for p in prompts]
    counted = client.completions.create(model=MODEL, prompt=ids, n=2, max_tokens=5, logprobs=0)
    assert counted.usage.prompt_tokens == answer.usage.prompt_tokens
    assert counted.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in counted.choices)


def test_the_stream_reassembles_the_answer_and_ends_with_usage(client):
    fields = {"model": MODEL, "prompt": PROMPT, "max_tokens": 12, "stop": None, **GREEDY}
    whole = client.completions.create(**fields)
    chunks = list(
        client.completions.create(**fields, stream=True, stream_options={"include_usage": True})
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == (
        whole.choices[0].finish_reason
    )


def test_logprobs_in_the_completions_shape(client):
    answer = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=6, logprobs=3, **GREEDY
    )
    choice = answer.choices[0]
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == choice.text
    assert len(logprobs.token_logprobs) == answer.usage.completion_tokens
    assert all(lp <= 0 for lp in logprobs.token_logprobs)
    for token, logprob, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert top[token] == logprob and 3 <= len(top) <= 4  # the token and 3 best
        # Greedy: the token is the best (dummy weights make near-ties: float noise apart).
        assert logprob == pytest.approx(max(top.values()), abs=1e-4)
    assert logprobs.text_offset == [
        sum(map(len, logprobs.tokens[:i])) for i in range(len(logprobs.tokens))
    ]


def test_echo_with_logprobs_scores_the_prompt_too(client, tokenizer):
    answer = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=3, echo=True, logprobs=1, **GREEDY
    )
    choice = answer.choices[0]
    assert choice.text.startswith(PROMPT)
    prompt_tokens = len(tokenizer.encode(PROMPT))
    logprobs = choice.logprobs
    assert len(logprobs.tokens) == prompt_tokens + answer.usage.completion_tokens
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert all(lp is not None and lp <= 0 for lp in logprobs.token_logprobs[1:])


def test_max_tokens_zero_with_echo_scores_the_prompt_alone(client, tokenizer):
    """How evaluation harnesses (lm-eval's local-completions) read a text's likelihood."""
    answer = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=0, echo=True, logprobs=0
    )
    choice = answer.choices[0]
    assert choice.text == PROMPT
    assert len(choice.logprobs.token_logprobs) == len(tokenizer.encode(PROMPT))
    assert answer.usage.completion_tokens == 0


def test_stop_strings_and_seeded_sampling(client):
    fields = {"model": MODEL, "prompt": PROMPT, "max_tokens": 12, "temperature": 1.0}
    first = client.completions.create(**fields, seed=42)
    assert client.completions.create(**fields, seed=42).choices[0].text == first.choices[0].text
    text = first.choices[0].text
    if len(text) > 2:  # stop on a piece of the seeded answer: it ends just before it
        stop = text[len(text) // 2 :][:2]
        stopped = client.completions.create(**fields, seed=42, stop=[stop])
        assert stopped.choices[0].finish_reason == "stop"
        assert stopped.choices[0].text == text[: text.index(stop)]


def test_no_template_no_policy(stack):
    math = "How many r's are in the word strawberry?"
    response = httpx.post(
        f"{stack.base_url}/v1/completions",
        json={"model": MODEL, "prompt": math, "max_tokens": 1},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["x-prompt-policy"] == "none"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"prompt": PROMPT, "suffix": "!"}, 400, "suffix"),
        ({"prompt": PROMPT, "best_of": 2}, 400, "best_of"),
        ({"prompt": PROMPT, "logprobs": 21}, 400, "logprobs"),
        ({"prompt": PROMPT, "logprobs": True}, 400, "logprobs"),
        ({"prompt": [1, 10**9]}, 400, "prompt"),
        ({"prompt": [[1], [-1]]}, 400, "prompt"),
        ({"prompt": ""}, 400, "prompt"),
        ({"prompt": PROMPT, "max_tokens": 0}, 400, "max_tokens"),
        ({"prompt": PROMPT, "max_tokens": 9000}, 400, "max_tokens"),
        ({"prompt": PROMPT, "n": 20}, 400, "n"),
        ({"prompt": [PROMPT] * 33}, 400, "prompt"),
        ({"prompt": PROMPT, "messages": []}, 400, "messages"),
        ({}, 400, "prompt"),
        ({"prompt": PROMPT, "model": "gpt-4"}, 404, "model"),
    ],
)
def test_bad_input_gets_an_openai_shaped_error(stack, body, status, param):
    response = httpx.post(
        f"{stack.base_url}/v1/completions", json={"model": MODEL, **body}, timeout=60
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] is not None and error["param"].startswith(param), error


def test_sampling_vllm_refuses_is_a_400_not_a_500(stack):
    """vLLM's SamplingParams checks (here: n > 1 with greedy sampling) reach the caller as
    the 400 vLLM's own server gives, not as an engine failure."""
    response = httpx.post(
        f"{stack.base_url}/v1/completions",
        json={"model": MODEL, "prompt": PROMPT, "n": 2, "temperature": 0, "max_tokens": 2},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "greedy" in error["message"]
