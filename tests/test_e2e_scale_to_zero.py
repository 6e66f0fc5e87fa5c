"""Scale to zero (`min_replicas: 0`) through Serve's proxy, the real router and Serve's own
autoscaler: a request sent while the group has no replica waits for the cold start and
succeeds; past the group's `cold_start_timeout_s` it gets a 503 with Retry-After instead.

The engine is a fake one because the test must control the cold start's length (a 72B cold
start in miniature); the real engine scaling from zero on fake GPU nodes is in
test_e2e_autoscaling.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from ray import serve

from loadtest.local_stack import cpu_app_args
from serve_app.engine_api import EngineChunk, EngineRequest

pytestmark = pytest.mark.e2e

START_S = 6.0  # the fake replica's cold start
CHAT = {"model": "athene-v2-chat", "messages": [{"role": "user", "content": "Hi"}]}


class SlowStartEngine:
    """Fake engine (controls timing): a replica takes START_S to start, then answers at once."""

    def __init__(self) -> None:
        time.sleep(START_S)

    async def generate(self, request: EngineRequest):
        yield EngineChunk(0, "warm", 1, "stop", None)


AUTOSCALING = {
    "min_replicas": 0,
    "max_replicas": 1,
    "upscale_delay_s": 0,
    "downscale_delay_s": 2,
    "downscale_to_zero_delay_s": 2,
    "look_back_period_s": 2,
    "metrics_interval_s": 0.5,  # how often handles push their counts (10 s by default)
}


@contextmanager
def scale_to_zero_app(stack, name: str, cold_start_timeout_s: float) -> Iterator[str]:
    """A router app in front of a SlowStartEngine group that scales to zero, at /`name`."""
    group = cpu_app_args()["node_groups"][0]
    group.update(autoscaling_config=AUTOSCALING, cold_start_timeout_s=cold_start_timeout_s)
    engine = serve.deployment(SlowStartEngine).options(
        name="cpu", autoscaling_config=AUTOSCALING, ray_actor_options={"num_cpus": 0}
    )
    with stack.router_app(name, engines={"cpu": engine.bind()}, node_groups=[group]) as url:
        yield url


def running_replicas(app: str) -> int:
    deployment = serve.status().applications[app].deployments["cpu"]
    return deployment.replica_states.get("RUNNING", 0)


def wait_for_replicas(app: str, count: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while running_replicas(app) != count:
        assert time.monotonic() < deadline, f"{app}: not {count} running replicas in {within_s} s"
        time.sleep(0.5)


def router_sees(url: str, count: int, within_s: float = 5) -> None:
    """The router's view (/ready, pushed by Serve's controller) reaches `count` replicas."""
    deadline = time.monotonic() + within_s
    while (seen := httpx.get(f"{url}/ready", timeout=5).json()["running_replicas"]) != {
        "cpu": count
    }:
        assert time.monotonic() < deadline, f"the router sees {seen}, not {count} replicas"
        time.sleep(0.1)


def test_the_first_request_after_idle_waits_for_the_cold_start_and_succeeds(stack):
    with scale_to_zero_app(stack, "zero", cold_start_timeout_s=60) as url:
        assert running_replicas("zero") == 0  # ready with no replica: nothing is held up
        for round_ in ("from deploy", "after idle"):
            started = time.monotonic()
            answer = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=90)
            waited = time.monotonic() - started
            assert answer.status_code == 200, (round_, answer.text)
            assert answer.json()["choices"][0]["message"]["content"] == "warm"
            assert waited >= START_S, f"{round_}: answered in {waited:.1f} s without a cold start"
            router_sees(url, 1)  # the controller's change reaches the router at once
            wait_for_replicas("zero", 0, within_s=60)  # idle: Serve scales the group to zero
            router_sees(url, 0)


def test_past_its_cold_start_timeout_a_request_gets_503_with_retry_after(stack):
    with scale_to_zero_app(stack, "zero-short", cold_start_timeout_s=2) as url:
        started = time.monotonic()
        answer = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=90)
        waited = time.monotonic() - started
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "engine_unavailable"
        assert "cold_start_timeout_s" in answer.json()["error"]["message"]
        assert answer.headers["Retry-After"] == "1"
        assert 2 <= waited < START_S, waited
        # The refused request still started the cold start: a client that retries gets in.
        wait_for_replicas("zero-short", 1, within_s=60)
        retried = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=90)
        assert retried.status_code == 200, retried.text
