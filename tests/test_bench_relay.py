"""`make bench-relay`'s stand-in engine keeps a GPU replica's schedule: a token per step, never
early, every token delivered, and the tokens a slow reader missed merged into one chunk (as
vLLM's output collector does). The benchmark's added-latency figures are measured against
the step times written into the tokens, so they are only as true as this schedule."""

from __future__ import annotations

import asyncio
import itertools
import time

from benchmarks.relay import StandInEngine
from serve_app.engine_api import EngineChunk, EngineRequest

STEP_MS = 5.0


def read(max_tokens: int, pause_s: float) -> list[tuple[float, EngineChunk]]:
    """Each chunk with the time it was taken, by a reader that pauses between reads."""

    async def run() -> list[tuple[float, EngineChunk]]:
        engine = StandInEngine(STEP_MS)
        request = EngineRequest("bench", [0], max_tokens, stream=True)
        taken = []
        async for chunk in engine._steps(request):
            taken.append((time.time(), chunk))
            await asyncio.sleep(pause_s)
        return taken

    return asyncio.run(run())


def stamps(chunk: EngineChunk) -> list[float]:
    return [float(stamp) for stamp in chunk.text.split()]


def test_a_prompt_reader_gets_every_step_in_order_never_before_its_step():
    # How many steps share a chunk depends on how promptly this loop wakes (load, GC): the
    # schedule is asserted, not the chunking; the slow reader's test below forces merging.
    taken = read(20, 0)
    assert sum(chunk.num_tokens for _, chunk in taken) == 20
    assert [chunk.finish_reason for _, chunk in taken[:-1]] == [None] * (len(taken) - 1)
    assert taken[-1][1].finish_reason == "length"
    made = [stamp for _, chunk in taken for stamp in stamps(chunk)]
    assert len(made) == 20
    assert all(abs(b - a - STEP_MS / 1000) < 1e-5 for a, b in itertools.pairwise(made))
    assert all(at >= stamps(chunk)[-1] - 0.001 for at, chunk in taken)


def test_a_slow_reader_gets_the_missed_steps_merged_and_none_lost():
    taken = read(30, 3 * STEP_MS / 1000)
    counts = [chunk.num_tokens for _, chunk in taken]
    assert sum(counts) == 30
    assert max(counts) > 1 and len(taken) < 30
    assert [len(stamps(chunk)) for _, chunk in taken] == counts
    made = [stamp for _, chunk in taken for stamp in stamps(chunk)]
    assert made == sorted(made) and len(set(made)) == 30
    assert taken[-1][1].finish_reason == "length"
    assert all(at >= stamps(chunk)[-1] - 0.001 for at, chunk in taken)
