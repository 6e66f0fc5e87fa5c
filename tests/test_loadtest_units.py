"""The load-test suite's own maths, without a server: metrics from a recorded SSE stream, the
summary and SLO gates, the Poisson pacer's rate, the workload draws and the load shapes."""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from pathlib import Path

import gevent
import gevent.lock  # gevent without monkey-patching: safe beside Ray in this process
import numpy as np
import pytest
from pydantic import ValidationError

from loadtest.load import PoissonPacer, level
from loadtest.slo import SLO, RequestTargets, describe_failures
from loadtest.stream import Sample, StreamRecorder, error_of_body
from loadtest.summary import summarize
from loadtest.workload import PromptBank, Workload, replay_turns
from tests.fake_clock import FakeClock

# A real stream from the CPU app (max_tokens 6, continuous usage stats), each line with its
# arrival in ms after the request was sent.
RECORDED = Path(__file__).parent / "data" / "recorded_stream.jsonl"


def _replay(lines: list[tuple[float, str]]) -> StreamRecorder:
    recorder = StreamRecorder(Sample(workload="short_chat", start=0.0, users=1), started=0.0)
    for at_ms, line in lines:
        recorder.feed(line, at_ms / 1000)
    recorder.finish(lines[-1][0] / 1000)
    return recorder


def _recorded() -> list[tuple[float, str]]:
    return [tuple(json.loads(row)) for row in RECORDED.read_text().splitlines()]


def _event(content: str | None = None, usage: int | None = None, **delta: object) -> str:
    chunk: dict[str, object] = {
        "choices": [{"index": 0, "delta": {"content": content, **delta}, "finish_reason": None}]
    }
    if usage is not None:
        chunk["usage"] = {
            "prompt_tokens": 10,
            "completion_tokens": usage,
            "total_tokens": 10 + usage,
        }
    return f"data: {json.dumps(chunk)}"


def test_recorded_stream_gives_vllm_definitions():
    sample = _replay(_recorded()).sample
    # By hand from the file: the role chunk at 57.0 ms has no content, "Deposit" comes at
    # 57.0 ms, then 85.8, 121.4, 146.5, 177.1, 205.1; the stream ends at 210.3 ms.
    assert sample.ok and sample.error is None
    assert sample.ttft_ms == pytest.approx(57.0)
    assert sample.itl_ms == pytest.approx([28.8, 35.6, 25.1, 30.6, 28.0])
    assert sample.chunk_tokens == [1, 1, 1, 1, 1, 1]
    assert (sample.prompt_tokens, sample.output_tokens) == (31, 6)
    assert sample.e2e_ms == pytest.approx(210.3)
    assert sample.tpot_ms == pytest.approx((210.3 - 57.0) / 5)


def test_answer_text_is_kept_for_the_next_turn():
    recorder = _replay(_recorded())
    # The recorded deltas, in order; the role chunk and the finish chunk add nothing.
    assert recorder.answer() == "Deposit\u6dfa\u4e2d\u79cb\u8282 drank.Report-modal"


def test_chunk_tokens_follow_usage_and_tool_call_deltas_count_as_output():
    call = [
        {
            "index": 0,
            "id": "c1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        }
    ]
    lines = [
        (100.0, _event("", usage=0, role="assistant")),
        (150.0, _event(None, usage=3, tool_calls=call)),
        (190.0, _event("abc", usage=5)),
        (191.0, "data: [DONE]"),
    ]
    sample = _replay(lines).sample
    assert sample.ttft_ms == 150.0
    assert sample.chunk_tokens == [3, 2]
    assert sample.tpot_ms == pytest.approx((191.0 - 150.0) / 4)


def test_a_stop_token_without_text_counts_with_the_last_chunk():
    lines = [
        (100.0, _event("ab", usage=2)),
        (150.0, _event("c", usage=3)),
        (170.0, _event("", usage=4)),  # the stop token: no text, one more output token
        (171.0, "data: [DONE]"),
    ]
    sample = _replay(lines).sample
    assert sample.chunk_tokens == [2, 2]
    assert sample.chunk_ms == [100.0, 150.0]
    assert sum(sample.chunk_tokens) == sample.output_tokens == 4


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ([(5.0, _event("hi", usage=1))], "stream ended before [DONE]"),
        ([(5.0, _event("", usage=0)), (6.0, "data: [DONE]")], "no content in the answer"),
        ([(5.0, _event("hi")), (6.0, "data: [DONE]")], "no usage in the stream"),
        (
            [
                (5.0, _event("hi", usage=1)),
                (6.0, 'data: {"error": {"message": "engine died", "type": "server_error"}}'),
                (7.0, "data: [DONE]"),
            ],
            "engine died",
        ),
    ],
)
def test_incomplete_streams_are_failures(lines, error):
    sample = _replay(lines).sample
    assert not sample.ok
    assert error in sample.error
    assert sample.tpot_ms is None


def test_refusals_keep_status_and_openai_message():
    body = json.dumps({"error": {"message": "overloaded, retry", "type": "server_error"}})
    assert error_of_body(503, body) == "503 overloaded, retry"
    assert error_of_body(502, "<html>bad gateway</html>") == "502 <html>bad gateway</html>"


def _sample(ok: bool, ttft: float, tpot: float, workload: str = "short_chat") -> Sample:
    return Sample(
        workload=workload,
        start=0.0,
        users=1,
        ok=ok,
        error=None if ok else "503 overloaded",
        ttft_ms=ttft if ok else None,
        tpot_ms=tpot if ok else None,
        e2e_ms=ttft + 10 * tpot,
        itl_ms=[tpot] * 10 if ok else [],
        prompt_tokens=20,
        output_tokens=11,
    )


def test_summary_uses_raw_percentiles_and_vllm_keys():
    rng = random.Random(3)
    ttfts = [rng.uniform(10, 1000) for _ in range(200)]
    samples = [_sample(True, t, 20.0) for t in ttfts] + [_sample(False, 0, 0)] * 5
    summary = summarize(samples, duration_s=10.0, goodput=RequestTargets(ttft_ms=500))
    assert summary["p99_ttft_ms"] == pytest.approx(np.percentile(ttfts, 99))
    assert summary["median_ttft_ms"] == pytest.approx(np.median(ttfts))
    assert summary["median_tpot_ms"] == pytest.approx(20.0)
    assert (summary["completed"], summary["failed"]) == (200, 5)
    assert summary["error_rate"] == pytest.approx(5 / 205)
    assert summary["request_throughput"] == pytest.approx(20.0)
    assert summary["output_throughput"] == pytest.approx(200 * 11 / 10)
    good = sum(t <= 500 for t in ttfts)
    assert summary["request_goodput"] == pytest.approx(good / 10)
    assert summary["errors"] == {"503 overloaded": 5}
    assert summary["by_workload"]["short_chat"]["completed"] == 200


def test_slo_file_and_options_merge_and_gates_name_what_failed(tmp_path):
    path = tmp_path / "slo.yaml"
    path.write_text("ttft_p95_ms: 300\nmax_error_rate: 0.01\n")
    slo = SLO.from_options(str(path), tpot_p95_ms=50, min_goodput=1.0)
    assert (slo.ttft_p95_ms, slo.tpot_p95_ms, slo.max_error_rate) == (300, 50, 0.01)
    assert slo.goodput == RequestTargets(ttft_ms=300, tpot_ms=50)  # defaults to the p95 gates
    summary = {"p95_ttft_ms": 250.0, "p95_tpot_ms": 80.0, "error_rate": 0.0, "request_goodput": 2.0}
    verdict = slo.evaluate(summary)
    assert verdict["passed"] is False
    assert [g["name"] for g in verdict["gates"] if not g["passed"]] == ["tpot_p95_ms"]
    assert describe_failures(verdict) == ["SLO FAILED tpot_p95_ms: p95_tpot_ms = 80, needs <= 50"]
    # No successful request: a latency gate cannot pass on a missing figure.
    assert slo.evaluate({"error_rate": 1.0})["passed"] is False
    assert SLO.from_options(None).evaluate(summary)["passed"] is None


def test_slo_file_typos_are_refused(tmp_path):
    path = tmp_path / "slo.yaml"
    path.write_text("ttft_p59_ms: 300\n")
    with pytest.raises(ValidationError, match="ttft_p59_ms"):
        SLO.from_options(str(path))


def test_pacer_arrivals_are_poisson_at_the_rate():
    clock = FakeClock()
    pacer = PoissonPacer(rate=8.0, seed=1, clock=clock, sleep=clock.sleep)
    arrivals = np.array([pacer.wait() for _ in range(20000)])
    gaps = np.diff(arrivals)
    # Rate within 3% (the standard error at n=20000 is 0.7%); exponential gaps: CV 1 and a
    # Kolmogorov-Smirnov distance to Exp(8) well under the 1% critical value 1.63/sqrt(n).
    assert len(arrivals) / arrivals[-1] == pytest.approx(8.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.03)
    ecdf = np.arange(1, gaps.size + 1) / gaps.size
    ks = np.max(np.abs(ecdf - (1 - np.exp(-8.0 * np.sort(gaps)))))
    assert ks < 1.63 / math.sqrt(gaps.size)


def test_pacer_follows_a_rate_that_moves_while_users_wait():
    """A schedule like a load shape's: 2/s, then 20/s, paused, 10/s; changes land at any time,
    also many times within one poll (the rate is set again every 13 ms here)."""
    clock = FakeClock()
    schedule = [(0, 2.0), (1000, 20.0), (1100, 0.0), (1105, 10.0)]

    def sleep(seconds: float) -> None:
        end = clock.now + seconds
        while clock.now < end:
            clock.now = min(end, clock.now + 0.013)
            pacer.rate = [rate for start, rate in schedule if start <= clock.now][-1]

    pacer = PoissonPacer(rate=2.0, seed=2, clock=clock, sleep=sleep)
    arrivals = np.array([pacer.wait() for _ in range(5000)])

    def rate(start: float, end: float) -> float:
        return np.count_nonzero((arrivals >= start) & (arrivals < end)) / (end - start)

    assert rate(0, 1000) == pytest.approx(2.0, rel=0.1)
    assert rate(1000, 1100) == pytest.approx(20.0, rel=0.1)
    assert rate(1100, 1105) == 0
    assert rate(1105, arrivals[-1]) == pytest.approx(10.0, rel=0.1)


def _gevent_users(pacer: PoissonPacer, users: int, seconds: float) -> list[float]:
    """Real time under gevent, as Locust runs it: each user sends whenever the pacer says."""
    sent: list[float] = []

    def user() -> None:
        while True:
            pacer.wait()
            sent.append(time.monotonic())

    greenlets = [gevent.spawn(user) for _ in range(users)]
    gevent.sleep(seconds)
    gevent.killall(greenlets)
    return sent


def test_pacer_shared_by_concurrent_users_keeps_the_rate():
    pacer = PoissonPacer(rate=40.0, seed=3, sleep=gevent.sleep, lock=gevent.lock.Semaphore())
    sent = _gevent_users(pacer, users=10, seconds=4.0)
    assert len(sent) / 4.0 == pytest.approx(40.0, rel=0.3)


def test_a_rate_rise_takes_effect_at_once_with_many_users_waiting():
    """No user holds an arrival drawn at the old rate (16 users at 0.5 req/s would hold the
    next 32 s of arrivals), and a pending gap is redrawn when the rate changes."""
    pacer = PoissonPacer(rate=0.5, seed=5, sleep=gevent.sleep, lock=gevent.lock.Semaphore())

    def rise() -> None:
        gevent.sleep(1.0)
        pacer.rate = 40.0

    gevent.spawn(rise)
    start = time.monotonic()
    sent = _gevent_users(pacer, users=16, seconds=3.0)
    after_rise = [t for t in sent if t - start >= 1.0]
    assert len(after_rise) / 2.0 == pytest.approx(40.0, rel=0.35)


def test_chat_mix_draws_each_kind_by_weight():
    workload = Workload.load("chat-mix")
    bank = PromptBank()
    rng = random.Random(0)
    kinds = [workload.start(rng, bank).kind for _ in range(4000)]
    total = sum(k.weight for k in workload.kinds.values())
    for kind, config in workload.kinds.items():
        assert kinds.count(kind) / len(kinds) == pytest.approx(config.weight / total, abs=0.03)


def test_requests_stream_with_usage_and_lengths_in_bounds():
    workload = Workload.load("chat-mix")
    bank = PromptBank()
    rng = random.Random(1)
    for _ in range(300):
        conversation = workload.start(rng, bank)
        body = conversation.request("m")
        bounds = workload.kinds[conversation.kind].max_tokens
        assert bounds.min <= body["max_tokens"] <= bounds.max
        assert body["stream"] is True and body["stream_options"]["include_usage"] is True
        assert ("tools" in body) == (conversation.kind == "tool_call")
        assert body["messages"][-1]["role"] == "user"


def test_long_context_prompts_have_the_drawn_token_count():
    from transformers import AutoTokenizer

    from serve_app.devmodel import tokenizer_files_dir

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_files_dir())
    rng = random.Random(2)
    for document in PromptBank().documents:
        for target in (1500, 6000):
            tokens = len(tokenizer.encode(document.prompt(target, rng)))
            assert target * 0.9 <= tokens <= target + 100  # + the instruction and question


def test_multi_turn_resends_the_history_under_one_system_prompt():
    workload = Workload.model_validate(
        {"kinds": {"multi_turn": {"weight": 1, "max_tokens": {"dist": "fixed", "value": 8}}}}
    )
    bank = PromptBank()
    conversation = workload.start(random.Random(4), bank)
    first = conversation.request("m")
    assert conversation.reply("answer one")
    second = conversation.request("m")
    assert second["messages"][: len(first["messages"])] == first["messages"]
    assert second["messages"][len(first["messages"])] == {
        "role": "assistant",
        "content": "answer one",
    }
    assert first["messages"][0] == {"role": "system", "content": bank.system_prompt}
    assert conversation.turn == 2


def test_sharegpt_replays_real_turns_with_the_real_answers_as_history():
    """Each turn's prompt starts with exactly the bytes the turn before sent, whatever the
    model answered: the prefix a cache-aware router and vLLM's prefix cache can reuse."""
    workload = Workload.load("sharegpt")
    bank = PromptBank()
    rng = random.Random(7)
    for _ in range(20):
        conversation = workload.start(rng, bank)
        assert conversation.kind == "sharegpt" and conversation.turns
        sent: list[list[dict]] = []
        while True:
            sent.append(conversation.request("m")["messages"])
            if not conversation.reply("whatever the model said"):
                break
        config = workload.kinds["sharegpt"]
        assert 1 <= len(sent) <= config.max_turns
        for before, after in itertools.pairwise(sent):
            assert after[: len(before)] == before
            assert after[len(before)]["role"] == "assistant"
            assert after[len(before)]["content"] != "whatever the model said"
        if len(sent) > 1:
            assert sum(len(m["content"]) for m in sent[-1]) <= config.max_history_chars
        assert [m["role"] for m in sent[-1]] == ["user", "assistant"] * (len(sent) - 1) + ["user"]
        # The turns are the corpus's own, in order.
        assert any(tuple(sent[-1]) == c[: len(sent[-1])] for c in bank.sharegpt)
    assert workload.turn_think_s > 0


def test_a_replay_keeps_its_first_turn_and_stops_at_its_limits():
    messages = tuple(
        {"role": role, "content": text}
        for role, text in [("user", "a" * 50), ("assistant", "b" * 50)] * 5
    )
    assert len(replay_turns(messages, None, None)[0]) == 5
    assert len(replay_turns(messages, None, 2)[0]) == 2
    assert len(replay_turns(messages, 250, None)[0]) == 3  # 50 + 100 + 100 = 250 chars
    assert len(replay_turns(messages, 10, None)[0]) == 1  # the first turn, even if long


def test_workload_typos_are_refused_by_name():
    with pytest.raises(ValidationError, match="max_token"):
        Workload.model_validate(
            {"kinds": {"math": {"weight": 1, "max_token": {"dist": "fixed", "value": 8}}}}
        )
    with pytest.raises(ValidationError, match="prompt_tokens"):
        Workload.model_validate(
            {"kinds": {"long_context": {"weight": 1, "max_tokens": {"dist": "fixed", "value": 8}}}}
        )


@pytest.mark.parametrize(
    ("shape", "progress", "expected"),
    [
        ("ramp", 0.5, 0.5),
        ("step", 0.0, 0.25),
        ("step", 0.99, 1.0),
        ("spike", 0.1, 0.25),
        ("spike", 0.5, 1.0),
        ("spike", 0.7, 0.25),
        ("soak", 0.3, 1.0),
    ],
)
def test_shape_levels(shape, progress, expected):
    assert level(shape, progress) == expected
