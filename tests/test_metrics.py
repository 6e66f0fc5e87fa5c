"""The metrics' pure parts: the rejection causes and the histogram buckets."""

from __future__ import annotations

import pytest

from serve_app.metrics import (
    E2E_BUCKETS,
    QUEUE_BUCKETS,
    TOKEN_BUCKETS,
    TTFT_BUCKETS,
    rejection_cause,
)


@pytest.mark.parametrize(
    ("status", "outcome", "cause"),
    [
        (200, "ok", None),
        (401, "missing_api_key", "auth"),
        (401, "invalid_api_key", "auth"),
        (429, "rate_limit_exceeded", "rate_limit"),
        (503, "overloaded", "overload"),
        (503, "engine_unavailable", "unavailable"),
        (504, "timeout", "timeout"),
        (200, "timeout", "timeout"),  # a stream cut by the timeout: error event, status 200
        (499, "client_gone", "disconnect"),
        (200, "client_gone", "disconnect"),  # the caller left mid-stream
        (400, "limit_exceeded", "validation"),
        (404, "model_not_found", "validation"),
        (413, "request_too_large", "validation"),
        (400, "context_length_exceeded", "validation"),
        (405, "http_405", "validation"),
        (500, "crashed", "internal"),
        (500, "internal_error", "internal"),
    ],
)
def test_every_refusal_has_its_cause(status: int, outcome: str, cause: str | None) -> None:
    assert rejection_cause(status, outcome) == cause


@pytest.mark.parametrize("buckets", [TTFT_BUCKETS, TOKEN_BUCKETS, E2E_BUCKETS, QUEUE_BUCKETS])
def test_buckets_increase(buckets: list[float]) -> None:
    assert buckets == sorted(set(buckets)) and buckets[0] > 0


def test_the_interactive_slo_limits_are_bucket_edges() -> None:
    # loadtest/slo/interactive.yaml: TTFT 450 ms, TPOT 40 ms; a quantile between edges is
    # interpolated, so the SLO line must be an edge to read "share of requests within it".
    assert 0.45 in TTFT_BUCKETS and 0.04 in TOKEN_BUCKETS
    assert E2E_BUCKETS[-1] >= 900 and QUEUE_BUCKETS[-1] >= 900  # the request timeout


def test_vllm_metrics_carry_the_node_group_however_vllm_labels_them() -> None:
    from serve_app.engine_metrics import engine_stat_logger

    logger = engine_stat_logger("h100-tp4")
    gauge = logger._gauge_cls("vllm:test_gauge", "", labelnames=["model_name", "engine"])
    assert gauge.metric._tag_keys == ("model_name", "engine", "ReplicaId", "node_group")
    expected = {"model_name": "m", "engine": "0", "ReplicaId": "", "node_group": "h100-tp4"}
    assert gauge.labels(model_name="m", engine="0")._tags == expected  # by name
    assert gauge.labels("m", "0")._tags == expected  # by position
    counter = logger._counter_cls("vllm:test_counter", "")  # no labels of its own
    assert counter._tags == {"ReplicaId": "", "node_group": "h100-tp4"}
    histogram = logger._histogram_cls("vllm:test_seconds", "", ["model_name"], [0.1, 1.0])
    assert histogram.labels("m")._tags["node_group"] == "h100-tp4"
