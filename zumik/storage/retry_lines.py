"""Which input lines of a finished batch a retry runs again, copied byte for byte.

A line *failed* when its result is in the error file with anything but ``batch_expired``; a
line is *unfinished* when it never got a result (a cancel stopped it before it was sent) or
its result is ``batch_expired`` (the window closed first). ``not_succeeded`` is both. Results
name their line by ``custom_id``, unique within an input file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from zumik.core.lines import LineError, clean_line, stored_line
from zumik.storage import fsutil

KINDS = ("failed", "unfinished", "not_succeeded")
EXPIRED_CODE = "batch_expired"


class _Result(msgspec.Struct):
    custom_id: str
    error: Any = None
    response: Any = None


class _Request(msgspec.Struct):
    custom_id: str


_RESULT = msgspec.json.Decoder(_Result)
_REQUEST = msgspec.json.Decoder(_Request)


def result_failed(result: _Result) -> bool:
    """The result-line classifier (as ``journal.is_failed``): only a 2xx answer succeeded."""
    if result.error is not None or not isinstance(result.response, dict):
        return True
    status = result.response.get("status_code")
    return not (isinstance(status, int) and 200 <= status < 300)


def line_failed(raw: bytes) -> bool:
    """Whether a result line (as in the output or error file) failed."""
    try:
        return result_failed(_RESULT.decode(raw))
    except msgspec.DecodeError:
        return True


@dataclass
class Outcomes:
    """The custom_ids of a batch's results, by what became of them."""

    succeeded: set[str]
    failed: set[str]
    expired: set[str]

    def wanted(self, custom_id: str, kind: str) -> bool:
        if custom_id in self.succeeded:
            return False
        failed = custom_id in self.failed
        if kind == "failed":
            return failed
        if kind == "unfinished":
            return not failed
        return True


def read_outcomes(paths: list[Path]) -> Outcomes:
    """Classify every result line of the batch's result files (output and error)."""
    outcomes = Outcomes(set(), set(), set())
    for path in paths:
        with open(path, "rb") as f:
            for raw in f:
                try:
                    result = _RESULT.decode(raw)
                except msgspec.DecodeError:
                    continue
                if not result_failed(result):
                    outcomes.succeeded.add(result.custom_id)
                elif isinstance(result.error, dict) and result.error.get("code") == EXPIRED_CODE:
                    outcomes.expired.add(result.custom_id)
                else:
                    outcomes.failed.add(result.custom_id)
    outcomes.failed -= outcomes.succeeded  # combined files list a failure in both
    return outcomes


def raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line_number, raw bytes without the newline)`` of every non-blank line, numbered as
    ``storage.inputs.iter_lines`` numbers them, the bytes untouched (CR and BOM kept)."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            line = raw[:-1] if raw.endswith(b"\n") else raw
            if clean_line(line, number).strip():
                yield number, line


def custom_id_of(raw: bytes, number: int) -> str | None:
    clean = clean_line(raw, number)
    try:
        return _REQUEST.decode(clean).custom_id
    except (msgspec.DecodeError, UnicodeDecodeError):
        pass
    try:
        return stored_line(clean, number).custom_id
    except (LineError, ValueError):
        return None


def write_selection(input_path: Path, outcomes: Outcomes, kind: str, tmp: Path) -> int:
    """Copy the wanted lines of ``input_path`` to ``tmp`` in input order (each ends in a
    newline), fsynced; the number of lines copied."""
    count = 0
    with open(tmp, "wb") as out:
        for number, raw in raw_lines(input_path):
            custom_id = custom_id_of(raw, number)
            if custom_id is not None and outcomes.wanted(custom_id, kind):
                out.write(raw + b"\n")
                count += 1
        out.flush()
        os.fsync(out.fileno())
    return count


def retry_filename(original: str) -> str:
    """``<original name>-retry.jsonl`` (the original's ``.jsonl`` dropped first)."""
    stem = original[: -len(".jsonl")] if original.endswith(".jsonl") else original
    return f"{stem}-retry.jsonl"


def temp_for(directory: Path) -> Path:
    return fsutil.temp_path(directory, "retry-")
