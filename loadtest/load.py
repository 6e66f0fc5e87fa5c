"""How much load, and when. Open loop: one Poisson arrival process shared by every user, so
the rate, not the number of users, sets the load (Locust users are closed-loop on their own);
users are the concurrency cap, and an arrival that waits for a free user is sent late (the
sample keeps its scheduled time). Shapes: the fraction of the peak load over a run.

Kept free of Locust imports (Locust monkey-patches the process that imports it)."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable


class PoissonPacer:
    """Arrivals at `rate` per second with exponential gaps. Each call to `wait` claims the
    next arrival and sleeps until it; `rate` may change at any time (load shapes do)."""

    IDLE_POLL_S = 0.1  # how often a zero rate is looked at again

    def __init__(
        self,
        rate: float,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._rng = random.Random(seed)
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None
        self.rate = rate

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        if value <= 0:
            self._next = None  # paused: arrivals restart from the moment the rate returns
        self._rate = value

    def wait(self) -> float:
        """Block until the next arrival; returns its scheduled time (on `clock`). The claim
        happens before any sleep, so cooperative users never claim the same arrival."""
        while self.rate <= 0:
            self._sleep(self.IDLE_POLL_S)
        now = self._clock()
        if self._next is None:
            self._next = now
        self._next += self._rng.expovariate(self.rate)
        arrival = self._next
        if arrival > now:
            self._sleep(arrival - now)
        return arrival


SHAPES = ("ramp", "step", "spike", "soak")


def level(shape: str, progress: float, steps: int = 4) -> float:
    """Fraction of the peak at `progress` (0..1) through the run, for loadtest/shape.py."""
    if shape == "ramp":
        return progress
    if shape == "step":
        return min(math.floor(progress * steps) + 1, steps) / steps
    if shape == "spike":
        return 1.0 if 0.4 <= progress < 0.6 else 0.25
    return 1.0
