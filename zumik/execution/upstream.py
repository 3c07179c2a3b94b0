"""Sending one request line to its provider: routing choice, limits, retries, the echo model.

Retries: connection errors, timeouts, non-JSON 2xx bodies, 408, 429, 500, 502, 503, 504, with
exponential backoff and jitter, honouring ``retry-after-ms`` and ``Retry-After``; other statuses
are final at once. A line's attempts count only its own failures: failures across lines mark
the provider down instead (``zumik.execution.availability``) and the line waits for it. Whatever a
provider sends ends in a decision, never an exception: headers are parsed defensively and no
more than ``max_response_bytes`` of an answer is read. ``sleep`` is injectable so tests check
backoff without waiting.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from zumik.core.lines import CHAT, strict_decode
from zumik.execution import echo
from zumik.execution.availability import ProviderHealth, is_provider_failure
from zumik.execution.limits import ProviderLimits
from zumik.execution.routing import ProviderConfig, Route, Target
from zumik.execution.wire import RequestBody
from zumik.ops.metrics import Metrics

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
BACKOFF_BASE, BACKOFF_MAX, RETRY_AFTER_MAX = 0.5, 30.0, 300.0
HEADER_CHARS = 64  # a Retry-After longer than this is nonsense: ignored
READ_CHUNK = 1 << 16

Sleep = Callable[[float], Awaitable[None]]


class _Answer(msgspec.Struct):
    usage: Any = None


_ANSWER = msgspec.json.Decoder(_Answer)


@dataclass
class Outcome:
    """How one line ended: an upstream body, or an error code and message."""

    ok: bool
    body: bytes | None = None  # compact JSON of the provider's answer (2xx or an HTTP error)
    usage: Any = None  # the answer's ``usage``
    status_code: int | None = None
    request_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 0
    retryable: bool = False
    provider: str = ""


def _seconds(value: float) -> float | None:
    return min(max(value, 0.0), RETRY_AFTER_MAX) if math.isfinite(value) else None


def retry_after(headers: Any) -> float | None:
    """The provider's own wait (``retry-after-ms``, ``Retry-After`` in seconds or as an HTTP
    date), capped; None when absent or unparseable (never an exception)."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms and len(raw_ms) <= HEADER_CHARS:
        try:
            seconds = _seconds(float(raw_ms) / 1000.0)
            if seconds is not None:
                return seconds
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw or len(raw) > HEADER_CHARS:
        return None
    try:
        return _seconds(float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
        return _seconds(when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def retry_delay(
    headers: Any, attempt: int, rng: random.Random, base: float = BACKOFF_BASE
) -> float:
    """Seconds to wait before attempt ``attempt + 1``: the provider's word, else backoff."""
    said = retry_after(headers)
    if said is not None:
        return said
    backoff = min(base * 2 ** (min(attempt, 32) - 1), BACKOFF_MAX)
    return backoff * (0.75 + rng.random() * 0.5)


class _ErrorBody(msgspec.Struct):
    error: Any = None
    message: Any = None


_ERROR_BODY = msgspec.json.Decoder(_ErrorBody)


def _error_message(raw: bytes) -> str:
    """The message of an error body, or its first bytes (any body: nesting, size, bytes)."""
    try:
        doc = _ERROR_BODY.decode(raw[: 1 << 20])
        inner = doc.error if doc.error is not None else doc.message
        if isinstance(inner, dict):
            inner = inner.get("message")
        if isinstance(inner, str) and inner:
            return inner[:500]
    except (msgspec.DecodeError, ValueError, RecursionError):
        pass
    return raw[:200].decode("utf-8", "replace")


@dataclass(frozen=True)
class HealthSettings:
    """How provider health is judged (from ``Settings``; see ``zumik.execution.availability``)."""

    down_failures: int = 5
    down_seconds: float = 2.0
    probe_max: float = 10.0
    max_response_bytes: int = 64 << 20


class Upstream:
    """The executor's HTTP side: one aiohttp session, per-provider limits and health."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        health: HealthSettings | None = None,
    ) -> None:
        self.session = session
        self.metrics = metrics or Metrics()
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.settings = health or HealthSettings()
        self.limits: dict[str, ProviderLimits] = {}
        self.health: dict[str, ProviderHealth] = {}
        self._requests: dict[tuple[str, str], _RequestShape] = {}

    def limits_for(self, provider: ProviderConfig) -> ProviderLimits:
        limits = self.limits.get(provider.name)
        if limits is None:
            limits = self.limits[provider.name] = ProviderLimits(provider)
        return limits

    def health_for(self, provider: ProviderConfig) -> ProviderHealth:
        health = self.health.get(provider.name)
        if health is None:
            config = self.settings
            health = self.health[provider.name] = ProviderHealth(
                provider.name,
                self.limits_for(provider),
                down_failures=config.down_failures,
                down_seconds=config.down_seconds,
                probe_max=config.probe_max,
            )
        return health

    def order(self, route: Route) -> list[Target]:
        """Targets in the order to try them, by the route's strategy; those whose provider is
        down go last (a line falls through to a live candidate meanwhile)."""
        targets = list(route.targets)
        if route.strategy == "cheapest":
            targets.sort(key=lambda t: t.provider.price)
        elif route.strategy == "spread":
            targets.sort(key=lambda t: -self.limits_for(t.provider).free_share())
        targets.sort(key=lambda t: not self.health_for(t.provider).up)
        return targets

    async def send(self, route: Route, body: RequestBody, endpoint: str = CHAT) -> Outcome:
        """Send ``body`` to ``endpoint`` (e.g. ``/v1/embeddings``) along ``route``; fall
        through targets while failures are retryable.

        Only the last candidate waits for its provider to come back; earlier ones hand the
        line on when their provider is down."""
        if len(route.targets) == 1:
            return await self._send_target(route.targets[0], body, endpoint, wait=True)
        outcome = Outcome(ok=False, error_code="no_route", error_message="no target")
        targets = self.order(route)
        for index, target in enumerate(targets):
            outcome = await self._send_target(
                target, body, endpoint, wait=index == len(targets) - 1
            )
            if outcome.ok or not outcome.retryable:
                return outcome
        return outcome

    async def _send_target(
        self, target: Target, body: RequestBody, endpoint: str, wait: bool
    ) -> Outcome:
        provider = target.provider
        if provider.is_echo:
            answer = echo.answer(endpoint, body.obj)
            return Outcome(
                ok=True,
                body=json.dumps(answer, separators=(",", ":")).encode(),
                usage=answer.get("usage"),
                status_code=200,
                attempts=1,
                provider=provider.name,
            )
        payload = body.payload_for(target.model)
        request = self._requests.get((provider.name, endpoint))
        if request is None:
            request = self._requests[provider.name, endpoint] = _RequestShape(
                provider, endpoint, self.settings.max_response_bytes, self.metrics
            )
            request.limits, request.health = self.limits_for(provider), self.health_for(provider)
        limits, health = request.limits, request.health
        outcome = Outcome(ok=False)
        sends = charged = 0  # attempts made; attempts that were the line's own failures
        while True:
            if not wait and not health.up:
                return Outcome(
                    ok=False,
                    error_code="provider_down",
                    retryable=True,
                    attempts=sends,
                    provider=provider.name,
                    error_message=f"provider {provider.name!r} is down",
                )
            probe = False if health.up else await health.admit()
            try:
                admitted = limits.try_acquire()  # the common case takes no await
                estimate, ticket = admitted or await limits.acquire(body)
                answers_before = health.answers  # answers from here on are others' luck
                started = time.perf_counter()
                try:
                    outcome, response_headers = await self._attempt(request, payload)
                finally:
                    limits.release()
            except BaseException:
                health.abandon(probe)
                raise
            latency = time.perf_counter() - started
            sends += 1
            request.latency.observe(latency)
            provider_failure = not outcome.ok and is_provider_failure(
                outcome.error_code, outcome.status_code
            )
            if provider_failure:
                if health.up and not probe:
                    limits.on_failure(outcome.status_code, response_headers, ticket)
                health.failed(probe, outcome.status_code, retry_after(response_headers))
            else:
                health.answered(probe, latency)
                if outcome.ok:
                    limits.on_success(estimate, outcome.usage, response_headers)
                else:
                    limits.on_failure(outcome.status_code, response_headers, ticket)
            # the line's own failure: not about the provider, or others got answers meanwhile;
            # with another candidate to fall through to, every attempt counts
            if not outcome.ok and (
                not wait or not provider_failure or health.answers != answers_before
            ):
                charged += 1
            outcome.attempts = sends
            outcome.provider = provider.name
            if outcome.ok or not outcome.retryable or charged >= provider.max_attempts:
                break
            health.retries += 1
            request.retries.inc()
            if health.up:
                await self.sleep(
                    retry_delay(
                        response_headers, max(charged, sends), self.rng, provider.retry_backoff
                    )
                )
        if not outcome.ok:
            plural = "s" if outcome.attempts != 1 else ""
            outcome.error_message = (
                f"{outcome.error_message} (provider {provider.name!r}, "
                f"{outcome.attempts} attempt{plural})"
            )
        return outcome

    async def _attempt(self, request: _RequestShape, payload: bytes) -> tuple[Outcome, Any]:
        try:
            async with self.session.post(
                request.url, data=payload, headers=request.headers, timeout=request.timeout
            ) as response:
                status = response.status
                response_headers = response.headers
                raw = await _read_capped(response, request.max_bytes)
        except TimeoutError:
            return Outcome(
                ok=False,
                error_code="timeout",
                retryable=True,
                error_message=f"no answer within {request.timeout.total:g} s",
            ), None
        except aiohttp.ClientError as exc:
            return Outcome(
                ok=False,
                error_code="connection_error",
                retryable=True,
                error_message=f"connection failed: {exc or type(exc).__name__}",
            ), None
        request_id = response_headers.get("x-request-id")
        if request_id is not None:  # any bytes: at most 200 chars, surrogates replaced
            request_id = request_id[:200].encode("utf-8", "replace").decode("utf-8")
        if raw is None:
            return Outcome(
                ok=False,
                error_code="response_too_large",
                status_code=status,
                request_id=request_id,
                error_message=f"HTTP {status} with a body over the "
                f"{request.max_bytes}-byte limit (ZUMIK_MAX_RESPONSE_BYTES); "
                "not read",
            ), response_headers
        if 200 <= status < 300:
            try:
                answer = strict_decode(_ANSWER, raw)  # only ``usage`` is built; an object
                if b"\n" in raw or b"\r" in raw:  # an output line must be one line
                    raw = msgspec.json.encode(msgspec.json.decode(raw))
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                return Outcome(
                    ok=False,
                    error_code="invalid_upstream_response",
                    retryable=True,
                    status_code=status,
                    error_message=f"HTTP {status} with a body that is not a JSON object",
                ), response_headers
            return Outcome(
                ok=True,
                body=raw.strip(),
                usage=answer.usage,
                status_code=status,
                request_id=request_id,
            ), response_headers
        return Outcome(
            ok=False,
            error_code="upstream_error",
            status_code=status,
            body=_json_object(raw),
            request_id=request_id,
            retryable=status in RETRY_STATUSES,
            error_message=f"provider answered HTTP {status}: {_error_message(raw)}",
        ), response_headers


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes | None:
    """The (decompressed) body, or None past ``max_bytes`` (a huge answer or a gzip bomb is
    never held whole: reading stops there)."""
    length = response.content_length
    if length is not None and "content-encoding" not in response.headers:
        if length > max_bytes:
            return None
        return await response.read()  # the common case: a small, plain answer
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await response.content.read(READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)


_OBJECT = msgspec.json.Decoder(dict)


def _json_object(raw: bytes) -> bytes | None:
    """``raw`` as one line of compact JSON when it is a JSON object (a provider's error body),
    else None (the answer could not be read: it becomes an ``error``, not a ``response``)."""
    try:
        return msgspec.json.encode(strict_decode(_OBJECT, raw))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


class _RequestShape:
    """What every request to one provider and endpoint shares: URL, headers, timeout, metric
    series, and the provider's limits and health (set by ``Upstream``)."""

    limits: ProviderLimits
    health: ProviderHealth

    def __init__(
        self, provider: ProviderConfig, endpoint: str, max_bytes: int, metrics: Metrics
    ) -> None:
        self.max_bytes = max_bytes
        # base_url ends in /v1 (or the provider's own prefix); endpoint is /v1/<path>
        self.url = provider.base_url + endpoint.removeprefix("/v1")
        self.headers = {"Content-Type": "application/json", **provider.headers}
        if provider.api_key:
            self.headers["Authorization"] = f"Bearer {provider.api_key}"
        self.timeout = aiohttp.ClientTimeout(total=provider.timeout)
        labels = (("provider", provider.name),)
        self.latency = metrics.histogram("zumik_upstream_latency_seconds", labels)
        self.retries = metrics.counter("zumik_retries_total", labels)
