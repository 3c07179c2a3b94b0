"""Provider health inside one executor: up or down, told from failures across lines.

A provider goes *down* when it fails across lines: ``down_failures`` provider-level failures
in a row (connection refused or reset, timeouts, 429, 502, 503, 504) with no answer between
them, and no answer for at least ``down_seconds``. While it is down nothing is sent to it but
one *probe* at a time (a waiting line's own request) on a capped exponential backoff; the lines
that want it wait, keeping their attempt counts. The first answer that is not a provider-level
failure brings it back *up*: the waiting lines resume and the concurrency limit is restored to
what it was before the failures began.

A line's attempt counts only when the failure is the line's own: any non-provider-level failure
(500, a 4xx, a bad body), or a provider-level one while the provider answered other requests
(``answers`` moved on while the attempt was out).

Given a ``prober`` (``zumik.probe``: the provider's ``GET /models``), a provider is judged by
more than one line. A row of failures from one line alone cannot mark it down: once that row
is ``down_failures`` long, the probe decides (``judge``): the provider answers, so the failures
are the line's own and are charged (a poisoned request fails after its attempts); or it does
not, and it is down. While it is down the probe, never a waiting line's request, says when it
is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from zumik.execution.limits import ProviderLimits

log = logging.getLogger("zumik.executor")

PROVIDER_FAILURE_STATUSES = frozenset({429, 502, 503, 504})
PROVIDER_FAILURE_CODES = frozenset({"connection_error", "timeout"})
PROBE_FIRST = 0.5


def is_provider_failure(error_code: str | None, status: int | None) -> bool:
    """Whether a failed attempt says something about the provider rather than the line."""
    return error_code in PROVIDER_FAILURE_CODES or status in PROVIDER_FAILURE_STATUSES


class ProviderHealth:
    """Up/down state, probing and the counters an operator wants to see, for one provider."""

    def __init__(
        self,
        name: str,
        limits: ProviderLimits,
        *,
        down_failures: int = 5,
        down_seconds: float = 2.0,
        probe_max: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        prober: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.name = name
        self.prober = prober
        self._row_lines: set[int] = set()  # the lines whose failures make the current row
        self._probe_task: asyncio.Task[None] | None = None
        self.limits = limits
        self.down_failures = down_failures
        self.down_seconds = down_seconds
        self.probe_max = probe_max
        self.clock = clock
        self.up = True
        self.answers = 0  # answers so far (anything but a provider-level failure)
        self.failures_in_row = 0
        self.last_answer = clock()
        self.down_since: float | None = None  # wall clock, for people
        self._down_at = 0.0
        self.probe_delay = PROBE_FIRST
        self.probe_at = 0.0
        self.probing = False
        self.held = 0  # lines waiting for the provider now
        self.wait_seconds = 0.0  # line-seconds spent waiting, all told
        self._accrued_at = clock()
        self.downs = 0
        self.rate_limited = 0  # 429 answers
        self.retries = 0
        self.latency_ewma = 0.0
        self._limit_before = limits.limit
        self._changed: asyncio.Event | None = None

    # -- waiting ---------------------------------------------------------------------------
    async def admit(self) -> bool:
        """Wait until a line may be sent; True when it goes as the probe (then report its
        result with ``answered``/``failed``, or ``abandon`` if it was never sent)."""
        if self.up:
            return False
        self._accrue()
        self.held += 1
        try:
            while not self.up:
                now = self.clock()
                if self.prober is None and not self.probing and now >= self.probe_at:
                    self.probing = True
                    return True
                if self._changed is None:
                    self._changed = asyncio.Event()
                timeout = None if self.probing else max(self.probe_at - now, 0.01)
                if self.prober is not None:  # the probe task notifies; look now and then
                    timeout = 1.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout)
            return False
        finally:
            self._accrue()
            self.held -= 1

    def _accrue(self) -> None:
        """Add the held lines' waiting since the last call to ``wait_seconds``."""
        now = self.clock()
        self.wait_seconds += self.held * (now - self._accrued_at)
        self._accrued_at = now

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    # -- results ---------------------------------------------------------------------------
    def answered(self, probe: bool, latency: float) -> None:
        """The provider answered (a success, or a failure that is the line's)."""
        self.answers += 1
        self.failures_in_row = 0
        self._row_lines.clear()
        self.last_answer = self.clock()
        self.latency_ewma = (
            latency if not self.latency_ewma else (0.9 * self.latency_ewma + 0.1 * latency)
        )
        if probe:
            self.probing = False
        if not self.up:
            self._mark_up()

    def failed(
        self, probe: bool, status: int | None, retry_after: float | None = None, line: int = 0
    ) -> None:
        """A provider-level failure (see ``is_provider_failure``) of ``line``'s request."""
        if status == 429:
            self.rate_limited += 1
        if probe:
            self.probing = False
            self.probe_delay = min(self.probe_delay * 2, self.probe_max)
            wait = min(max(self.probe_delay, retry_after or 0.0), self.probe_max)
            self.probe_at = self.clock() + wait
            self._notify()
            return
        if not self.up:
            return
        if self.failures_in_row == 0:
            self._limit_before = self.limits.limit  # what to resume at
        self.failures_in_row += 1
        self._row_lines.add(line)
        if (
            self.failures_in_row >= self.down_failures
            and self.clock() - self.last_answer >= self.down_seconds
            and (self.prober is None or len(self._row_lines) > 1)  # never one line alone
        ):
            self._mark_down()

    def failing_alone(self, line: int) -> bool:
        """Whether ``line`` alone made a row of ``down_failures`` failures (``judge`` then
        decides whose they are)."""
        return (
            self.prober is not None
            and self.up
            and self.failures_in_row >= self.down_failures
            and self._row_lines == {line}
        )

    async def judge(self) -> bool:
        """Probe the provider for a line failing alone: True when it answers (the failures
        are the line's own); else it is marked down and False."""
        assert self.prober is not None
        alive = await self.prober()
        if not alive and self.up:
            self._mark_down()
        return alive

    async def _probe_loop(self) -> None:
        """While down: the probe on a capped exponential backoff, until it answers."""
        assert self.prober is not None
        while not self.up:
            await asyncio.sleep(max(self.probe_at - self.clock(), 0.0))
            if self.up:
                return
            if await self.prober():
                self._mark_up()
                return
            self.probe_delay = min(self.probe_delay * 2, self.probe_max)
            self.probe_at = self.clock() + self.probe_delay

    def abandon(self, probe: bool) -> None:
        """A probe that was never sent (its line was cancelled): let another line probe."""
        if probe and self.probing:
            self.probing = False
            self._notify()

    def _mark_down(self) -> None:
        self.up = False
        self.downs += 1
        self._down_at = self.clock()
        self.down_since = time.time()
        self.probe_delay = PROBE_FIRST
        self.probe_at = self._down_at + PROBE_FIRST
        if self.prober is not None and (self._probe_task is None or self._probe_task.done()):
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to probe with
                self._probe_task = asyncio.get_running_loop().create_task(self._probe_loop())
        log.warning(
            "provider %s is down after %d failures in a row and no answer for "
            "%.1f s; holding its lines, probing",
            self.name,
            self.failures_in_row,
            self.clock() - self.last_answer,
            extra={"provider": self.name, "provider_up": False},
        )

    def _mark_up(self) -> None:
        down_for = self.clock() - self._down_at
        self.up = True
        self.down_since = None
        self.failures_in_row = 0
        self._row_lines.clear()
        self.limits.limit = max(self.limits.limit, self._limit_before)
        self.limits.wake()
        log.warning(
            "provider %s is up again after %.1f s down; resuming at concurrency %d",
            self.name,
            down_for,
            int(self.limits.limit),
            extra={"provider": self.name, "provider_up": True, "down_seconds": round(down_for, 3)},
        )
        self._notify()

    def snapshot(self) -> dict[str, Any]:
        """What an operator sees of this provider (the metrics snapshot's ``providers``)."""
        self._accrue()
        return {
            "up": self.up,
            "down_since": self.down_since,
            "in_flight": self.limits.in_flight,
            "held": self.held,
            "max_concurrency": self.limits.max,
            **self.limits.snapshot(),
            "downs": self.downs,
            "wait_seconds": round(self.wait_seconds, 3),
            "rate_limited": self.rate_limited,
            "retries": self.retries,
            "latency_ewma_s": round(self.latency_ewma, 4),
        }
