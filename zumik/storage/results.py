"""Reading a batch's result lines page by page: from its journal while it runs, from its
output and error files once it ended, with one opaque cursor that never skips nor repeats a
line across the switch, a kill of the worker, or lines that keep finishing.

Arrival order is the journal's: segments oldest epoch first, each in byte order. Segments are
append-only, and an older epoch's segment stops growing before a newer one starts (the flock
or lease passes only from a dead or stopped holder); a torn tail is no entry and is skipped
once a newer segment exists. ``journal.merge`` writes the output and error files in that same
order, each line's bytes unchanged, so what a reader has seen up to a journal position is
exactly a prefix of each file. The cursor carries both positions: ``epoch``/``offset`` in the
journal and ``out``/``err``, the bytes of the lines seen that go to the output file and to the
error file. Once the batch is terminal the rest of the output file from ``out`` is served,
then the rest of the error file from ``err``. A page seeks and reads about its own size
(``SCAN_BUDGET`` caps how far a filter may read past lines it does not want).
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from zumik.core.exceptions import InvalidRequest
from zumik.core.records import is_terminal
from zumik.storage.batchhandle import BatchHandle
from zumik.storage.journal import Entry, is_failed
from zumik.storage.retry_lines import line_failed
from zumik.storage.store import ProjectStore

OUTCOMES = ("succeeded", "failed", "all")
SCAN_LINES = 20_000  # lines a page may read past that its outcome filter skips
CURSOR_PREFIX = "rc_"
MAX_OFFSET = 1 << 50

_ENTRY = msgspec.json.Decoder(Entry)


@dataclass(frozen=True)
class Cursor:
    """A position in a batch's results (opaque to clients: ``encode``/``decode``)."""

    out: int = 0
    err: int = 0
    epoch: int = 0
    offset: int = 0

    def encode(self) -> str:
        text = f"1.{self.out}.{self.err}.{self.epoch}.{self.offset}"
        return CURSOR_PREFIX + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, raw: str) -> Cursor:
        bad = InvalidRequest(
            f"'after' is not a results cursor: {raw[:80]!r}; pass a 'last_id' of this route",
            param="after",
            code="invalid_value",
        )
        if not raw.startswith(CURSOR_PREFIX) or len(raw) > 200:
            raise bad
        body = raw[len(CURSOR_PREFIX) :]
        try:
            text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("ascii")
        except (ValueError, UnicodeDecodeError):
            raise bad from None
        parts = text.split(".")
        if len(parts) != 5 or parts[0] != "1" or not all(p.isdigit() for p in parts[1:]):
            raise bad
        numbers = [int(p) for p in parts[1:]]
        if any(n > MAX_OFFSET for n in numbers):
            raise bad
        return cls(*numbers)


@dataclass
class Page:
    """Result lines (each ending in a newline), the cursor after each, where to go on from,
    and whether more are readable now."""

    lines: list[bytes] = field(default_factory=list)
    ids: list[Cursor] = field(default_factory=list)
    cursor: Cursor = field(default_factory=Cursor)
    has_more: bool = False


Step = tuple[bytes | None, Cursor]  # a wanted line (None: skipped) and the cursor after it


def _at_line_start(f: Any, offset: int) -> bool:
    """Whether ``offset`` starts a line of ``f`` or is past its end (a cursor is never
    mid-line; a segment cut back after a failed write can end before a cursor)."""
    if offset == 0:
        return True
    f.seek(offset - 1)
    return f.read(1) in (b"\n", b"")


def _wanted(failed: bool, outcome: str) -> bool:
    return outcome == "all" or (outcome == "failed") == failed


def journal_steps(
    batch: BatchHandle, cursor: Cursor, outcome: str, combined: bool
) -> Generator[Step, None, None] | None:
    """Walk the journal from ``cursor``; None when a segment it needs is gone (finalized)."""
    segments = _segments(batch)
    if cursor.epoch and cursor.epoch not in {epoch for epoch, _ in segments}:
        return None
    files: list[tuple[int, bool, Any]] = []
    for index, (epoch, path) in enumerate(segments):
        if epoch < cursor.epoch:
            continue
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed by the walk)
        except FileNotFoundError:
            for opened in files:
                opened[2].close()
            return None
        files.append((epoch, index + 1 < len(segments), f))
    return _walk(files, cursor, outcome, combined)


def _walk(
    files: list[Any], cursor: Cursor, outcome: str, combined: bool
) -> Generator[Step, None, None]:
    position = cursor
    try:
        for epoch, newer, f in files:
            start = cursor.offset if epoch == cursor.epoch else 0
            if epoch != cursor.epoch:
                position = Cursor(position.out, position.err, epoch, 0)
            if not _at_line_start(f, start):
                raise InvalidRequest("'after' is not a results cursor", param="after")
            f.seek(start)
            offset = start
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # a torn tail (skipped if a newer segment exists) or a write under way
                offset += len(raw)
                number, tab, line = raw.partition(b"\t")
                try:
                    entry = _ENTRY.decode(line) if tab and number.isdigit() else None
                except msgspec.DecodeError:
                    entry = None
                if entry is None:  # not an entry: merge skips it too
                    position = Cursor(position.out, position.err, epoch, offset)
                    yield None, position
                    continue
                failed = is_failed(entry)
                position = Cursor(
                    position.out + (len(line) if combined or not failed else 0),
                    position.err + (len(line) if failed else 0),
                    epoch,
                    offset,
                )
                yield (line if _wanted(failed, outcome) else None), position
            if not newer:
                return
    finally:
        for _, _, f in files:
            f.close()


def _segments(batch: BatchHandle) -> list[tuple[int, Path]]:
    """The journal's segments with their epochs (``<id>.run/<epoch>.jsonl``), oldest first."""
    found = []
    for path in batch.segments():
        middle = path.name[: -len(".jsonl")]
        if middle.isdigit():
            found.append((int(middle), path))
    return found


def file_steps(
    store: ProjectStore, record: dict[str, Any], cursor: Cursor, outcome: str, combined: bool
) -> Generator[Step, None, None]:
    """Walk the published files from ``cursor``: the output file, then the error file."""
    sources = []
    if outcome != "failed":
        sources.append(("out", record.get("output_file_id")))
    if outcome == "failed" or (outcome == "all" and not combined):
        sources.append(("err", record.get("error_file_id")))
    position = cursor
    for which, file_id in sources:
        if file_id is None:
            continue
        try:
            f = open(store.file_data_path(file_id), "rb")  # noqa: SIM115
        except FileNotFoundError:
            continue  # the file expired or was deleted: its lines are gone
        with f:
            start = position.out if which == "out" else position.err
            aligned = _at_line_start(f, start)
            f.seek(start)
            # A cursor whose offset is mid-line here (a journal that changed under a reader:
            # a stalled lease holder's late lines, a write cut back) goes on at the next line
            # rather than failing the reader.
            offset = start if aligned else start + len(f.readline())
            for raw in f:
                if not raw.endswith(b"\n"):
                    break
                offset += len(raw)
                if which == "out":
                    position = Cursor(offset, position.err, position.epoch, position.offset)
                else:
                    position = Cursor(position.out, offset, position.epoch, position.offset)
                wanted = True
                if combined and outcome == "succeeded":
                    wanted = not line_failed(raw)
                yield (raw if wanted else None), position


def take(steps: Generator[Step, None, None], start: Cursor, limit: int) -> Page:
    """One page of at most ``limit`` wanted lines from ``steps``; ``has_more`` when a further
    wanted line is readable now (or ``SCAN_LINES`` unwanted ones were read first)."""
    page = Page(cursor=start)
    skipped = 0
    with contextlib.closing(steps):
        for line, position in steps:
            if line is not None and len(page.lines) == limit:
                page.has_more = True
                return page
            if line is None:
                skipped += 1
            else:
                page.lines.append(line)
                page.ids.append(position)
            page.cursor = position
            if skipped > SCAN_LINES:
                page.has_more = True
                return page
    return page


def read_page(
    store: ProjectStore,
    record: dict[str, Any],
    cursor: Cursor,
    *,
    outcome: str = "all",
    limit: int = 100,
    combined: bool = False,
) -> Page:
    """One page of the batch's results after ``cursor``, from wherever they are now."""
    if not is_terminal(record):
        steps = journal_steps(store.batch(record["id"]), cursor, outcome, combined)
        if steps is not None:
            return take(steps, cursor, limit)
        record = store.get_batch(record["id"]) or record  # finalized meanwhile
        if not is_terminal(record):
            return Page(cursor=cursor)
    return take(file_steps(store, record, cursor, outcome, combined), cursor, limit)


def segment_bytes(batch: BatchHandle) -> int:
    """The journal's size (for the dashboard's "results so far")."""
    total = 0
    for path in batch.segments():
        with contextlib.suppress(FileNotFoundError):
            total += os.path.getsize(path)
    return total
