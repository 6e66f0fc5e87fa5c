"""Parsing Qwen2.5 `<tool_call>` blocks into OpenAI tool calls, whole and streamed."""

from __future__ import annotations

import json
import random

import pytest

from serve_app.tool_calls import ToolCallStream, parse_tool_calls

TOOLS = frozenset({"get_weather", "get_time"})

TWO_CALLS = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>'
)


def test_several_calls_per_turn():
    content, calls = parse_tool_calls(TWO_CALLS, TOOLS)
    assert content == ""
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"zone": "CET"}),
    ]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)


def test_text_around_calls_stays_content():
    content, calls = parse_tool_calls(f"Let me check.\n{TWO_CALLS}\nDone.", TOOLS)
    assert content == "Let me check.\nDone."
    assert len(calls) == 2


@pytest.mark.parametrize(
    "block",
    [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>',  # missing }
        '<tool_call>\n{"name": get_weather}\n</tool_call>',  # bad JSON
        '<tool_call>\n{"name": "launch_rocket", "arguments": {}}\n</tool_call>',  # unknown tool
        '<tool_call>\n{"name": "get_weather", "arguments": [1, 2]}\n</tool_call>',  # not an object
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}',  # never closed
    ],
)
def test_malformed_blocks_are_returned_as_content(block):
    content, calls = parse_tool_calls(f"Sure. {block}", TOOLS)
    assert calls == []
    assert content == f"Sure. {block}"


def test_arguments_encoded_as_a_string_are_accepted():
    block = '<tool_call>{"name": "get_time", "arguments": "{\\"zone\\": \\"UTC\\"}"}</tool_call>'
    _, calls = parse_tool_calls(block, TOOLS)
    assert json.loads(calls[0].arguments) == {"zone": "UTC"}


@pytest.mark.parametrize("seed", range(20))
def test_streaming_never_leaks_markup_and_agrees_with_whole_parse(seed):
    text = f"Checking both.\n{TWO_CALLS}\nAlso <tool_call>oops</tool_call> and a < sign."
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(text)), 12))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    stream = ToolCallStream(TOOLS)
    shown = []
    for piece in pieces:
        content, _ = stream.feed(piece)
        assert "<tool_call>\n{" not in content and "<tool_c" not in content.replace(
            "<tool_call>oops</tool_call>", ""
        )
        shown.append(content)
    shown.append(stream.finish())
    whole_content, whole_calls = parse_tool_calls(text, TOOLS)
    assert "".join(shown) == whole_content
    assert [(c.name, c.arguments) for c in stream.calls] == [
        (c.name, c.arguments) for c in whole_calls
    ]
    assert whole_content == "Checking both.\nAlso <tool_call>oops</tool_call> and a < sign."


def test_plain_text_streams_through_untouched():
    stream = ToolCallStream(TOOLS)
    assert stream.feed("Hello <b")[0] == "Hello <b"
    assert stream.feed("world")[0] == "world"
    assert stream.feed(" end <")[0] == " end "  # could be the start of a block: held
    assert stream.finish() == "<"
