"""API keys and quotas (serve_app.access) and request limits (serve_app.limits), without a
server: loading keys, the constant-time lookup, 401s, token buckets on a fake clock, 429s with
OpenAI's headers, and each request limit naming itself."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from serve_app.access import ApiKey, KeyRing, Quotas, authenticate, digest, go_duration
from serve_app.config import AccessConfig, ConfigError, RequestLimits
from serve_app.limits import check_request, max_tokens_cap
from serve_app.protocol import APIError

from .fake_clock import FakeClock
from .test_chat_writer import request

KEY = "sk-athene-test-key"


def entry(id: str, key: str, **quotas) -> dict:
    return {"id": id, "sha256": digest(key), **quotas}


def test_keys_load_from_file_and_environment(tmp_path, monkeypatch):
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(yaml.safe_dump([entry("web", KEY, requests_per_minute=60)]))
    monkeypatch.setenv("TEST_KEYS", yaml.safe_dump([entry("batch", "sk-other")]))
    ring = KeyRing.load(AccessConfig(keys_file=str(keys_file), keys_env="TEST_KEYS"))
    assert [key.id for key in ring.keys] == ["web", "batch"]
    assert ring.identify(KEY).requests_per_minute == 60
    assert ring.identify("sk-other").id == "batch"
    assert ring.identify("sk-athene-test-kez") is None
    assert ring.identify("") is None


def test_no_keys_means_auth_off(monkeypatch):
    monkeypatch.delenv("ATHENE_API_KEYS", raising=False)
    ring = KeyRing.load(AccessConfig())
    assert not ring.enabled
    assert authenticate(ring, None) is None


def test_a_plain_key_in_place_of_a_digest_is_refused_without_echoing_it(monkeypatch):
    monkeypatch.setenv("ATHENE_API_KEYS", yaml.safe_dump([{"id": "web", "sha256": KEY}]))
    with pytest.raises(ConfigError) as refused:
        KeyRing.load(AccessConfig())
    assert "0.sha256" in str(refused.value)
    assert KEY not in str(refused.value)


@pytest.mark.parametrize("field", ["id", "sha256"])
def test_repeated_ids_or_digests_are_refused(field):
    first = ApiKey(**entry("a", KEY))
    second = ApiKey(**entry("a" if field == "id" else "b", KEY if field == "sha256" else "x"))
    with pytest.raises(ConfigError, match=f"repeated {field}"):
        KeyRing([first, second])


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        (f"Basic {KEY}", "missing_api_key"),
        ("Bearer ", "missing_api_key"),
        ("Bearer sk-wrong", "invalid_api_key"),
        (f"Bearer {KEY}x", "invalid_api_key"),
    ],
)
def test_missing_or_wrong_keys_are_401_in_openai_shape(authorization, code):
    ring = KeyRing([ApiKey(**entry("web", KEY))])
    with pytest.raises(APIError) as refused:
        authenticate(ring, authorization)
    assert refused.value.status == 401
    body = refused.value.body()["error"]
    assert body["code"] == code and body["type"] == "invalid_request_error"
    assert KEY not in body["message"]


def test_the_right_key_in_any_bearer_case_is_let_in():
    ring = KeyRing([ApiKey(**entry("web", KEY))])
    assert authenticate(ring, f"Bearer {KEY}").id == "web"
    assert authenticate(ring, f"bearer {KEY}").id == "web"


def test_requests_per_minute_refill_evenly_and_refuse_with_retry_after():
    clock = FakeClock()
    quotas = Quotas(clock=clock)
    key = ApiKey(**entry("web", KEY, requests_per_minute=3))
    for _ in range(3):
        quotas.charge(key, "requests", 1)
    with pytest.raises(APIError) as refused:
        quotas.charge(key, "requests", 1)
    error = refused.value
    assert error.status == 429 and error.detail.code == "rate_limit_exceeded"
    assert error.detail.type == "requests"
    assert error.headers["Retry-After"] == "20"  # one request per 20 s
    assert error.headers["x-ratelimit-limit-requests"] == "3"
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.headers["x-ratelimit-reset-requests"] == "1m0s"
    clock.sleep(19.9)
    with pytest.raises(APIError):
        quotas.charge(key, "requests", 1)
    clock.sleep(0.2)
    quotas.charge(key, "requests", 1)  # refilled by one
    clock.sleep(3600)
    assert quotas.headers(key)["x-ratelimit-remaining-requests"] == "3"  # never above the limit


def test_tokens_per_minute_and_a_request_larger_than_the_limit():
    clock = FakeClock()
    quotas = Quotas(clock=clock)
    key = ApiKey(**entry("web", KEY, tokens_per_minute=1000))
    quotas.charge(key, "tokens", 900)
    assert quotas.headers(key)["x-ratelimit-remaining-tokens"] == "100"
    assert quotas.headers(key)["x-ratelimit-reset-tokens"] == "54s"
    with pytest.raises(APIError) as refused:
        quotas.charge(key, "tokens", 400)
    assert refused.value.detail.type == "tokens"
    assert refused.value.headers["Retry-After"] == "18"  # 300 tokens at 1000 per minute
    with pytest.raises(APIError) as too_large:
        quotas.charge(key, "tokens", 1001)
    assert too_large.value.headers["x-should-retry"] == "false"
    assert "Retry-After" not in too_large.value.headers


def test_limits_are_split_over_router_replicas_and_keys_without_limits_pass():
    quotas = Quotas(replicas=2, clock=FakeClock())
    key = ApiKey(**entry("web", KEY, requests_per_minute=10))
    for _ in range(5):
        quotas.charge(key, "requests", 1)
    with pytest.raises(APIError):
        quotas.charge(key, "requests", 1)
    unlimited = ApiKey(**entry("batch", "sk-other"))
    for _ in range(1000):
        quotas.charge(unlimited, "requests", 1)
    assert quotas.headers(unlimited) == {}
    quotas.charge(None, "tokens", 10**9)  # auth off: no quota


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0201, "21ms"), (1.0, "1s"), (1.51, "1.6s"), (59.5, "59.5s"), (360, "6m0s")],
)
def test_reset_durations_read_like_openai(seconds, text):
    assert go_duration(seconds) == text


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("fields", "param", "limit"),
    [
        ({"messages": [{"role": "user", "content": "hi"}] * 4}, "messages", "max_messages"),
        ({"n": 3}, "n", "max_n"),
        ({"max_tokens": 101}, "max_tokens", "limits.max_tokens"),
        ({"stop": ["a", "b", "c"]}, "stop", "max_stop_sequences"),
        ({"tools": [TOOL] * 3}, "tools", "max_tools"),
        (
            {"tools": [{**TOOL, "function": {**TOOL["function"], "description": "x" * 600}}]},
            "tools",
            "max_tools_bytes",
        ),
    ],
)
def test_each_request_limit_is_refused_with_400_naming_it(fields, param, limit):
    limits = RequestLimits(
        max_messages=3,
        max_n=2,
        max_tokens=100,
        max_stop_sequences=2,
        max_tools=2,
        max_tools_bytes=500,
    )
    with pytest.raises(APIError) as refused:
        check_request(request(**fields), limits, None)
    assert refused.value.status == 400
    assert refused.value.detail.param == param
    assert limit in refused.value.detail.message


def test_requests_at_the_limits_pass_and_the_key_cap_applies():
    limits = RequestLimits(max_messages=3, max_n=2, max_tokens=100, max_stop_sequences=2)
    check_request(request(n=2, max_tokens=100, stop=["a", "b"]), limits, None)
    with pytest.raises(APIError, match="this API key"):
        check_request(request(max_tokens=50), limits, 40)
    assert max_tokens_cap(limits, 40) == 40
    assert max_tokens_cap(limits, None) == 100
    assert max_tokens_cap(RequestLimits(), None) is None


def test_new_key_command_prints_a_key_once_and_the_entry_that_matches_it():
    done = subprocess.run(
        [sys.executable, "-m", "serve_app.access", "new", "web-frontend"],
        capture_output=True,
        text=True,
        check=True,
    )
    key = done.stderr.split(": ", 1)[1].strip()
    (listed,) = yaml.safe_load(done.stdout)
    assert key.startswith("sk-athene-") and key not in done.stdout
    assert listed == {"id": "web-frontend", "sha256": digest(key)}
    hashed = subprocess.run(
        [sys.executable, "-m", "serve_app.access", "hash"],
        input=key,
        capture_output=True,
        text=True,
        check=True,
    )
    assert hashed.stdout.strip() == digest(key)
