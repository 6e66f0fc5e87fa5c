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


def load_labelled() -> list[dict]:
    return [json.loads(line) for line in LABELLED.read_text().splitlines() if line.strip()]


def score(rows: list[dict]) -> tuple[float, float, list[dict]]:
    """Precision and recall of the classifier on labelled rows, and the rows it gets wrong."""
    said = [classify(row["prompt"]).applies for row in rows]
    truth = [row["step_by_step"] for row in rows]
    tp = sum(t and s for t, s in zip(truth, said, strict=True))
    wrong = [row for row, t, s in zip(rows, truth, said, strict=True) if t != s]
    fp = sum(1 for row in wrong if not row["step_by_step"])
    return tp / (tp + fp), tp / sum(truth), wrong


def main() -> None:
    rows = load_labelled()
    precision, recall, wrong = score(rows)
    print(
        f"labelled set: {len(rows)} prompts ({sum(r['step_by_step'] for r in rows)} need step by step)"
    )
    print(f"classifier precision {precision:.3f}  recall {recall:.3f}")
    for row in wrong:
        kind = "missed" if row["step_by_step"] else "false alarm"
        print(f"  wrong ({kind}): {row['prompt'][:90]!r}")

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
