"""Fair sharing of one executor's concurrency: lines are what is scheduled.

Every line a batch sends first takes a slot here (``ZUMIK_CONCURRENCY`` slots per executor).
While slots are free they are granted at once, with no await. When they run out, each freed
slot goes to the *project* with the fewest lines in flight among those waiting, and within it
to the *batch* with the fewest lines in flight (ties go to whoever was served least recently).
So a new small batch gets an equal share of the slots as soon as lines finish, however many big
batches run: max-min fairness over lines in flight, between projects first, then between a
project's batches. A line that ends may hand its slot straight to the next line of its batch
(``renew``) when no other batch waits, since the slot would go back to that batch anyway: the
common case of one busy batch costs no future and no wake-up per line.

Within a project, a batch's *rank* (``set_rank``: its priority, then its deadline) comes
before fairness: a freed slot goes to the project's waiting batch of highest priority, among
equals to the one whose window ends first, and only then to the one with fewest in flight.
Between projects nothing changes: ranks never cross a project.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from dataclasses import dataclass, field


@dataclass
class _Share:
    """Lines in flight and waiters of one project or one batch."""

    in_flight: int = 0
    served: int = 0  # grant sequence number of the last grant (for ties)
    waiters: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)


@dataclass
class _Project(_Share):
    batches: dict[str, _Share] = field(default_factory=dict)
    waiting: int = 0  # waiters over all its batches


DEFAULT_RANK = (1, float("inf"))


class FairScheduler:
    """Slots for lines, shared fairly between projects, then between their batches."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.in_use = 0
        self.waiting = 0
        self.projects: dict[str, _Project] = {}
        self._grants = itertools.count(1)
        self._ranks: dict[tuple[str, str], tuple[int, float]] = {}

    def set_rank(self, project: str, batch_id: str, priority: int, deadline: float) -> None:
        """Rank ``batch_id`` within its project: lower ``priority`` first (0 high, 1 normal,
        2 low), then the earlier ``deadline``. Unranked batches rank as normal, no deadline."""
        self._ranks[project, batch_id] = (priority, deadline)

    def clear_rank(self, project: str, batch_id: str) -> None:
        self._ranks.pop((project, batch_id), None)

    def _rank(self, project: str, batch_id: str) -> tuple[int, float]:
        return self._ranks.get((project, batch_id), DEFAULT_RANK)

    def idle(self) -> bool:
        """Whether a slot is free and nothing waits (the executor may take more batches)."""
        return self.in_use < self.slots and not self.waiting

    def in_flight(self, project: str, batch_id: str | None = None) -> int:
        """Lines in flight of a project, or of one of its batches."""
        share = self.projects.get(project)
        if share is None or batch_id is None:
            return share.in_flight if share else 0
        batch = share.batches.get(batch_id)
        return batch.in_flight if batch else 0

    def try_acquire(self, project: str, batch_id: str) -> bool:
        """Take a slot at once if one is free and nobody waits (then pair with ``release``);
        False means ``await acquire`` instead."""
        if self.in_use >= self.slots or self.waiting:
            return False
        self._take(*self._shares(project, batch_id))
        return True

    async def acquire(self, project: str, batch_id: str) -> None:
        """Take a slot for one line of ``batch_id``; pair with ``release``."""
        if self.try_acquire(project, batch_id):
            return
        owner, batch = self._shares(project, batch_id)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        batch.waiters.append(future)
        owner.waiting += 1
        self.waiting += 1
        try:
            await future  # _grant took the slot for us before resolving
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(project, batch_id)
            else:  # still queued, or already dropped by ``_grant``
                if future in batch.waiters:
                    batch.waiters.remove(future)
                    owner.waiting -= 1
                    self.waiting -= 1
                self._forget(project, owner, batch_id, batch)
            raise

    def renew(self, project: str, batch_id: str) -> bool:
        """Keep a slot for another line of the same batch when no other batch waits for one
        (the freed slot would go to this batch anyway); else ``release`` it and say False."""
        if self.waiting:
            owner = self.projects[project]
            batch = owner.batches[batch_id]
            if self.waiting != len(batch.waiters):
                self.release(project, batch_id)
                return False
            owner.served = batch.served = next(self._grants)
        return True

    def release(self, project: str, batch_id: str) -> None:
        """Give a line's slot back; the next one goes to the fairest waiter."""
        owner = self.projects[project]
        batch = owner.batches[batch_id]
        self.in_use -= 1
        owner.in_flight -= 1
        batch.in_flight -= 1
        while self.waiting and self.in_use < self.slots:
            self._grant()
        self._forget(project, owner, batch_id, batch)

    def _shares(self, project: str, batch_id: str) -> tuple[_Project, _Share]:
        owner = self.projects.get(project)
        if owner is None:
            owner = self.projects[project] = _Project()
        batch = owner.batches.get(batch_id)
        if batch is None:
            batch = owner.batches[batch_id] = _Share()
        return owner, batch

    def _take(self, owner: _Project, batch: _Share) -> None:
        self.in_use += 1
        owner.in_flight += 1
        batch.in_flight += 1
        owner.served = batch.served = next(self._grants)

    def _grant(self) -> None:
        """Hand one slot to the fairest live waiter (a cancelled one is dropped)."""
        while self.waiting:
            project, owner = min(
                ((name, p) for name, p in self.projects.items() if p.waiting),
                key=lambda item: (item[1].in_flight, item[1].served),
            )
            _, batch = min(
                ((self._rank(project, name), b) for name, b in owner.batches.items() if b.waiters),
                key=lambda item: (item[0], item[1].in_flight, item[1].served),
            )
            future = batch.waiters.popleft()
            owner.waiting -= 1
            self.waiting -= 1
            if not future.done():
                self._take(owner, batch)
                future.set_result(None)
                return

    def _forget(self, project: str, owner: _Project, batch_id: str, batch: _Share) -> None:
        """Drop the books of a batch (and project) with nothing in flight and no waiter."""
        if batch.in_flight or batch.waiters or owner.batches.get(batch_id) is not batch:
            return
        del owner.batches[batch_id]
        if not owner.batches and self.projects.get(project) is owner:
            del self.projects[project]
