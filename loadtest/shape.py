"""Load that moves over `--run-time`: load this file beside the locustfile to use it.

    locust -f loadtest/locustfile.py,loadtest/shape.py --shape spike -u 16 -t 5m [--request-rate 4]

`-u` is the peak: closed loop, the shape moves the user count; open loop (`--request-rate`),
it moves the Poisson rate and keeps `-u` users as the concurrency cap.

- ramp:  0 -> peak linearly: where latency bends is the knee of the throughput curve.
- step:  `--shape-steps` equal plateaus up to the peak: steady figures at each level.
- spike: a quarter of the peak, the peak for the middle fifth, then a quarter again: does
         the service absorb a burst (and scale), and does it recover?
- soak:  the peak for the whole run: leaks, drift, slow failures.
"""

from __future__ import annotations

from locust import LoadTestShape

from loadtest.load import level


class ChatLoadShape(LoadTestShape):
    use_common_options = True  # -u, -r and -t keep their meaning: peak, spawn rate, duration

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options
        if not options.run_time:
            raise SystemExit("loadtest/shape.py needs --run-time (-t)")
        elapsed = self.get_run_time()
        if elapsed >= options.run_time:
            return None
        fraction = level(options.shape, elapsed / options.run_time, options.shape_steps)
        peak_users = options.num_users or 1
        spawn_rate = options.spawn_rate or peak_users
        if options.request_rate > 0:  # open loop: the rate moves, users stay the cap
            run = getattr(self.runner.environment, "chat_run", None)
            if run is not None:  # the first tick comes before test_start creates the run
                run.pacer.rate = fraction * options.request_rate
            return peak_users, spawn_rate
        return max(1, round(fraction * peak_users)), spawn_rate
