"""The fair scheduler on its own: slots per line, projects first, then batches, cancels."""

from __future__ import annotations

import asyncio

from zumik.scheduler import FairScheduler


def run(coro):
    return asyncio.run(coro)


async def waiter(scheduler: FairScheduler, project: str, batch: str, got: list[str]):
    await scheduler.acquire(project, batch)
    got.append(f"{project}/{batch}")


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_free_slots_are_granted_at_once_then_lines_wait():
    async def go():
        scheduler = FairScheduler(3)
        for _ in range(3):
            await scheduler.acquire("a", "a1")  # no await needed while slots are free
        assert scheduler.in_use == 3 and not scheduler.idle()
        got: list[str] = []
        task = asyncio.create_task(waiter(scheduler, "a", "a1", got))
        await settle()
        assert got == [] and scheduler.waiting == 1
        scheduler.release("a", "a1")
        await settle()
        assert got == ["a/a1"] and scheduler.in_use == 3
        await task
        for _ in range(3):
            scheduler.release("a", "a1")
        assert scheduler.idle() and scheduler.projects == {}

    run(go())


def test_a_freed_slot_goes_to_the_project_then_the_batch_with_fewest_in_flight():
    async def go():
        scheduler = FairScheduler(4)
        for _ in range(4):
            await scheduler.acquire("a", "a1")  # project a's big batch holds every slot
        got: list[str] = []
        tasks = [asyncio.create_task(waiter(scheduler, p, b, got))
                 for p, b in [("a", "a1"), ("a", "a2"), ("a", "a2"), ("b", "b1"), ("b", "b1")]]
        await settle()
        scheduler.release("a", "a1")
        await settle()
        assert got == ["b/b1"]  # b has nothing in flight, a has 3
        scheduler.release("a", "a1")
        await settle()
        assert got[-1] == "b/b1"  # a 2, b 1: b again
        scheduler.release("a", "a1")
        await settle()
        assert got[-1] == "a/a2"  # a 1 (a1), b 2: a's turn, and in a the batch with none
        scheduler.release("a", "a1")
        await settle()
        assert got[-1] == "a/a1"  # a1 0 in flight, a2 1
        assert scheduler.in_flight("a") == 2 and scheduler.in_flight("b") == 2
        scheduler.release("b", "b1")
        await settle()
        assert got[-1] == "a/a2"  # b waits no more; a1 and a2 tie: a2 was served longer ago
        assert len(got) == 5
        await asyncio.gather(*tasks)

    run(go())


def test_many_big_batches_do_not_starve_a_new_small_one():
    """Project a runs 10 batches that always have a line waiting; project b's 10-line batch
    still gets half the slots as lines finish."""

    async def go():
        scheduler = FairScheduler(8)
        done = {"b": 0}

        async def line(project: str, batch: str) -> None:
            await scheduler.acquire(project, batch)
            await asyncio.sleep(0.001)
            scheduler.release(project, batch)
            if project == "b":
                done["b"] += 1

        async def batch_loop(project: str, batch: str, lines: int) -> None:
            tasks = []
            for _ in range(lines):
                await scheduler.acquire(project, batch)  # like BatchRun: one slot, then a task
                scheduler.release(project, batch)
                tasks.append(asyncio.create_task(line(project, batch)))
                await asyncio.sleep(0)
            await asyncio.gather(*tasks)

        big = [asyncio.create_task(batch_loop("a", f"a{i}", 300)) for i in range(10)]
        await asyncio.sleep(0.01)
        peak_b = 0
        small = asyncio.create_task(batch_loop("b", "b1", 10))
        while not small.done():
            peak_b = max(peak_b, scheduler.in_flight("b"))
            await asyncio.sleep(0)
        assert done["b"] == 10 and peak_b >= 2
        for task in big:
            task.cancel()
        await asyncio.gather(*big, return_exceptions=True)

    run(go())


def test_a_cancelled_waiter_leaks_no_slot():
    async def go():
        scheduler = FairScheduler(1)
        await scheduler.acquire("a", "a1")
        got: list[str] = []
        cancelled = asyncio.create_task(waiter(scheduler, "b", "b1", got))
        later = asyncio.create_task(waiter(scheduler, "c", "c1", got))
        await settle()
        cancelled.cancel()
        await settle()
        scheduler.release("a", "a1")
        await later
        assert got == ["c/c1"] and scheduler.in_use == 1 and scheduler.waiting == 0
        scheduler.release("c", "c1")
        assert scheduler.idle() and scheduler.projects == {}

    run(go())
