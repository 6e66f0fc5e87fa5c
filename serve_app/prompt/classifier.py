"""Does the last user turn need "think step by step"? A linear model over hand-labelled real turns.

Athene-V2-Chat's model card reports that a "think step by step" system prompt improves hard
math and counting questions; everywhere else it only lengthens answers. `classify` decides
for a conversation and names why, for metrics and the request log.

The model is a logistic regression trained by `policy/train.py` on user turns from real
conversations (ShareGPT), labelled by hand to ../shared/POLICY_LABELS.md. Its features, read
from the turn's window (the rules' `window`: the first 250 and last 750 characters,
lower-cased):
- words and word pairs, every digit run read as "0";
- character 3- and 4-grams, digits read as "0" (operators, "x^0", "0%" and misspellings),
  hashed into 2**20 buckets so that numpy sums them;
- which hand-written rules match (serve_app.prompt.rules: "signal:counting", "negative:coding"),
  and each signal again when no negative matches (a linear model cannot express "and not").
The weights ship in `step_by_step_model.json` (a few MB; numpy at run time).

A later turn is also read with the one before it: a short turn ("and for 18?") whose previous
user turn the model calls a computation, that is not far from one itself and that no rule
calls a greeting, thanks or another task ("now write a poem about it"), is a follow-up.

Reasons: the first matching rule signal (`arithmetic`, `counting`...), else `model`, when the
instruction applies; `follow_up` when the earlier turn decided it; else the first matching
negative rule (`coding`, `writing`...), `greeting`, `empty` or `no_signal`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import numpy as np

from serve_app.prompt import rules
from serve_app.prompt.rules import Verdict

MODEL_FILE = Path(__file__).with_name("step_by_step_model.json")
CHAR_BUCKETS = 1 << 20  # character n-grams are hashed into this many weights
_TOKEN = re.compile(r"[^\W\d_]+|\d+|[^\w\s]")
_ZERO, _ONE, _NINE = (np.uint64(ord(digit)) for digit in "019")
_PRIME = np.uint64(1_000_003)


def features(window: str, hits: list[str]) -> set[str]:
    """The model's named features of a window and the rules that match it (module docstring)."""
    tokens = ["0" if token[0].isdigit() else token for token in _TOKEN.findall(window)]
    found = {f"w:{token}" for token in tokens}
    found.update(f"b:{a} {b}" for a, b in pairwise(tokens))
    found.update(f"r:{hit}" for hit in hits)
    if not any(hit.startswith("negative:") for hit in hits):  # a signal no negative vetoes
        found.update(f"r:clean:{hit}" for hit in hits if hit.startswith("signal:"))
    return found


def char_buckets(window: str) -> np.ndarray:
    """The window's character 3- and 4-grams (digits read as 0), hashed, each once.

    Vectorized: a turn's thousand characters cost a few numpy calls, not thousands of
    Python strings. Digits are mapped on the code points and duplicates dropped by sorting
    (`str.translate` and `np.unique` took three quarters of its 0.14 ms on every request)."""
    codes = np.frombuffer(window.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    codes[(codes >= _ONE) & (codes <= _NINE)] = _ZERO
    hashed = []
    for n in (3, 4):
        count = len(codes) - n + 1
        if count > 0:
            h = np.full(count, n, dtype=np.uint64)
            for k in range(n):
                h = h * _PRIME + codes[k : k + count]  # wraps modulo 2**64
            hashed.append(h % np.uint64(CHAR_BUCKETS))
    if not hashed:
        return np.empty(0, dtype=np.uint64)
    buckets = np.sort(np.concatenate(hashed))
    keep = np.empty(len(buckets), dtype=bool)
    keep[0] = True
    np.not_equal(buckets[1:], buckets[:-1], out=keep[1:])
    return buckets[keep]


class Model(NamedTuple):
    bias: float
    weights: dict[str, float]  # named features
    char_weights: np.ndarray  # one per character n-gram bucket
    threshold: float  # probability at or above which the instruction applies
    follow_up_max_chars: int  # a later turn this short may be a follow-up
    follow_up_min: float  # ... if its own probability is at least this

    def probability(self, window: str, hits: list[str]) -> float:
        score = self.bias + sum(self.weights.get(f, 0.0) for f in features(window, hits))
        score += float(self.char_weights[char_buckets(window)].sum())
        return 1 / (1 + math.exp(-score))


@cache
def model() -> Model:
    saved = json.loads(MODEL_FILE.read_text())
    char_weights = np.zeros(CHAR_BUCKETS)
    char_weights[saved["char_buckets"]] = saved["char_weights"]
    named = {field: saved[field] for field in Model._fields if field != "char_weights"}
    return Model(**named, char_weights=char_weights)


def vetoed(hits: list[str]) -> bool:
    """A greeting, thanks or another task: never a follow-up computation."""
    return any(h == "greeting" or h.startswith("negative:") for h in hits)


def _reason(hits: list[str], applies: bool) -> str:
    """The verdict's name: the first signal (applies) or negative (not) among the rules."""
    kind = "signal:" if applies else "negative:"
    hit = next((h for h in hits if h.startswith(kind) or h == "greeting"), None)
    if hit is not None:
        return hit.removeprefix(kind)
    return "model" if applies else "no_signal"


def classify(messages: Sequence[Mapping[str, str]]) -> Verdict:
    """Whether the instruction helps with the conversation's last user turn, and why."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        return Verdict(False, "no_user_turn")
    window = rules.window(users[-1])
    if not window:
        return Verdict(False, "empty")
    chosen = model()
    hits = rules.hits(window)
    probability = chosen.probability(window, hits)
    if probability >= chosen.threshold:
        return Verdict(True, _reason(hits, True))
    if len(users) > 1 and len(window) <= chosen.follow_up_max_chars and not vetoed(hits):
        earlier = rules.window(users[-2])
        if probability >= chosen.follow_up_min and (
            chosen.probability(earlier, rules.hits(earlier)) >= chosen.threshold
        ):
            return Verdict(True, "follow_up")
    return Verdict(False, _reason(hits, False))
