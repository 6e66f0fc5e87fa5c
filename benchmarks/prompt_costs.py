"""Per-request CPU cost of the router's prompt work, and the classifier's accuracy.

    make bench-prompt        # or: .venv/bin/python -m benchmarks.prompt_costs

Prints the step-by-step classifier's precision and recall on the labelled set
(tests/data/step_by_step_prompts.jsonl) and microseconds per call for: the classifier,
the whole policy decision, template rendering, and tokenization, on the labelled prompts.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from serve_app.config import ModelConfig, StepByStepConfig
from serve_app.devmodel import ensure_dev_model
from serve_app.prompt.classifier import classify
from serve_app.prompt.step_by_step import StepByStepPolicy
from serve_app.prompt.template import ChatTemplate

LABELLED = Path(__file__).resolve().parents[1] / "tests" / "data" / "step_by_step_prompts.jsonl"
ROUNDS = 20

# Turns longer than the classifier's window (it reads the first 250 + last 750 characters).
LONG_TURNS = {
    "long turn: prose, no digits": "Could you help me plan a trip to Italy? We like food and museums. "
    * 30,
    "long turn: prose with numbers": "My essay on the city's history, written for class 7. " * 40,
    "long turn: pasted table + question": "| pen | 12 | 1.25 |\n" * 120 + "What is the total?",
}


def microseconds(function: Callable[[object], object], inputs: list) -> tuple[float, float]:
    """Median and p99 of per-call time over ROUNDS passes through the inputs."""
    samples = []
    for _ in range(ROUNDS):
        for item in inputs:
            start = time.perf_counter_ns()
            function(item)
            samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def main() -> None:
    rows = [json.loads(line) for line in LABELLED.read_text().splitlines() if line.strip()]
    verdicts = [(row["step_by_step"], classify(row["prompt"]).applies) for row in rows]
    tp = sum(1 for truth, said in verdicts if truth and said)
    fp = sum(1 for truth, said in verdicts if not truth and said)
    fn = sum(1 for truth, said in verdicts if truth and not said)
    print(f"labelled set: {len(rows)} prompts ({sum(t for t, _ in verdicts)} need step by step)")
    print(f"classifier precision {tp / (tp + fp):.3f}  recall {tp / (tp + fn):.3f}")
    for truth, row in ((t, r) for (t, s), r in zip(verdicts, rows, strict=True) if t != s):
        print(f"  wrong ({'missed' if truth else 'false alarm'}): {row['prompt'][:90]!r}")

    model_dir = ensure_dev_model()
    config = ModelConfig(source=str(model_dir), chat_template="qwen2_5.jinja", max_model_len=8192)
    start = time.perf_counter()
    template = ChatTemplate.from_config(config, str(model_dir))
    startup_ms = (time.perf_counter() - start) * 1000
    policy = StepByStepPolicy(StepByStepConfig(), template.default_system_prompt)
    conversations = [[{"role": "user", "content": row["prompt"]}] for row in rows]
    rendered = [template.render(policy.apply(c)) for c in conversations]

    print(f"\nrouter prompt start-up (tokenizer + template): {startup_ms:.0f} ms")
    print(f"{'step (per request)':<36}{'median µs':>10}{'p99 µs':>10}")
    for name, function, inputs in [
        ("classify last user turn", classify, [row["prompt"] for row in rows]),
        (
            "policy decide + apply",
            lambda c: policy.apply(c) if policy.decide(c).applies else c,
            conversations,
        ),
        ("render chat template", template.render, conversations),
        ("tokenize rendered prompt", template.encode, rendered),
    ]:
        median, p99 = microseconds(function, inputs)
        print(f"{name:<36}{median:>10.1f}{p99:>10.1f}")
    for name, text in LONG_TURNS.items():
        median, p99 = microseconds(classify, [text])
        print(f"{name:<36}{median:>10.1f}{p99:>10.1f}")


if __name__ == "__main__":
    main()
