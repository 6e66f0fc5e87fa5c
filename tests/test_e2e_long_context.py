"""A long-context node group, end to end with small windows: a router app whose `cpu` group
has a 512-token window and whose `long` group has the engine's 8192, both in front of the
session's engine. Only requests that do not fit 512 go to `long`; the metrics name the
group each request went to."""

from __future__ import annotations

import copy

import httpx
import pytest

from loadtest.local_stack import cpu_app_args

from .test_e2e_metrics import eventually, total

pytestmark = pytest.mark.e2e

APP = "windows"
MODEL = "athene-v2-chat"
SHORT = [{"role": "user", "content": "Hello there!"}]
LONG = [{"role": "user", "content": "The lighthouse keeper wrote in his log. " * 80}]


@pytest.fixture(scope="module")
def url(stack):
    (cpu,) = cpu_app_args()["node_groups"]
    short, long = copy.deepcopy(cpu), copy.deepcopy(cpu)
    short["max_model_len"] = 512
    long.update(name="long", max_model_len=8192)
    engine = stack.engine_handle("cpu")
    with stack.router_app(
        APP, engines={"cpu": engine, "long": engine}, node_groups=[short, long]
    ) as base:
        yield base


def chat(url: str, messages, **fields) -> httpx.Response:
    body = {"model": MODEL, "messages": messages, **fields}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


def test_only_requests_that_fit_no_other_window_go_to_the_long_group(stack, url):
    answered = [
        chat(url, SHORT, max_tokens=4),  # cpu
        chat(url, SHORT, max_tokens=600),  # the output does not fit 512: long
        chat(url, LONG, max_tokens=4),  # the prompt does not fit 512: long
        chat(url, SHORT),  # no max_tokens: the rest of cpu's window, not long's
    ]
    assert [r.status_code for r in answered] == [200] * 4, [r.text for r in answered]
    assert answered[2].json()["usage"]["prompt_tokens"] > 512
    served = {"application": APP, "route": "/v1/chat/completions", "status": "200"}
    samples = eventually(
        stack.metrics_url, lambda s: total(s, "ray_athene_requests_total", **served) >= 4
    )
    assert total(samples, "ray_athene_requests_total", **served, node_group="cpu") == 2
    assert total(samples, "ray_athene_requests_total", **served, node_group="long") == 2


def test_past_every_window_is_still_a_400_naming_the_longest(url):
    refused = chat(url, SHORT, max_tokens=9000)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "context_length_exceeded" and "8192" in error["message"]


def test_the_model_card_names_the_longest_window(url):
    (card,) = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    assert card["max_model_len"] == 8192
