"""The last round of a batch: a line whose attempts ran out on retryable failures while its
provider answered other lines (a flaky provider: every 3rd request a 500, every 5th a 429) is
not reported failed at once. It is kept aside (``defer``) and, once every other line is done
and after a pause, sent once more, one line at a time (``last_round``); what it gets then is
final. ``BatchRun``'s mixin: the state is the run's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from zumik.execution.wire import RequestBody
from zumik.settings import Settings

log = logging.getLogger("zumik.executor")
LAST_ROUND_PAUSE = 5.0  # seconds before the last round, at the default ZUMIK_RETRY_BACKOFF
LAST_ROUND_MAX = 10_000  # lines kept for it; past that a line's failure is final at once
STEP = 0.1

Line = tuple[int, str, RequestBody]


class LastRound:
    settings: Settings
    batch_id: str
    deferred: list[Line] | None  # None once the last round started: failures are final

    if TYPE_CHECKING:
        outcome: object

        def _start_sender(self, pending: Iterator[Line], single: bool = False) -> None: ...

    def defer(self, number: int, custom_id: str, body: RequestBody) -> bool:
        """Keep a line whose retryable attempts ran out for the last round; False when its
        failure is final (the last round is running, or too many lines wait for it)."""
        if self.deferred is None or len(self.deferred) >= LAST_ROUND_MAX:
            return False
        self.deferred.append((number, custom_id, body))
        return True

    async def last_round(self) -> None:
        """After a pause (cut short by any outcome: cancel, expiry, shutdown), send the
        deferred lines again through one sender."""
        deferred, self.deferred = self.deferred, None
        if not deferred:
            return
        log.info("batch %s: a last round for %d lines", self.batch_id, len(deferred))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LAST_ROUND_PAUSE * self.settings.retry_backoff / 0.5
        while self.outcome is None and loop.time() < deadline:
            await asyncio.sleep(STEP)
        self._start_sender(iter(deferred), single=True)
