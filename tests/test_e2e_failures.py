"""Failures and redeploys under load. An engine replica fails: its vLLM engine dies
(EngineDeadError), or its whole process tree is killed (a lost node). Or the router is
redeployed with a changed config.

Four clients keep sending chat requests, half streamed, each waiting as Retry-After says,
through Serve's proxy and a router with a 30 s request timeout, in front of the session
stack's real engine. After the failure every answer must be a success or an OpenAI-shaped
5xx: 503 + Retry-After quickly while the engine is gone, or an error event then `[DONE]` for
a stream cut mid-answer. Nothing may hang past the timeout, and the service must recover by
itself once Serve has replaced the replica. Each test waits for that recovery, so the stack
is whole again for the tests after it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import psutil
import pytest
from ray import serve

from .conftest import replica_processes

pytestmark = pytest.mark.e2e

MODEL = "athene-v2-chat"
TIMEOUT_S = 30
RECOVERY_S = 300  # Serve's health checks, the replica's shutdown and a new engine's start
CLIENTS = 4


@dataclass
class Outcome:
    started: float  # monotonic
    seconds: float
    status: int
    error: dict | None  # the OpenAI error object, from the body or the stream's error event
    retry_after: str | None
    streamed: bool
    done: bool  # a stream that ended with [DONE]


async def ask(client: httpx.AsyncClient, stream: bool, turn: int) -> Outcome:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Count to ten, take {turn}."}],
        "max_tokens": 24,
        "stream": stream,
    }
    started = time.monotonic()
    error, done, status, retry_after = None, False, 0, None
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            status, retry_after = response.status_code, response.headers.get("retry-after")
            if status != 200:
                error = json.loads(await response.aread())["error"]
            elif stream:
                async for line in response.aiter_lines():
                    data = line.removeprefix("data: ")
                    if data == "[DONE]":
                        done = True
                    elif data.startswith("{") and "error" in (event := json.loads(data)):
                        error = event["error"]
            else:
                await response.aread()
    except httpx.TransportError as lost:  # a dropped connection: what the test must not see
        error = {"lost": repr(lost)}
    return Outcome(started, time.monotonic() - started, status, error, retry_after, stream, done)


def kill_engine_core(stack) -> None:
    """vLLM's engine core process dies: AsyncLLM raises EngineDeadError from then on."""
    _, children = replica_processes(stack.app_name, "cpu")
    (core,) = [p for p in children if "EngineCore" in p.name()]
    core.kill()


def kill_replica_tree(stack) -> None:
    """The replica's process and all its children die at once, as when a node is lost."""
    replica, children = replica_processes(stack.app_name, "cpu")
    for process in [*children, replica]:
        process.kill()


def recovered(outcomes: list[Outcome], failed_at: float) -> bool:
    """Failures were seen after the kill, and the last 3 requests since then succeeded."""
    after = sorted((o for o in outcomes if o.started >= failed_at), key=lambda o: o.started)
    failures = [o for o in after if o.error]
    return bool(failures) and len(after) >= 3 and not any(o.error for o in after[-3:])


def load_through(
    url: str, act: Callable[[], None], settled: Callable[[list[Outcome], float], bool]
) -> tuple[list[Outcome], float]:
    """Runs the clients, calls `act` once they have answers, stops once `settled` says so
    (or fails after RECOVERY_S); returns all the outcomes and when `act` was called."""

    async def scenario() -> tuple[list[Outcome], float]:
        outcomes: list[Outcome] = []
        stop = asyncio.Event()

        async def client_loop(client: httpx.AsyncClient, number: int) -> None:
            turn = 0
            while not stop.is_set():
                turn += 1
                outcome = await ask(client, stream=number % 2 == 0, turn=turn)
                outcomes.append(outcome)
                if outcome.retry_after:  # as OpenAI's SDKs do
                    await asyncio.sleep(float(outcome.retry_after))

        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S + 30) as client:
            clients = [asyncio.create_task(client_loop(client, n)) for n in range(CLIENTS)]
            while sum(o.error is None for o in outcomes) < CLIENTS:  # the load is running
                await asyncio.sleep(0.1)
            acted_at = time.monotonic()
            await asyncio.to_thread(act)
            deadline = acted_at + RECOVERY_S
            while not settled(outcomes, acted_at):
                assert time.monotonic() < deadline, "the service did not settle"
                await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*clients)
        return outcomes, acted_at

    return asyncio.run(scenario())


def assert_failures_are_clean(outcomes: list[Outcome], noticed_within_s: float) -> None:
    failures = [o for o in outcomes if o.error]
    assert failures, "the kill had no visible effect: the test would prove nothing"
    for o in outcomes:
        assert o.seconds < TIMEOUT_S + 5, f"a request took {o.seconds:.0f} s"
        if o.streamed and o.status == 200:
            assert o.done, "a stream ended without [DONE]"
        if not o.error:
            assert o.status == 200
            continue
        assert "lost" not in o.error, f"status {o.status}, {o.error['lost']}"
        assert set(o.error) >= {"message", "type", "code"} and o.error["message"]
        assert o.error["type"] == "server_error"
        if o.status != 200:  # refused before the answer started: quickly, and retryable
            assert o.status == 503, o.error
            assert o.error["code"] == "engine_unavailable" and o.retry_after == "1"
            assert o.seconds < noticed_within_s, f"a refusal took {o.seconds:.1f} s"


def summary(outcomes: list[Outcome], failed_at: float) -> str:
    failures = [o for o in outcomes if o.error]
    refusals = [o.seconds for o in failures if o.status == 503]
    back = max(o.started + o.seconds for o in failures) - failed_at
    return (
        f"\n{len(outcomes)} requests, {len(failures)} failed ({len(refusals)} refused with 503, "
        f"slowest {max(refusals, default=0) * 1000:.0f} ms; "
        f"{len(failures) - len(refusals)} streams ended by an error event); "
        f"last failure {back:.0f} s after the kill"
    )


@pytest.fixture(scope="module")
def failing_url(stack):
    with stack.router_app("failing", router={"request_timeout_s": TIMEOUT_S}) as url:
        yield url


@pytest.mark.parametrize("kill", [kill_engine_core, kill_replica_tree])
def test_an_engine_that_dies_under_load_costs_only_clean_503s_and_recovers(
    stack, failing_url, kill
):
    outcomes, failed_at = load_through(failing_url, lambda: kill(stack), recovered)
    print(summary(outcomes, failed_at))  # shown with -s: the figures of the README's table
    # Serve's controller notices a killed replica at its next health check; a request sent
    # meanwhile waits for that (then the router answers 503 within DOWN_CHECK_S).
    group = stack.config.node_groups[0]
    assert_failures_are_clean(outcomes, noticed_within_s=group.health_check_period_s + 5)
    before = [o for o in outcomes if o.started + o.seconds < failed_at]
    assert before and not any(o.error for o in before), "requests failed before the kill"
    assert httpx.get(f"{stack.base_url}/ready", timeout=10).status_code == 200


def test_a_redeploy_under_load_loses_no_request(stack):
    """Serve starts the new router replica, moves traffic to it, and lets the old one finish
    its answers (graceful shutdown) before stopping it."""
    url = stack.deploy_router("rolling")
    try:
        old_router = replica_processes("rolling", "router")[0].pid

        def redeploy() -> None:
            stack.deploy_router("rolling", router={"request_timeout_s": 600})

        def moved_on(outcomes: list[Outcome], redeployed_at: float) -> bool:
            gone = not psutil.pid_exists(old_router)
            return gone and sum(o.started > redeployed_at for o in outcomes) >= 3 * CLIENTS

        outcomes, redeployed_at = load_through(url, redeploy, moved_on)
        assert replica_processes("rolling", "router")[0].pid != old_router
        spanning = [o for o in outcomes if o.started < redeployed_at < o.started + o.seconds]
        assert spanning, "no request was in flight during the redeploy"
        for o in outcomes:
            assert o.status == 200 and o.error is None, (o.status, o.error)
            assert o.done or not o.streamed
    finally:
        serve.delete("rolling")
