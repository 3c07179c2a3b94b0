"""Per-provider limits inside one executor: concurrency, rpm and tpm buckets, and the
provider's own ``x-ratelimit-*`` headers.

Concurrency is the least of three: the delay-based limit learned from answers' time per token
(``zumik.execution.adaptive``, times this executor's share of it across workers and hosts,
``zumik.execution.provider_budget``), the loss-based backstop (AIMD: halves on a 429 or 503,
grows back by one per window of successes; like TCP it halves at most once per window, a
rejection of a request sent before the last decrease says nothing new), and
``max_concurrency``, a ceiling.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
from collections.abc import Callable
from typing import Any

from zumik.core.numbers import bounded_int, bounded_seconds
from zumik.execution.adaptive import DelayLimiter
from zumik.execution.routing import ProviderConfig
from zumik.execution.wire import RequestBody

BACKOFF_STATUSES = frozenset({429, 503})
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


RESET_MAX = 3600.0  # no reset header can block a provider for longer than this
RESET_CHARS = 64  # longer reset values are nonsense: ignored
_RATELIMIT_HEADERS = tuple(
    (f"x-ratelimit-remaining-{kind}", f"x-ratelimit-reset-{kind}")
    for kind in ("requests", "tokens")
)


def parse_reset(value: str | None) -> float | None:
    """OpenAI-style reset durations (``1s``, ``6m0s``, ``20ms``) or plain seconds, capped at
    ``RESET_MAX``; None for anything else (never an exception, whatever the provider sends)."""
    if not value or len(value) > RESET_CHARS:
        return None
    seconds = bounded_seconds(value, RESET_MAX)
    if seconds is not None:
        return seconds
    parts = _DURATION.findall(value)
    if not parts:
        return None
    return bounded_seconds(sum(float(number) * _UNITS[unit] for number, unit in parts), RESET_MAX)


def estimate_tokens(body: dict[str, Any]) -> int:
    """Tokens a request may use, before it is sent: prompt chars / 4 plus its output cap.

    The prompt is ``messages`` (chat), ``input`` (responses, embeddings, moderations) or
    ``prompt`` (completions)."""
    chars = 0
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            content = message.get("content")
            chars += len(content) if isinstance(content, str) else len(str(content))
    for name in ("input", "prompt"):
        value = body.get(name)
        if value is not None:
            chars += len(value) if isinstance(value, str) else len(str(value))
    cap = (
        body.get("max_completion_tokens")
        or body.get("max_output_tokens")
        or body.get("max_tokens")
        or 0
    )
    return chars // 4 + 1 + (cap if isinstance(cap, int) else 0)


class TokenBucket:
    """``per_minute`` units refilled continuously, with a burst of one second's worth, so no
    window of any length sees more than its share; may run into debt after corrections."""

    def __init__(self, per_minute: float, clock: Callable[[], float]) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.clock = clock
        self.stamp = clock()

    def wait_time(self, cost: float) -> float:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        cost = min(cost, self.capacity)
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate

    def adjust(self, delta: float) -> None:
        """Correct the bucket by what a request really cost beyond its estimate; the debt is
        bounded to one minute's worth, whatever an answer claims."""
        self.tokens = min(self.capacity, max(self.tokens - delta, -self.rate * 60.0))


class ProviderLimits:
    """The gate in front of one provider."""

    def __init__(
        self,
        provider: ProviderConfig,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.max = provider.max_concurrency
        self.limit = float(self.max)  # the loss-based (AIMD) backstop
        self.in_flight = 0
        self.clock = clock
        self.delay = (
            DelayLimiter(provider.max_added_latency, self.max, now=clock())
            if provider.max_added_latency
            else None
        )
        self.share = 1.0  # this executor's part of the provider's budget (provider_budget.py)
        self.cap = self.max  # the concurrency in force: see ``_refresh``
        self.on_change: Callable[[], None] | None = None
        self.sleep = sleep
        self.rpm = TokenBucket(provider.rpm, clock) if provider.rpm else None
        self.tpm = TokenBucket(provider.tpm, clock) if provider.tpm else None
        self.blocked_until = 0.0
        self.tickets = 0  # requests admitted so far
        self.decrease_ticket = 0  # requests admitted before the last decrease
        self.decreases = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._refresh()

    @property
    def learned(self) -> float | None:
        """The delay-based limit for the whole provider (None: not adaptive)."""
        return self.delay.current if self.delay is not None else None

    @property
    def demand(self) -> int:
        """Requests this executor has in flight or waiting for a slot."""
        return self.in_flight + len(self._waiters)

    def _refresh(self) -> None:
        """Recompute ``cap``; admit waiters if it rose; tell ``on_change``."""
        cap = min(self.limit, float(self.max))
        if self.delay is not None:
            cap = min(cap, self.delay.current * self.share)
        cap_int = max(1, int(cap))
        if cap_int != self.cap:
            self.cap = cap_int
            self._wake()
            if self.on_change is not None:
                self.on_change()

    def set_share(self, share: float) -> None:
        self.share = min(max(share, 0.0), 1.0)
        self._refresh()

    def server_queue(self, waiting: int) -> None:
        """The provider's own count of waiting requests (from its metrics)."""
        if self.delay is not None:
            self.delay.queue(waiting, self.tickets)
            self._refresh()

    def free_share(self) -> float:
        return (self.cap - self.in_flight) / self.cap

    def try_acquire(self) -> tuple[int, int] | None:
        """``acquire`` without waiting, when nothing would make it wait (a free slot, no rate
        limit, no block); else None."""
        if self.blocked_until and self.blocked_until <= self.clock():
            self.blocked_until = 0.0  # the provider's block has passed
        if self.rpm is None and self.tpm is None and not self.blocked_until and self._enter():
            self.tickets += 1
            return 0, self.tickets
        return None

    async def acquire(self, body: RequestBody) -> tuple[int, int]:
        """Wait for a concurrency slot and the rate buckets; return (token estimate, ticket).

        Pair every successful call with ``release``. The common case (a free slot, no rate
        limits) takes no await at all.
        """
        estimate = estimate_tokens(body.obj) if self.tpm else 0
        if not self._enter():
            await self._admit()
        if self.rpm is not None or self.tpm is not None or self.blocked_until:
            try:
                await self._pace(estimate)
            except BaseException:
                self.release()
                raise
        self.tickets += 1
        return estimate, self.tickets

    def release(self) -> None:
        self._leave()

    def _enter(self) -> bool:
        """Take a concurrency slot if one is free and nobody waits for one."""
        if self.in_flight < self.cap and not self._waiters:
            self.in_flight += 1
            return True
        return False

    async def _admit(self) -> None:
        """Wait in FIFO order for a concurrency slot (none was free)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future  # _wake counts the slot in for us before resolving
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._leave()
            elif future in self._waiters:
                self._waiters.remove(future)
            raise

    def _leave(self) -> None:
        self.in_flight -= 1
        self._wake()

    def wake(self) -> None:
        """Admit waiters while the limit allows (after the limit was raised)."""
        self._refresh()
        self._wake()

    def snapshot(self) -> dict[str, Any]:
        """What the operator view shows of the concurrency side."""
        delay = self.delay
        return {
            "concurrency_limit": self.cap,
            "learned_limit": round(delay.current, 1) if delay else None,
            "baseline_s_per_token": delay.baseline if delay else None,
            "recent_s_per_token": delay.last_tpot if delay else None,
            "yielding": bool(delay and delay.yielding),
            "probing": bool(delay and delay.probing),
            "share": round(self.share, 3),
            "server_waiting": delay.queue_waiting if delay else None,
        }

    def _wake(self) -> None:
        while self.in_flight < self.cap and self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                self.in_flight += 1
                future.set_result(None)

    async def _pace(self, estimate: int) -> None:
        while True:
            wait = self.blocked_until - self.clock()
            if self.rpm is not None and wait <= 0:
                wait = self.rpm.wait_time(1)
            if self.tpm is not None and wait <= 0:
                wait = self.tpm.wait_time(estimate)
            if wait <= 0:
                return
            await self.sleep(wait)

    def on_success(
        self, estimate: int, usage: Any, headers: Any, ticket: int = 0, latency: float = -1.0
    ) -> None:
        if self.limit < self.max:
            self.limit = min(float(self.max), self.limit + 1.0 / self.limit)
        if self.delay is not None and latency >= 0:
            tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
            busy = self.demand + 1 >= self.cap / 2  # this answer's request still counted
            self.delay.sample(ticket, self.tickets, latency, tokens, self.clock(), busy)
        self._refresh()
        if self.tpm is not None and isinstance(usage, dict):
            actual = usage.get("total_tokens")
            if isinstance(actual, int) and not isinstance(actual, bool):
                self.tpm.adjust(bounded_int(actual) - estimate)
        self._respect_headers(headers)

    def on_failure(self, status: int | None, headers: Any = None, ticket: int = 0) -> None:
        if status in BACKOFF_STATUSES and ticket > self.decrease_ticket:
            self.decrease_ticket = self.tickets
            self.decreases += 1
            self.limit = max(1.0, min(self.limit, float(self.cap)) / 2)
            self._refresh()
        self._respect_headers(headers)

    def _respect_headers(self, headers: Any) -> None:
        if not headers:
            return
        for remaining_header, reset_header in _RATELIMIT_HEADERS:
            remaining = headers.get(remaining_header)
            if remaining is not None and remaining.strip() == "0":
                reset = parse_reset(headers.get(reset_header))
                if reset:
                    self.blocked_until = max(self.blocked_until, self.clock() + reset)
