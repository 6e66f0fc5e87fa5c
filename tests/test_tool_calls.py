"""Parsing Qwen2.5 `<tool_call>` blocks (and `required`'s JSON lists) into OpenAI tool calls,
whole and streamed: streamed at any cut points, they agree with the whole parse."""

from __future__ import annotations

import json
import random

import pytest

from serve_app.tool_calls import (
    CallListStream,
    ToolCallStream,
    assemble,
    parse_tool_calls,
)

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
        '<tool_call>\n{"name": get_weather}\n</tool_call>',  # bad JSON
        '<tool_call>\n{"name": "launch_rocket", "arguments": {}}\n</tool_call>',  # unknown tool
        '<tool_call>\n{"name": "get_weather", "arguments": [1, 2]}\n</tool_call>',  # not an object
        '<tool_call>\n{"arguments": {}, "name": "get_weather"',  # never closed, not announced
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


def test_a_call_once_announced_stands_as_the_model_wrote_it():
    # A missing outer brace: the arguments were whole, the call is good.
    block = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>'
    content, calls = parse_tool_calls(f"Sure. {block}", TOOLS)
    assert content == "Sure. " and json.loads(calls[0].arguments) == {"city": "Paris"}
    # Cut off by max_tokens mid-arguments: the call is there with what was written, as
    # OpenAI's streams leave it (finish_reason says length).
    content, calls = parse_tool_calls('<tool_call>\n{"name": "get_time", "arguments": {"zo', TOOLS)
    assert content == "" and [(c.name, c.arguments) for c in calls] == [("get_time", '{"zo')]


def cut(text: str, seed: int, pieces: int = 12) -> list[str]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(text)), min(pieces, len(text) - 1)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


@pytest.mark.parametrize("seed", range(30))
def test_streaming_never_leaks_markup_and_agrees_with_whole_parse(seed):
    text = (
        f"Checking both.\n{TWO_CALLS}\nAlso <tool_call>oops</tool_call> and a < sign.\n"
        '<tool_call>{"arguments": {"zone": "UTC"}, "name": "get_time"}</tool_call>'
        '<tool_call>{"name": "get_weather", "arguments": {"q": "a \\"}\\" {[", "n": [1, {}]}}'
        "</tool_call>"
    )
    stream = ToolCallStream(TOOLS)
    shown, deltas = [], []
    for piece in cut(text, seed, pieces=40):
        content, new = stream.feed(piece)
        assert "<tool_call>\n{" not in content and "<tool_c" not in content.replace(
            "<tool_call>oops</tool_call>", ""
        )
        shown.append(content)
        deltas += new
    shown.append(stream.finish())
    whole_content, whole_calls = parse_tool_calls(text, TOOLS)
    assert "".join(shown) == whole_content
    streamed = assemble(deltas)
    assert [(c.name, c.arguments) for c in streamed] == [(c.name, c.arguments) for c in whole_calls]
    assert [json.loads(c.arguments) for c in whole_calls] == [
        {"city": "Paris"},
        {"zone": "CET"},
        {"zone": "UTC"},  # keys in another order: read whole when the block closes
        {"q": 'a "}" {[', "n": [1, {}]},  # braces inside strings are not the end
    ]
    assert whole_content == "Checking both.\nAlso <tool_call>oops</tool_call> and a < sign.\n"
    # The name comes first, alone with the id; the arguments follow as they are written.
    for index in range(4):
        pieces = [d for d in deltas if d.index == index]
        assert pieces[0].id and pieces[0].name and all(not d.id and not d.name for d in pieces[1:])


def test_arguments_go_out_as_they_are_written():
    """Fed a token at a time (here a character), each piece of the arguments is a delta."""
    arguments = '{"city": "Paris", "days": [1, 2]}'
    text = f'<tool_call>\n{{"name": "get_weather", "arguments": {arguments}}}\n</tool_call>'
    stream = ToolCallStream(TOOLS)
    deltas = [d for char in text for d in stream.feed(char)[1]]
    assert (deltas[0].name, deltas[0].arguments) == ("get_weather", "{")
    assert [d.arguments for d in deltas[1:]] == list(arguments[1:])


@pytest.mark.parametrize("seed", range(20))
def test_a_required_list_streams_each_call_and_agrees_with_whole_parse(seed):
    text = (
        '[{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}, '
        '{"arguments": {"zone": "CET"}, "name": "get_time"}, '
        '{"name": "get_time", "arguments": {"zone": "}"}}]'
    )
    whole = CallListStream(TOOLS).feed(text)
    stream = CallListStream(TOOLS)
    deltas = [d for piece in cut(text, seed, pieces=30) for d in stream.feed(piece)]
    assert [(c.name, c.arguments) for c in assemble(deltas)] == [
        (c.name, c.arguments) for c in assemble(whole)
    ]
    assert [(c.name, json.loads(c.arguments)) for c in assemble(whole)] == [
        ("get_weather", {"city": "Paris", "days": [1, 2]}),
        ("get_time", {"zone": "CET"}),
        ("get_time", {"zone": "}"}),
    ]


def test_plain_text_streams_through_untouched():
    stream = ToolCallStream(TOOLS)
    assert stream.feed("Hello <b")[0] == "Hello <b"
    assert stream.feed("world")[0] == "world"
    assert stream.feed(" end <")[0] == " end "  # could be the start of a block: held
    assert stream.finish() == "<"
