"""What one request may ask for (`limits` in the serve config): the body's size, refused with
413 before it is parsed, and the request's shape (messages or prompts, n, max_tokens, stop
sequences, tools), refused with 400 naming the limit and the field to fix."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.asgi import send_error
from serve_app.config import RequestLimits
from serve_app.protocol import APIError, ChatCompletionRequest, GenerationRequest

# A request's counted sizes (GenerationRequest.sizes) -> the limit that bounds each.
LIMIT_NAMES = {
    "messages": "max_messages",
    "prompt": "max_prompts",
    "n": "max_n",
    "stop": "max_stop_sequences",
    "tools": "max_tools",
}


def check_request(
    body: GenerationRequest, limits: RequestLimits, key_max_tokens: int | None
) -> None:
    """Refuse a request past any limit; `key_max_tokens` is the caller's own cap, if any."""
    for param, value in body.sizes().items():
        name = LIMIT_NAMES[param]
        limit = getattr(limits, name)
        if value > limit:
            raise APIError(
                400,
                f"{param}: {value} is over the limit of {limit} (limits.{name})",
                param=param,
                code="limit_exceeded",
            )
    requested = body.requested_max_tokens
    for cap, where in ((limits.max_tokens, "limits.max_tokens"), (key_max_tokens, "this API key")):
        if requested is not None and cap is not None and requested > cap:
            raise APIError(
                400,
                f"max_tokens: {requested} is over the limit of {cap} ({where})",
                param="max_tokens",
                code="limit_exceeded",
            )
    if isinstance(body, ChatCompletionRequest) and body.tools:
        size = len(json.dumps([tool.model_dump(exclude_none=True) for tool in body.tools]))
        if size > limits.max_tools_bytes:
            raise APIError(
                400,
                f"tools: the tool schemas take {size} bytes of JSON, over the limit of "
                f"{limits.max_tools_bytes} (limits.max_tools_bytes)",
                param="tools",
                code="limit_exceeded",
            )


def max_tokens_cap(limits: RequestLimits, key_max_tokens: int | None) -> int | None:
    """The smallest cap in force: the default max_tokens of a request that sets none."""
    caps = [cap for cap in (limits.max_tokens, key_max_tokens) if cap is not None]
    return min(caps) if caps else None


class BodySizeLimit:
    """ASGI middleware: 413 for a body over the app's `state.limits.max_body_bytes`, from
    Content-Length when sent, else counted while reading, before anything parses it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = scope["app"].state.limits.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await send_error(scope, send, _too_large(f"{int(declared)} bytes", limit))
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > limit:
                await send_error(scope, send, _too_large(f"over {limit} bytes", limit))
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def _too_large(size: str, limit: int) -> APIError:
    return APIError(
        413,
        f"request body: {size}, over the limit of {limit} (limits.max_body_bytes)",
        code="request_too_large",
    )
