"""Draw the labelled real-traffic set from ShareGPT, once (seeded), with its strata recorded.

    .venv/bin/python -m policy.sample --out policy/data/draw.json

Math and counting questions are about 2% of real first turns, so a plain random draw of 1,500
holds ~30 of them. The draw is stratified instead: the user turns are split into disjoint
strata by cheap cues, each stratum is sampled at its own rate, and `policy.evaluate`
re-weights every labelled prompt by (stratum size / sampled from it) to report precision and
recall on the plain traffic mix as well as on the sample.

First turns (conversations that start with a user turn, 1 to 6,000 characters, identical texts
counted once):
  fired  the classifier as it was when the set was drawn (commit 20232bf) applies;
  cue    a tight math cue (an operator between digits, "how many", calculate, probability,
         solve, letters, which is bigger, riddle, puzzle, prove, integral, prime, math...);
  broad  a looser cue (=, %, count, sum, average, convert, percent...);
  number a digit or a number / time / money word;
  plain  none of these.
Later turns (index >= 2, so an answer sits before them): `followup_math` when the classifier
fired on the turn or on any earlier user turn, else `followup_other`.

The sample is split once into a development part and a test part (half of each stratum,
seeded); tune only on the development part. An extra training pool (`--pool`) is drawn
afterwards from the turns left, leaving out any whose text is in the test part: labelled the
same way, it only ever trains.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from policy.corpus import Turn, turns_by_key, user_turns
from policy.sets import DRAW
from serve_app.prompt.rules import classify

SEED = 20261204
MAX_CHARS = 6000
POOL_SEED = 99
POOL_SIZES = {
    "fired": 58,
    "cue": 456,
    "broad": 400,
    "number": 220,
    "plain": 120,
    "followup_math": 300,
    "followup_other": 100,
}
SAMPLE_SIZES = {
    "fired": 500,
    "cue": 400,
    "broad": 200,
    "number": 150,
    "plain": 150,
    "followup_math": 200,
    "followup_other": 100,
}
_TIGHT = re.compile(
    r"\d\s*[-+*/x\u00d7^\u00f7]\s*\d|\bhow many\b|calculat|probabilit|\bsolve\b|\bletters?\b"
    r"|which is (?:bigger|larger|greater|smaller)|riddle|puzzle|\bprove\b|integral|derivative"
    r"|\bprime\b|\bmath",
    re.IGNORECASE,
)
_BROAD = re.compile(
    r"\bhow (?:much|long|far|old)\b|comput|\bodds\b|equation|\bcount|\bsum\b|average|\bmean\b"
    r"|median|percent|%|\bconvert|\bdivid|multipl|\bfraction|\bequals?\b|=",
    re.IGNORECASE,
)
_NUMBER = re.compile(
    r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|hundred|thousand|number|total"
    r"|times|minus|plus|half|twice|triple|days?|hours?|minutes?|years?|price|cost|rate|ratio"
    r"|logic|statistic|algebra|geometry|theorem)\b",
    re.IGNORECASE,
)


def first_turn_stratum(text: str) -> str:
    if classify(text).applies:
        return "fired"
    if _TIGHT.search(text):
        return "cue"
    if _BROAD.search(text):
        return "broad"
    return "number" if _NUMBER.search(text) else "plain"


def followup_stratum(turn: Turn) -> str:
    user_texts = [turn.text] + [m["content"] for m in turn.history if m["role"] == "user"]
    return "followup_math" if any(classify(t).applies for t in user_texts) else "followup_other"


def populations() -> dict[str, list[str]]:
    """Every stratum's turn keys, in corpus order."""
    strata: dict[str, list[str]] = {name: [] for name in SAMPLE_SIZES}
    seen_first: set[str] = set()
    for turn in user_turns():
        if not turn.text.strip() or len(turn.text) > MAX_CHARS:
            continue
        if not turn.history:
            if turn.text.strip() in seen_first:
                continue
            seen_first.add(turn.text.strip())
            strata[first_turn_stratum(turn.text)].append(turn.key)
        elif len(turn.history) >= 2:
            strata[followup_stratum(turn)].append(turn.key)
    return strata


def draw() -> dict:
    rng = random.Random(SEED)
    strata = populations()
    items = []
    for name, keys in strata.items():
        chosen = rng.sample(keys, SAMPLE_SIZES[name])
        test = set(rng.sample(chosen, len(chosen) // 2))
        items += [
            {"key": k, "stratum": name, "split": "test" if k in test else "dev"} for k in chosen
        ]
    return {
        "seed": SEED,
        "drawn_at_commit": "20232bf",
        "max_chars": MAX_CHARS,
        "strata": {
            name: {"population": len(keys), "sampled": SAMPLE_SIZES[name]}
            for name, keys in strata.items()
        },
        "items": items,
    }


def draw_pool(drawn: dict) -> dict:
    """The extra training pool: turns outside the draw, none with a test part's text."""
    turns = turns_by_key()
    taken = {item["key"] for item in drawn["items"]}
    test_texts = {
        turns[item["key"]].text.strip() for item in drawn["items"] if item["split"] == "test"
    }
    rng = random.Random(POOL_SEED)
    items = []
    for name, keys in populations().items():
        left = [k for k in keys if k not in taken and turns[k].text.strip() not in test_texts]
        chosen = rng.sample(left, min(POOL_SIZES[name], len(left)))
        items += [{"key": key, "stratum": name, "split": "train"} for key in chosen]
    return {"seed": POOL_SEED, "items": items}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pool", action="store_true", help="draw the extra training pool")
    args = parser.parse_args()
    result = draw_pool(json.loads(DRAW.read_text())) if args.pool else draw()
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{len(result['items'])} turns drawn into {args.out}")


if __name__ == "__main__":
    main()
