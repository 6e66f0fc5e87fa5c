"""One load-test run's folder: raw samples and a once-a-second timeline as they happen, then
`summary.json` (with the SLO verdict) and `report.html` when the test stops."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest.load import PoissonPacer
from loadtest.slo import SLO
from loadtest.stream import Sample
from loadtest.summary import summarize

RUNS = Path(__file__).parent / "runs"


def default_run_dir() -> Path:
    return RUNS / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


class Run:
    """Everything the users share during one test: where samples go, the open-loop pacer
    (None when closed-loop), the number of requests in flight."""

    def __init__(
        self,
        folder: Path,
        slo: SLO,
        pacer: PoissonPacer | None,
        target: str,
        load: str,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.slo = slo
        self.pacer = pacer
        self.target = target
        self.load = load
        self.in_flight = 0
        self.cut_at_stop = 0  # requests still running when the test stopped: not in samples
        self.samples: list[Sample] = []
        self.started = time.time()
        self._samples_file = (folder / "samples.jsonl").open("w")
        self._timeline_file = (folder / "timeline.jsonl").open("w")

    def record(self, sample: Sample) -> None:
        # Users are greenlets and nothing here yields: no lock needed.
        self.samples.append(sample)
        self._samples_file.write(sample.to_json() + "\n")

    def tick(self, users: int) -> None:
        """One timeline point (the locustfile calls it every second)."""
        rate = self.pacer.rate if self.pacer else None
        point = {"t": time.time(), "users": users, "rate": rate, "in_flight": self.in_flight}
        self._timeline_file.write(json.dumps(point) + "\n")
        self._timeline_file.flush()

    def finish(self) -> dict[str, Any]:
        """Close the files, write `summary.json` and `report.html`; returns the summary."""
        from loadtest.report import write_report  # matplotlib loads only when needed

        duration = max(time.time() - self.started, 1e-9)
        self._samples_file.close()
        self._timeline_file.close()
        summary = summarize(self.samples, duration, self.slo.goodput)
        summary.update(
            cut_at_stop=self.cut_at_stop,
            target=self.target,
            load=self.load,
            date=datetime.fromtimestamp(self.started, UTC).isoformat(timespec="seconds"),
        )
        summary["slo"] = self.slo.evaluate(summary)
        (self.folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_report(self.folder)
        return summary
