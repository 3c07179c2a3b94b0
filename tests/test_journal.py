"""The journal on its own: entries keyed by input line number, torn tails, several epochs,
and the merge into output and error files."""

from __future__ import annotations

import json
import random

from zumik.execution.results import error_line
from zumik.storage import journal
from zumik.storage.batchhandle import BatchHandle


def ok_line(custom_id: str, tokens: int = 3, provider: str = "p") -> bytes:
    body = {"usage": {"prompt_tokens": tokens, "completion_tokens": 1, "total_tokens": tokens + 1}}
    return (
        json.dumps(
            {
                "id": "batch_req_1",
                "custom_id": custom_id,
                "response": {"status_code": 200, "request_id": None, "body": body},
                "error": None,
                "provider": provider,
            }
        ).encode()
        + b"\n"
    )


def test_line_set_is_a_set_of_line_numbers():
    lines, model = journal.LineSet(), set()
    rng = random.Random(7)
    for _ in range(5000):
        n = rng.randrange(1, 60_000)
        assert lines.add(n) == (n not in model)
        model.add(n)
    assert len(lines) == len(model)
    assert all((n in lines) == (n in model) for n in range(0, 61_000))


def test_recover_skips_a_torn_tail_and_keeps_the_first_entry_of_a_line(tmp_path):
    handle = BatchHandle(tmp_path, tmp_path, "batch_x")
    first = handle.segment_path(1)
    first.write_bytes(
        journal.entry_bytes(1, ok_line("a", 5))
        + journal.entry_bytes(2, error_line("b", "timeout", "slow"))
        + b'3\t{"id":"batch_req_1","custom_id":"c","resp'
    )
    handle.segment_path(2).write_bytes(
        journal.entry_bytes(1, ok_line("a", 100))  # sent again by a later claim: ignored
        + journal.entry_bytes(3, ok_line("c", 7))
        + b"garbage without a tab\n"
    )
    segments = handle.segments()
    assert [p.name for p in segments] == ["1.jsonl", "2.jsonl"]
    progress = journal.recover(segments, repair=True)
    assert len(progress.done) == 3 and 1 in progress.done and 4 not in progress.done
    assert (progress.completed, progress.failed) == (2, 1)
    assert progress.usage["input_tokens"] == 12  # 5 + 7, not the duplicate's 100
    assert first.read_bytes().endswith(b"\n")  # the torn tail was cut off


def http_error_line(custom_id: str, status: int = 400) -> bytes:
    body = {"error": {"message": "bad", "type": "invalid_request_error", "code": None}}
    return (
        json.dumps(
            {
                "id": "batch_req_2",
                "custom_id": custom_id,
                "response": {"status_code": status, "request_id": "r", "body": body},
                "error": None,
            }
        ).encode()
        + b"\n"
    )


def test_the_classifier_fails_http_errors_and_answerless_lines():
    decode = journal._ENTRY.decode
    assert not decode(ok_line("a")).failed
    assert decode(http_error_line("b", 400)).failed
    assert decode(http_error_line("b", 503)).failed
    assert decode(error_line("c", "timeout", "slow")).failed
    assert decode(b'{"custom_id":"d","response":null,"error":null}').failed


def merged_ids(path) -> list[str]:
    return [json.loads(x)["custom_id"] for x in path.read_bytes().splitlines()]


def test_merge_writes_each_line_once_successes_to_output_failures_to_errors(tmp_path):
    handle = BatchHandle(tmp_path, tmp_path, "batch_x")
    handle.segment_path(1).write_bytes(
        journal.entry_bytes(2, ok_line("b")) + journal.entry_bytes(1, error_line("a", "x", "y"))
    )
    handle.segment_path(2).write_bytes(
        journal.entry_bytes(2, ok_line("b"))
        + journal.entry_bytes(3, ok_line("c"))
        + journal.entry_bytes(4, http_error_line("d"))
    )
    out, err = tmp_path / "out", tmp_path / "err"
    merged = journal.merge(
        BatchHandle(tmp_path, tmp_path, "batch_x").segments(),
        out,
        err,
        prices={"p": (1_000_000.0, 0.0)},
    )
    summary = merged.summary
    assert merged_ids(out) == ["b", "c"]
    assert merged_ids(err) == ["a", "d"]
    assert (merged.output_lines, merged.error_lines) == (2, 2)
    assert (summary.completed, summary.failed, len(summary.done)) == (2, 2, 4)
    assert summary.cost() == {"input": 6.0, "output": 0.0, "total": 6.0}
    assert not out.read_bytes().startswith(b"2\t")  # the line-number prefix stays in the journal


def test_merge_combined_puts_every_line_in_the_output(tmp_path):
    BatchHandle(tmp_path, tmp_path, "batch_x").segment_path(1).write_bytes(
        journal.entry_bytes(1, ok_line("a")) + journal.entry_bytes(2, http_error_line("b"))
    )
    out, err = tmp_path / "out", tmp_path / "err"
    merged = journal.merge(
        BatchHandle(tmp_path, tmp_path, "batch_x").segments(), out, err, combined=True
    )
    assert merged_ids(out) == ["a", "b"] and merged_ids(err) == ["b"]
    assert (merged.summary.completed, merged.summary.failed) == (1, 1)
