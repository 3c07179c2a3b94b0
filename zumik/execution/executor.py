"""The executor: one asyncio loop with one aiohttp session, in a thread of its own.

One per gunicorn worker, started after the fork (``post_worker_init``) and stopped in
``worker_exit``; tests and ``flask run`` start and stop it explicitly, or drive it step by
step with ``run_once`` / ``run_until_idle`` inside ``opened``. Its loop scans every
project's ``active/`` markers, claims batches (``zumik.storage.claims``; which ones: ``_wants``) and
runs each claim as a ``BatchRun``; their lines share the executor's concurrency through a
``FairScheduler``. Workers share nothing but the filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable

import aiohttp

from zumik.execution.batchrun import BatchRun, RunOutcome
from zumik.execution.routing import Router
from zumik.execution.scheduler import FairScheduler
from zumik.execution.throughput import Throughput
from zumik.execution.upstream import HealthSettings, Upstream
from zumik.ops.metrics import Metrics
from zumik.settings import Settings
from zumik.storage import fsutil
from zumik.storage.claims import Claimer
from zumik.storage.janitor import Janitor
from zumik.storage.store import ProjectStore, iter_projects
from zumik.webhooks.delivery import Deliverer

log = logging.getLogger("zumik.executor")
METRICS_INTERVAL = 2.0
CLAIM_AFTER_POLLS = 4  # a batch nobody took for this many poll intervals is taken anyway


class Executor:
    """Claims and runs batches in a background thread."""

    def __init__(
        self,
        settings: Settings,
        router: Router,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.router = router
        self.clock = clock
        self.claimer = Claimer(settings.claim_mode, settings.lease_seconds)
        self.janitor = Janitor(settings, clock)
        self.deliverer = Deliverer(settings, self.metrics)
        self.runs: dict[str, BatchRun] = {}
        self.throughput = Throughput()  # what providers were seen to do, for estimates
        self.paused_until: dict[str, float] = {}
        self._first_seen: dict[str, float] = {}  # active batch id -> when this executor saw it
        self.pause_seconds = 5.0
        self._metrics_flushed = float("-inf")
        self._reported: dict[str, tuple[float, int]] = {}  # provider -> counters flushed
        self.upstream: Upstream | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.scheduler: FairScheduler | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._ready = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def dead(self) -> bool:
        """The thread was started and ended without ``stop`` (it crashed)."""
        return self._thread is not None and not self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (idempotent); returns once the loop is ready."""
        if self.running:
            return
        self._ready.clear()
        self._thread = threading.Thread(
            target=self._thread_main, name="zumik-executor", daemon=True
        )
        self._thread.start()
        self._ready.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop sending, let in-flight requests finish (up to the grace), hand claims back."""
        loop, stopping = self._loop, self._stopping
        if self._thread is None or loop is None or stopping is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout)
        self._thread = None

    def wake(self) -> None:
        """Scan now (a batch was created or cancelled) instead of at the next poll."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and self.running:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            log.exception("executor thread died")

    async def _main(self) -> None:
        async with self.opened():
            self._ready.set()
            assert self._stopping is not None and self._wake is not None
            delivering = asyncio.create_task(self.deliverer.run(self._stopping))
            while not self._stopping.is_set():
                await self.run_once()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_delay())
            await delivering

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[Executor]:
        """The executor's loop-bound state (HTTP session, slots); on exit, runs are stopped
        gracefully and their claims handed back. ``_main`` and tests both run inside it."""
        self._loop = asyncio.get_running_loop()
        self._stopping, self._wake = asyncio.Event(), asyncio.Event()
        self.scheduler = FairScheduler(self.settings.concurrency)
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=True) as session:
            settings = self.settings
            self.upstream = Upstream(
                session,
                metrics=self.metrics,
                health=HealthSettings(
                    settings.provider_down_failures,
                    settings.provider_down_seconds,
                    settings.provider_probe_max,
                    settings.max_response_bytes,
                ),
            )
            try:
                yield self
            finally:
                await self._shutdown()

    async def run_once(self) -> int:
        """One step of the loop: claim what can be claimed, sweep if due, flush metrics.

        Returns how many batches were claimed. Never raises (a failed scan is logged)."""
        claimed = 0
        try:
            claimed = self._claim_new()
            await asyncio.to_thread(self.janitor.maybe_sweep)
            await self._flush_metrics()
        except Exception:
            log.exception("executor scan failed")
        return claimed

    async def run_until_idle(self) -> None:
        """Step until no batch runs and none can be claimed (tests drive the executor so,
        inside ``opened``, instead of starting the thread and polling)."""
        while True:
            claimed = await self.run_once()
            if not self.tasks and not claimed:
                return
            if self.tasks:
                await asyncio.wait(set(self.tasks), return_when=asyncio.FIRST_COMPLETED)

    async def _flush_metrics(self) -> None:
        now = time.monotonic()
        if now - self._metrics_flushed >= METRICS_INTERVAL:
            self._metrics_flushed = now
            assert self.upstream is not None
            metrics = self.metrics
            for name, limits in self.upstream.limits.items():
                metrics.set_gauge(
                    "zumik_inflight_requests", (("provider", name),), limits.in_flight
                )
            worker = f"{fsutil.host_id()}-{os.getpid()}"  # after the fork
            states = {}
            for name, health in self.upstream.health.items():
                state = states[name] = health.snapshot()
                labels = (("provider", name),)
                metrics.set_gauge(
                    "zumik_provider_up", (*labels, ("worker", worker)), 1.0 if health.up else 0.0
                )
                reported = self._reported.get(name, (0.0, 0))
                metrics.inc(
                    "zumik_provider_wait_seconds_total", labels, state["wait_seconds"] - reported[0]
                )
                metrics.inc("zumik_provider_downs_total", labels, state["downs"] - reported[1])
                self._reported[name] = (state["wait_seconds"], state["downs"])
            metrics.set_providers(states)
            metrics.set_throughput(self.throughput.snapshot())
            await asyncio.to_thread(metrics.flush, self.settings.data_dir)

    def _poll_delay(self) -> float:
        return self.settings.poll_interval * (0.75 + random.random() * 0.5)

    def _claim_new(self) -> int:
        """Claim the batches this executor should run now (see ``_wants``)."""
        assert self.upstream is not None and self.scheduler is not None
        claimed = 0
        now = time.monotonic()
        seen: dict[str, float] = {}
        held = {run.project for run in self.runs.values()}
        projects = list(iter_projects(self.settings.data_dir))
        random.shuffle(projects)
        # projects this executor holds nothing of come first
        projects.sort(key=lambda project: project in held)
        for project in projects:
            store = ProjectStore.open(self.settings, project, self.clock)
            for batch_id in store.active_ids():
                seen[batch_id] = self._first_seen.get(batch_id, now)
                if batch_id in self.runs or self.paused_until.get(batch_id, 0) > now:
                    continue
                if not self._wants(project in held, now - seen[batch_id]):
                    continue
                claim = self.claimer.try_claim(store.batch(batch_id))
                if claim is None:
                    continue
                run = BatchRun(
                    settings=self.settings,
                    router=self.router,
                    upstream=self.upstream,
                    clock=self.clock,
                    store=store,
                    claim=claim,
                    scheduler=self.scheduler,
                    metrics=self.metrics,
                    throughput=self.throughput,
                )
                self.runs[batch_id] = run
                held.add(project)
                task = asyncio.create_task(run.run())
                self.tasks.add(task)
                task.add_done_callback(functools.partial(self._finished, batch_id=batch_id))
                claimed += 1
        self._first_seen = seen
        return claimed

    def _wants(self, holds_project: bool, waited: float) -> bool:
        """Whether to claim one more batch. Lines, not batches, are what is scheduled, so a
        worker may hold many claims; but across workers a project's batches should spread:
        take a batch of a project this worker holds nothing of at once, any batch while this
        worker has slots to spare (nothing waiting, no claimed batch still starting up), and
        any batch left unclaimed for a while (``CLAIM_AFTER_POLLS`` poll intervals)."""
        if not holds_project:
            return True
        assert self.scheduler is not None
        if self.scheduler.idle() and all(run.sending for run in self.runs.values()):
            return True
        return waited >= self.settings.poll_interval * CLAIM_AFTER_POLLS

    def _finished(self, task: asyncio.Task[None], batch_id: str) -> None:
        self.tasks.discard(task)
        run = self.runs.pop(batch_id, None)
        if run is not None and run.outcome is RunOutcome.PAUSED:
            self.paused_until[batch_id] = time.monotonic() + self.pause_seconds
        else:
            self.paused_until.pop(batch_id, None)
        if self._wake is not None:
            self._wake.set()  # a slot is free: look for more work now

    async def _shutdown(self) -> None:
        tasks = self.tasks
        for run in list(self.runs.values()):
            run.stop()
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=self.settings.shutdown_grace)
            for run in list(self.runs.values()):
                run.abort()
            if pending:
                await asyncio.wait(pending, timeout=5)
