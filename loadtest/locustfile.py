"""Chat users for Locust, against any OpenAI-compatible endpoint.

    locust -f loadtest/locustfile.py --host http://localhost:8000 --headless -u 8 -t 2m
    locust -f loadtest/locustfile.py,loadtest/shape.py --shape spike --request-rate 4 -u 32 -t 5m

Every request streams; TTFT, TPOT and ITL are reported to Locust as their own rows beside the
request (E2E), the raw samples go to `<run dir>/samples.jsonl`, and at the end `summary.json`
and `report.html` are written there and the SLO gates set the exit code.
"""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any, NoReturn

import gevent
import gevent.lock
import requests
from locust import FastHttpUser, events, task
from locust.env import Environment
from locust.runners import LocalRunner

from loadtest.load import SHAPES, PoissonPacer, level
from loadtest.run import Run, default_run_dir
from loadtest.slo import SLO, describe_failures
from loadtest.stream import Sample, StreamRecorder, error_of_body
from loadtest.workload import MULTI_TURN_KINDS, PromptBank, Workload

log = logging.getLogger("loadtest")
BANK = PromptBank()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    # On the parser itself (Locust lists them as "Custom arguments"): groups lack is_secret.
    parser.add_argument(
        "--workload", default="chat-mix", help="loadtest/workloads/<name>.yaml or a path"
    )
    parser.add_argument(
        "--model", default="", help="model id; default: the first of GET /v1/models"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY", ""),
        is_secret=True,
        help="sent as a Bearer token (default: $OPENAI_API_KEY)",
    )
    parser.add_argument(
        "--request-rate",
        type=float,
        default=0.0,
        help="open loop: Poisson arrivals per second shared by all users (users cap concurrency); 0 = closed loop",
    )
    parser.add_argument(
        "--think-time",
        type=float,
        default=0.0,
        help="closed loop: mean seconds between a user's requests (exponential)",
    )
    parser.add_argument(
        "--shape",
        choices=SHAPES,
        default="soak",
        help="with loadtest/shape.py: how load moves over --run-time",
    )
    parser.add_argument(
        "--shape-steps", type=int, default=4, help="number of steps of --shape step"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the workload draws and arrivals")
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=600.0,
        help="seconds before a request counts as failed",
    )
    parser.add_argument(
        "--run-dir",
        default="",
        help="where samples and the report go (default loadtest/runs/<UTC time>)",
    )
    parser.add_argument("--slo-file", default="", help="YAML of SLO gates (loadtest/slo/*.yaml)")
    parser.add_argument("--slo-ttft-p95-ms", type=float, default=None)
    parser.add_argument("--slo-tpot-p95-ms", type=float, default=None)
    parser.add_argument("--slo-max-error-rate", type=float, default=None)
    parser.add_argument(
        "--slo-min-goodput", type=float, default=None, help="good requests per second"
    )


def _slo(options: Any) -> SLO:
    return SLO.from_options(
        options.slo_file or None,
        ttft_p95_ms=options.slo_ttft_p95_ms,
        tpot_p95_ms=options.slo_tpot_p95_ms,
        max_error_rate=options.slo_max_error_rate,
        min_goodput=options.slo_min_goodput,
    )


@events.init.add_listener
def _check(environment: Environment, **_: Any) -> None:
    """Fail before any user starts: bad options, an unreachable server, or a distributed run
    (samples, the pacer and the report live in one process)."""
    if environment.runner is not None and not isinstance(environment.runner, LocalRunner):
        _fail("loadtest/: run Locust as one process (no --master/--worker/--processes)")
    options = environment.parsed_options
    if options is None:
        return
    try:
        environment.chat_workload = Workload.load(options.workload)
        _slo(options)
    except (OSError, ValueError) as error:
        _fail(f"loadtest/: {error}")
    if environment.host:
        environment.chat_model = _discover_model(environment)


def _fail(message: str) -> NoReturn:
    log.error(message)
    raise SystemExit(1)  # Locust's event hooks log Exceptions and go on; this one stops


def _auth(options: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}


def _discover_model(environment: Environment) -> str:
    options = environment.parsed_options
    if options.model:
        return options.model
    url = f"{environment.host}/v1/models"
    try:
        reply = requests.get(url, headers=_auth(options), timeout=30)
        reply.raise_for_status()
        return reply.json()["data"][0]["id"]
    except (requests.RequestException, ValueError, KeyError, IndexError) as error:
        _fail(f"cannot list models at {url} ({error}); is the server up (make serve)?")


def _describe_load(environment: Environment) -> str:
    options = environment.parsed_options
    shape = f", shape={options.shape}" if environment.shape_class else ""
    if options.request_rate > 0:
        return f"open-loop Poisson {options.request_rate:g} req/s, at most {options.num_users} users{shape}"
    return f"closed-loop, {options.num_users} users{shape}"


@events.test_start.add_listener
def _start(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    pacer = None
    if options.request_rate > 0:
        rate = options.request_rate
        if environment.shape_class:  # start where the shape starts (ramp: from zero)
            rate *= level(options.shape, 0.0, options.shape_steps)
        pacer = PoissonPacer(rate, options.seed, sleep=gevent.sleep, lock=gevent.lock.Semaphore())
    if not getattr(environment, "chat_model", None):  # web UI: the host is given at start
        environment.chat_model = _discover_model(environment)
    run = Run(
        folder=Path(options.run_dir) if options.run_dir else default_run_dir(),
        slo=_slo(options),
        pacer=pacer,
        target=environment.host or "",
        load=_describe_load(environment),
    )
    environment.chat_run = run
    environment.chat_timeline = gevent.spawn(_timeline, environment, run)
    log.info(
        "load test of %s (model %s) -> %s", environment.host, environment.chat_model, run.folder
    )


def _timeline(environment: Environment, run: Run) -> None:
    while True:
        run.tick(environment.runner.user_count if environment.runner else 0)
        gevent.sleep(1.0)


@events.test_stop.add_listener
def _stop(environment: Environment, **_: Any) -> None:
    run: Run | None = getattr(environment, "chat_run", None)
    if run is None:
        return
    environment.chat_timeline.kill()
    environment.chat_run = None  # the web UI may start another test in this process
    summary = run.finish()
    verdict = summary["slo"]
    environment.chat_verdict = verdict
    print(_console_summary(summary), flush=True)
    for line in describe_failures(verdict):
        print(line, flush=True)
    print(f"report: {run.folder / 'report.html'}", flush=True)


def _console_summary(summary: dict[str, Any]) -> str:
    def ms(key: str) -> str:
        value = summary.get(key)
        return "n/a" if value is None else f"{value:.1f}"

    return (
        f"requests ok {summary['completed']} failed {summary['failed']}, "
        f"{summary['request_throughput']:.2f} req/s, {summary['output_throughput']:.1f} output tok/s\n"
        f"TTFT ms p50 {ms('median_ttft_ms')} p95 {ms('p95_ttft_ms')} p99 {ms('p99_ttft_ms')} | "
        f"TPOT ms p50 {ms('median_tpot_ms')} p95 {ms('p95_tpot_ms')} p99 {ms('p99_tpot_ms')}"
    )


@events.quitting.add_listener
def _exit_code(environment: Environment, **_: Any) -> None:
    """With SLO gates the gates decide the exit code (a tolerated error rate passes);
    without them Locust's rule stands (any failure exits 1)."""
    verdict = getattr(environment, "chat_verdict", None)
    if verdict is not None and verdict["passed"] is not None:
        environment.process_exit_code = 0 if verdict["passed"] else 1


class ChatUser(FastHttpUser):
    """A frontend user: starts a conversation (one request, or several turns sharing their
    history), each request streamed and timed token by token."""

    # Streams of long answers on a loaded server take minutes; per-request limits are ours.
    network_timeout = 600.0
    connection_timeout = 30.0

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.network_timeout = options.request_timeout
        self.rng = random.Random(f"{options.seed}:{id(self)}")
        self.headers = {"Accept-Encoding": "identity", **_auth(options)}

    def wait_time(self) -> float:
        mean = self.environment.parsed_options.think_time
        return self.rng.expovariate(1 / mean) if mean > 0 else 0.0

    @task
    def converse(self) -> None:
        run: Run = self.environment.chat_run
        conversation = self.environment.chat_workload.start(self.rng, BANK)
        while True:
            scheduled = _arrival(run)
            body = conversation.request(self.environment.chat_model)
            turn = conversation.turn if conversation.kind in MULTI_TURN_KINDS else None
            answer = self._send(run, conversation.kind, turn, body, scheduled)
            if answer is None or not conversation.reply(answer):
                return
            pause = self.environment.chat_workload.turn_think_s  # the user reads, then types
            if pause > 0:
                gevent.sleep(self.rng.expovariate(1 / pause))

    def _send(
        self, run: Run, kind: str, turn: int | None, body: dict[str, Any], scheduled: float | None
    ) -> str | None:
        """One streamed request, timed; returns the answer text, or None when it failed."""
        sample = Sample(
            workload=kind,
            start=time.time(),
            users=self.environment.runner.user_count,
            turn=turn,
            scheduled=scheduled,
        )
        recorder = StreamRecorder(sample, time.perf_counter())
        run.in_flight += 1
        try:
            with self.client.post(
                "/v1/chat/completions",
                json=body,
                headers=self.headers,
                name=kind,
                stream=True,
                catch_response=True,
            ) as response:
                sample.status = response.status_code
                sample.request_id = (
                    response.headers.get("x-request-id") if response.headers else None
                )
                sample.prompt_policy = (
                    response.headers.get("x-prompt-policy") if response.headers else None
                )
                _read(response, recorder)
                recorder.finish(time.perf_counter())
                response.request_meta["response_time"] = sample.e2e_ms
                response.request_meta["response_length"] = sample.output_tokens or 0
                if sample.ok:
                    response.success()
                else:
                    response.failure(sample.error)
        except gevent.GreenletExit:
            run.cut_at_stop += 1  # the test ended mid-request (see --stop-timeout)
            raise
        finally:
            run.in_flight -= 1
        run.record(sample)
        self._report_token_timings(sample)
        return recorder.answer() if sample.ok else None

    def _report_token_timings(self, sample: Sample) -> None:
        """TTFT, TPOT and every ITL gap as Locust rows of their own, named by workload."""
        fire = self.environment.events.request.fire
        timings = [("TTFT", sample.ttft_ms), ("TPOT", sample.tpot_ms)]
        timings += [("ITL", gap) for gap in sample.itl_ms]
        for metric, value in timings:
            if sample.ok and value is not None:
                fire(
                    request_type=metric,
                    name=sample.workload,
                    response_time=value,
                    response_length=0,
                    exception=None,
                    context={},
                )


def _arrival(run: Run) -> float | None:
    """Open loop: wait for the next shared Poisson arrival; returns its epoch time."""
    if run.pacer is None:
        return None
    scheduled = run.pacer.wait()
    return time.time() - (time.monotonic() - scheduled)


def _read(response: Any, recorder: StreamRecorder) -> None:
    """Feed the SSE lines to the recorder as they arrive. Line by line on purpose:
    geventhttpclient's `read(n)` (behind Locust's `iter_content`) waits for n bytes, which
    would bunch chunks together and hide the gaps between tokens."""
    sample = recorder.sample
    if sample.status != 200:
        error = getattr(response, "error", None)
        sample.error = (
            f"connection error: {error}"
            if sample.status == 0
            else error_of_body(sample.status, response.text or "")
        )
        return
    stream = response._response
    try:
        while line := stream.readline(b"\n"):
            recorder.feed(line.decode("utf-8").rstrip("\r\n"), time.perf_counter())
    except Exception as error:  # a cut connection or a timeout mid-stream is the server's failure
        sample.error = f"stream broken: {type(error).__name__}: {error}"
