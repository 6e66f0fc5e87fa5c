"""The per-request log line (serve_app/request_log.py), read back from the router replica's
log file in Ray's session directory, with the production config's JSON encoding."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
import ray

from serve_app.prompt.classifier import classify

pytestmark = pytest.mark.e2e

MODEL = "athene-v2-chat"


@pytest.fixture(scope="module")
def logged_url(stack):
    with stack.router_app("logged", logging_config={"encoding": "JSON"}) as url:
        yield url


def request_lines(request_id: str, within_s: float = 10) -> list[dict]:
    """The router's `request done` lines for one request id, from every Serve log file."""
    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    deadline = time.monotonic() + within_s
    while True:
        found = []
        for path in logs.glob("replica_logged_router_*.log"):
            for line in path.read_text().splitlines():
                if request_id in line and line.startswith("{"):
                    record = json.loads(line)
                    if record.get("request_id") == request_id and "athene" in record:
                        found.append(record)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_one_json_line_per_request_with_its_fields_and_no_prompt(logged_url):
    secret = f"xylophone-{uuid.uuid4().hex}"
    request_id = f"log-test-{uuid.uuid4().hex}"
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Please repeat the word {secret}."}],
        "max_tokens": 4,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream(
        "POST",
        f"{logged_url}/v1/chat/completions",
        json=body,
        headers={"X-Request-Id": request_id},
        timeout=120,
    ) as response:
        assert response.status_code == 200
        assert response.headers["x-request-id"] == request_id
        response.read()
    (record,) = request_lines(request_id)
    fields = record["athene"]
    assert fields["status"] == 200 and fields["outcome"] == "ok"
    assert fields["path"] == "/v1/chat/completions" and fields["method"] == "POST"
    assert fields["model"] == MODEL and fields["node_group"] == "cpu"
    assert fields["key_id"] is None  # auth is off in the CPU config
    assert fields["prompt_policy"] == "none"
    assert fields["prompt_policy_reason"] == classify(body["messages"]).reason  # auditable
    assert fields["prompt_tokens"] > 10 and fields["completion_tokens"] == 4
    assert 0 < fields["ttft_ms"] <= fields["latency_ms"]
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    assert not any(secret in path.read_text(errors="replace") for path in logs.rglob("*.log"))


@pytest.mark.parametrize(
    ("route", "body", "prefix"),
    [
        ("completions", {"prompt": "Once", "max_tokens": 3, "ignore_eos": True}, "cmpl-"),
        ("responses", {"input": "Once upon a time", "max_output_tokens": 3}, "resp_"),
    ],
)
def test_completions_and_responses_get_the_same_line(logged_url, route, body, prefix):
    request_id = f"log-test-{uuid.uuid4().hex}"
    response = httpx.post(
        f"{logged_url}/v1/{route}",
        json={"model": MODEL, **body},
        headers={"X-Request-Id": request_id},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    (record,) = request_lines(request_id)
    fields = record["athene"]
    assert fields["path"] == f"/v1/{route}" and fields["outcome"] == "ok"
    assert fields["model"] == MODEL and fields["node_group"] == "cpu"
    assert fields["response_id"] == response.json()["id"] and fields["response_id"].startswith(
        prefix
    )
    usage = response.json()["usage"]
    assert fields["prompt_tokens"] == usage.get("prompt_tokens", usage.get("input_tokens"))
    assert fields["completion_tokens"] == usage.get("completion_tokens", usage.get("output_tokens"))
    assert "prompt" not in fields  # router.log_prompts is off


def test_refusals_get_their_line_with_the_error_code(logged_url):
    request_id = f"log-test-{uuid.uuid4().hex}"
    response = httpx.post(
        f"{logged_url}/v1/chat/completions",
        json={"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]},
        headers={"X-Request-Id": request_id},
        timeout=60,
    )
    assert response.status_code == 404
    (record,) = request_lines(request_id)
    assert record["athene"]["status"] == 404
    assert record["athene"]["outcome"] == "model_not_found"
