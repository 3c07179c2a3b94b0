"""Sharing each provider with the rest of Zumik and with the server's other users, for one
executor: publishes and reads the per-provider budget files (``provider_budget``) every
``PUBLISH_EVERY`` seconds and sets this executor's share of each learned limit, and polls the
servers' metrics pages where configured (``serverload``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterable
from pathlib import Path

import aiohttp

from zumik.execution.provider_budget import PUBLISH_EVERY, ProviderBudget, share
from zumik.execution.routing import ProviderConfig
from zumik.execution.scheduler import FairScheduler
from zumik.execution.serverload import ServerLoad
from zumik.execution.upstream import Upstream

log = logging.getLogger("zumik.executor")


class ProviderSharing:
    """The budget and server-load tasks of one executor."""

    def __init__(self, data_dir: Path, upstream: Upstream, scheduler: FairScheduler) -> None:
        self.data_dir = data_dir
        self.upstream = upstream
        self.scheduler = scheduler
        self.budgets: dict[str, ProviderBudget] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.tag = secrets.token_hex(3)  # several executors in one process (tests) differ

    def start(self, session: aiohttp.ClientSession, providers: Iterable[ProviderConfig]) -> None:
        for provider in providers:
            if provider.metrics_url and not provider.is_echo:
                load = ServerLoad(session, provider, self.upstream.limits_for(provider))
                self.tasks.append(asyncio.create_task(load.run()))
        self.tasks.append(asyncio.create_task(self._share_loop()))

    async def _share_loop(self) -> None:
        while True:
            try:
                await self.share_once()
            except Exception:
                log.exception("sharing provider budgets failed; retrying")
            await asyncio.sleep(PUBLISH_EVERY)

    async def share_once(self) -> None:
        """Publish this executor's entries, read the peers', set the shares."""
        states = []
        for name, limits in list(self.upstream.limits.items()):
            if limits.delay is None:
                continue
            budget = self.budgets.get(name)
            if budget is None:
                budget = self.budgets[name] = ProviderBudget(self.data_dir, name, self.tag)
            wanting = bool(limits.demand > limits.in_flight or self.scheduler.waiting)
            states.append((limits, budget, limits.delay.current, limits.in_flight, wanting))
        if not states:
            return

        def exchange() -> list[float]:
            shares = []
            for _, budget, limit, in_flight, wanting in states:
                budget.publish(limit, in_flight, wanting)
                shares.append(share(limit, budget.peers()))
            return shares

        for (limits, *_), fraction in zip(states, await asyncio.to_thread(exchange), strict=True):
            limits.set_share(fraction)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        budgets = list(self.budgets.values())

        def withdraw_all() -> None:
            for budget in budgets:
                budget.withdraw()

        await asyncio.to_thread(withdraw_all)
