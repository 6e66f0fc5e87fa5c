"""What the ASGI middleware (serve_app.access, serve_app.limits, serve_app.request_log)
share: the route a request is for, and an answer sent before any route runs."""

from __future__ import annotations

import json

from starlette.types import Scope, Send

from serve_app.protocol import APIError


def route_path(scope: Scope) -> str:
    """The path within the app: Serve mounts it under its route prefix (`root_path`)."""
    return scope["path"].removeprefix(scope.get("root_path", "")) or "/"


async def send_error(scope: Scope, send: Send, error: APIError) -> None:
    """An OpenAI-shaped error answered straight from ASGI middleware; the request log and
    the metrics see its code."""
    scope.setdefault("state", {})["error"] = error.outcome
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
