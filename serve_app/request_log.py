"""One structured log line per request, its metrics (serve_app.metrics) and its trace span
(serve_app.tracing), when its answer is done.

ASGI middleware, outermost, so refusals by the other middleware (401, 413) get their line
too. The handler fills `request.state` as it learns things (model, node group, tokens, the
policy decision) and `count_chunks` adds the engine's side; the line carries the key's id,
never the key, and never the prompt unless `router.log_prompts` is on (for debugging). With
the serve config's `logging_config: {encoding: JSON}` Serve writes it as one JSON object,
next to the request id Serve adds (the caller's `X-Request-Id`, or a new one).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.asgi import route_path
from serve_app.engine_api import EngineChunk
from serve_app.protocol import APIError

logger = logging.getLogger("ray.serve")

# Filled by the handler and count_chunks, read when the answer is done (`error`, set by them
# too, becomes the line's outcome).
FIELDS = (
    "model",
    "node_group",
    "prompt_policy",
    "prompt_policy_reason",
    "prompt_tokens",
    "completion_tokens",
    "ttft_ms",
    "response_id",
    "prompt",
)


class RequestLog:
    def __init__(self, app: ASGIApp, quiet_paths: frozenset[str]) -> None:
        self.app = app
        self.quiet_paths = quiet_paths  # probes: polled every few seconds, not worth a line

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope) if scope["type"] == "http" else ""
        if scope["type"] != "http" or path in self.quiet_paths:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        state["started"] = started
        status = 0
        tracing = getattr(scope["app"].state, "tracing", None)
        span = None
        if tracing is not None:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            span = tracing.start(scope["method"], path, headers)
            state["trace_headers"] = tracing.headers_for(span)

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        outcome = "ok"
        try:
            await self.app(scope, receive, watched)
        except asyncio.CancelledError:
            outcome = "client_gone"  # Serve cancels the request when the caller disconnects
            raise
        except Exception:
            outcome = "crashed"
            raise
        finally:
            state["latency_s"] = time.perf_counter() - started
            key = state.get("api_key")
            fields: dict[str, Any] = {
                "method": scope["method"],
                "path": path,
                "status": status or (499 if outcome == "client_gone" else 500),
                "outcome": state.get("error") or outcome,
                "key_id": key.id if key else None,
                "latency_ms": round(state["latency_s"] * 1000, 1),
                **{name: state[name] for name in FIELDS if name in state},
            }
            logger.info("request done: %s %s", fields["status"], path, extra={"athene": fields})
            metrics = getattr(scope["app"].state, "metrics", None)
            if metrics is not None:  # set once the router replica has started
                # By route template ("/v1/models/{model:path}"), so the series stay bounded.
                route = getattr(scope.get("route"), "path", None) or path
                metrics.record(route, fields["status"], fields["outcome"], state)
            if span is not None:
                tracing.finish(span, fields["status"], fields["outcome"], fields)


async def count_chunks(
    chunks: AsyncIterator[EngineChunk], state: Any
) -> AsyncIterator[EngineChunk]:
    """The engine's chunks, unchanged; notes TTFT, output tokens and a mid-answer error."""
    state.completion_tokens = 0
    try:
        async for chunk in chunks:
            if chunk.num_tokens:
                since_start = time.perf_counter() - state.started
                if not state.completion_tokens:
                    state.first_token_s = since_start
                    state.ttft_ms = round(since_start * 1000, 1)
                state.last_token_s = since_start
            state.completion_tokens += chunk.num_tokens
            yield chunk
    except APIError as error:
        state.error = error.outcome
        raise
    except (asyncio.CancelledError, GeneratorExit):
        state.error = "client_gone"  # the answer stopped being read mid-way
        raise
