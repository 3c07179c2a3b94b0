"""``zumik.storage.results`` on real files: the cursor walks journal segments (a torn tail, a
new epoch, an outcome filter) and carries on in the merged files without skipping or
repeating a line, split and combined; bad cursors are refused."""

from __future__ import annotations

import json

import pytest

from zumik.core.exceptions import InvalidRequest
from zumik.storage import journal
from zumik.storage.results import Cursor, read_page
from zumik.storage.store import ProjectStore

BATCH = "batch_" + "0" * 24


def result(number: int, ok: bool) -> bytes:
    line = {
        "id": f"batch_req_{number}",
        "custom_id": f"r{number}",
        "response": {"status_code": 200 if ok else 400, "request_id": "x", "body": {}},
        "error": None,
    }
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def append(store: ProjectStore, epoch: int, numbers: range, torn: bool = False) -> None:
    with open(store.batch(BATCH).segment_path(epoch), "ab") as f:
        for n in numbers:
            f.write(journal.entry_bytes(n, result(n, n % 5 != 0)))
        if torn:
            f.write(b'999\t{"custom_id":"torn')  # a kill mid-write: no newline


def read_all(store, record, cursor, outcome="all", limit=7, pages=None, combined=False):
    """Page until ``has_more`` is false (or only ``pages`` pages)."""
    seen = []
    for _ in range(pages or 1000):
        page = read_page(store, record, cursor, outcome=outcome, limit=limit, combined=combined)
        seen += [json.loads(x)["custom_id"] for x in page.lines]
        assert len(page.lines) <= limit
        cursor = page.cursor
        if not page.has_more:
            return seen, cursor
    assert pages, "no end"
    return seen, cursor


@pytest.mark.parametrize("combined", [False, True])
def test_journal_then_files_every_line_once(tmp_path, combined):
    store = ProjectStore(tmp_path, "p").ensure()
    running = {"id": BATCH, "status": "in_progress"}
    append(store, 1, range(1, 31), torn=True)
    seen, cursor = read_all(store, running, Cursor(), combined=combined)
    assert seen == [f"r{n}" for n in range(1, 31)]  # the torn tail is no line
    append(store, 2, range(31, 51))  # a new epoch after a kill; the torn tail stays
    more, cursor = read_all(store, running, cursor, limit=3, pages=4, combined=combined)
    seen += more
    out, err = store.file_data_path("file-out"), store.file_data_path("file-err")
    merged = journal.merge(store.batch(BATCH).segments(), out, err, combined=combined)
    assert merged.summary.completed + merged.summary.failed == 50
    store.batch(BATCH).remove_run_state()  # finalize deletes the journal
    done = {"id": BATCH, "status": "completed", "output_file_id": "file-out"}
    done["error_file_id"] = "file-err"
    rest, _ = read_all(store, done, cursor, combined=combined)
    assert sorted(seen + rest) == sorted(f"r{n}" for n in range(1, 51))
    assert len(seen + rest) == 50


def test_outcome_filter_and_bad_cursors(tmp_path):
    store = ProjectStore(tmp_path, "p").ensure()
    running = {"id": BATCH, "status": "in_progress"}
    append(store, 1, range(1, 41))
    failed, _ = read_all(store, running, Cursor(), outcome="failed", limit=2)
    assert failed == [f"r{n}" for n in range(5, 41, 5)]
    ok, _ = read_all(store, running, Cursor(), outcome="succeeded", limit=50)
    assert len(ok) == 32 and not set(ok) & set(failed)
    assert Cursor.decode(Cursor(1, 2, 3, 4).encode()) == Cursor(1, 2, 3, 4)
    for bad in ("x", "rc_!!", "rc_" + "A" * 300, Cursor(1, 2, 3, 4).encode()[:-2] + "zz"):
        with pytest.raises(InvalidRequest):
            Cursor.decode(bad)
            read_page(store, running, Cursor.decode(bad))
    with pytest.raises(InvalidRequest):  # mid-line
        read_page(store, running, Cursor(0, 0, 1, 3))
    # in the files a mid-line offset goes on at the next line
    out, err = store.file_data_path("file-out"), store.file_data_path("file-err")
    journal.merge(store.batch(BATCH).segments(), out, err)
    done = {"id": BATCH, "status": "completed", "output_file_id": "file-out"}
    page = read_page(store, done, Cursor(3, 0, 0, 0), limit=1)
    assert [json.loads(x)["custom_id"] for x in page.lines] == ["r2"]
    # a segment cut back below a cursor (a failed write) reads as its end, not an error
    page = read_page(store, running, Cursor(0, 0, 1, 10**9))
    assert page.lines == [] and page.has_more is False
