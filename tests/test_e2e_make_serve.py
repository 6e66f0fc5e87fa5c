"""`make serve` as a newcomer runs it: the console says what it is doing, then prints one
ready block once the API answers; the curl it suggests works, the metrics address it prints
serves the router's and vLLM's metrics, and Ctrl-C stops everything it started.

It starts a second stack (its own Ray, on free ports) beside the session's; about 2 minutes.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import openai
import pytest

from .conftest import ROOT, free_port, wait_for

pytestmark = pytest.mark.e2e

READY_TIMEOUT_S = 600
STOP_TIMEOUT_S = 90


@dataclass
class Console:
    """`make serve`'s output, line by line, read by a thread so waiting has a deadline."""

    process: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, prefix: str, timeout_s: float) -> list[str]:
        """Every line up to and including the first that starts with `prefix`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError("make serve ended early:\n" + "\n".join(self.lines[-40:]))
            self.lines.append(line)
            if line.startswith(prefix):
                return self.lines
        raise AssertionError(f"no {prefix!r} within {timeout_s} s:\n" + "\n".join(self.lines))

    def rest(self, timeout_s: float) -> list[str]:
        self.process.wait(timeout=timeout_s)
        while (line := self._queue.get(timeout=5)) is not None:
            self.lines.append(line)
        return self.lines


@dataclass
class Served:
    console: Console
    ready: dict[str, str]  # the ready block: label -> value
    ports: dict[str, int]


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    ports = {
        name: free_port() for name in ("HTTP_PORT", "ROUTER_PORT", "METRICS_PORT", "DASHBOARD_PORT")
    }
    process = subprocess.Popen(
        ["make", "--no-print-directory", "serve", *(f"{k}={v}" for k, v in ports.items())],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal would make it
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    console = Console(process)
    try:
        lines = console.wait_for("    stop", READY_TIMEOUT_S)
        block = lines[next(i for i, x in enumerate(lines) if x.startswith("==> ready")) + 1 :]
        ready = dict(line.strip().split(None, 1) for line in block)  # label -> value
        yield Served(console, ready, ports)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C at the terminal
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_the_console_says_what_it_does_before_it_is_ready(served):
    lines = served.console.lines
    ready_at = next(i for i, x in enumerate(lines) if x.startswith("==> ready"))
    progress = [x for x in lines[:ready_at] if x.startswith("==> ")]
    assert any(x.startswith("==> starting Ray") for x in progress), lines
    assert any(x.startswith("==> deploying serve_config.cpu.yaml") for x in progress), lines
    assert any("cpu HEALTHY" in x for x in progress), progress
    # Once Ray starts, the engine's start-up output stays in Ray's log files.
    ray_at = next(i for i, x in enumerate(lines) if x.startswith("==> starting Ray"))
    noise = [x for x in lines[ray_at:ready_at] if "vllm" in x.lower() or "INFO" in x]
    assert not noise, lines[ray_at:ready_at]


def test_the_ready_block_names_the_api_metrics_and_dashboard(served):
    ports = served.ports
    assert served.ready["API"].startswith(f"http://localhost:{ports['HTTP_PORT']}/v1")
    assert served.ready["metrics"] == f"curl http://127.0.0.1:{ports['METRICS_PORT']}/metrics"
    dashboard = served.ready["dashboard"].split()[0]
    assert dashboard == f"http://127.0.0.1:{ports['DASHBOARD_PORT']}"
    assert httpx.get(dashboard, timeout=10).status_code == 200


def test_the_router_answers_on_its_own_port(served):
    """The ready block's second way in: the router replica's own port (Serve's direct
    ingress), the one the router pods serve on in k8s/."""
    router = served.ready["router"].split()[0]
    assert router == f"http://localhost:{served.ports['ROUTER_PORT']}/v1"
    client = openai.OpenAI(base_url=router, api_key="unused")
    stream = client.chat.completions.create(
        model="athene-v2-chat",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage]
    assert usage and usage[0].completion_tokens == 4


def test_the_suggested_curl_gets_a_chat_answer(served):
    command = shlex.split(served.ready["try"])
    assert command[0] == "curl"
    answer = subprocess.run(
        [*command, "-sS", "--fail-with-body", "-m", "60"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr
    body = json.loads(answer.stdout)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"]
    assert body["usage"]["completion_tokens"] > 0


def test_every_generating_route_answers_through_make_serve(served):
    """Completions, responses and tokenize (chat: above), with the official client where it
    has one."""
    client = openai.OpenAI(base_url=served.ready["API"].split()[0], api_key="unused")
    model = "athene-v2-chat"
    assert client.completions.create(model=model, prompt="Hi", max_tokens=2).choices[0].text
    assert client.responses.create(model=model, input="Hi", max_output_tokens=2).output_text
    base = served.ready["API"].split()[0].removesuffix("/v1")
    tokens = httpx.post(f"{base}/tokenize", json={"prompt": "Hi"}, timeout=30).json()["tokens"]
    assert httpx.post(f"{base}/detokenize", json={"tokens": tokens}, timeout=30).json() == {
        "prompt": "Hi"
    }


def test_the_printed_metrics_address_serves_router_and_engine_metrics(served):
    url = served.ready["metrics"].removeprefix("curl ")
    client = httpx.Client(base_url=served.ready["API"].split()[0].removesuffix("/v1"))
    body = {"model": "athene-v2-chat", "messages": [{"role": "user", "content": "Hi"}]}
    assert client.post("/v1/chat/completions", json={**body, "max_tokens": 4}).status_code == 200
    wanted = ("ray_athene_requests_total", "ray_vllm_generation_tokens_total")
    # Processes push their metrics every few seconds.
    wait_for(lambda: all(n in httpx.get(url, timeout=10).text for n in wanted), 60, f"{wanted}")


def test_ctrl_c_stops_serve_and_ray(served):
    """Last in this module: it stops the stack the other tests used."""
    process = served.console.process
    os.killpg(process.pid, signal.SIGINT)
    lines = served.console.rest(STOP_TIMEOUT_S)
    assert any(x.startswith("==> stopping Serve and Ray") for x in lines), lines[-20:]
    for port in ("HTTP_PORT", "ROUTER_PORT"):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{served.ports[port]}/ready", timeout=5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{served.ports['METRICS_PORT']}/metrics", timeout=5)
