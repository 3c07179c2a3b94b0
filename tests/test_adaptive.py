"""The delay-based concurrency limit on its own: samples fed by hand, and a model of a
continuous-batching server in virtual time (deterministic: no clock, no sleeps)."""

from __future__ import annotations

import random

from zumik.execution.adaptive import PROBE_CONCURRENCY, PROBE_SAMPLES, DelayLimiter
from zumik.execution.limits import ProviderLimits
from zumik.execution.routing import ProviderConfig

TOKENS = 16


def feed(limiter: DelayLimiter, tpot: float, count: int, now: float = 1.0) -> None:
    """``count`` answers of requests admitted after the current window, ``tpot`` s per token."""
    for _ in range(count):
        ticket = limiter.window_ticket + 1
        limiter.sample(ticket, ticket, tpot * TOKENS, TOKENS, now)


def simulate(
    knee: int = 16,
    slots: int = 24,
    step: float = 0.009,
    seconds: float = 60.0,
    interactive_rate: float = 0.0,
    batch: bool = True,
    fixed: int | None = None,
    seed: int = 1,
) -> dict:
    """A closed-loop batch at the limiter's limit (or ``fixed``) beside Poisson interactive
    requests, on a server whose step takes ``step`` up to ``knee`` sequences, then
    proportionally longer; ``slots`` run at once, the rest queue (FIFO)."""
    rng = random.Random(seed)
    limiter = DelayLimiter(0.1, 256, now=0.0, rng=random.Random(seed))
    now, ticket, ours, done = 0.0, 0, 0, 0
    running: list[list] = []  # [steps left, started, kind, ticket]
    waiting: list[list] = []
    arrival = rng.expovariate(interactive_rate) if interactive_rate else float("inf")
    interactive: list[float] = []
    limits: list[float] = []
    while now < seconds:
        cap = fixed if fixed is not None else int(limiter.current)
        while batch and ours < cap:
            ticket += 1
            ours += 1
            waiting.append([TOKENS + 1, now, "batch", ticket])
        while now >= arrival:
            waiting.append([TOKENS + 1, arrival, "interactive", 0])
            arrival += rng.expovariate(interactive_rate)
        while waiting and len(running) < slots:
            running.append(waiting.pop(0))
        if not running:
            now = min(arrival, seconds)
            continue
        now += step * max(1.0, len(running) / knee) * (1 + rng.uniform(-0.05, 0.05))
        still = []
        for sequence in running:
            sequence[0] -= 1
            if sequence[0] > 0:
                still.append(sequence)
            elif sequence[2] == "interactive":
                interactive.append(now - sequence[1])
            else:
                ours -= 1
                done += 1
                limiter.sample(sequence[3], ticket, now - sequence[1], TOKENS, now)
        running = still
        limits.append(limiter.current)
    interactive.sort()
    half = limits[len(limits) // 2 :]
    return {
        "batch_rate": done / seconds,
        "p99": interactive[int(0.99 * len(interactive))] if interactive else 0.0,
        "limit": sum(half) / len(half),
        "limiter": limiter,
    }


def test_starts_by_measuring_the_baseline_then_grows_while_time_per_token_stays_flat():
    limiter = DelayLimiter(0.1, 256, now=0.0)
    assert limiter.probing and limiter.current == PROBE_CONCURRENCY
    feed(limiter, 0.010, PROBE_SAMPLES - 1)
    assert limiter.baseline is None
    feed(limiter, 0.010, 1)
    assert limiter.baseline == 0.010 and not limiter.probing
    before = limiter.current
    feed(limiter, 0.010, 8)
    assert limiter.current == 2 * before  # slow start
    assert not limiter.yielding


def test_shrinks_in_proportion_when_the_delay_rises_and_says_it_yields():
    limiter = DelayLimiter(0.1, 256, now=0.0)
    feed(limiter, 0.010, PROBE_SAMPLES)
    while limiter.current < 32:
        feed(limiter, 0.010, int(limiter.current))
    limit = limiter.current
    feed(limiter, 0.015, int(limit))  # 50% slower per token: far past the knee
    assert limiter.yielding
    assert limiter.current == max(limit * 0.5, limit * 0.9 / 1.5)
    assert limiter.knee == limit


def test_answers_to_requests_sent_before_a_change_are_ignored():
    limiter = DelayLimiter(0.1, 256, now=0.0)
    feed(limiter, 0.010, PROBE_SAMPLES)
    limit = limiter.current
    stale = limiter.window_ticket  # admitted before the window began
    for _ in range(100):
        limiter.sample(stale, stale + 1, 1.0, TOKENS, 1.0)
    assert limiter.current == limit and not limiter.yielding


def test_hostile_samples_are_bounded_or_ignored():
    limiter = DelayLimiter(0.1, 256, now=0.0)
    for latency, tokens in (
        (float("nan"), 16),
        (float("inf"), 16),
        (-1.0, 16),
        (1e300, 1),
        (0.16, True),
        (0.16, "16"),
        (0.16, None),
        (0.16, -5),
        (0.16, 10**30),
    ):
        limiter.sample(limiter.window_ticket + 1, 10, latency, tokens, 1.0)
    assert limiter.current >= 1
    assert limiter.baseline is None or limiter.baseline >= 0


def test_the_ceiling_bounds_it_and_an_idle_limit_does_not_grow():
    limiter = DelayLimiter(0.1, ceiling=10, now=0.0)
    feed(limiter, 0.010, PROBE_SAMPLES)
    for _ in range(20):
        feed(limiter, 0.010, 10)
    assert limiter.current == 10
    idle = DelayLimiter(0.1, 256, now=0.0)
    feed(idle, 0.010, PROBE_SAMPLES)
    limit = idle.current
    for _ in range(20):
        ticket = idle.window_ticket + 1
        idle.sample(ticket, ticket, 0.16, TOKENS, 1.0, busy=False)
    assert idle.current == limit


def test_the_baseline_is_measured_again_by_a_short_probe_and_the_limit_restored():
    limiter = DelayLimiter(0.1, 256, probe_every=30.0, now=0.0, rng=random.Random(3))
    feed(limiter, 0.010, PROBE_SAMPLES, now=0.0)
    while limiter.current < 64:
        feed(limiter, 0.010, int(limiter.current), now=1.0)
    limit = limiter.current
    feed(limiter, 0.010, 1, now=100.0)  # past the next probe time
    assert limiter.probing and limiter.current == PROBE_CONCURRENCY
    feed(limiter, 0.008, PROBE_SAMPLES, now=100.5)
    assert not limiter.probing and limiter.current == limit
    assert limiter.baseline == 0.008


def test_the_servers_queue_shrinks_the_limit_and_holds_growth():
    limiter = DelayLimiter(0.1, 256, now=0.0)
    feed(limiter, 0.010, PROBE_SAMPLES)
    feed(limiter, 0.010, 8)
    limit = limiter.current
    limiter.queue(3, limiter.window_ticket)
    assert limiter.current == limit - 3 and limiter.yielding
    feed(limiter, 0.010, 64)
    assert limiter.current == limit - 3  # no growth while the server queues
    limiter.queue(0, limiter.window_ticket)
    feed(limiter, 0.010, 64)
    assert limiter.current > limit - 3


def test_against_a_model_server_it_saturates_alone_and_yields_beside_interactive_users():
    best = max(simulate(fixed=f, seconds=20)["batch_rate"] for f in (16, 24))
    alone = simulate()
    assert alone["batch_rate"] >= 0.9 * best
    rate = 0.2 * best
    interactive_alone = simulate(interactive_rate=rate, batch=False)["p99"]
    shared = simulate(interactive_rate=rate)
    # this model is harsher than the (a fixed 12 adds ~25-30% here, 15% there): the
    # bound is the best any fixed limit gives beside others, which no fixed limit gives alone
    assert shared["p99"] <= 1.3 * interactive_alone
    assert shared["batch_rate"] >= 0.6 * (best - rate)
    assert shared["limit"] < alone["limit"]
    assert simulate(fixed=12, seconds=20)["batch_rate"] < 0.9 * best
    # a fixed 16 (what "alone" needs) hurts the interactive users: the test can fail
    assert simulate(interactive_rate=rate, fixed=16)["p99"] > 1.5 * interactive_alone


def test_a_wider_server_gets_a_larger_limit():
    wide = {"knee": 64, "slots": 96, "step": 0.02}
    best = max(simulate(**wide, fixed=f, seconds=20)["batch_rate"] for f in (64, 96))
    alone = simulate(**wide)
    assert alone["batch_rate"] >= 0.9 * best and alone["limit"] > 48
    rate = 0.2 * best
    interactive_alone = simulate(**wide, interactive_rate=rate, batch=False)["p99"]
    shared = simulate(**wide, interactive_rate=rate)
    assert shared["p99"] <= 1.25 * interactive_alone
    assert shared["batch_rate"] >= 0.6 * (best - rate)


def test_provider_limits_take_the_least_of_learned_limit_loss_backstop_and_ceiling():
    provider = ProviderConfig(
        "p", "http://127.0.0.1:1/v1", max_concurrency=100, max_added_latency=0.1
    )
    limits = ProviderLimits(provider)
    assert limits.cap == PROBE_CONCURRENCY  # the first probe
    limits.delay.probing = False
    limits.delay.limit = 40.0
    limits.wake()
    assert limits.cap == 40
    limits.set_share(0.5)  # another executor wants the provider too
    assert limits.cap == 20
    limits.tickets = 1
    limits.on_failure(429, None, ticket=1)  # loss: halve what is in force
    assert limits.cap == 10
    fixed = ProviderLimits(
        ProviderConfig("f", "http://127.0.0.1:1/v1", max_concurrency=7, max_added_latency=0)
    )
    assert fixed.delay is None and fixed.cap == 7


def test_the_learned_limit_is_opt_in():
    """By default a provider keeps its fixed limit (AIMD on 429/503 only): no learning."""
    limits = ProviderLimits(ProviderConfig("p", "http://127.0.0.1:1/v1"))
    assert limits.delay is None and limits.cap == 64
