"""How much load, and when. Open loop: one Poisson arrival process shared by every user, so
the rate, not the number of users, sets the load (Locust users are closed-loop on their own);
users are the concurrency cap, and an arrival that waits for a free user is sent late (the
sample keeps its scheduled time). Shapes: the fraction of the peak load over a run.

Kept free of Locust imports (Locust monkey-patches the process that imports it)."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager


class PoissonPacer:
    """Arrivals at `rate` per second with exponential gaps, drawn one at a time by whichever
    user waits first, so no one holds an arrival drawn at a stale rate. `rate` may change at
    any time (load shapes do): a pending gap is redrawn from the change, which is exact for a
    Poisson process (memoryless). Arrivals nobody was free to take stay due, and are sent late."""

    POLL_S = 0.1  # how often a sleeping waiter looks at the rate again

    def __init__(
        self,
        rate: float,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        lock: AbstractContextManager[object] | None = None,
    ) -> None:
        self._rng = random.Random(seed)
        self._clock = clock
        self._sleep = sleep
        self._lock = lock or threading.Lock()  # under gevent: a gevent lock
        self._base: float | None = None  # the last arrival, or when the rate last changed
        self._version = 0
        self.rate = rate

    @property
    def rate(self) -> float:
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        self._rate = value
        self._version += 1
        if value <= 0:
            self._base = None  # paused: arrivals restart when the rate returns

    def wait(self) -> float:
        """Block until the next arrival; returns its scheduled time (on `clock`)."""
        with self._lock:
            while True:
                if self.rate <= 0:
                    self._sleep(self.POLL_S)
                    continue
                if self._base is None:
                    self._base = self._clock()
                version = self._version
                arrival = self._base + self._rng.expovariate(self.rate)
                while version == self._version and (now := self._clock()) < arrival:
                    self._sleep(min(arrival - now, self.POLL_S))
                if version == self._version:
                    self._base = arrival
                    return arrival
                self._base = max(self._base, self._clock())  # the rate changed mid-gap


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
