"""How a batch run ends (``RunOutcome``), and the terminal status each outcome gives."""

from __future__ import annotations

from enum import StrEnum

from zumik.core.records import Status


class RunOutcome(StrEnum):
    """Why a run stops: the first three finalize the batch, the rest hand the claim back."""

    DONE = "done"  # every line has a result: completed
    CANCELLED = "cancelled"  # the cancel marker was seen: cancelled with what finished
    EXPIRED = "expired"  # the completion window ended: the rest become batch_expired
    SHUTDOWN = "shutdown"  # the worker is stopping; the next claim resumes
    LOST = "lost"  # a newer epoch took the lease; this run writes nothing more
    PAUSED = "paused"  # storage failed (disk full): hand back, the executor retries later

    @property
    def final_status(self) -> Status | None:
        """The terminal status this outcome gives the batch (None: the claim is handed back)."""
        return _FINAL_STATUS.get(self)


_FINAL_STATUS = {
    RunOutcome.DONE: Status.COMPLETED,
    RunOutcome.CANCELLED: Status.CANCELLED,
    RunOutcome.EXPIRED: Status.EXPIRED,
}
