"""The step-by-step policy: modes, merging into the system turn, idempotence, overrides.
How well `auto` decides is tests/test_policy.py's subject."""

from __future__ import annotations

import pytest

from serve_app.config import StepByStepConfig
from serve_app.prompt.step_by_step import StepByStepPolicy

DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
INSTRUCTION = StepByStepConfig().instruction

MATH = [{"role": "user", "content": "How many r's are in the word strawberry?"}]
GREETING = [{"role": "user", "content": "hi! how's it going?"}]


def policy(mode: str = "auto") -> StepByStepPolicy:
    return StepByStepPolicy(StepByStepConfig(mode=mode), DEFAULT_SYSTEM)


@pytest.mark.parametrize(
    ("mode", "messages", "applies"),
    [
        ("auto", MATH, True),
        ("auto", GREETING, False),
        ("always", GREETING, True),
        ("off", MATH, False),
    ],
)
def test_modes(mode, messages, applies):
    assert policy(mode).decide(messages).applies is applies


@pytest.mark.parametrize(
    ("configured", "switch", "messages", "applies"),
    [
        ("auto", "off", MATH, False),
        ("auto", "on", GREETING, True),
        ("off", "auto", MATH, True),
        ("always", "auto", GREETING, False),
        ("off", "on", GREETING, True),
    ],
)
def test_per_request_switch_overrides_config(configured, switch, messages, applies):
    assert policy(configured).decide(messages, switch).applies is applies


def test_auto_reads_the_last_user_turn_only():
    conversation = [*MATH, {"role": "assistant", "content": "Three."}, *GREETING]
    assert policy().decide(conversation).applies is False
    assert policy().decide([*GREETING, {"role": "assistant", "content": "Hi"}, *MATH]).applies


def test_without_system_message_joins_the_templates_default():
    merged = policy().apply(MATH)
    assert merged == [{"role": "system", "content": f"{DEFAULT_SYSTEM}\n\n{INSTRUCTION}"}, *MATH]
    assert MATH == [{"role": "user", "content": "How many r's are in the word strawberry?"}]


def test_appends_to_the_callers_system_message():
    messages = [{"role": "system", "content": "You are a tutor."}, *MATH]
    merged = policy().apply(messages)
    assert merged[0] == {"role": "system", "content": f"You are a tutor.\n\n{INSTRUCTION}"}
    assert merged[1:] == MATH
    assert messages[0]["content"] == "You are a tutor."  # the caller's list is not mutated


def test_never_added_twice():
    once = policy().apply(MATH)
    assert policy().apply(once) == once
    already = [{"role": "system", "content": f"Be kind. {INSTRUCTION}"}, *MATH]
    assert policy().apply(already) == already


def test_template_without_default_system_prompt():
    bare = StepByStepPolicy(StepByStepConfig(), default_system_prompt=None)
    assert bare.apply(MATH)[0] == {"role": "system", "content": INSTRUCTION}
