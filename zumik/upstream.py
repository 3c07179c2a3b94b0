"""Sending one request line to its provider: routing choice, limits, retries, the echo model.

Retries: connection errors, timeouts, non-JSON 2xx bodies, 408, 429, 500, 502, 503, 504, with
exponential backoff and jitter, honouring ``retry-after-ms`` and ``Retry-After``; other statuses
are final at once. ``sleep`` is injectable so tests check backoff without waiting.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from zumik import echo
from zumik.batchfile import CHAT, RequestBody, strict_decode
from zumik.limits import ProviderLimits
from zumik.metrics import Metrics
from zumik.routing import ProviderConfig, Route, Target

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
BACKOFF_BASE, BACKOFF_MAX, RETRY_AFTER_MAX = 0.5, 30.0, 300.0

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


def retry_delay(headers: Any, attempt: int, rng: random.Random,
                base: float = BACKOFF_BASE) -> float:
    """Seconds to wait before attempt ``attempt + 1``: the provider's word, else backoff."""
    if headers is not None:
        raw_ms = headers.get("retry-after-ms")
        if raw_ms:
            try:
                return min(max(float(raw_ms) / 1000.0, 0.0), RETRY_AFTER_MAX)
            except ValueError:
                pass
        raw = headers.get("retry-after")
        if raw:
            try:
                return min(max(float(raw), 0.0), RETRY_AFTER_MAX)
            except ValueError:
                when = email.utils.parsedate_to_datetime(raw) if raw else None
                if when is not None:
                    return min(max(when.timestamp() - time.time(), 0.0), RETRY_AFTER_MAX)
    backoff = min(base * 2 ** (attempt - 1), BACKOFF_MAX)
    return backoff * (0.75 + rng.random() * 0.5)


def _error_message(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
        if isinstance(doc, dict):
            inner = doc.get("error", doc)
            if isinstance(inner, dict) and inner.get("message"):
                return str(inner["message"])[:500]
            if isinstance(inner, str):
                return inner[:500]
    except ValueError:
        pass
    return raw[:200].decode("utf-8", "replace")


class Upstream:
    """The executor's HTTP side: one aiohttp session, per-provider limits."""

    def __init__(self, session: aiohttp.ClientSession, sleep: Sleep = asyncio.sleep,
                 rng: random.Random | None = None, metrics: Metrics | None = None) -> None:
        self.session = session
        self.metrics = metrics or Metrics()
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.limits: dict[str, ProviderLimits] = {}
        self._requests: dict[tuple[str, str], _RequestShape] = {}
        self.retries = 0

    def limits_for(self, provider: ProviderConfig) -> ProviderLimits:
        limits = self.limits.get(provider.name)
        if limits is None:
            limits = self.limits[provider.name] = ProviderLimits(provider)
        return limits

    def order(self, route: Route) -> list[Target]:
        """Targets in the order to try them, by the route's strategy."""
        targets = list(route.targets)
        if route.strategy == "cheapest":
            targets.sort(key=lambda t: t.provider.price)
        elif route.strategy == "spread":
            targets.sort(key=lambda t: -self.limits_for(t.provider).free_share())
        return targets

    async def send(self, route: Route, body: RequestBody, endpoint: str = CHAT) -> Outcome:
        """Send ``body`` to ``endpoint`` (e.g. ``/v1/embeddings``) along ``route``; fall
        through targets while failures are retryable."""
        if len(route.targets) == 1:
            return await self._send_target(route.targets[0], body, endpoint)
        outcome = Outcome(ok=False, error_code="no_route", error_message="no target")
        for target in self.order(route):
            outcome = await self._send_target(target, body, endpoint)
            if outcome.ok or not outcome.retryable:
                return outcome
        return outcome

    async def _send_target(self, target: Target, body: RequestBody, endpoint: str) -> Outcome:
        provider = target.provider
        if provider.is_echo:
            answer = echo.answer(endpoint, body.obj)
            return Outcome(ok=True, body=json.dumps(answer, separators=(",", ":")).encode(),
                           usage=answer.get("usage"), status_code=200, attempts=1,
                           provider=provider.name)
        payload = body.payload_for(target.model)
        limits = self.limits_for(provider)
        request = self._requests.get((provider.name, endpoint))
        if request is None:
            request = self._requests[provider.name, endpoint] = _RequestShape(provider, endpoint)
        outcome = Outcome(ok=False)
        for attempt in range(1, provider.max_attempts + 1):
            estimate, ticket = await limits.acquire(body)
            started = time.perf_counter()
            try:
                outcome, response_headers = await self._attempt(request, payload)
            finally:
                limits.release()
            self.metrics.observe("zumik_upstream_latency_seconds", request.labels,
                                 time.perf_counter() - started)
            if outcome.ok:
                limits.on_success(estimate, outcome.usage, response_headers)
            else:
                limits.on_failure(outcome.status_code, response_headers, ticket)
            outcome.attempts = attempt
            outcome.provider = provider.name
            if outcome.ok or not outcome.retryable:
                break
            if attempt < provider.max_attempts:
                self.retries += 1
                self.metrics.inc("zumik_retries_total", request.labels)
                await self.sleep(retry_delay(response_headers, attempt, self.rng,
                                             provider.retry_backoff))
        if not outcome.ok:
            plural = "s" if outcome.attempts != 1 else ""
            outcome.error_message = (f"{outcome.error_message} (provider {provider.name!r}, "
                                     f"{outcome.attempts} attempt{plural})")
        return outcome

    async def _attempt(self, request: _RequestShape, payload: bytes) -> tuple[Outcome, Any]:
        try:
            async with self.session.post(request.url, data=payload, headers=request.headers,
                                         timeout=request.timeout) as response:
                raw = await response.read()
                status = response.status
                response_headers = response.headers
        except TimeoutError:
            return Outcome(ok=False, error_code="timeout", retryable=True,
                           error_message=f"no answer within {request.timeout.total:g} s"), None
        except aiohttp.ClientError as exc:
            return Outcome(ok=False, error_code="connection_error", retryable=True,
                           error_message=f"connection failed: {exc or type(exc).__name__}"
                           ), None
        request_id = response_headers.get("x-request-id")
        if 200 <= status < 300:
            try:
                answer = strict_decode(_ANSWER, raw)  # only ``usage`` is built; an object
            except (msgspec.DecodeError, UnicodeDecodeError):
                return Outcome(ok=False, error_code="invalid_upstream_response",
                               retryable=True, status_code=status,
                               error_message=f"HTTP {status} with a body that is not a "
                               "JSON object"), response_headers
            if b"\n" in raw or b"\r" in raw:  # an output line must be one line
                raw = msgspec.json.encode(msgspec.json.decode(raw))
            return Outcome(ok=True, body=raw.strip(), usage=answer.usage, status_code=status,
                           request_id=request_id), response_headers
        return Outcome(ok=False, error_code="upstream_error", status_code=status,
                       body=_json_object(raw), request_id=request_id,
                       retryable=status in RETRY_STATUSES,
                       error_message=f"provider answered HTTP {status}: "
                       f"{_error_message(raw)}"), response_headers


_OBJECT = msgspec.json.Decoder(dict)


def _json_object(raw: bytes) -> bytes | None:
    """``raw`` as one line of compact JSON when it is a JSON object (a provider's error body),
    else None (the answer could not be read: it becomes an ``error``, not a ``response``)."""
    try:
        return msgspec.json.encode(strict_decode(_OBJECT, raw))
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


class _RequestShape:
    """What every request to one provider and endpoint shares: URL, headers, timeout."""

    def __init__(self, provider: ProviderConfig, endpoint: str) -> None:
        # base_url ends in /v1 (or the provider's own prefix); endpoint is /v1/<path>
        self.url = provider.base_url + endpoint.removeprefix("/v1")
        self.headers = {"Content-Type": "application/json", **provider.headers}
        if provider.api_key:
            self.headers["Authorization"] = f"Bearer {provider.api_key}"
        self.timeout = aiohttp.ClientTimeout(total=provider.timeout)
        self.labels = (("provider", provider.name),)
