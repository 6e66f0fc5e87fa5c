"""What crosses the router -> engine hop: token ids in, text deltas out.

Kept apart from serve_app.engine so the router never imports vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class EngineRequest:
    request_id: str
    prompt_token_ids: list[int]
    max_tokens: int
    # Streaming requests get a chunk per engine step; the others one chunk at the end.
    stream: bool
    # Sampling fields the client set; the rest come from the model's generation config.
    sampling: dict[str, object] = field(default_factory=dict)


class EngineChunk(NamedTuple):
    text: str  # new text since the previous chunk
    num_tokens: int  # new output tokens since the previous chunk
    finish_reason: str | None  # "stop" or "length" on the last chunk
