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
    """Arrivals at `rate` per second, drawn one at a time by whichever user waits first, so no
    one holds an arrival drawn at a stale rate. `rate` may change at any time (load shapes do):
    each gap is an Exp(1) amount of rate x time, spent at whatever the rate is while it passes
    (time rescaling, exact for a rate that changes at most once per `POLL_S`). Arrivals no user
    was free to take stay due, and are sent late."""

    POLL_S = 0.1  # how often a waiting user looks at the rate again

    def __init__(
        self,
        rate: float,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        lock: AbstractContextManager[object] | None = None,
    ) -> None:
        self.rate = rate
        self._rng = random.Random(seed)
        self._clock = clock
        self._sleep = sleep
        self._lock = lock or threading.Lock()  # under gevent: a gevent lock
        self._at: float | None = None  # the process is generated up to this time

    def wait(self) -> float:
        """Block until the next arrival; returns its scheduled time (on `clock`)."""
        with self._lock:
            need = self._rng.expovariate(1.0)  # rate x seconds until the next arrival
            while True:
                now = self._clock()
                if self._at is None:
                    self._at = now
                rate = self.rate
                if rate > 0:
                    due = self._at + need / rate
                    if due <= now:
                        self._at = due
                        return due
                    need -= rate * (now - self._at)
                self._at = now
                self._sleep(min(need / rate, self.POLL_S) if rate > 0 else self.POLL_S)


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
