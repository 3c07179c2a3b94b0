"""The expiry sweeper: output files after ``output_ttl`` (their ``expires_at``), files uploaded
with ``expires_after``, batch records ``batch_ttl`` after they ended, together with their
input file unless another record still uses it, idempotency keys past their TTL, and the parts
of uploads that expired, were cancelled or completed (``zumik.storage.upload_sessions``). At
most one sweep runs at a time across every worker (a non-blocking filelock); expired objects
already answer 404 before they are swept.

Incremental: a pass reads the schedules the store keeps (``index/expiry`` and ``index/ended``,
oldest hour first), never the whole project, and does at most ``batch_size`` removals per
project under one hold of its ``quota.lock``, so requests and the executor wait at most one
bounded step; what is left waits for the next pass. Each pass also checks the project's ledger
(``Ledger.load``: the repair of a change a crash interrupted, logged when it corrects).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable

from filelock import FileLock, Timeout

from zumik.core import ids
from zumik.settings import Settings
from zumik.storage import accounting, fsutil
from zumik.storage.store import ProjectStore, iter_projects
from zumik.storage.upload_sessions import UploadSessions

log = logging.getLogger("zumik.janitor")
SWEEP_INTERVAL = 60.0
BATCH_SIZE = 200  # removals per project per lock hold
MAX_PASSES = 10  # lock holds per project per background sweep (the rest: next minute)


class Janitor:
    """Sweeps expired files and records; ``sweep`` is callable directly from tests."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        interval: float = SWEEP_INTERVAL,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.interval = interval
        self.batch_size = batch_size
        self._last = float("-inf")

    def maybe_sweep(self) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        lock = FileLock(self.settings.data_dir / ".sweep.lock", blocking=False)
        try:
            with lock:
                self.sweep(passes=MAX_PASSES)
        except Timeout:
            return

    def sweep(self, passes: int | None = None) -> dict[str, int]:
        """Sweep every project until nothing is due (or ``passes`` steps per project), one
        bounded step per lock hold; returns how many files, records and keys were removed."""
        removed = {"files": 0, "batches": 0, "keys": 0}
        for project in iter_projects(self.settings.data_dir):
            store = ProjectStore.open(self.settings, project, self.clock)
            step = 0
            while passes is None or step < passes:
                step += 1
                with store.quota_lock():
                    done = self.step(store, removed)
                if done < self.batch_size:
                    break
            with store.quota_lock():
                uploads = UploadSessions(store, self.settings).sweep(self.clock())
            if uploads:
                log.info("sweep: project %s: %d uploads expired or dropped", project, uploads)
        if any(removed.values()):
            log.info(
                "sweep removed %(files)d files, %(batches)d batch records and %(keys)d "
                "idempotency keys",
                removed,
            )
        return removed

    def step(self, store: ProjectStore, removed: dict[str, int]) -> int:
        """At most ``batch_size`` removals (under the project's lock); returns how many."""
        state = store.ledger_state()
        now = self.clock()
        budget = self.batch_size
        for ended, batch_id in store.ended.due(now - self.settings.batch_ttl):
            if budget <= 0:
                return self.batch_size
            budget -= 1
            record = store.batch(batch_id).doc.read() if ids.is_batch_id(batch_id) else None
            if record is None:
                store.ended.remove(ended, batch_id)
                continue
            removed["batches"] += 1
            store.remove_batch(batch_id, record, state)  # (an input going with it: not counted)
        in_use: set[str] | None = None
        for when, payload in store.ledger.expiry.due(now):
            if budget <= 0:
                return self.batch_size
            key = payload.split(".", 2)[-1]
            if ids.is_file_id(key):
                if in_use is None:
                    in_use = {str(r.get("input_file_id")) for r in store.active_batches()}
                if key in in_use:
                    continue
                budget -= 1
                meta = fsutil.read_json(store.file_meta_path(key))
                if meta is None or meta.get("expires_at") != when:
                    store.ledger.expiry.remove(when, payload)  # a leftover entry
                    continue
                store.remove_file(key, state)
                removed["files"] += 1
            elif key.startswith(accounting.KEY_PREFIX):
                budget -= 1
                self._remove_key(store, state, key, when, payload)
                removed["keys"] += 1
        return self.batch_size - budget

    @staticmethod
    def _remove_key(
        store: ProjectStore, state: dict[str, object], key: str, when: int, payload: str
    ) -> None:
        path = store.idempotency_dir / f"{key[len(accounting.KEY_PREFIX) :]}.json"
        entry = fsutil.read_json(path)
        if not isinstance(entry, dict):
            store.ledger.expiry.remove(when, payload)
            return
        contribution = accounting.key_contribution(entry)
        if contribution[3] is not None and contribution[3] > when:  # renewed since
            store.ledger.expiry.remove(when, payload)
            return
        store.ledger.commit(state, {key: (contribution, None)})
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
