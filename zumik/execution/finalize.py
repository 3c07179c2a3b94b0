"""The end of a claimed batch: ``batch_expired`` lines for what never ran, the journal merged
into the output and error files, then the terminal record (``make_terminal``, the one place a
batch becomes terminal)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from zumik.core import ids
from zumik.core.records import Status, ended_at, is_terminal, move
from zumik.execution.budget import Budget
from zumik.execution.results import error_line
from zumik.execution.wire import request_of
from zumik.ops.metrics import Metrics
from zumik.settings import Settings
from zumik.storage import journal
from zumik.storage.batchhandle import BatchHandle
from zumik.storage.claims import Claim
from zumik.storage.fsutil import temp_path
from zumik.storage.inputs import iter_lines
from zumik.storage.store import ProjectStore
from zumik.webhooks import outbox

log = logging.getLogger("zumik.executor")


class Finalizing:
    """``BatchRun``'s last step (a mixin: the state is the run's)."""

    settings: Settings
    clock: Callable[[], float]
    store: ProjectStore
    claim: Claim
    batch: BatchHandle
    batch_id: str
    metrics: Metrics
    prices: journal.Prices
    progress: journal.Progress
    writer: journal.JournalWriter | None
    budget: Budget

    def _expire_rest(self, record: dict[str, Any]) -> None:
        """Write a ``batch_expired`` line for every line that never ran."""
        self._close_rest(
            record,
            "batch_expired",
            "This request could not be executed before the completion window expired.",
        )

    def _budget_rest(self, record: dict[str, Any]) -> None:
        """Write a ``budget_exceeded`` line for every line the budget kept from being sent
        (none left: the budget stopped nothing, and ``budget_exceeded_at`` stays unset)."""
        if not self._close_rest(
            record,
            "budget_exceeded",
            "This request was not sent: the batch's budget (max_cost or max_total_tokens) "
            "was used up.",
        ):
            self.budget.exceeded_at = None

    def _close_rest(self, record: dict[str, Any], code: str, message: str) -> int:
        """Journal an error line ``code`` for every line that never ran; how many."""
        if self.writer is not None:
            self.writer.close()  # flushes what the loop queued
        writer = journal.JournalWriter(self.batch.segment_path(self.claim.epoch))
        self.writer = writer
        path = str(self.store.file_data_path(record["input_file_id"]))
        written = 0
        for number, raw in iter_lines(path):
            if number not in self.progress.done:
                custom_id = request_of(raw, number)[0]
                writer.append(journal.entry_bytes(number, error_line(custom_id, code, message)))
                self.progress.record(number, True, None)
                written += 1
        writer.sync()
        return written

    def _finalize(self, final: Status) -> None:
        """Reserve output ids, publish the files, then write the terminal record.

        Cancel is final: the terminal status is decided under the record's lock, so a batch a
        cancel already moved to ``cancelling`` ends ``cancelled`` even when this run finished
        every line before it noticed the cancel.
        """
        now = int(self.clock())
        started = time.perf_counter()

        def reserve(record: dict[str, Any]) -> None:
            nonlocal final
            if record["status"] == Status.CANCELLING:
                final = Status.CANCELLED
            if not record.get("_output_file_id"):
                record["_output_file_id"] = ids.new_id(ids.FILE_PREFIX, self.clock())
                record["_error_file_id"] = ids.new_id(ids.FILE_PREFIX, self.clock())
            if final == Status.COMPLETED:
                move(record, Status.FINALIZING, now)

        record = self.batch.update(reserve)
        merged = self._publish(record)
        summary = merged.summary

        def finish(current: dict[str, Any]) -> None:
            current["output_file_id"] = current["_output_file_id"] if merged.output_lines else None
            current["error_file_id"] = current["_error_file_id"] if merged.error_lines else None
            current["request_counts"]["completed"] = summary.completed
            current["request_counts"]["failed"] = summary.failed
            current["usage"] = summary.usage
            current["cost"] = summary.cost()
            if self.budget.exceeded_at is not None:
                current["budget_exceeded_at"] = self.budget.exceeded_at

        self.make_terminal(final, finish)
        self.batch.remove_run_state()
        log.info(
            "batch %s: %s (%d completed, %d failed), finalized in %.3f s",
            self.batch_id,
            final.value,
            summary.completed,
            summary.failed,
            time.perf_counter() - started,
            extra={
                "batch_id": self.batch_id,
                "project": self.store.project,
                "status": final.value,
                "completed": summary.completed,
                "failed": summary.failed,
                "epoch": self.claim.epoch,
            },
        )

    def make_terminal(
        self, final: Status, change: Callable[[dict[str, Any]], bool | None]
    ) -> dict[str, Any]:
        """THE place a batch becomes terminal (``failed`` after validation, or the status its
        run outcome gives it after finalizing).

        ``change`` fills in the record's last fields under the record lock and may return
        False to keep the record as it is (it moved on meanwhile). Whatever must happen
        exactly when a batch ends (a webhook outbox entry, output accounting) hooks in here.

        The change function only decides the record: it may run again on a newer version, so
        it writes nothing else. What follows the ending is done from the record as stored
        (``settle_ending``): the webhook outbox entries are built from the settled record, and
        the active marker stays until they are written, so a kill in between leaves a terminal
        batch still marked active, which the next claim settles (``BatchRun.run``).
        """
        now = int(self.clock())

        moved = False

        def terminal(current: dict[str, Any]) -> None:
            nonlocal moved
            moved = change(current) is not False
            if moved:
                move(current, final, now)

        record = self.batch.update(terminal, keep_active=True)
        if moved:  # counted as it ends, so /metrics never reads finished records
            self.metrics.inc("zumik_batches_finished_total", (("status", final.value),))
            ended = ended_at(record)
            if ended is not None:  # the input's expires_at now says when it goes
                self.store.release_input(record["input_file_id"], ended + self.settings.batch_ttl)
            self.settle_ending(record)
        elif is_terminal(record):
            self.batch.clear_active()  # another claim ended it and settles it
        return record

    def settle_ending(self, record: dict[str, Any] | None) -> None:
        """After a terminal record is stored: its webhook outbox entries, from that record,
        then the active marker goes. Run again after a kill (the marker was left): entries are
        named by batch and endpoint, so a repeat rewrites them (delivery is at-least-once).
        No record at all: only the marker goes."""
        if record is not None:
            if not is_terminal(record):
                return
            outbox.enqueue(self.settings.data_dir, self.store.project, record)
        self.batch.clear_active()

    def _publish(self, record: dict[str, Any]) -> journal.Merged:
        files_dir = self.store.files_dir
        tmp_out, tmp_err = temp_path(files_dir, "out-"), temp_path(files_dir, "err-")
        try:
            merged = journal.merge(
                self.batch.segments(),
                tmp_out,
                tmp_err,
                self.prices,
                self.settings.result_files == "combined",
            )
            now = int(self.clock())
            ttl = record.get("_output_ttl") or self.settings.output_ttl
            for tmp, file_id, suffix, count in (
                (tmp_out, record["_output_file_id"], "output", merged.output_lines),
                (tmp_err, record["_error_file_id"], "errors", merged.error_lines),
            ):
                if count:
                    self.store.write_file(
                        tmp,
                        {
                            "id": file_id,
                            "object": "file",
                            "bytes": os.path.getsize(tmp),
                            "created_at": now,
                            "filename": f"{self.batch_id}_{suffix}.jsonl",
                            "purpose": "batch_output",
                            "status": "processed",
                            "status_details": None,
                            "expires_at": now + ttl,
                            "requests": count,
                            "batch_id": self.batch_id,
                        },
                    )
            return merged
        finally:
            tmp_out.unlink(missing_ok=True)
            tmp_err.unlink(missing_ok=True)
