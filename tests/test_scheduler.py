"""The fair scheduler on its own: slots per line, projects first, then batches, cancels."""

from __future__ import annotations

import asyncio

from zumik.execution.scheduler import FairScheduler


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
        tasks = [
            asyncio.create_task(waiter(scheduler, p, b, got))
            for p, b in [("a", "a1"), ("a", "a2"), ("a", "a2"), ("b", "b1"), ("b", "b1")]
        ]
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
    """Project a runs 10 batches, each with as many senders as there are slots (as BatchRun
    runs them: a sender keeps its slot through ``renew`` while nobody else waits); project
    b's 10-line batch still gets half the slots as lines finish."""

    async def go():
        scheduler = FairScheduler(8)
        done = {"b": 0}

        async def sender(project: str, batch: str, lines: list[int]) -> None:
            held = False
            try:
                while lines:
                    if not held and not scheduler.try_acquire(project, batch):
                        await scheduler.acquire(project, batch)
                    held = True
                    if not lines:
                        break
                    lines.pop()
                    await asyncio.sleep(0.001)  # the request
                    if project == "b":
                        done["b"] += 1
                    held = scheduler.renew(project, batch)
            finally:
                if held:
                    scheduler.release(project, batch)

        def batch(project: str, name: str, n: int) -> list[asyncio.Task[None]]:
            lines = list(range(n))
            return [asyncio.create_task(sender(project, name, lines)) for _ in range(8)]

        big = [task for i in range(10) for task in batch("a", f"a{i}", 300)]
        await asyncio.sleep(0.01)
        peak_b = 0
        small = batch("b", "b1", 10)
        while not all(task.done() for task in small):
            peak_b = max(peak_b, scheduler.in_flight("b"))
            await asyncio.sleep(0)
        assert done["b"] == 10 and peak_b >= 4
        for task in big:
            task.cancel()
        await asyncio.gather(*big, return_exceptions=True)
        assert scheduler.in_use == 0 and scheduler.projects == {}

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


def test_try_acquire_takes_a_free_slot_only_when_nobody_waits():
    async def go():
        scheduler = FairScheduler(2)
        assert scheduler.try_acquire("a", "a1") and scheduler.try_acquire("a", "a1")
        assert not scheduler.try_acquire("b", "b1") and scheduler.in_use == 2
        got: list[str] = []
        task = asyncio.create_task(waiter(scheduler, "b", "b1", got))
        await settle()
        scheduler.release("a", "a1")  # goes to b's waiter
        await task
        scheduler.release("a", "a1")  # a slot is free and nobody waits
        assert scheduler.try_acquire("a", "a1") and got == ["b/b1"]

    run(go())


def test_renew_keeps_the_slot_unless_another_batch_waits():
    async def go():
        scheduler = FairScheduler(1)
        assert scheduler.try_acquire("a", "a1")
        assert scheduler.renew("a", "a1") and scheduler.in_use == 1  # nobody waits
        got: list[str] = []
        sibling = asyncio.create_task(waiter(scheduler, "a", "a1", got))
        await settle()
        assert scheduler.renew("a", "a1")  # only its own batch waits: the slot would come back
        assert got == [] and scheduler.in_flight("a", "a1") == 1
        other = asyncio.create_task(waiter(scheduler, "a", "a2", got))
        await settle()
        assert not scheduler.renew("a", "a1")  # released: the fairest waiter gets it
        await other
        assert got == ["a/a2"] and scheduler.in_flight("a", "a1") == 0
        scheduler.release("a", "a2")  # now a1's waiting sibling gets it
        await sibling
        assert got == ["a/a2", "a/a1"]
        scheduler.release("a", "a1")
        assert scheduler.idle() and scheduler.projects == {}

    run(go())
