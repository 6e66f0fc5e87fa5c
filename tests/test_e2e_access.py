"""Access end to end: a second router application with API keys, quotas and tight request
limits, deployed next to the CPU app and sharing its engine, so every check runs through
Serve's proxy, the real router and the real engine without loading another model."""

from __future__ import annotations

import json

import httpx
import pytest
import yaml

from serve_app.access import digest
from serve_app.router import OPEN_PATHS, app

pytestmark = pytest.mark.e2e

APP = "secure"
MODEL = "athene-v2-chat"
KEYS = {
    "open": "sk-athene-open",
    "limited": "sk-athene-three-a-minute",
    "tokens": "sk-athene-tokens",
    "capped": "sk-athene-capped",
    "once": "sk-athene-one-a-minute",
}
HELLO = [{"role": "user", "content": "Hello there! How are you today?"}]


@pytest.fixture(scope="module")
def secure_url(stack, tmp_path_factory):
    keys_file = tmp_path_factory.mktemp("keys") / "keys.yaml"
    keys_file.write_text(
        yaml.safe_dump(
            [
                {"id": "open", "sha256": digest(KEYS["open"])},
                {"id": "limited", "sha256": digest(KEYS["limited"]), "requests_per_minute": 3},
                {"id": "once", "sha256": digest(KEYS["once"]), "requests_per_minute": 1},
                {"id": "tokens", "sha256": digest(KEYS["tokens"]), "tokens_per_minute": 400},
                {
                    "id": "capped",
                    "sha256": digest(KEYS["capped"]),
                    "max_tokens": 4,
                    "step_by_step": "always",
                },
            ]
        )
    )
    with stack.router_app(
        APP,
        access={"keys_file": str(keys_file)},
        limits={"max_body_bytes": 64 * 1024, "max_messages": 8, "max_n": 2},
    ) as url:
        yield url


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


def chat(url: str, key: str | None, timeout: float = 120, **fields) -> httpx.Response:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 4, **fields}
    headers = auth(key) if key else {}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=timeout)


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_every_route_but_the_probes_needs_a_key(secure_url):
    """Enumerates the router's routes, so a route added later cannot slip through open."""
    routes = [(route.path, sorted(route.methods - {"HEAD"})[0]) for route in app.routes]
    assert {"/v1/chat/completions", "/v1/models", "/docs", "/openapi.json"} <= {
        p for p, _ in routes
    }
    for path, method in routes:
        if path in OPEN_PATHS:
            continue
        for headers in ({}, {"Authorization": "Bearer sk-athene-wrong"}):
            response = httpx.request(method, f"{secure_url}{path}", headers=headers, timeout=30)
            error = assert_openai_error(response, 401)
            assert error["code"] in ("missing_api_key", "invalid_api_key"), (path, error)
        response = httpx.request(method, f"{secure_url}{path}", headers=auth("open"), timeout=30)
        assert response.status_code != 401, path
    for path in OPEN_PATHS:
        assert httpx.get(f"{secure_url}{path}", timeout=30).status_code == 200, path
    # A path no route serves is refused before routing: it reveals nothing without a key.
    assert_openai_error(httpx.get(f"{secure_url}/v1/secret", timeout=30), 401)


def test_a_valid_key_streams_a_chat_completion(secure_url):
    with httpx.stream(
        "POST",
        f"{secure_url}/v1/chat/completions",
        json={"model": MODEL, "messages": HELLO, "max_tokens": 4, "stream": True},
        headers=auth("open"),
        timeout=120,
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0].removeprefix("data: "))["object"] == "chat.completion.chunk"


def test_requests_per_minute_answer_429_with_openai_headers(secure_url):
    answers = [chat(secure_url, "limited") for _ in range(4)]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    assert answers[2].headers["x-ratelimit-remaining-requests"] == "0"
    refused = answers[3]
    error = assert_openai_error(refused, 429)
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")


def test_tokens_per_minute_count_prompt_and_max_tokens(secure_url):
    assert chat(secure_url, "tokens", max_tokens=300).status_code == 200
    refused = chat(secure_url, "tokens", max_tokens=300)
    error = assert_openai_error(refused, 429)
    assert error["type"] == "tokens"
    assert int(refused.headers["x-ratelimit-remaining-tokens"]) < 300
    too_large = chat(secure_url, "tokens", max_tokens=500)
    assert_openai_error(too_large, 429)
    assert too_large.headers["x-should-retry"] == "false"


def test_a_keys_own_cap_and_step_by_step_default(secure_url):
    answer = chat(secure_url, "capped", max_tokens=None)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] <= 4
    assert answer.headers["x-prompt-policy"] == "step-by-step"  # the key says always
    assert chat(secure_url, "capped", step_by_step="off").headers["x-prompt-policy"] == "none"
    error = assert_openai_error(chat(secure_url, "capped", max_tokens=5), 400)
    assert error["param"] == "max_tokens" and "this API key" in error["message"]


def test_completions_pass_the_same_keys_quotas_and_limits(secure_url):
    def complete(key: str | None, **fields) -> httpx.Response:
        body = {"model": MODEL, "prompt": "Hello", "max_tokens": 2, **fields}
        headers = auth(key) if key else {}
        return httpx.post(f"{secure_url}/v1/completions", json=body, headers=headers, timeout=60)

    assert assert_openai_error(complete(None), 401)["code"] == "missing_api_key"
    assert complete("once").status_code == 200
    assert assert_openai_error(complete("once"), 429)["code"] == "rate_limit_exceeded"
    capped = assert_openai_error(complete("capped", max_tokens=10), 400)
    assert capped["code"] == "limit_exceeded" and capped["param"] == "max_tokens"
    assert assert_openai_error(complete("open", n=3), 400)["param"] == "n"  # max_n 2
    assert complete("capped", max_tokens=4).headers["x-prompt-policy"] == "none"  # no policy


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_is_413_before_parsing(secure_url, chunked):
    body = json.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "x" * 70_000}]}
    ).encode()
    content = iter([body[:40_000], body[40_000:]]) if chunked else body
    response = httpx.post(
        f"{secure_url}/v1/chat/completions",
        content=content,
        headers={**auth("open"), "Content-Type": "application/json"},
        timeout=30,
    )
    error = assert_openai_error(response, 413)
    assert "limits.max_body_bytes" in error["message"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"messages": HELLO * 9}, "messages"), ({"n": 3}, "n")],
)
def test_shape_limits_are_400_naming_the_field(secure_url, fields, param):
    error = assert_openai_error(chat(secure_url, "open", **fields), 400)
    assert error["param"] == param and "limits.max_" in error["message"]


def test_the_keyless_app_still_serves_without_auth(stack):
    """The CPU default configures no key: auth is off there."""
    assert chat(stack.base_url, None).status_code == 200
