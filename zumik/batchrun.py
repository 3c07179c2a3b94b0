"""One claimed batch, from ``validating`` to a terminal status.

validate -> send every line not yet in the journal -> finalize (merge the journal into the
output and error files, then the terminal record). Every step can be repeated after a crash:
the journal says what is done, and the output file ids are reserved in the record first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

import msgspec

from zumik import ids, journal, progress
from zumik.batchfile import LineError, RequestBody, iter_lines, request_of, target_of
from zumik.claims import Claim
from zumik.fsutil import temp_path
from zumik.metrics import Metrics
from zumik.records import Status, cancel_marker, is_terminal, move
from zumik.routing import Router
from zumik.settings import Settings
from zumik.store import ProjectStore
from zumik.upstream import Outcome, Upstream

log = logging.getLogger("zumik.executor")

DONE, CANCEL, EXPIRED, SHUTDOWN, LOST = "done", "cancel", "expired", "shutdown", "lost"
PAUSED = "paused"  # storage failed (disk full): hand back, the executor retries later
FINAL_STATUS = {DONE: Status.COMPLETED, CANCEL: Status.CANCELLED, EXPIRED: Status.EXPIRED}
encode = msgspec.json.encode
WATCH_INTERVAL = 0.1
COUNTS_INTERVAL = 1.0


def success_line(custom_id: str, outcome: Outcome, request_id: str) -> bytes:
    """An output line for a 2xx answer, splicing the provider's compact body in unparsed."""
    assert outcome.body is not None
    return b"".join((
        b'{"id":"', request_id.encode(), b'","custom_id":',
        encode(custom_id), b',"response":{"status_code":',
        str(outcome.status_code).encode(), b',"request_id":',
        encode(outcome.request_id), b',"body":', outcome.body,
        b'},"error":null,"provider":', encode(outcome.provider), b'}\n'))


def error_line(custom_id: str, code: str, message: str, request_id: str | None = None) -> bytes:
    """An output line for a request that failed: ``response`` null, ``error`` set."""
    request_id = request_id or ids.new_id(ids.BATCH_REQUEST_PREFIX)
    return json.dumps({"id": request_id, "custom_id": custom_id,
                       "response": None, "error": {"code": code, "message": message}},
                      separators=(",", ":")).encode() + b"\n"


class BatchRun:
    """Runs one batch this executor has claimed."""

    def __init__(self, *, settings: Settings, router: Router, upstream: Upstream,
                 clock: Callable[[], float], store: ProjectStore, claim: Claim,
                 slots: asyncio.Semaphore, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.router = router
        self.upstream = upstream
        self.clock = clock
        self.store = store
        self.claim = claim
        self.batch_id = claim.batch_id
        self.slots = slots
        self.metrics = metrics or Metrics()
        self.reason: str | None = None
        self.in_flight: set[asyncio.Task[None]] = set()
        self.prices: journal.Prices = {
            p.name: (p.input_price, p.output_price) for p in router.providers.values()
            if p.input_price is not None or p.output_price is not None}
        self.progress = journal.Progress(self.prices)
        self.writer: journal.JournalWriter | None = None
        self._request_prefix = ids.BATCH_REQUEST_PREFIX + secrets.token_hex(6)
        self._request_count = 0
        self._progress_seq = 0

    def next_request_id(self) -> str:
        """``batch_req_`` + 24 hex: a random prefix per run and a counter (no syscall per line)."""
        self._request_count += 1
        return f"{self._request_prefix}{self._request_count:012x}"

    # -- control from the executor ---------------------------------------------------------
    def stop(self) -> None:
        """Graceful shutdown: send nothing new; in-flight requests may finish."""
        if self.reason is None:
            self.reason = SHUTDOWN

    def abort(self) -> None:
        """Stop at once: cancel the requests in flight (they are re-sent by the next claim)."""
        self.stop()
        for task in list(self.in_flight):
            task.cancel()

    # -- the run ---------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            record = self.store.get_batch(self.batch_id)
            if record is None or is_terminal(record):
                self.store.clear_active(self.batch_id)
                return
            if record["status"] == Status.VALIDATING:
                record = await asyncio.to_thread(self._validate, record)
                if record["status"] == Status.FAILED:
                    return
            await self._execute(record)
        except Exception:
            self.reason = PAUSED
            log.exception("batch %s: run failed; paused, it will be retried by a later claim",
                          self.batch_id)
        finally:
            if self.writer is not None:
                self.writer.close()
            await asyncio.to_thread(self.claim.release)

    def _validate(self, record: dict[str, Any]) -> dict[str, Any]:
        """Check every line can run; move to ``in_progress`` or ``failed``."""
        started = time.perf_counter()
        errors: list[dict[str, Any]] = []
        path = self.store.file_data_path(record["input_file_id"])
        if cancel_marker(self.store, self.batch_id).exists():
            return self.store.get_batch(self.batch_id) or record
        try:
            for number, raw in iter_lines(str(path)):
                try:
                    url, model = target_of(raw, number)
                    if url != record["endpoint"]:
                        raise LineError(number, "invalid_url", "The URL provided for this "
                                        "request does not match the batch endpoint.", "url")
                    if self.router.resolve(model) is None:
                        raise LineError(number, "model_not_found",
                                        f"The model {model!r} has no route; "
                                        f"known: {', '.join(self.router.model_names())}",
                                        "body.model")
                except LineError as exc:
                    errors.append(exc.as_batch_error())
                    if len(errors) >= self.settings.max_batch_errors:
                        break
        except FileNotFoundError:
            errors.append({"code": "invalid_request", "line": None, "param": "file_id",
                           "message": f"Cannot find file {record['input_file_id']}."})
        now = int(self.clock())

        def decide(current: dict[str, Any]) -> dict[str, Any]:
            if current["status"] != Status.VALIDATING:
                return current  # cancelled meanwhile
            if errors:
                current["errors"] = {"object": "list", "data": errors}
                return move(current, Status.FAILED, now)
            return move(current, Status.IN_PROGRESS, now)

        record = self.store.update_batch(self.batch_id, decide)
        log.info("batch %s: validated in %.3f s, %s", self.batch_id,
                 time.perf_counter() - started, record["status"],
                 extra={"batch_id": self.batch_id, "project": self.store.project,
                        "status": record["status"], "epoch": self.claim.epoch})
        return record

    async def _execute(self, record: dict[str, Any]) -> None:
        self.progress = await asyncio.to_thread(
            journal.recover, self.store.batches_dir, self.batch_id,
            self.settings.claim_mode == "flock", self.prices)
        status = record["status"]
        started = time.perf_counter()
        if status == Status.IN_PROGRESS:
            self.writer = journal.JournalWriter(self.store.batches_dir, self.batch_id,
                                                self.claim.epoch, asyncio.get_running_loop())
            await self._send_all(record)
            log.info("batch %s: sent %d lines in %.3f s", self.batch_id,
                     len(self.progress.done), time.perf_counter() - started)
        elif status == Status.CANCELLING:
            self.reason = CANCEL
        elif status == Status.FINALIZING:
            self.reason = DONE
        if self.reason in (None, DONE) and self.clock() >= record["expires_at"]:
            self.reason = EXPIRED
        reason = self.reason or DONE
        if reason in (SHUTDOWN, LOST, PAUSED):
            log.info("batch %s: handing back (%s) after %d lines", self.batch_id, reason,
                     len(self.progress.done),
                     extra={"batch_id": self.batch_id, "project": self.store.project,
                            "reason": reason, "epoch": self.claim.epoch})
            return
        if reason == EXPIRED:
            await asyncio.to_thread(self._expire_rest, record)
        if self.writer is not None:
            self.writer.close()
        await asyncio.to_thread(self._finalize, reason)

    async def _send_all(self, record: dict[str, Any]) -> None:
        watcher = asyncio.create_task(self._watch(record))
        try:
            path = str(self.store.file_data_path(record["input_file_id"]))
            for number, raw in iter_lines(path):
                if self.reason is not None:
                    break
                if number in self.progress.done:
                    continue
                custom_id, body = request_of(raw, number)
                await self.slots.acquire()
                if self.reason is not None:
                    self.slots.release()
                    break
                task = asyncio.create_task(self._one(number, custom_id, body))
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)
            if self.in_flight:
                await asyncio.gather(*self.in_flight, return_exceptions=True)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if self.writer is not None:
                self.writer.flush()
                await asyncio.to_thread(self.writer.sync)
            if self.reason not in (None, PAUSED):  # finalizing writes the counts itself
                await asyncio.to_thread(self._save_counts)

    async def _one(self, number: int, custom_id: str, body: RequestBody) -> None:
        try:
            route = self.router.resolve(body.model)
            if route is None:
                line = error_line(custom_id, "model_not_found",
                                  f"The model {body.model!r} has no route")
                ok, usage, provider = False, None, None
            else:
                outcome = await self.upstream.send(route, body)
                ok = outcome.ok
                usage = outcome.usage
                provider = outcome.provider
                line = (success_line(custom_id, outcome, self.next_request_id()) if ok else
                        error_line(custom_id, outcome.error_code or "upstream_error",
                                   outcome.error_message or "request failed",
                                   self.next_request_id()))
        finally:
            self.slots.release()
        if self.reason == LOST or self.writer is None:
            return
        self.writer.append(journal.entry_bytes(number, line))
        self.progress.record(number, not ok, usage, provider)
        self.metrics.inc("zumik_lines_total", (("provider", provider or "none"),
                                               ("model", body.model),
                                               ("outcome", "failed" if not ok else "completed")))

    async def _watch(self, record: dict[str, Any]) -> None:
        """Cancel, expiry, lease and durability housekeeping while lines are sent."""
        marker = cancel_marker(self.store, self.batch_id)
        loop = asyncio.get_running_loop()
        next_counts = next_beat = loop.time()
        beat_every = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(min(WATCH_INTERVAL, self.settings.upstream_fsync_interval))
            if self.writer is not None:
                await asyncio.to_thread(self.writer.sync)
                if self.writer.error is not None and self.reason is None:
                    log.error("batch %s: journal write failed (%s); pausing", self.batch_id,
                              self.writer.error)
                    self.reason = PAUSED
                    self._cancel_in_flight()
            if self.reason is None and marker.exists():
                self.reason = CANCEL
                self._cancel_in_flight()
            if self.reason is None and self.clock() >= record["expires_at"]:
                self.reason = EXPIRED
                self._cancel_in_flight()
            now = loop.time()
            if now >= next_beat:
                next_beat = now + beat_every
                if not await asyncio.to_thread(self.claim.heartbeat):
                    log.warning("batch %s: lease lost to a newer epoch; stopping", self.batch_id)
                    self.reason = LOST
                    self._cancel_in_flight()
            if now >= next_counts:
                next_counts = now + COUNTS_INTERVAL
                try:
                    await asyncio.to_thread(self._save_counts)
                except OSError as exc:
                    log.error("batch %s: saving counts failed (%s); pausing", self.batch_id, exc)
                    if self.reason is None:
                        self.reason = PAUSED
                        self._cancel_in_flight()

    def _cancel_in_flight(self) -> None:
        for task in list(self.in_flight):
            task.cancel()

    def _save_counts(self) -> None:
        if self.reason in (LOST, PAUSED):
            return
        saved = self.progress
        self._progress_seq += 1
        progress.write(self.store.progress_path(self.batch_id), {
            "request_counts": {"completed": saved.completed, "failed": saved.failed},
            "usage": saved.usage, "cost": saved.cost()}, self.claim.epoch, self._progress_seq)

    def _expire_rest(self, record: dict[str, Any]) -> None:
        """Write a ``batch_expired`` line for every line that never ran."""
        if self.writer is not None:
            self.writer.close()  # flushes what the loop queued
        writer = journal.JournalWriter(self.store.batches_dir, self.batch_id, self.claim.epoch)
        self.writer = writer
        path = str(self.store.file_data_path(record["input_file_id"]))
        for number, raw in iter_lines(path):
            if number not in self.progress.done:
                custom_id = request_of(raw, number)[0]
                writer.append(journal.entry_bytes(number, error_line(
                    custom_id, "batch_expired", "This request could not be executed before "
                    "the completion window expired.")))
                self.progress.record(number, True, None)
        writer.sync()

    def _finalize(self, reason: str) -> None:
        """Reserve output ids, publish the files, then write the terminal record."""
        final = FINAL_STATUS[reason]
        now = int(self.clock())
        started = time.perf_counter()

        def reserve(record: dict[str, Any]) -> None:
            if not record.get("_output_file_id"):
                record["_output_file_id"] = ids.new_id(ids.FILE_PREFIX, self.clock())
                record["_error_file_id"] = ids.new_id(ids.FILE_PREFIX, self.clock())
            if final == Status.COMPLETED:
                move(record, Status.FINALIZING, now)

        record = self.store.update_batch(self.batch_id, reserve)
        summary = self._publish(record)

        def finish(current: dict[str, Any]) -> None:
            current["output_file_id"] = current["_output_file_id"] if summary.done else None
            current["error_file_id"] = current["_error_file_id"] if summary.failed else None
            current["request_counts"]["completed"] = summary.completed
            current["request_counts"]["failed"] = summary.failed
            current["usage"] = summary.usage
            current["cost"] = summary.cost()
            move(current, final, now)

        self.store.update_batch(self.batch_id, finish)
        for path in journal.segments(self.store.batches_dir, self.batch_id):
            path.unlink(missing_ok=True)
        cancel_marker(self.store, self.batch_id).unlink(missing_ok=True)
        log.info("batch %s: %s (%d completed, %d failed), finalized in %.3f s", self.batch_id,
                 final.value, summary.completed, summary.failed, time.perf_counter() - started,
                 extra={"batch_id": self.batch_id, "project": self.store.project,
                        "status": final.value, "completed": summary.completed,
                        "failed": summary.failed, "epoch": self.claim.epoch})

    def _publish(self, record: dict[str, Any]) -> journal.Progress:
        files_dir = self.store.files_dir
        tmp_all, tmp_failed = temp_path(files_dir, "out-"), temp_path(files_dir, "err-")
        try:
            summary = journal.merge(self.store.batches_dir, self.batch_id, tmp_all, tmp_failed,
                                    self.prices)
            now = int(self.clock())
            for tmp, file_id, suffix, count in (
                    (tmp_all, record["_output_file_id"], "output", len(summary.done)),
                    (tmp_failed, record["_error_file_id"], "errors", summary.failed)):
                if count:
                    self.store.write_file(tmp, {
                        "id": file_id, "object": "file", "bytes": os.path.getsize(tmp),
                        "created_at": now, "filename": f"{self.batch_id}_{suffix}.jsonl",
                        "purpose": "batch_output", "status": "processed",
                        "status_details": None, "expires_at": now + self.settings.output_ttl,
                        "requests": count, "batch_id": self.batch_id})
            return summary
        finally:
            tmp_all.unlink(missing_ok=True)
            tmp_failed.unlink(missing_ok=True)
