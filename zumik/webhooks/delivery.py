"""Webhook delivery: a task of its own in the executor's loop, with its own HTTP session.

Every ``webhook_poll_interval`` it claims due outbox entries (``zumik.webhooks.registry.outbox``) up
to ``webhook_concurrency`` in flight and POSTs each, signed with the endpoint's active secrets and a
fresh ``webhook-timestamp`` (the ``webhook-id`` never changes). A 2xx deletes the entry; a timeout
(``webhook_timeout``), a connection error or any other status schedules the next attempt with
exponential backoff and jitter until ``webhook_retry_window`` has passed since the batch ended.
Redirects are not followed. The batch path never waits on any of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from zumik.core.records import is_terminal
from zumik.ops.metrics import Metrics
from zumik.settings import Settings
from zumik.storage.store import ProjectStore
from zumik.webhooks import outbox, signing
from zumik.webhooks import registry as webhooks

log = logging.getLogger("zumik.webhooks")
USER_AGENT = "Zumik-Webhooks/1"


def backoff(settings: Settings, attempts: int) -> float:
    """The delay after the ``attempts``-th failure: doubling from ``webhook_backoff``, capped
    at ``webhook_max_backoff``, times a random factor in [0.5, 1) so receivers coming back
    are not hit by every sender at once."""
    delay = settings.webhook_backoff * 2 ** min(attempts - 1, 40)
    return min(delay, settings.webhook_max_backoff) * (0.5 + random.random() / 2)


class Deliverer:
    """Delivers outbox entries; ``run`` until ``stopping`` is set."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.wall = wall
        self.outbox = outbox.Outbox(settings.data_dir, lease=settings.webhook_timeout * 3 + 30)
        self.registry = webhooks.Registry(settings.data_dir)
        self.in_flight: dict[asyncio.Task[None], outbox.Claimed] = {}

    async def run(self, stopping: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout)
        async with aiohttp.ClientSession(
            timeout=timeout, headers={"User-Agent": USER_AGENT}, auto_decompress=True
        ) as session:
            try:
                while not stopping.is_set():
                    try:
                        await self._scan(session)
                    except Exception:
                        log.exception("webhook outbox scan failed")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), self.settings.webhook_poll_interval)
            finally:
                await self._shutdown()

    async def _scan(self, session: aiohttp.ClientSession) -> None:
        free = self.settings.webhook_concurrency - len(self.in_flight)
        if free <= 0:
            return
        for claimed in await asyncio.to_thread(self.outbox.claim_due, free, self.wall()):
            task = asyncio.create_task(self._deliver(session, claimed))
            self.in_flight[task] = claimed
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery failed unexpectedly", exc_info=task.exception())

    async def _shutdown(self) -> None:
        """Stop: cancel deliveries in flight and hand their entries back, attempts unchanged."""
        pending = dict(self.in_flight)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(set(pending), timeout=5)
        for claimed in pending.values():
            if claimed.path.exists():
                with contextlib.suppress(OSError):
                    claimed.retry({})

    async def _deliver(self, session: aiohttp.ClientSession, claimed: outbox.Claimed) -> None:
        prepared = await asyncio.to_thread(self._prepare, claimed)
        if prepared is None:
            return
        entry, endpoint = prepared
        body = entry["body"].encode()
        now = self.wall()
        timestamp = int(now)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": entry["webhook_id"],
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signing.signature_header(
                endpoint.active_secrets(now), entry["webhook_id"], timestamp, body
            ),
        }
        attempts = entry["attempts"] + 1
        started = time.monotonic()
        try:
            async with session.post(
                endpoint.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                status: int | None = response.status
                error = None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except TimeoutError:
            status, error = None, f"timed out after {self.settings.webhook_timeout:g} s"
        except (aiohttp.ClientError, ValueError, OSError) as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"[:300]
        elapsed = time.monotonic() - started
        await asyncio.to_thread(self._settle, claimed, entry, attempts, status, error, elapsed)

    def _prepare(self, claimed: outbox.Claimed) -> tuple[dict[str, Any], webhooks.Endpoint] | None:
        """The entry to send now and its endpoint, or None when it was dropped or deferred."""
        entry = claimed.entry
        endpoint = self.registry.get(entry["endpoint_id"])
        if endpoint is None:
            log.info(
                "webhook %s: endpoint %s was removed; dropped",
                entry["webhook_id"],
                entry["endpoint_id"],
            )
            claimed.finish()
            return None
        store = ProjectStore.open(self.settings, claimed.project, self.wall)
        record = store.get_batch(entry["batch_id"])
        if record is not None and not is_terminal(record):
            # written just before the terminal record, which a crash cut off: the batch is
            # finalized again by its next claim, which rewrites this entry.
            if self.wall() - entry["enqueued_at"] > self.settings.webhook_retry_window:
                claimed.finish()
            else:
                claimed.retry({"next_at": self.wall() + self.settings.webhook_poll_interval})
            return None
        if record is not None and outbox.event_type(record) != entry["type"]:
            entry = {**entry, "type": outbox.event_type(record), "body": outbox.event_body(record)}
        if entry["type"] not in endpoint.events:
            claimed.finish()
            return None
        return entry, endpoint

    def _settle(
        self,
        claimed: outbox.Claimed,
        entry: dict[str, Any],
        attempts: int,
        status: int | None,
        error: str | None,
        elapsed: float,
    ) -> None:
        now = self.wall()
        report: dict[str, Any] = {
            "at": int(now),
            "webhook_id": entry["webhook_id"],
            "type": entry["type"],
            "batch_id": entry["batch_id"],
            "attempt": attempts,
            "status_code": status,
            "seconds": round(elapsed, 3),
        }
        extra = {
            "webhook_id": entry["webhook_id"],
            "batch_id": entry["batch_id"],
            "endpoint_id": entry["endpoint_id"],
            "attempt": attempts,
        }
        if error is None:
            claimed.finish()
            report["result"] = "delivered"
            outcome = "delivered"
            log.info(
                "webhook %s: %s delivered (HTTP %s, attempt %d)",
                entry["webhook_id"],
                entry["type"],
                status,
                attempts,
                extra=extra,
            )
        elif now - entry["enqueued_at"] >= self.settings.webhook_retry_window:
            claimed.finish()
            report["result"] = f"gave up: {error}"
            outcome = "gave_up"
            log.error(
                "webhook %s: gave up after %d attempts (%s)",
                entry["webhook_id"],
                attempts,
                error,
                extra=extra,
            )
        else:
            deadline = entry["enqueued_at"] + self.settings.webhook_retry_window
            next_at = min(now + backoff(self.settings, attempts), deadline)
            claimed.retry(
                {
                    "type": entry["type"],
                    "body": entry["body"],
                    "attempts": attempts,
                    "next_at": next_at,
                    "last_error": error,
                }
            )
            report["result"] = f"failed: {error}; next attempt at {int(next_at)}"
            outcome = "failed"
            log.warning(
                "webhook %s: attempt %d failed (%s); next in %.1f s",
                entry["webhook_id"],
                attempts,
                error,
                next_at - now,
                extra=extra,
            )
        self.metrics.inc("zumik_webhook_deliveries_total", (("outcome", outcome),))
        with contextlib.suppress(OSError):
            webhooks.write_status(self.settings.data_dir, entry["endpoint_id"], report)
