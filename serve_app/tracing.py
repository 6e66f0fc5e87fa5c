"""OpenTelemetry traces, when the config's `tracing.otlp_endpoint` is set: one span per
request in the router, the parent of vLLM's own `llm_request` span in the engine replica.

The router's span joins the caller's trace (a `traceparent` header), carries the request's
`X-Request-Id` (Serve's: the caller's, or a new one) and what the request log knows (model,
node group, policy, tokens, status), and travels to the engine as W3C trace headers inside
`EngineRequest`; vLLM (`otlp_traces_endpoint`, set from the same config by serve_app.app)
parents its span on them. Spans go out over OTLP/HTTP in batches, off the request path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from serve_app.config import TracingConfig

ROUTER_SERVICE = "athene-router"
PROPAGATOR = TraceContextTextMapPropagator()
# Request-log fields -> span attributes (OpenTelemetry's gen_ai conventions where they exist).
ATTRIBUTES = {
    "model": "gen_ai.request.model",
    "node_group": "athene.node_group",
    "prompt_policy": "athene.prompt_policy",
    "prompt_tokens": "gen_ai.usage.input_tokens",
    "completion_tokens": "gen_ai.usage.output_tokens",
    "response_id": "gen_ai.response.id",
}


class Tracing:
    def __init__(self, config: TracingConfig) -> None:
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": ROUTER_SERVICE}),
            # The caller's sampling decision wins; a new trace is kept at sample_ratio.
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=config.otlp_endpoint))
        )
        self.tracer = self.provider.get_tracer("serve_app.router")

    def start(self, method: str, path: str, headers: Mapping[str, str]) -> Span:
        parent = PROPAGATOR.extract(headers)
        span = self.tracer.start_span(
            f"{method} {path}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        )
        request_id = headers.get("x-request-id")
        if request_id:
            span.set_attribute("athene.request_id", request_id)
        return span

    @staticmethod
    def headers_for(span: Span) -> dict[str, str]:
        """W3C trace headers that make a span in another process this span's child."""
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier, context=set_span_in_context(span))
        return carrier

    @staticmethod
    def finish(span: Span, status: int, outcome: str, fields: Mapping[str, Any]) -> None:
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("athene.outcome", outcome)
        for name, attribute in ATTRIBUTES.items():
            if fields.get(name) is not None:
                span.set_attribute(attribute, fields[name])
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()
