"""Who may call the API, and how much.

API keys are stored as SHA-256 digests only (a keys file or the `ATHENE_API_KEYS` variable,
which Kubernetes fills from a Secret), and a presented key is compared with every digest in
constant time. Each key may carry quotas (requests and tokens per minute, answered like
OpenAI's: 429 with `Retry-After` and `x-ratelimit-*` headers) and defaults of its own (the
step-by-step mode, a cap on `max_tokens`). With no key configured, auth is off.

    python -m serve_app.access new ID     a fresh key (shown once) and its keys-file entry
    python -m serve_app.access hash       the SHA-256 entry of a key read from stdin
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.asgi import route_path, send_error
from serve_app.config import AccessConfig, ConfigError
from serve_app.protocol import APIError

KEY_PREFIX = "sk-athene-"


class ApiKey(BaseModel):
    """One client's key, as the keys file holds it: never the key itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="Shown in logs.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the key")
    requests_per_minute: int | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0, description="prompt + max output tokens")
    step_by_step: Literal["off", "always", "auto"] | None = Field(
        None, description="this key's default step-by-step mode (requests may still override)"
    )
    max_tokens: int | None = Field(None, gt=0, description="cap on a request's max_tokens")


_KEY_LIST = TypeAdapter(list[ApiKey])


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The configured keys; empty means auth is off."""

    def __init__(self, keys: list[ApiKey]) -> None:
        for attribute in ("id", "sha256"):
            values = [getattr(key, attribute) for key in keys]
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ConfigError(f"API keys: repeated {attribute}: {', '.join(repeated)}")
        self.keys = keys
        self._digests = [(key, bytes.fromhex(key.sha256)) for key in keys]

    @classmethod
    def load(cls, config: AccessConfig) -> KeyRing:
        """Keys from `config.keys_file` and the `config.keys_env` variable (YAML lists)."""
        sources: list[tuple[str, str]] = []
        if config.keys_file:
            try:
                sources.append((config.keys_file, Path(config.keys_file).read_text()))
            except OSError as error:
                raise ConfigError(f"cannot read API keys file: {error}") from None
        if os.environ.get(config.keys_env, "").strip():
            sources.append((f"${config.keys_env}", os.environ[config.keys_env]))
        keys: list[ApiKey] = []
        for name, text in sources:
            try:
                keys += _KEY_LIST.validate_python(yaml.safe_load(text) or [])
            except (yaml.YAMLError, ValidationError) as error:
                # Never echo the input: a plain key pasted by mistake must not reach the log.
                problems = (
                    "; ".join(
                        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
                    )
                    if isinstance(error, ValidationError)
                    else "not YAML"
                )
                raise ConfigError(f"API keys in {name}: {problems}") from None
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def identify(self, presented: str) -> ApiKey | None:
        """The key whose digest matches; every digest is compared, whatever matches first."""
        candidate = hashlib.sha256(presented.encode()).digest()
        found = None
        for key, stored in self._digests:
            if hmac.compare_digest(candidate, stored):
                found = key
        return found


def authenticate(ring: KeyRing, authorization: str | None) -> ApiKey | None:
    """The caller's key from `Authorization: Bearer <key>`; 401 in OpenAI's words if absent
    or wrong. None when auth is off."""
    if not ring.enabled:
        return None
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise APIError(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            code="missing_api_key",
        )
    key = ring.identify(presented.strip())
    if key is None:
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
    return key


class RequireApiKey:
    """ASGI middleware: every route but `open_paths` needs a key of the app's
    `state.key_ring` (the docs and the OpenAPI schema too); the key lands in
    `request.state.api_key` (None when auth is off)."""

    def __init__(self, app: ASGIApp, open_paths: frozenset[str]) -> None:
        self.app = app
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and route_path(scope) not in self.open_paths:
            headers = dict(scope["headers"])
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            try:
                key = authenticate(scope["app"].state.key_ring, authorization)
            except APIError as error:
                await send_error(scope, send, error)
                return
            scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)


# --- quotas ------------------------------------------------------------------------------


@dataclass
class Bucket:
    """A token bucket that refills `per_minute` evenly over a minute, starting full."""

    per_minute: float
    level: float = field(init=False)
    updated: float = field(init=False, default=-math.inf)

    def __post_init__(self) -> None:
        self.level = self.per_minute

    def refill(self, now: float) -> None:
        self.level = min(self.per_minute, self.level + (now - self.updated) * self.per_minute / 60)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` fits (0: it fits now)."""
        return max(0.0, (amount - self.level) * 60 / self.per_minute)

    def until_full(self) -> float:
        return (self.per_minute - self.level) * 60 / self.per_minute


def go_duration(seconds: float) -> str:
    """OpenAI's x-ratelimit-reset-* format: 20ms, 1.5s, 6m0s."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 10) / 10:g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


class Quotas:
    """Per-key request and token buckets of one router replica. The configured per-minute
    limits are split evenly over `replicas` router replicas, which share the traffic."""

    def __init__(self, replicas: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self.replicas = replicas
        self.clock = clock
        self._buckets: dict[tuple[str, str], Bucket] = {}

    def _bucket(self, key: ApiKey, kind: Literal["requests", "tokens"]) -> Bucket | None:
        limit = key.requests_per_minute if kind == "requests" else key.tokens_per_minute
        if limit is None:
            return None
        bucket = self._buckets.get((key.id, kind))
        if bucket is None:
            bucket = self._buckets[(key.id, kind)] = Bucket(limit / self.replicas)
        bucket.refill(self.clock())
        return bucket

    def charge(self, key: ApiKey | None, kind: Literal["requests", "tokens"], amount: int) -> None:
        """Take `amount` from the key's bucket, or refuse with 429 and when to retry."""
        bucket = self._bucket(key, kind) if key else None
        if bucket is None:
            return
        if amount > bucket.per_minute:
            raise APIError(
                429,
                f"Request too large for key {key.id!r}: it needs {amount} {kind} and the limit "
                f"is {bucket.per_minute:.0f} {kind} per minute.",
                type=kind,
                code="rate_limit_exceeded",
                headers={**self.headers(key), "x-should-retry": "false"},
            )
        wait = bucket.wait_for(amount)
        if wait > 0:
            raise APIError(
                429,
                f"Rate limit reached for key {key.id!r} on {kind} per minute: limit "
                f"{bucket.per_minute:.0f}, used {bucket.per_minute - bucket.level:.0f}, "
                f"requested {amount}. Please try again in {go_duration(wait)}.",
                type=kind,
                code="rate_limit_exceeded",
                headers={**self.headers(key), "Retry-After": str(math.ceil(wait))},
            )
        bucket.level -= amount

    def headers(self, key: ApiKey | None) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers for the key's limits (none without limits)."""
        headers: dict[str, str] = {}
        for kind in ("requests", "tokens"):
            bucket = self._bucket(key, kind) if key else None
            if bucket is not None:
                headers[f"x-ratelimit-limit-{kind}"] = f"{bucket.per_minute:.0f}"
                headers[f"x-ratelimit-remaining-{kind}"] = f"{math.floor(bucket.level)}"
                headers[f"x-ratelimit-reset-{kind}"] = go_duration(bucket.until_full())
        return headers


def main(argv: list[str]) -> int:
    if argv[:1] == ["new"] and len(argv) == 2:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        print(f"key (shown once; give it to the client): {key}", file=sys.stderr)
        print(yaml.safe_dump([{"id": argv[1], "sha256": digest(key)}], sort_keys=False), end="")
        return 0
    if argv == ["hash"]:
        print(digest(sys.stdin.read().strip()))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
