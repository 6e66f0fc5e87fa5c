"""Service-level objectives: per-request targets that define goodput (vLLM's `--goodput`), and
run gates on the summary that make a load test pass or fail (exit code 1, naming the gate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field


class RequestTargets(BaseModel):
    """A request is good when it succeeded and meets every target given."""

    model_config = ConfigDict(extra="forbid")
    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    e2el_ms: float | None = Field(default=None, gt=0)

    def met_by(self, sample: Any) -> bool:
        return sample.ok and all(
            limit is None or (value is not None and value <= limit)
            for value, limit in (
                (sample.ttft_ms, self.ttft_ms),
                # TPOT is undefined for one-token answers: they meet it (as in vLLM).
                (sample.tpot_ms or 0.0, self.tpot_ms),
                (sample.e2e_ms, self.e2el_ms),
            )
        )


class SLO(BaseModel):
    """The gates of `loadtest/slo/*.yaml`; each may also come from a `--slo-*` option."""

    model_config = ConfigDict(extra="forbid")
    ttft_p95_ms: float | None = Field(default=None, gt=0)
    tpot_p95_ms: float | None = Field(default=None, gt=0)
    max_error_rate: float | None = Field(default=None, ge=0, le=1)
    # Good requests per second (summary key `request_goodput`), judged by `goodput` below.
    min_goodput: float | None = Field(default=None, ge=0)
    goodput: RequestTargets = Field(default_factory=RequestTargets)

    @classmethod
    def from_options(
        cls,
        path: str | None,
        ttft_p95_ms: float | None = None,
        tpot_p95_ms: float | None = None,
        max_error_rate: float | None = None,
        min_goodput: float | None = None,
    ) -> SLO:
        """The YAML file (if any), then the command-line values on top of it."""
        document = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
        overrides = {
            "ttft_p95_ms": ttft_p95_ms,
            "tpot_p95_ms": tpot_p95_ms,
            "max_error_rate": max_error_rate,
            "min_goodput": min_goodput,
        }
        document.update({key: value for key, value in overrides.items() if value is not None})
        slo = cls.model_validate(document)
        if slo.min_goodput is not None and slo.goodput == RequestTargets():
            # Goodput needs targets: default to the p95 gates, applied per request.
            slo.goodput = RequestTargets(ttft_ms=slo.ttft_p95_ms, tpot_ms=slo.tpot_p95_ms)
        return slo

    @property
    def configured(self) -> bool:
        return any(
            value is not None
            for value in (self.ttft_p95_ms, self.tpot_p95_ms, self.max_error_rate, self.min_goodput)
        )

    def evaluate(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Each gate's value, threshold and verdict, for `summary.json`'s `slo` entry. A gate
        whose figure is missing (no successful request) fails."""
        gates = []
        for name, key, op, threshold in (
            ("ttft_p95_ms", "p95_ttft_ms", "<=", self.ttft_p95_ms),
            ("tpot_p95_ms", "p95_tpot_ms", "<=", self.tpot_p95_ms),
            ("max_error_rate", "error_rate", "<=", self.max_error_rate),
            ("min_goodput", "request_goodput", ">=", self.min_goodput),
        ):
            if threshold is None:
                continue
            value = summary.get(key)
            passed = value is not None and (
                value <= threshold if op == "<=" else value >= threshold
            )
            gates.append(
                {
                    "name": name,
                    "metric": key,
                    "value": value,
                    "op": op,
                    "threshold": threshold,
                    "passed": passed,
                }
            )
        return {
            "passed": all(gate["passed"] for gate in gates) if gates else None,
            "gates": gates,
            "goodput": self.goodput.model_dump(),
        }


def describe_failures(verdict: dict[str, Any]) -> list[str]:
    """One line per broken gate, for the console."""
    return [
        f"SLO FAILED {gate['name']}: {gate['metric']} = {_fmt(gate['value'])}, "
        f"needs {gate['op']} {_fmt(gate['threshold'])}"
        for gate in verdict["gates"]
        if not gate["passed"]
    ]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"
