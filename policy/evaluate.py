"""How the step-by-step policy decides on real and written prompts: `make policy-eval`.

Prints, for each labelled set, the confusion matrix and precision / recall with 95% intervals
(Wilson on the sample; for the real sets also re-weighted to the plain traffic mix, with a
stratified bootstrap), and the firing rate on the whole corpus: the share of real user turns
that would get the instruction. `--errors` lists the development part's mistakes, to tune on;
the test part's are never printed.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter

from policy import sets
from policy.corpus import user_turns
from policy.stats import Report, Scored, sample_report, weighted_report
from serve_app.config import StepByStepConfig
from serve_app.prompt.step_by_step import StepByStepPolicy

POLICY = StepByStepPolicy(StepByStepConfig(mode="auto"), default_system_prompt=None)


def applies(messages: list[dict[str, str]]) -> bool:
    return POLICY.decide(messages).applies


def scored(examples: list[sets.Example], weights: dict[str, float] | None = None) -> list[Scored]:
    return [
        Scored(e.label, applies(e.messages), (weights or {}).get(e.stratum, 1.0), e.stratum)
        for e in examples
    ]


def stratum_weights(split: str) -> dict[str, float]:
    """Turns of the corpus each sampled turn of `split` stands for, by stratum."""
    draw = sets.draw()
    in_split = Counter(item["stratum"] for item in draw["items"] if item["split"] == split)
    return {name: s["population"] / in_split[name] for name, s in draw["strata"].items()}


def _pct(value: float) -> str:
    return "  n/a" if math.isnan(value) else f"{value:.3f}"


def _line(name: str, report: Report) -> str:
    (pl, ph), (rl, rh) = report.precision_ci, report.recall_ci
    return (
        f"  {name:<22} precision {_pct(report.precision)} [{_pct(pl)}, {_pct(ph)}]"
        f"   recall {_pct(report.recall)} [{_pct(rl)}, {_pct(rh)}]"
    )


def report_set(name: str, rows: list[Scored], reweight: bool) -> None:
    sample = sample_report(rows)
    print(f"\n{name}: {len(rows)} prompts, {sample.tp + sample.fn} labelled true")
    print(f"  confusion: TP {sample.tp}  FP {sample.fp}  FN {sample.fn}  TN {sample.tn}")
    print(_line("on the sample", sample))
    if reweight:
        print(_line("re-weighted to traffic", weighted_report(rows)))
        first = [r for r in rows if not r.stratum.startswith("followup")]
        follow = [r for r in rows if r.stratum.startswith("followup")]
        print(_line("first turns, re-weighted", weighted_report(first)))
        print(_line("later turns (sample)", sample_report(follow)))


def firing_rate() -> None:
    fired: Counter[str] = Counter()
    total: Counter[str] = Counter()
    start = time.perf_counter()
    for turn in user_turns():
        kind = "later" if turn.history else "first"
        total[kind] += 1
        fired[kind] += applies(turn.messages)
    took = time.perf_counter() - start
    all_fired, all_total = sum(fired.values()), sum(total.values())
    print(
        f"\nfiring rate on the whole corpus: {all_fired / all_total:.2%} of {all_total} user turns"
        f" (first turns {fired['first'] / total['first']:.2%} of {total['first']},"
        f" later turns {fired['later'] / total['later']:.2%} of {total['later']});"
        f" {took / all_total * 1e6:.0f} us per decision"
    )


def print_errors(examples: list[sets.Example]) -> None:
    for example in examples:
        if applies(example.messages) != example.label:
            kind = "FN" if example.label else "FP"
            print(
                f"\n--- {kind} {example.key} [{example.stratum}] {POLICY.decide(example.messages)}"
            )
            print(example.text[:600])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--errors", action="store_true", help="list the dev part's mistakes")
    parser.add_argument("--no-corpus", action="store_true", help="skip the firing rate")
    args = parser.parse_args()
    if args.errors:
        print_errors(sets.real("dev"))
        return
    for split in ("dev", "test"):
        report_set(
            f"real {split} part" + (" (trained on: in-sample)" if split == "dev" else ""),
            scored(sets.real(split), stratum_weights(split)),
            True,
        )
    report_set("written sets", scored(sets.written()), False)
    if not args.no_corpus:
        firing_rate()


if __name__ == "__main__":
    main()
