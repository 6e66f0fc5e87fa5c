"""One streamed chat completion -> the figures a user feels, with vLLM `bench serve`'s
definitions: TTFT = send -> first chunk with content; ITL = gaps between content chunks;
E2E = send -> end of stream; TPOT = (E2E - TTFT) / (output tokens - 1), tokens from `usage`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Sample:
    """One request as written to `samples.jsonl`; times are ms since `start` (epoch s)."""

    workload: str
    start: float
    users: int
    turn: int | None = None
    scheduled: float | None = None
    request_id: str | None = None
    status: int = 0
    ok: bool = False
    error: str | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None
    itl_ms: list[float] = field(default_factory=list)
    chunk_ms: list[float] = field(default_factory=list)
    chunk_tokens: list[int | None] = field(default_factory=list)
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    prompt_policy: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


class StreamRecorder:
    """Fed the SSE lines of one response as they arrive (with their arrival time), it keeps the
    answer text for multi-turn conversations and fills a `Sample` when the stream ends."""

    def __init__(self, sample: Sample, started: float) -> None:
        self.sample = sample
        self.started = started  # monotonic clock at send
        self.text: list[str] = []
        self._completion_tokens = 0
        self._done = False

    def feed(self, line: str, now: float) -> None:
        """One line of the event stream; `now` is the monotonic clock at its arrival."""
        if not line.startswith("data:"):
            return  # blank separators, comments, `event:` lines
        data = line[5:].strip()
        if data == "[DONE]":
            self._done = True
            return
        event: dict[str, Any] = json.loads(data)
        if "error" in event:
            self.sample.error = _error_message(event)
            return
        usage = event.get("usage")
        delta_text = "".join(_delta_text(choice.get("delta") or {}) for choice in event["choices"])
        if delta_text:
            self.text.append(delta_text)
            self._chunk((now - self.started) * 1000, self._new_tokens(usage))
        elif self.sample.chunk_tokens and self.sample.chunk_tokens[-1] is not None:
            # Tokens without text (the stop token) count with the last chunk the user saw.
            self.sample.chunk_tokens[-1] += self._new_tokens(usage) or 0
        if usage:
            self.sample.prompt_tokens = usage.get("prompt_tokens")
            self.sample.output_tokens = usage.get("completion_tokens")

    def _new_tokens(self, usage: dict[str, Any] | None) -> int | None:
        """Output tokens since the last event, from continuous usage stats (None without)."""
        if not usage or usage.get("completion_tokens") is None:
            return None
        tokens = usage["completion_tokens"] - self._completion_tokens
        self._completion_tokens = usage["completion_tokens"]
        return tokens

    def _chunk(self, at_ms: float, tokens: int | None) -> None:
        sample = self.sample
        if sample.chunk_ms:
            sample.itl_ms.append(at_ms - sample.chunk_ms[-1])
        else:
            sample.ttft_ms = at_ms
        sample.chunk_ms.append(at_ms)
        sample.chunk_tokens.append(tokens)

    def finish(self, now: float) -> Sample:
        """Close the record at end of stream: success needs content, usage and `[DONE]`."""
        sample = self.sample
        sample.e2e_ms = (now - self.started) * 1000
        if sample.error is None:
            sample.error = self._problem()
        sample.ok = sample.error is None
        if sample.ok and sample.output_tokens and sample.output_tokens > 1:
            sample.tpot_ms = (sample.e2e_ms - sample.ttft_ms) / (sample.output_tokens - 1)
        return sample

    def _problem(self) -> str | None:
        if not self._done:
            return "stream ended before [DONE]"
        if not self.sample.chunk_ms:
            return "no content in the answer"
        if self.sample.output_tokens is None:
            return "no usage in the stream (send stream_options.include_usage)"
        return None

    def answer(self) -> str:
        return "".join(self.text)


def _delta_text(delta: dict[str, Any]) -> str:
    """Content, reasoning and tool-call arguments all count as output the user waits for."""
    text = (delta.get("content") or "") + (delta.get("reasoning_content") or "")
    for call in delta.get("tool_calls") or []:
        function = call.get("function") or {}
        text += (function.get("name") or "") + (function.get("arguments") or "")
    return text


def _error_message(body: dict[str, Any]) -> str:
    """The message of an OpenAI-shaped error body, or the body itself when it has no shape."""
    error = body.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return json.dumps(body)[:300]


def error_of_body(status: int, text: str) -> str:
    """A refused request's error as `<status> <message>` (from the OpenAI error shape)."""
    try:
        body = json.loads(text)
    except ValueError:
        return f"{status} {text[:300]}"
    return f"{status} {_error_message(body) if isinstance(body, dict) else text[:300]}"
