"""Per-request CPU cost of the router's prompt work.

    make bench-prompt        # or: .venv/bin/python -m benchmarks.prompt_costs

Prints microseconds per call (median and p99) for the step-by-step decision on written and
real prompts (ShareGPT turns, with their conversation, up to 8k tokens), for the whole policy
decision with the instruction applied, for template rendering and for tokenization. How well
the decision is made is `make policy-eval`'s job.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from policy import sets
from policy.corpus import user_turns
from serve_app.config import ModelConfig, StepByStepConfig
from serve_app.devmodel import ensure_dev_model
from serve_app.prompt.classifier import classify
from serve_app.prompt.step_by_step import StepByStepPolicy
from serve_app.prompt.template import ChatTemplate

ROUNDS = 20
LONGEST_CHARS = 32_000  # about 8k Qwen tokens of English prose

# Turns longer than the classifier's window (it reads the first 250 + last 750 characters).
LONG_TURNS = {
    "long turn: prose, no digits": "Could you help me plan a trip to Italy? We like food and museums. "
    * 30,
    "long turn: prose with numbers": "My essay on the city's history, written for class 7. " * 40,
    "long turn: pasted table + question": "| pen | 12 | 1.25 |\n" * 120 + "What is the total?",
    "8k-token turn: table + question": "| pen | 12 | 1.25 |\n" * 1600 + "What is the total?",
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


def real_conversations() -> list[list[dict[str, str]]]:
    """Every labelled real turn with its conversation, and the corpus's longest turns."""
    labelled = [e.messages for e in sets.real("dev") + sets.real("test")]
    longest = sorted(
        (t for t in user_turns() if len(t.text) <= LONGEST_CHARS),
        key=lambda t: len(t.text),
        reverse=True,
    )[:200]
    return labelled + [t.messages for t in longest]


def main() -> None:
    written = [e.messages for e in sets.written()]
    real = real_conversations()
    model_dir = ensure_dev_model()
    config = ModelConfig(source=str(model_dir), chat_template="qwen2_5.jinja", max_model_len=8192)
    start = time.perf_counter()
    template = ChatTemplate.from_config(config, str(model_dir))
    startup_ms = (time.perf_counter() - start) * 1000
    policy = StepByStepPolicy(StepByStepConfig(), template.default_system_prompt)
    rendered = [template.render(policy.apply(c)) for c in written]

    print(f"\nrouter prompt start-up (tokenizer + template): {startup_ms:.0f} ms")
    print(f"{'step (per request)':<40}{'median µs':>10}{'p99 µs':>10}")
    for name, function, inputs in [
        (f"classify: {len(written)} written prompts", classify, written),
        (f"classify: {len(real)} real conversations", classify, real),
        (
            "policy decide + apply (written)",
            lambda c: policy.apply(c) if policy.decide(c).applies else c,
            written,
        ),
        ("render chat template", template.render, written),
        ("tokenize rendered prompt", template.encode, rendered),
    ]:
        median, p99 = microseconds(function, inputs)
        print(f"{name:<40}{median:>10.1f}{p99:>10.1f}")
    for name, text in LONG_TURNS.items():
        median, p99 = microseconds(classify, [[{"role": "user", "content": text}]])
        print(f"{name:<40}{median:>10.1f}{p99:>10.1f}")


if __name__ == "__main__":
    main()
