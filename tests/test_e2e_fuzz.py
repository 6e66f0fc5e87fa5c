"""Hostile input: schemathesis fuzzes the router from its own OpenAPI schema.

It generates requests for every route, both ones that fit the schema and ones that break it
(wrong types, missing fields, odd strings), and sends them through Serve's proxy to the real
router and engine. No answer may be a 5xx, and a request that breaks the schema must be
refused with a 4xx.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection

from serve_app.router import app as router_api

pytestmark = pytest.mark.e2e

MODEL = "athene-v2-chat"
MAX_TOKENS = 16  # the fuzzed router's cap, so that answers stay short
EXAMPLES = 40  # per route


@pytest.fixture(scope="module")
def fuzzed_url(stack):
    with stack.router_app("fuzzed", limits={"max_tokens": MAX_TOKENS}) as url:
        yield url


# The schema the router serves at /openapi.json, read from its FastAPI app at collection time
# (schemathesis' fixture-based loader does not work with pytest 9).
schema = schemathesis.openapi.from_dict(router_api.openapi())


@schemathesis.check
def errors_in_openai_shape(ctx, response, case) -> None:
    """Every refusal carries OpenAI's error object, as clients parse it."""
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]


def map_body(context, body):
    """A string `model` becomes the served one, `max_tokens` stays within the cap and missing
    message content is filled in, so the examples that fit the schema reach the template,
    tokenizer and engine instead of ending at a 404 or a 400. (None of these breaks the
    schema, so the examples meant to break it still do.)"""
    if isinstance(body, dict):
        messages = body.get("messages")
        for message in messages if isinstance(messages, list) else []:
            if isinstance(message, dict) and message.get("content") is None:
                message["content"] = "Hello"  # the schema lets it out; most roles need it
        if isinstance(body.get("model"), str):
            body["model"] = MODEL
        if isinstance(body.get("max_tokens"), int) and body["max_tokens"] > MAX_TOKENS:
            body["max_tokens"] = MAX_TOKENS
    return body


@schema.hooks.apply(map_body)
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_fuzzed_requests_never_get_a_server_error(case, fuzzed_url):
    case.call_and_validate(
        base_url=fuzzed_url,
        timeout=60,
        checks=[not_a_server_error, negative_data_rejection, errors_in_openai_shape],
    )
