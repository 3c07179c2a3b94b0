"""What an executor measures of a provider (issue 25): lines and tokens per second of busy time,
idle time not counted, overlapping lines counted once, rates published through the metrics
snapshots and bounded when read back."""

from __future__ import annotations

import json

import pytest

from zumik.execution.throughput import Throughput
from zumik.ops.metrics import Metrics, measured_throughput


def test_busy_time_is_the_union_of_the_lines_intervals():
    seen = Throughput()
    for start in (0.0, 0.5, 1.0, 1.5):  # four lines of 1 s, two at a time: 2.5 s busy
        seen.record("p", start, start + 1.0, 100)
    seen.record("p", 100.0, 100.5, 100)  # after a long idle gap: 0.5 s more, not 98.5
    rates = seen.snapshot()["p"]
    assert rates["lines_per_second"] == pytest.approx(5 / 3.0)
    assert rates["tokens_per_second"] == pytest.approx(500 / 3.0)
    seen.record("", 0.0, 1.0, 5)  # no provider: ignored
    seen.record("q", 2.0, 1.0, 5)  # answered before sent: ignored
    assert set(seen.snapshot()) == {"p"}


def test_published_rates_are_summed_over_live_workers_and_bounded(tmp_path):
    metrics = Metrics()
    seen = Throughput()
    seen.record("p", 0.0, 2.0, 400)
    metrics.set_throughput(seen.snapshot())
    metrics.flush(tmp_path)
    assert measured_throughput(tmp_path) == {
        "p": {"lines_per_second": 0.5, "tokens_per_second": 200.0}
    }
    hostile = {
        "pid": 1,
        "host": "elsewhere",  # another host: assumed alive
        "throughput": {
            "p": {"lines_per_second": 1.5, "tokens_per_second": 100.0},
            "bad": {"lines_per_second": float("inf"), "tokens_per_second": -1},
            "worse": "not a dict",
        },
    }
    (tmp_path / ".metrics" / "elsewhere-1.json").write_text(json.dumps(hostile))
    measured = measured_throughput(tmp_path)
    assert measured == {"p": {"lines_per_second": 2.0, "tokens_per_second": 300.0}}
