"""The expiry sweeper: output files after ``output_ttl`` (their ``expires_at``), files uploaded
with ``expires_after``, batch records ``batch_ttl`` after they ended, together with their
input file unless another batch still uses it, and the parts of uploads that expired, were
cancelled or completed (``zumik.storage.upload_sessions``). At most one sweep runs at a time across
every worker (a non-blocking filelock); expired objects already answer 404 before they are swept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from filelock import FileLock, Timeout

from zumik.core.records import ended_at, is_terminal
from zumik.settings import Settings
from zumik.storage import fsutil, idempotency
from zumik.storage.store import ProjectStore, iter_projects
from zumik.storage.upload_sessions import UploadSessions

log = logging.getLogger("zumik.janitor")
SWEEP_INTERVAL = 60.0


class Janitor:
    """Sweeps expired files and records; ``sweep`` is callable directly from tests."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        interval: float = SWEEP_INTERVAL,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.interval = interval
        self._last = float("-inf")

    def maybe_sweep(self) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        lock = FileLock(self.settings.data_dir / ".sweep.lock", blocking=False)
        try:
            with lock:
                self.sweep()
        except Timeout:
            return

    def sweep(self) -> dict[str, int]:
        """One pass over every project; returns how many files, records and keys were removed."""
        removed = {"files": 0, "batches": 0, "keys": 0}
        for project in iter_projects(self.settings.data_dir):
            store = ProjectStore.open(self.settings, project, self.clock)
            with store.quota_lock():
                removed["batches"] += self._sweep_batches(store)
                removed["files"] += self._sweep_files(store)
                uploads = UploadSessions(store, self.settings).sweep(self.clock())
            if uploads:
                log.info("sweep: project %s: %d uploads expired or dropped", project, uploads)
            removed["keys"] += idempotency.sweep(
                store.idempotency_dir, self.clock(), self.settings.idempotency_ttl
            )
        if any(removed.values()):
            log.info(
                "sweep removed %(files)d files, %(batches)d batch records and %(keys)d "
                "idempotency keys",
                removed,
            )
        return removed

    def _sweep_batches(self, store: ProjectStore) -> int:
        now = self.clock()
        removed = 0
        for batch_id in store.batch_ids():
            batch = store.batch(batch_id)
            record = batch.read()
            if record is None or not is_terminal(record):
                continue
            ended = ended_at(record)
            if ended is None or ended + self.settings.batch_ttl > now:
                continue
            batch.remove()
            if not self._input_in_use(store, record["input_file_id"]):
                store.remove_file(record["input_file_id"])
            removed += 1
        return removed

    @staticmethod
    def _input_in_use(store: ProjectStore, file_id: str) -> bool:
        for batch_id in store.batch_ids():
            record = store.get_batch(batch_id)
            if record is not None and record.get("input_file_id") == file_id:
                return True
        return False

    def _sweep_files(self, store: ProjectStore) -> int:
        now = self.clock()
        in_use = {r.get("input_file_id") for r in store.active_batches()}
        removed = 0
        for file_id in store.iter_file_ids():
            meta = fsutil.read_json(store.file_meta_path(file_id))  # expired ones too
            expires_at = meta.get("expires_at") if meta else None
            if expires_at is not None and expires_at <= now and file_id not in in_use:
                store.remove_file(file_id)
                removed += 1
        return removed
