"""What each provider has been seen to do: lines and tokens per second of busy time.

One ``Throughput`` per executor. Each finished line adds its tokens and the part of its
``[sent, answered]`` interval not already covered by the provider's earlier lines, so the
time counted is the time the provider had at least one of this executor's lines in flight
(lines end in order of their answer, so the union is exact but for gaps between lines that
overlap a later, longer one). Idle time does not dilute the rate. The executor publishes
``snapshot()`` in its metrics file (``ops.metrics``), so any worker can answer an estimate.
Old history fades: past ``HALF_LIFE`` seconds of busy time the sums are halved.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from zumik.storage.journal import total_tokens

HALF_LIFE = 3600.0  # seconds of busy time after which the sums are halved
MIN_BUSY = 0.01  # seconds of busy time before a rate is published


@dataclass
class _Seen:
    lines: float = 0.0
    tokens: float = 0.0
    busy: float = 0.0
    covered_until: float = float("-inf")


class Throughput:
    """Per-provider lines, tokens and busy seconds (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}

    def answered(self, provider: str, sent: float, usage: Any) -> None:
        """A line of ``provider`` sent at ``sent`` (``time.monotonic()``) answered now, with
        the answer's ``usage``."""
        self.record(provider, sent, time.monotonic(), total_tokens(usage))

    def record(self, provider: str, sent: float, answered: float, tokens: int) -> None:
        """One line of ``provider`` sent at ``sent`` and answered at ``answered``
        (monotonic seconds) with ``tokens`` tokens (input + output)."""
        if not provider or answered < sent:
            return
        with self._lock:
            seen = self._seen.get(provider)
            if seen is None:
                if len(self._seen) >= 256:
                    return
                seen = self._seen[provider] = _Seen()
            seen.busy += max(0.0, answered - max(sent, seen.covered_until))
            seen.covered_until = max(seen.covered_until, answered)
            seen.lines += 1
            seen.tokens += max(0, tokens)
            if seen.busy > HALF_LIFE:
                seen.lines, seen.tokens, seen.busy = seen.lines / 2, seen.tokens / 2, seen.busy / 2

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """``{provider: {"lines_per_second", "tokens_per_second", "lines"}}`` for providers
        with enough busy time measured."""
        with self._lock:
            return {
                name: {
                    "lines_per_second": seen.lines / seen.busy,
                    "tokens_per_second": seen.tokens / seen.busy,
                    "lines": seen.lines,
                }
                for name, seen in self._seen.items()
                if seen.busy >= MIN_BUSY
            }
