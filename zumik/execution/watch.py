"""What watches a running batch while its lines are sent: the journal's fsync, cancel, the
completion window, the lease heartbeat and the progress saves (``zumik.progress``).
``BatchRun``'s mixin: the state is the run's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zumik.execution.outcome import RunOutcome
from zumik.settings import Settings
from zumik.storage import journal, progress
from zumik.storage.batchhandle import BatchHandle
from zumik.storage.claims import Claim

log = logging.getLogger("zumik.executor")
WATCH_INTERVAL = 0.1
COUNTS_INTERVAL = 1.0


class Watching:
    settings: Settings
    clock: Callable[[], float]
    batch: BatchHandle
    batch_id: str
    claim: Claim
    writer: journal.JournalWriter | None
    progress: journal.Progress
    outcome: RunOutcome | None
    _progress_seq: int

    if TYPE_CHECKING:

        def end(self, outcome: RunOutcome, *, abort: bool = False) -> bool: ...

    async def _watch(self, record: dict[str, Any]) -> None:
        """Cancel, expiry, lease and durability housekeeping while lines are sent. If it fails
        (a storage error), the run pauses: a run nobody watches must not go on sending."""
        try:
            await self._watch_loop(record)
        except Exception:
            log.exception("batch %s: watcher failed; pausing", self.batch_id)
            if self.outcome is None:
                self.end(RunOutcome.PAUSED, abort=True)

    async def _watch_loop(self, record: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        next_counts = next_beat = loop.time()
        beat_every = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(min(WATCH_INTERVAL, self.settings.upstream_fsync_interval))
            if self.writer is not None:
                await asyncio.to_thread(self.writer.sync)
                if self.writer.error is not None and self.outcome is None:
                    log.error(
                        "batch %s: journal write failed (%s); pausing",
                        self.batch_id,
                        self.writer.error,
                    )
                    self.end(RunOutcome.PAUSED, abort=True)
            if self.outcome is None and self.batch.cancel_requested():
                self.end(RunOutcome.CANCELLED, abort=True)
            if self.outcome is None and self.clock() >= record["expires_at"]:
                self.end(RunOutcome.EXPIRED, abort=True)
            now = loop.time()
            if now >= next_beat:
                next_beat = now + beat_every
                if not await asyncio.to_thread(self.claim.heartbeat):
                    log.warning("batch %s: lease lost to a newer epoch; stopping", self.batch_id)
                    self.end(RunOutcome.LOST, abort=True)
            if now >= next_counts:
                next_counts = now + COUNTS_INTERVAL
                try:
                    await asyncio.to_thread(self._save_counts)
                except OSError as exc:
                    log.error("batch %s: saving counts failed (%s); pausing", self.batch_id, exc)
                    if self.outcome is None:
                        self.end(RunOutcome.PAUSED, abort=True)

    def _save_counts(self) -> None:
        if self.outcome in (RunOutcome.LOST, RunOutcome.PAUSED):
            return
        saved = self.progress
        self._progress_seq += 1
        progress.write(
            self.batch.progress_path,
            {
                "request_counts": {"completed": saved.completed, "failed": saved.failed},
                "usage": saved.usage,
                "cost": saved.cost(),
            },
            self.claim.epoch,
            self._progress_seq,
        )
