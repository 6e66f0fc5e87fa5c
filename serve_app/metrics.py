"""The router's and the engines' metrics, through Ray Serve's metrics API: Ray exports them
on every node's metrics port (`ray_` prefix, counters with `_total`), next to Serve's own.

The router records one request at a time when its answer is done (serve_app.request_log
calls `RouterMetrics.record`), so a metric can never disagree with the request log line.
Serve adds `deployment`, `replica` and `application` tags; the router adds the node group.
The engine replicas export vLLM's own metrics (running/waiting requests, KV-cache usage,
prefix-cache hits, engine TTFT/TPOT) with a `node_group` tag (`engine_stat_logger`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.serve.metrics import Counter, Histogram

# Seconds. LLM latencies run from milliseconds (a token) to many minutes (a long answer or a
# cold start): each family covers its own range, with the interactive SLO's limits (TTFT
# 450 ms, TPOT 40 ms: loadtest/slo/interactive.yaml) as bucket edges.
TTFT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 1, 2, 5, 10, 30, 60, 120, 300, 900]
TOKEN_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5]
E2E_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1800]
QUEUE_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900]

# The request log's outcome (an OpenAI error code, or what happened) -> rejection cause.
REJECTION_CAUSES = {
    "missing_api_key": "auth",
    "invalid_api_key": "auth",
    "rate_limit_exceeded": "rate_limit",
    "overloaded": "overload",
    "engine_unavailable": "unavailable",
    "timeout": "timeout",
    "client_gone": "disconnect",
    "crashed": "internal",
}
NONE = "none"  # a tag's value when the request never got that far (Prometheus drops "")


def rejection_cause(status: int, outcome: str) -> str | None:
    """Why a request was not answered in full, or None when it was."""
    if outcome in REJECTION_CAUSES:
        return REJECTION_CAUSES[outcome]
    if 400 <= status < 500:
        return "validation"  # malformed, over a limit, unknown model or route, too long
    if status >= 500 or outcome != "ok":
        return "internal"
    return None


class RouterMetrics:
    """Created in the router replica (Serve's tags need its context), recorded per request."""

    def __init__(self, routes: frozenset[str]) -> None:
        self.routes = routes  # the app's own paths; any other is "other", to bound the series
        by_group = ("model", "node_group")
        self.requests = Counter(
            "athene_requests",
            "Requests answered, by route, model, node group and HTTP status.",
            tag_keys=("route", "model", "node_group", "status"),
        )
        self.rejections = Counter(
            "athene_rejections",
            "Requests not answered in full, by cause: auth, rate_limit, overload, "
            "unavailable, validation, timeout, disconnect, internal.",
            tag_keys=("route", "cause"),
        )
        self.ttft = Histogram(
            "athene_time_to_first_token_seconds",
            "Streamed requests: from arrival at the router to the first token sent.",
            boundaries=TTFT_BUCKETS,
            tag_keys=by_group,
        )
        self.inter_token = Histogram(
            "athene_inter_token_latency_seconds",
            "Streamed requests: mean time between output tokens after the first (TPOT).",
            boundaries=TOKEN_BUCKETS,
            tag_keys=by_group,
        )
        self.e2e = Histogram(
            "athene_e2e_latency_seconds",
            "Chat requests: from arrival at the router to the last byte of the answer.",
            boundaries=E2E_BUCKETS,
            tag_keys=(*by_group, "status"),
        )
        self.prompt_tokens = Counter(
            "athene_prompt_tokens", "Prompt tokens (after the template).", tag_keys=by_group
        )
        self.completion_tokens = Counter(
            "athene_completion_tokens", "Output tokens sent.", tag_keys=by_group
        )
        self.step_by_step = Counter(
            "athene_step_by_step_decisions",
            "The step-by-step policy's decisions: applied or not, and why.",
            tag_keys=("applied", "reason"),
        )

    def record(self, route: str, status: int, outcome: str, state: Mapping[str, Any]) -> None:
        """One finished request: its request-log fields (`state`), status and outcome."""
        route = route if route in self.routes else "other"
        group = {"model": state.get("model") or NONE, "node_group": state.get("node_group") or NONE}
        self.requests.inc(tags={"route": route, **group, "status": str(status)})
        cause = rejection_cause(status, outcome)
        if cause:
            self.rejections.inc(tags={"route": route, "cause": cause})
        if "prompt_policy_reason" in state:
            self.step_by_step.inc(
                tags={
                    "applied": "yes" if state["prompt_policy"] == "step-by-step" else "no",
                    "reason": state["prompt_policy_reason"],
                }
            )
        if "node_group" not in state:
            return  # refused before reaching an engine: no latency or tokens to count
        self.e2e.observe(state["latency_s"], tags={**group, "status": str(status)})
        if state.get("prompt_tokens"):
            self.prompt_tokens.inc(state["prompt_tokens"], tags=group)
        tokens = state.get("completion_tokens") or 0
        if tokens:
            self.completion_tokens.inc(tokens, tags=group)
        if state.get("stream") and "first_token_s" in state:
            self.ttft.observe(state["first_token_s"], tags=group)
            per_choice = tokens / max(state.get("choices", 1), 1)
            if per_choice > 1:
                decode_s = state["last_token_s"] - state["first_token_s"]
                self.inter_token.observe(decode_s / (per_choice - 1), tags=group)
