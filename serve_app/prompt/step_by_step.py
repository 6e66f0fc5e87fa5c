"""The step-by-step prompt policy: add a "think step by step" system instruction where it helps.

Athene-V2-Chat's model card reports that such a system prompt improves hard math and
counting questions. The mode comes from config (`off`, `always`, `auto`) and can be
overridden per request: the body field `step_by_step` wins over the `X-Step-By-Step`
header, which wins over config (`on` means `always`). In `auto` the conversation's last user turn
is classified (serve_app.prompt.classifier) and the instruction is applied only to math,
counting and multi-step reasoning questions. An API key may set its own default mode
(serve_app.access), between the request's overrides and the config.

The instruction joins the system turn: appended to the caller's system message, or to the
template's default system prompt when the caller sent none, and never added twice.
"""

from __future__ import annotations

from typing import NamedTuple

from serve_app.config import StepByStepConfig
from serve_app.prompt.classifier import classify, model
from serve_app.prompt.template import TemplateMessage

SWITCH_TO_MODE = {"on": "always", "off": "off", "auto": "auto"}


class Decision(NamedTuple):
    applies: bool
    reason: str  # why: "off", "always", or the classifier's reason in auto mode


class StepByStepPolicy:
    def __init__(self, config: StepByStepConfig, default_system_prompt: str | None) -> None:
        self.mode = config.mode
        self.instruction = config.instruction
        self.default_system_prompt = default_system_prompt
        model()  # load the classifier's weights now, not on the first request

    def decide(
        self,
        messages: list[TemplateMessage],
        switch: str | None = None,
        key_mode: str | None = None,
    ) -> Decision:
        """`switch` is the request's override, `key_mode` the API key's default mode."""
        mode = SWITCH_TO_MODE[switch] if switch else key_mode or self.mode
        if mode != "auto":
            return Decision(mode == "always", mode)
        return Decision(*classify(messages))

    def apply(self, messages: list[TemplateMessage]) -> list[TemplateMessage]:
        """The messages with the instruction in the system turn (a new list; input untouched)."""
        first = messages[0]
        if first["role"] == "system":
            if self.instruction in first["content"]:
                return messages
            return [{**first, "content": self._joined(first["content"])}, *messages[1:]]
        return [{"role": "system", "content": self._joined(self.default_system_prompt)}, *messages]

    def _joined(self, system: str | None) -> str:
        return f"{system}\n\n{self.instruction}" if system else self.instruction
