"""A delay-based concurrency limit for one provider: use the server's capacity when alone, yield
to its other users when not (LEDBAT's "scavenger" idea; the rules are close to Netflix
concurrency-limits' Gradient2 and Envoy's adaptive concurrency filter).

Signal: time per output token of each answer, ``latency / max(1, completion_tokens)`` (a
request's latency varies with its output length; per token it does not, until the server is
loaded). Baseline: that time at no load, measured in a *probe*: every ``probe_every`` seconds
(jittered) the limit drops to ``PROBE_CONCURRENCY`` until ``PROBE_SAMPLES`` answers sent under
it are in; their median is the baseline, then the limit is restored. A probe lasts about two
request times, so the batch loses ~1-2% of its throughput to it.

Between probes, answers are judged per *window*: ``max(MIN_WINDOW, limit)`` answers to requests
sent after the last change; ``r`` is the window's median time per token over the baseline.
A continuous-batching server's time per token is flat up to a knee, then rises; others' bursts
land on top of whatever the batch sends, so the limit keeps *under* the knee, not at the
allowed delay: when ``r`` exceeds ``1 + max_added_latency / 2`` the limit drops to
``limit * 0.9 / r`` (at most halved; *yielding*), and otherwise grows: doubling until the
first drop (slow start), by ``sqrt(limit)`` while below ``KNEE_FRACTION`` of the *knee* (the
limit at the last drop: the server's knee, less what others use of it), by
``NEAR_KNEE_STEP`` (or 3% of the limit, if more) per window near it, so the limit comes back
at once after a drop and slowly where the delay rose last. Added latency under
``NOISE_SECONDS`` per request is never a reason to shrink (an instant provider's jitter); a
limit that does not bind (less than half of it in use) does not grow. The server's queue
depth, when known (``queue``), shrinks the limit by the number waiting and stops growth while
anything waits. Loss (429/503) is handled under it, in ``zumik.execution.limits``. Everything
takes the clock as an argument: the tests feed samples.
"""

from __future__ import annotations

import math
import random
import statistics

PROBE_CONCURRENCY = 4  # our own requests in flight while the baseline is measured
PROBE_SAMPLES = 8  # answers of a probe (their median is the baseline)
MIN_WINDOW = 8  # fewest answers a decision rests on
NEAR_KNEE_STEP = 0.25  # growth per window near the limit where the delay last rose
NEAR_KNEE_GROWTH = 0.03  # ... or this fraction of the limit, if more
KNEE_FRACTION = 0.8  # "near the knee": at least this fraction of it
NOISE_SECONDS = 0.003  # added latency per request too small to act on
MAX_TPOT = 3600.0  # a sample beyond this (seconds per token) is nonsense: ignored


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class DelayLimiter:
    """The learned concurrency limit of one provider (for all of Zumik's executors together)."""

    def __init__(
        self,
        max_added_latency: float = 0.1,
        ceiling: int = 256,
        probe_every: float = 30.0,
        now: float = 0.0,
        rng: random.Random | None = None,
        quantile: float = 0.5,
        aim: float = 0.5,
        margin: float = 0.9,
    ) -> None:
        self.quantile, self.aim, self.margin = quantile, aim, margin
        self.knee = float(ceiling)  # the limit at which the delay last rose
        self.max_added = max_added_latency
        self.ceiling = max(1, ceiling)
        self.probe_every = probe_every
        self.rng = rng or random.Random()
        self.limit = float(min(PROBE_CONCURRENCY, self.ceiling))
        self.baseline: float | None = None  # seconds per output token at no load
        self.last_tpot: float | None = None  # the latest window's median
        self.yielding = False  # the latest decision was to give way
        self.slow_start = True
        self.probing = True  # the first baseline is measured before anything grows
        self.next_probe = now + self._jittered()
        self.window_ticket = 0  # answers to requests admitted up to here are stale
        self.window_size_hint = 0  # this executor's share of the limit (provider_budget.py)
        self._samples: list[float] = []
        self._tokens = 0
        self._saved_limit = self.limit
        self.queue_waiting = 0
        self.busy = True

    @property
    def current(self) -> float:
        """The limit in force now (the probe's while probing)."""
        return float(min(PROBE_CONCURRENCY, self.ceiling)) if self.probing else self.limit

    def _jittered(self) -> float:
        return self.probe_every * (0.8 + 0.4 * self.rng.random())

    def sample(
        self,
        ticket: int,
        issued: int,
        latency: float,
        completion_tokens: object,
        now: float,
        busy: bool = True,
    ) -> None:
        """One answer: the request's admission ``ticket``, the latest ticket ``issued`` so far,
        its latency (s) and ``usage.completion_tokens`` (anything: bounded here); ``busy``
        says whether the limit binds (half of it or more is used: only then may it grow)."""
        self.busy = busy
        tokens = completion_tokens if isinstance(completion_tokens, int) else 1
        tokens = min(max(tokens, 1), 1 << 20)
        if not (math.isfinite(latency) and latency >= 0) or ticket <= self.window_ticket:
            return
        tpot = latency / tokens
        if tpot > MAX_TPOT:
            return
        self._samples.append(tpot)
        self._tokens += tokens
        if self.probing:
            if len(self._samples) >= PROBE_SAMPLES:
                self._end_probe(issued, now)
            return
        if now >= self.next_probe and self.baseline is not None:
            self._start_probe(issued)
            return
        if len(self._samples) >= max(MIN_WINDOW, int(self.window_size_hint or self.limit)):
            self._decide(issued)

    def queue(self, waiting: int, issued: int) -> None:
        """The server's own queue depth (its Prometheus metrics): keep it at 0."""
        self.queue_waiting = waiting = max(0, waiting)
        if waiting and not self.probing:
            self.limit = max(1.0, self.limit - min(waiting, self.limit / 2))
            self.yielding = True
            self.slow_start = False
            self._new_window(issued)

    def _start_probe(self, issued: int) -> None:
        self._saved_limit = self.limit
        self.probing = True
        self._new_window(issued)

    def _end_probe(self, issued: int, now: float) -> None:
        self.baseline = statistics.median(self._samples)
        self.probing = False
        self.limit = max(self._saved_limit, self.limit)
        self.next_probe = now + self._jittered()
        self._new_window(issued)

    def _decide(self, issued: int) -> None:
        assert self.baseline is not None
        observed = quantile(self._samples, self.quantile)
        mean_tokens = self._tokens / len(self._samples)
        self.last_tpot = observed
        ratio = observed / self.baseline if self.baseline > 0 else 1.0
        added = (observed - self.baseline) * mean_tokens
        if ratio > 1 + self.max_added * self.aim and added > NOISE_SECONDS:
            # past the knee (ours, or what others leave us): back to where the delay began,
            # and a little under it
            self.knee = self.limit
            self.limit = max(1.0, self.limit * max(0.5, self.margin / ratio))
            self.yielding = True
            self.slow_start = False
        elif self.queue_waiting or not self.busy:
            pass  # the server queues, or the limit does not bind: no growth
        else:
            if self.slow_start:
                step = self.limit
            elif self.limit < KNEE_FRACTION * self.knee:
                step = max(1.0, math.sqrt(self.limit))
            else:
                # near the knee found last: carefully, but in proportion, so that a drop
                # caused by noise is made good in the same time on a small and a big server
                step = max(NEAR_KNEE_STEP, NEAR_KNEE_GROWTH * self.limit)
            self.limit = min(float(self.ceiling), self.limit + step)
            self.yielding = False
        self._new_window(issued)

    def _new_window(self, issued: int) -> None:
        self.window_ticket = issued
        self._samples.clear()
        self._tokens = 0
