"""Qwen2.5 tool calls in the model's output -> OpenAI tool-call deltas, as they are generated.

Qwen2.5 (and so Athene-V2) calls a tool by writing

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

one block per call, several per turn. `ToolCallStream` reads the answer as it streams: text
that may be the start of a block is held back, so `<tool_call>` markup never reaches
`content`; once a block's name is written and is a tool the request offered, the call is
announced (its id and name), then its arguments go out as the model writes them, so a
frontend can show progress. An announced call stands even if the model never finishes it
(cut off by `max_tokens`: `finish_reason` says `length`), as OpenAI's own streams do. A block
that never announces a call (bad JSON, an unknown function, non-object arguments, an
unclosed block) is parsed whole when it closes: a valid call in another key order or with
string-encoded arguments still becomes a call; anything else stays in `content` as the model
wrote it, never an error.

`CallListStream` does the same for `tool_choice: required`, where structured outputs make
the model write a JSON list of `{"name", "arguments"}` objects. A whole answer is parsed by
the same code fed once, so streamed and whole answers agree by construction.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

OPEN = "<tool_call>"
CLOSE = "</tool_call>"

# The start of a call object whose name comes first and whose arguments are an object. A
# match on a prefix of the text is a match on the whole text: the decision is the same
# wherever the stream was cut.
ANNOUNCE = re.compile(r'\s*\{\s*"name"\s*:\s*"([^"\\]*)"\s*,\s*"arguments"\s*:\s*(\S)')


@dataclass(frozen=True, slots=True)
class ParsedCall:
    id: str
    name: str
    arguments: str  # JSON-encoded object, as OpenAI sends it


@dataclass(frozen=True, slots=True)
class CallDelta:
    """A piece of a choice's `index`-th tool call: its id and name in the first piece only,
    then the next stretch of its arguments' JSON text."""

    index: int
    id: str | None
    name: str | None
    arguments: str


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_block(body: str, tool_names: frozenset[str]) -> ParsedCall | None:
    """The call in one whole block's body, or None when it is not a valid call."""
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


class CallReader:
    """One call object as it streams: announced once its name (an offered tool) and the
    start of its object arguments are written, then its arguments' text piece by piece,
    up to the brace that closes them (JSON strings and nesting followed)."""

    def __init__(self, tool_names: frozenset[str]) -> None:
        self.tool_names = tool_names
        self.text = ""  # the object so far
        self.name: str | None = None  # set once announced
        self.opaque = False  # decided: it will not be announced; read it whole
        self.complete = False  # its closing brace was read
        self._in_string = False
        self._escaped = False
        self._opens: list[int] = []  # where each open object or list starts
        self._ends: dict[int, int] = {}  # start -> end of each closed one
        self._arguments_at: int | None = None
        self._sent = 0  # how much of the arguments was reported

    @property
    def announced(self) -> bool:
        return self.name is not None

    def feed(self, text: str) -> tuple[int, str | None, str]:
        """More text: how much of it belongs to this object, the name if this piece
        announced the call, and the arguments' text it added."""
        used = self._scan(text)
        announced = None
        if self.name is None and not self.opaque:
            match = ANNOUNCE.match(self.text)
            if match is not None and match.group(1) in self.tool_names and match.group(2) == "{":
                self.name = announced = match.group(1)
                self._arguments_at = match.start(2)
            elif match is not None or self.complete:
                self.opaque = True
        return used, announced, self._new_arguments()

    def _scan(self, text: str) -> int:
        """Follows strings and nesting over new text; stops after the object's end."""
        used = 0
        for char in text:
            if self.complete:
                break
            position = len(self.text) + used
            used += 1
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._opens.append(position)
            elif char in "}]":
                if self._opens:
                    self._ends[self._opens.pop()] = position + 1
                self.complete = not self._opens
        self.text += text[:used]
        return used

    def _new_arguments(self) -> str:
        if self._arguments_at is None:
            return ""
        end = self._ends.get(self._arguments_at, len(self.text))
        piece = self.text[self._arguments_at + self._sent : end]
        self._sent += len(piece)
        return piece


@dataclass
class _Calls:
    """Numbers a choice's calls and turns what readers report into deltas."""

    count: int = 0

    def announced(self, name: str, arguments: str) -> CallDelta:
        self.count += 1
        return CallDelta(self.count - 1, new_call_id(), name, arguments)

    def more(self, arguments: str) -> list[CallDelta]:
        return [CallDelta(self.count - 1, None, None, arguments)] if arguments else []

    def whole(self, call: ParsedCall) -> CallDelta:
        self.count += 1
        return CallDelta(self.count - 1, call.id, call.name, call.arguments)


class ToolCallStream:
    """`tool_choice` auto: splits streamed model text into content and tool-call deltas."""

    def __init__(self, tool_names: frozenset[str]) -> None:
        self.tool_names = tool_names
        self.calls = _Calls()
        self._pending = ""  # text not yet decided on
        self._block: CallReader | None = None  # inside a block: its call so far
        self._block_text = ""  # the block's markup and body so far, shown if it is no call
        self._after_call = False  # the newlines that follow a call belong to its markup

    def feed(self, text: str) -> tuple[str, list[CallDelta]]:
        """New text in; the content that is safe to show and the tool-call deltas."""
        self._pending += text
        content: list[str] = []
        deltas: list[CallDelta] = []
        while self._pending:
            if self._block is not None:
                end = self._pending.find(CLOSE)
                if end < 0:  # the block goes on; hold back what may become its end
                    keep = _partial_prefix_length(self._pending, CLOSE)
                    body = self._pending[: len(self._pending) - keep]
                    self._pending = self._pending[len(body) :]
                    deltas += self._read(body)
                    break
                deltas += self._read(self._pending[:end])
                self._pending = self._pending[end + len(CLOSE) :]
                shown, whole = self._close_block()
                content.append(shown)
                deltas += whole
                continue
            if self._after_call:
                self._pending = self._pending.lstrip("\n")
                self._after_call = not self._pending
                if not self._pending:
                    break
            start = self._pending.find(OPEN)
            if start < 0:  # hold back a tail that could still grow into "<tool_call>"
                keep = _partial_prefix_length(self._pending, OPEN)
                content.append(self._pending[: len(self._pending) - keep])
                self._pending = self._pending[len(self._pending) - keep :]
                break
            content.append(self._pending[:start])
            self._pending = self._pending[start + len(OPEN) :]
            self._block, self._block_text = CallReader(self.tool_names), OPEN
        return "".join(content), deltas

    def _read(self, body: str) -> list[CallDelta]:
        self._block_text += body
        reader = self._block
        assert reader is not None
        if reader.complete:  # text after the object, before the close: markup
            return []
        _, name, arguments = reader.feed(body)
        if name is not None:
            return [self.calls.announced(name, arguments)]
        return self.calls.more(arguments) if reader.announced else []

    def _close_block(self) -> tuple[str, list[CallDelta]]:
        """The block closed: done if announced; else read whole, a call or content."""
        reader, self._block = self._block, None
        assert reader is not None
        if reader.announced:
            self._after_call = True
            return "", []
        call = parse_block(self._block_text[len(OPEN) :], self.tool_names)
        if call is None:
            return self._block_text + CLOSE, []
        self._after_call = True
        return "", [self.calls.whole(call)]

    def finish(self) -> str:
        """The end of the stream: an announced call stands (cut off); any other text still
        held back is content."""
        rest, self._pending = self._pending, ""
        if self._block is not None:
            announced = self._block.announced
            self._block = None
            return "" if announced else self._block_text + rest
        return rest


class CallListStream:
    """`tool_choice` required: structured outputs make the model write a JSON list of call
    objects; each is announced and streamed as `ToolCallStream` does with a block, or read
    whole when its keys come in another order."""

    def __init__(self, tool_names: frozenset[str]) -> None:
        self.tool_names = tool_names
        self.calls = _Calls()
        self._reader: CallReader | None = None

    def feed(self, text: str) -> list[CallDelta]:
        deltas: list[CallDelta] = []
        while text:
            if self._reader is None:
                start = text.find("{")  # the list's brackets, commas and spaces come between
                if start < 0:
                    break
                self._reader, text = CallReader(self.tool_names), text[start:]
            reader = self._reader
            used, name, arguments = reader.feed(text)
            text = text[used:]
            if name is not None:
                deltas.append(self.calls.announced(name, arguments))
            elif reader.announced:
                deltas += self.calls.more(arguments)
            if reader.complete:
                self._reader = None
                call = None if reader.announced else parse_block(reader.text, self.tool_names)
                if call is not None:
                    deltas.append(self.calls.whole(call))
        return deltas


def parse_tool_calls(text: str, tool_names: frozenset[str]) -> tuple[str, list[ParsedCall]]:
    """A whole answer: its content (calls removed) and its calls."""
    stream = ToolCallStream(tool_names)
    content, deltas = stream.feed(text)
    return content + stream.finish(), assemble(deltas)


def assemble(deltas: list[CallDelta]) -> list[ParsedCall]:
    """Deltas joined into whole calls, in order."""
    calls: dict[int, list[CallDelta]] = {}
    for delta in deltas:
        calls.setdefault(delta.index, []).append(delta)
    return [
        ParsedCall(
            pieces[0].id or "",
            pieces[0].name or "",
            "".join(piece.arguments for piece in pieces),
        )
        for _, pieces in sorted(calls.items())
    ]


def _partial_prefix_length(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
