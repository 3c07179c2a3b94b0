"""The usage ledger equals what the project's folders hold, after any sequence of changes and
after a kill -9 at any moment followed by recovery (issue 28)."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_ops import PROJECT, Ops, recount, usage_of

from zumik.storage.store import ProjectStore

HERE = Path(__file__).parent


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 2**32), steps=st.integers(5, 60))
def test_the_ledger_equals_a_recount_after_any_sequence(tmp_path_factory, seed, steps):
    data_dir = tmp_path_factory.mktemp("ledger") / "data"
    clock = [1_800_000_000.0]
    ops = Ops(data_dir, random.Random(seed), clock)
    for _ in range(steps):
        ops.random_op()
        assert usage_of(ops.store) == recount(ops.store, clock[0])
    clock[0] += 120  # everything with an expiry has expired: the exact boundary too
    assert usage_of(ops.store) == recount(ops.store, clock[0])


@pytest.mark.slow
def test_after_kill_9_at_random_moments_recovery_makes_the_ledger_right(tmp_path, caplog):
    data_dir = tmp_path / "data"
    rng = random.Random(28)
    corrected = 0
    for round_no in range(12):
        worker = subprocess.Popen(
            [sys.executable, str(HERE / "ledger_ops.py"), str(data_dir), str(round_no)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert worker.stdout is not None and worker.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.01, 0.5))
        worker.kill()
        _, err = worker.communicate(timeout=30)
        assert worker.returncode == -9, err.decode()[-2000:]
        store = ProjectStore(data_dir, PROJECT)
        with caplog.at_level(logging.WARNING, "zumik.ledger"):
            store.recover()
        corrected += sum("corrected" in r.getMessage() for r in caplog.records)
        caplog.clear()
        now = time.time()
        at_now = ProjectStore(data_dir, PROJECT, lambda now=now: now)
        assert usage_of(at_now) == recount(store, now)
    assert recount(store, time.time())[2] > 0  # the worker did make records
    print(f"{corrected} interrupted changes corrected")


def test_a_lost_ledger_is_counted_again_and_a_broken_change_is_logged(tmp_path, caplog):
    data_dir = tmp_path / "data"
    clock = [1_800_000_000.0]
    ops = Ops(data_dir, random.Random(5), clock)
    for _ in range(30):
        ops.random_op()
    expected = recount(ops.store, clock[0])
    # a change recorded in the ledger whose file never landed (a crash between the two)
    state = ops.store.ledger_state()
    ops.store.ledger.commit(state, {"file-0123456789ab0123456789ab": (None, (1, 99, 0, None))})
    assert usage_of(ops.store)[:2] == (expected[0] + 1, expected[1] + 99)
    with caplog.at_level(logging.WARNING, "zumik.ledger"):
        ops.store.recover()
    assert "corrected after an interrupted change" in caplog.text
    assert usage_of(ops.store) == expected
    ops.store.ledger.path.unlink()
    assert usage_of(ops.store) == expected
