"""The fair scheduler's ranks (issue 25): within a project, a waiting batch of higher priority
gets freed slots first, then the one nearer its deadline; between projects, fairness is as
before (a rank never lets one project take another's share)."""

from __future__ import annotations

import asyncio

from zumik.execution.scheduler import FairScheduler


async def waiter(scheduler: FairScheduler, project: str, batch: str, got: list[str]):
    await scheduler.acquire(project, batch)
    got.append(f"{project}/{batch}")


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_higher_priority_then_nearer_deadline_within_a_project():
    async def go():
        scheduler = FairScheduler(2)
        scheduler.set_rank("a", "low", 2, 100.0)
        scheduler.set_rank("a", "late", 1, 500.0)
        scheduler.set_rank("a", "soon", 1, 200.0)
        scheduler.set_rank("a", "high", 0, 900.0)
        for _ in range(2):
            await scheduler.acquire("a", "low")  # the low batch holds every slot
        got: list[str] = []
        tasks = [
            asyncio.create_task(waiter(scheduler, "a", b, got))
            for b in ("low", "late", "soon", "high", "high")
        ]
        await settle()
        for _ in range(2):
            scheduler.release("a", "low")
            await settle()
        assert got == ["a/high", "a/high"]  # although the low batch has none in flight now
        scheduler.release("a", "high")
        await settle()
        assert got[-1] == "a/soon"  # normal ones: the nearer deadline first
        scheduler.release("a", "high")
        await settle()
        assert got[-1] == "a/late"
        scheduler.release("a", "soon")
        await settle()
        assert got[-1] == "a/low"  # low goes last
        await asyncio.gather(*tasks)

    asyncio.run(go())


def test_ranks_do_not_cross_projects():
    async def go():
        scheduler = FairScheduler(2)
        scheduler.set_rank("a", "a-high", 0, 1.0)
        for _ in range(2):
            await scheduler.acquire("a", "a-high")
        got: list[str] = []
        tasks = [
            asyncio.create_task(waiter(scheduler, p, b, got))
            for p, b in (("a", "a-high"), ("b", "b-low"))
        ]
        scheduler.set_rank("b", "b-low", 2, 9.0)
        await settle()
        scheduler.release("a", "a-high")
        await settle()
        assert got == ["b/b-low"]  # b has nothing in flight: its turn, whatever the ranks
        scheduler.release("a", "a-high")
        await settle()
        assert got == ["b/b-low", "a/a-high"]
        await asyncio.gather(*tasks)
        scheduler.clear_rank("a", "a-high")
        assert scheduler._rank("a", "a-high") == (1, float("inf"))

    asyncio.run(go())


def test_renew_hands_a_low_batch_slot_to_a_waiting_high_one():
    async def go():
        scheduler = FairScheduler(1)
        scheduler.set_rank("a", "low", 2, 1.0)
        scheduler.set_rank("a", "high", 0, 9.0)
        await scheduler.acquire("a", "low")
        got: list[str] = []
        tasks = [asyncio.create_task(waiter(scheduler, "a", b, got)) for b in ("low", "high")]
        await settle()
        assert not scheduler.renew("a", "low")  # another batch waits: the slot is handed on
        await settle()
        assert got == ["a/high"]
        scheduler.release("a", "high")
        await asyncio.gather(*tasks)

    asyncio.run(go())
