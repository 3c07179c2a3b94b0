"""One claimed batch, from ``validating`` to a terminal status.

validate -> send every line not yet in the journal -> finalize (merge the journal into the
output and error files, then the terminal record). Every step can be repeated after a crash:
the journal says what is done, and the output file ids are reserved in the record first.

How a run ends is a ``RunOutcome``, set only through ``BatchRun.end`` (which says which
outcome wins). A batch becomes terminal only in ``BatchRun.make_terminal``: that is the one place to
hook anything that must happen exactly when a batch reaches its final status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from zumik.core import ids
from zumik.core.lines import CHAT, EMBEDDINGS
from zumik.core.records import Status, is_terminal, priority_rank
from zumik.execution.budget import Budget
from zumik.execution.finalize import Finalizing, Incomplete
from zumik.execution.lastround import LastRound
from zumik.execution.outcome import RunOutcome
from zumik.execution.packing import Pack, Packer
from zumik.execution.results import custom_id_of, error_line, outcome_line
from zumik.execution.routing import Router
from zumik.execution.scheduler import FairScheduler
from zumik.execution.throughput import Throughput
from zumik.execution.upstream import Upstream
from zumik.execution.validate import Validating
from zumik.execution.watch import Watching
from zumik.execution.wire import RequestBody, request_of
from zumik.ops.metrics import Counter, Metrics
from zumik.settings import Settings
from zumik.storage import journal
from zumik.storage.claims import Claim
from zumik.storage.inputs import iter_lines
from zumik.storage.store import ProjectStore

log = logging.getLogger("zumik.executor")


encode = msgspec.json.encode


class BatchRun(Validating, Finalizing, LastRound, Watching):
    """Runs one batch this executor has claimed."""

    def __init__(
        self,
        *,
        settings: Settings,
        router: Router,
        upstream: Upstream,
        clock: Callable[[], float],
        store: ProjectStore,
        claim: Claim,
        scheduler: FairScheduler,
        metrics: Metrics | None = None,
        throughput: Throughput | None = None,
    ) -> None:
        self.settings = settings
        self.throughput = throughput or Throughput()
        self.budget = Budget()
        self.router = router
        self.upstream = upstream
        self.clock = clock
        self.store = store
        self.claim = claim
        self.batch = claim.batch
        self.batch_id = claim.batch_id
        self.scheduler = scheduler
        self.project = store.project
        self.sending = False  # lines are being handed out (the start-up steps are done)
        self.metrics = metrics or Metrics()
        self.outcome: RunOutcome | None = None
        self.senders: set[asyncio.Task[None]] = set()
        self._waiting_senders = 0  # senders waiting for a slot
        self.prices: journal.Prices = {
            p.name: (p.input_price, p.output_price)
            for p in router.providers.values()
            if p.input_price is not None or p.output_price is not None
        }
        self.progress = journal.Progress(self.prices)
        self.writer: journal.JournalWriter | None = None
        self.endpoint = CHAT
        self.packer = Packer(router, upstream, EMBEDDINGS, self.next_request_id)
        self._request_prefix = ids.BATCH_REQUEST_PREFIX + secrets.token_hex(6)
        self._request_count = 0
        self._progress_seq = 0
        self._line_counters: dict[tuple[str | None, str, bool], Counter] = {}
        self.deferred: list[tuple[int, str, RequestBody]] | None = []  # for the last round

    def next_request_id(self) -> str:
        """``batch_req_`` + 24 hex: a random prefix per run and a counter (no syscall per line)."""
        self._request_count += 1
        return f"{self._request_prefix}{self._request_count:012x}"

    # -- how the run ends -------------------------------------------------------------------
    def end(self, outcome: RunOutcome, *, abort: bool = False) -> bool:
        """Set how this run ends; False if it was decided already.

        The first outcome wins, except that ``PAUSED`` (storage failed) overrides any but
        ``LOST``, and ``LOST`` (another epoch owns the batch now) overrides everything.
        Nothing new is sent once an outcome is set; ``abort`` also cancels the requests in
        flight (unjournaled, so a later claim sends them again).
        """
        current = self.outcome
        first = (
            current is None
            or outcome is RunOutcome.LOST
            or (outcome is RunOutcome.PAUSED and current is not RunOutcome.LOST)
        )
        if first:
            self.outcome = outcome
        if abort:
            for task in list(self.senders):
                task.cancel()
        return first

    def stop(self) -> None:
        """Graceful shutdown: send nothing new; in-flight requests may finish."""
        self.end(RunOutcome.SHUTDOWN)

    def abort(self) -> None:
        """Stop at once: cancel the requests in flight (they are re-sent by the next claim)."""
        self.end(RunOutcome.SHUTDOWN, abort=True)

    # -- the run ---------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            record = self.batch.read()
            if record is None or is_terminal(record):  # (a finisher killed before settling)
                await asyncio.to_thread(self.settle_ending, record)
                if record is not None:  # a finalize cut short after its terminal record
                    await asyncio.to_thread(self.batch.remove_run_state)
                return
            if record["status"] == Status.VALIDATING:
                record = await asyncio.to_thread(self._validate, record)
                if record["status"] == Status.FAILED:
                    return
            await self._execute(record)
        except Incomplete as exc:
            self.end(RunOutcome.PAUSED)
            log.warning("batch %s: not finalized: %s", self.batch_id, exc)
        except Exception:
            self.end(RunOutcome.PAUSED)
            log.exception(
                "batch %s: run failed; paused, it will be retried by a later claim", self.batch_id
            )
            if not self.claim.lost:  # cancel and expiry hold whatever broke the run
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.end_if_due)
        finally:
            if self.writer is not None:
                self.writer.close()
            await asyncio.to_thread(self.claim.release)

    async def _execute(self, record: dict[str, Any]) -> None:
        self.progress = await asyncio.to_thread(
            journal.recover, self.batch.segments(), self.settings.claim_mode == "flock", self.prices
        )
        if self.progress.unreadable:
            log.error(
                "batch %s: %d journal entries could not be counted; their lines are sent again",
                self.batch_id,
                self.progress.unreadable,
            )
            self.metrics.inc("zumik_line_errors_total", (), self.progress.unreadable)
        status = record["status"]
        if status == Status.FINALIZING and await asyncio.to_thread(
            self.missing_lines, record, self.progress.done
        ):  # an earlier finalize was cut short with lines missing: send them first
            record = await asyncio.to_thread(self.back_to_sending)
            status = record["status"]
        if status == Status.IN_PROGRESS and self.clock() >= record["expires_at"]:
            self.end(RunOutcome.EXPIRED)  # never send past the window, whatever is left
        elif status == Status.IN_PROGRESS and self.batch.cancel_requested():
            self.end(RunOutcome.CANCELLED)
        started = time.perf_counter()
        if status == Status.IN_PROGRESS and self.outcome is None:
            self.writer = journal.JournalWriter(
                self.batch.segment_path(self.claim.epoch), asyncio.get_running_loop()
            )
            await self._send_all(record)
            log.info(
                "batch %s: sent %d lines in %.3f s",
                self.batch_id,
                len(self.progress.done),
                time.perf_counter() - started,
            )
        elif status == Status.CANCELLING:
            self.end(RunOutcome.CANCELLED)
        if self.outcome is None and self.clock() >= record["expires_at"]:
            self.end(RunOutcome.EXPIRED)
        if self.writer is not None and self.writer.error is not None:
            log.error(
                "batch %s: journal write failed (%s); pausing", self.batch_id, self.writer.error
            )
            self.end(RunOutcome.PAUSED)  # lines it dropped count as done only in memory
        self.end(RunOutcome.DONE)  # no other outcome: every line has its result
        outcome = self.outcome
        assert outcome is not None
        final = outcome.final_status
        if final is None:
            log.info(
                "batch %s: handing back (%s) after %d lines",
                self.batch_id,
                outcome,
                len(self.progress.done),
                extra={
                    "batch_id": self.batch_id,
                    "project": self.store.project,
                    "reason": outcome.value,
                    "epoch": self.claim.epoch,
                },
            )
            return
        if outcome is RunOutcome.EXPIRED:
            await asyncio.to_thread(self._expire_rest, record)
        elif outcome is RunOutcome.DONE and self.budget.exceeded_at is not None:
            await asyncio.to_thread(self._budget_rest, record)
        if self.writer is not None:
            self.writer.close()
        await asyncio.to_thread(self._finalize, final)

    async def _send_all(self, record: dict[str, Any]) -> None:
        """Send every line not journaled yet, through senders that share one line iterator."""
        self.endpoint = record["endpoint"]
        self.budget = Budget.of(record)
        self.scheduler.set_rank(
            self.project, self.batch_id, priority_rank(record), record["expires_at"]
        )
        watcher = asyncio.create_task(self._watch(record))
        self.sending = True
        failure: BaseException | None = None
        try:
            path = str(self.store.file_data_path(record["input_file_id"]))
            pending: Iterator[Any] = self._pending(path)
            if self.endpoint == EMBEDDINGS:  # lines go upstream in packs (execution.packing)
                pending = self.packer.units(pending)
            self._start_sender(pending)
            for _ in range(2):  # every line, then the last round of the deferred ones
                while self.senders:  # senders start more senders while they find free slots
                    done, _ = await asyncio.wait(set(self.senders))
                    for task in done:
                        if not task.cancelled() and task.exception() is not None:
                            failure = failure or task.exception()
                if failure is not None:  # lines may be left unsent: never DONE, pause instead
                    raise failure
                await self.last_round()
        finally:
            self.scheduler.clear_rank(self.project, self.batch_id)
            for task in self.senders:
                task.cancel()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if self.writer is not None:
                self.writer.flush()
                await asyncio.to_thread(self.writer.sync)
            if self.outcome not in (None, RunOutcome.PAUSED):  # finalizing saves its own
                await asyncio.to_thread(self._save_counts)

    def _pending(self, path: str) -> Iterator[tuple[int, str, RequestBody]]:
        """The input lines not journaled yet, parsed for sending. A line that cannot be parsed
        (validated earlier: only a bug gets here) is journaled as failed on the spot."""
        done = self.progress.done
        for number, raw in iter_lines(path):
            if number in done:
                continue
            try:
                custom_id, body = request_of(raw, number)
            except Exception as exc:
                self._line_failed(number, custom_id_of(raw, number), exc)
                continue
            yield number, custom_id, body

    def _start_sender(self, pending: Iterator[Any], single: bool = False) -> None:
        task = asyncio.create_task(self._sender(pending, single))
        self.senders.add(task)
        task.add_done_callback(self.senders.discard)

    async def _sender(self, pending: Iterator[Any], single: bool = False) -> None:
        """Send lines one after another, each under a slot of the fair scheduler, until none is
        left or the run has an outcome.

        A sender keeps its slot for its next line unless another batch waits for one
        (``FairScheduler.renew``), so a line costs no task and no wake-up. A sender that gets
        a slot while no other sender of this run waits for one starts another, so the run
        always has one ready for the next slot the scheduler hands it."""
        scheduler, project, batch_id = self.scheduler, self.project, self.batch_id
        held = False
        try:
            while True:
                if not held:
                    self._waiting_senders += 1
                    try:
                        if not scheduler.try_acquire(project, batch_id):
                            await scheduler.acquire(project, batch_id)
                    finally:
                        self._waiting_senders -= 1
                    held = True
                stop = self.outcome is not None or self.budget.spent(self.progress, self.clock)
                line = None if stop else next(pending, None)
                if line is None:
                    return
                if not single and not self._waiting_senders and len(self.senders) < scheduler.slots:
                    self._start_sender(pending)
                if isinstance(line, Pack):  # one slot, one request, one journal write
                    results = await self.packer.send(line, self._request)
                else:
                    results = [(line[0], await self._request(*line))]
                held = scheduler.renew(project, batch_id)  # as soon as the answer is in
                for number, result in results:
                    if result is not None:
                        self._journal(number, *result)
        finally:
            if held:
                scheduler.release(project, batch_id)

    async def _request(
        self, number: int, custom_id: str, body: RequestBody
    ) -> tuple[bytes, bool, Any, str | None, str] | None:
        """Send one line; what to journal for it (None: it raised and was journaled failed)."""
        try:
            route = self.router.resolve(body.model)
            if route is None:
                return (
                    error_line(
                        custom_id, "model_not_found", f"The model {body.model!r} has no route"
                    ),
                    False,
                    None,
                    None,
                    body.model,
                )
            sent = time.monotonic()
            outcome = await self.upstream.send(route, body, self.endpoint)
            ok = outcome.ok
            if ok:
                self.throughput.answered(outcome.provider, sent, outcome.usage)
            elif outcome.retryable and self.defer(number, custom_id, body):
                return None  # not journaled: sent again in the last round
            line = outcome_line(custom_id, outcome, self.next_request_id())
            return line, ok, outcome.usage if ok else None, outcome.provider, body.model
        except Exception as exc:  # anything unexpected fails this line alone, once
            self._line_failed(number, custom_id, exc, body.model)
            return None

    def _journal(
        self, number: int, line: bytes, ok: bool, usage: Any, provider: str | None, model: str
    ) -> None:
        if self.outcome is RunOutcome.LOST or self.writer is None:
            return
        self.writer.append(journal.entry_bytes(number, line))
        self.progress.record(number, not ok, usage, provider)
        counter = self._line_counters.get((provider, model, ok))
        if counter is None:
            counter = self._line_counters[provider, model, ok] = self.metrics.counter(
                "zumik_lines_total",
                (
                    ("provider", provider or "none"),
                    ("model", model),
                    ("outcome", "completed" if ok else "failed"),
                ),
            )
        counter.inc()

    def _line_failed(
        self, number: int, custom_id: str, exc: Exception, model: str = "unknown"
    ) -> None:
        """Journal a line that raised inside Zumik as failed with ``internal_error``: logged
        with its line number and counted, so no line goes missing and none loops."""
        log.error(
            "batch %s: line %d raised %s; failed with internal_error",
            self.batch_id,
            number,
            type(exc).__name__,
            exc_info=exc,
            extra={"batch_id": self.batch_id, "project": self.store.project, "line": number},
        )
        self.metrics.inc("zumik_line_errors_total", ())
        message = f"Internal error while running this request ({type(exc).__name__})"
        self._journal(
            number, error_line(custom_id, "internal_error", message), False, None, None, model
        )
