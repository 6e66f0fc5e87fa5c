"""Qwen2.5 tool calls in the model's output -> OpenAI `tool_calls`.

Qwen2.5 (and so Athene-V2) calls a tool by writing

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

one block per call, several per turn. A block becomes an OpenAI tool call when its JSON
parses, names a tool the request offered, and carries object arguments; anything else (bad
JSON, a missing brace, an unknown function, an unclosed block) stays in `content` as the
model wrote it, so a malformed call is visible to the caller and never an error.

`ToolCallStream` does the same while streaming: text that may be the start of a block is
held back until the block closes, so `<tool_call>` markup never leaks into content deltas.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

OPEN = "<tool_call>"
CLOSE = "</tool_call>"


@dataclass(frozen=True, slots=True)
class ParsedCall:
    id: str
    name: str
    arguments: str  # JSON-encoded object, as OpenAI sends it


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_block(body: str, tool_names: frozenset[str]) -> ParsedCall | None:
    """The call in one block's body, or None when it is not a valid call."""
    try:
        call = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or call.get("name") not in tool_names:
        return None
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):  # some fine-tunes encode the arguments twice
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ParsedCall(new_call_id(), call["name"], json.dumps(arguments, ensure_ascii=False))


@dataclass
class ToolCallStream:
    """Splits streamed model text into content and complete tool calls."""

    tool_names: frozenset[str]
    _pending: str = ""
    _after_call: bool = False  # the newlines that follow a call belong to its markup
    calls: list[ParsedCall] = field(default_factory=list)

    def feed(self, text: str) -> tuple[str, list[ParsedCall]]:
        """New text in; the content that is safe to show and the calls completed by it."""
        self._pending += text
        content: list[str] = []
        completed: list[ParsedCall] = []
        while self._pending:
            if self._after_call:
                self._pending = self._pending.lstrip("\n")
                self._after_call = not self._pending
                if not self._pending:
                    break
            start = self._pending.find(OPEN)
            if start < 0:
                # Hold back a tail that could still grow into "<tool_call>".
                keep = _partial_prefix_length(self._pending, OPEN)
                content.append(self._pending[: len(self._pending) - keep])
                self._pending = self._pending[len(self._pending) - keep :]
                break
            content.append(self._pending[:start])
            end = self._pending.find(CLOSE, start)
            if end < 0:
                self._pending = self._pending[start:]
                break
            block = self._pending[start : end + len(CLOSE)]
            self._pending = self._pending[end + len(CLOSE) :]
            call = parse_block(block[len(OPEN) : -len(CLOSE)], self.tool_names)
            if call is None:
                content.append(block)
            else:
                completed.append(call)
                self._after_call = True
        self.calls.extend(completed)
        return "".join(content), completed

    def finish(self) -> str:
        """The end of the stream: whatever is still held back is content."""
        rest, self._pending = self._pending, ""
        return rest


def parse_tool_calls(text: str, tool_names: frozenset[str]) -> tuple[str, list[ParsedCall]]:
    """A whole answer: its content (calls removed) and its calls."""
    stream = ToolCallStream(tool_names)
    content, calls = stream.feed(text)
    return content + stream.finish(), calls


def _partial_prefix_length(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
