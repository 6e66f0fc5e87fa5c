"""Tracing end to end: an application with `tracing.otlp_endpoint` pointing at an OTLP/HTTP
receiver in this test; a request's router span must join the caller's trace and carry its
X-Request-Id, and vLLM's span in the engine replica must be the router span's child.

It deploys a second application with its own engine (vLLM reads the endpoint at start), next
to the session's stack, and removes it afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from loadtest.local_stack import cpu_app_args

pytestmark = pytest.mark.e2e

APP = "traced"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP traces endpoint that keeps every span it is sent, as plain dicts."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ReceiveSpans)
        self.spans: list[dict] = []


class ReceiveSpans(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.server.spans.append(  # type: ignore[attr-defined]
                        {
                            "service": resource.get("service.name"),
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "attributes": {a.key: _value(a.value) for a in span.attributes},
                        }
                    )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _value(value) -> object:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


@pytest.fixture(scope="module")
def traced(stack) -> Iterator[tuple[str, Receiver]]:
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    args = cpu_app_args()
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces"
    args["tracing"] = {"otlp_endpoint": endpoint}
    # The engine's batch exporter sends every 0.1 s instead of 5 s: the test waits less.
    args["node_groups"][0]["env"]["OTEL_BSP_SCHEDULE_DELAY"] = "100"
    try:
        with stack.app(APP, args) as url:
            yield url, receiver
    finally:
        receiver.shutdown()


def spans_named(receiver: Receiver, name: str, trace_id: str, within_s: float = 30) -> list[dict]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        found = [s for s in receiver.spans if s["name"] == name and s["trace_id"] == trace_id]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {name!r} span in trace {trace_id}: {receiver.spans}")


def test_the_router_span_joins_the_callers_trace_and_vllms_span_is_its_child(traced):
    url, receiver = traced
    response = httpx.post(
        f"{url}/v1/chat/completions",
        json={
            "model": "athene-v2-chat",
            "messages": [{"role": "user", "content": "What is 6 times 7?"}],
            "max_tokens": 5,
            "stream": True,
        },
        headers={
            "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
            "X-Request-Id": "trace-test-1",
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "trace-test-1"
    (router,) = spans_named(receiver, "POST /v1/chat/completions", CALLER_TRACE)
    assert router["service"] == "athene-router"
    assert router["parent_span_id"] == CALLER_SPAN
    attributes = router["attributes"]
    assert attributes["athene.request_id"] == "trace-test-1"
    assert attributes["http.response.status_code"] == 200
    assert attributes["athene.node_group"] == "cpu"
    assert attributes["athene.prompt_policy"] == "step-by-step"
    assert attributes["gen_ai.usage.output_tokens"] == 5
    (engine,) = spans_named(receiver, "llm_request", CALLER_TRACE)
    assert engine["service"] == "athene-engine-cpu"
    assert engine["parent_span_id"] == router["span_id"]
    # vLLM's request id is the router's response id (vLLM may add a suffix).
    assert engine["attributes"]["gen_ai.request.id"].startswith(attributes["gen_ai.response.id"])
    assert engine["attributes"]["gen_ai.usage.completion_tokens"] == 5


def test_a_request_without_a_trace_starts_one_and_refusals_are_traced_too(traced):
    url, receiver = traced
    refused = httpx.post(f"{url}/v1/chat/completions", json={"model": "gpt-4"}, timeout=30)
    assert refused.status_code in (400, 404)
    request_id = refused.headers["x-request-id"]
    deadline = time.monotonic() + 30
    while not [s for s in receiver.spans if s["attributes"].get("athene.request_id") == request_id]:
        assert time.monotonic() < deadline, "the refused request has no span"
        time.sleep(0.2)
    (span,) = [s for s in receiver.spans if s["attributes"].get("athene.request_id") == request_id]
    assert span["trace_id"] != CALLER_TRACE and span["parent_span_id"] == ""
    assert span["attributes"]["http.response.status_code"] == refused.status_code
