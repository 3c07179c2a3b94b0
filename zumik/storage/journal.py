"""The batch journal: one append-only segment per claim epoch (named by ``BatchHandle``).

Each entry is ``<input line number>\t<output line>\n``, written whole with one ``os.write`` on
an ``O_APPEND`` descriptor and fsynced in groups. An entry counts only if it ends in a newline
and parses; a torn tail (a kill during ``write``) is skipped, and cut off when this host may edit
the segment. What is done is tracked by input line number in a bitmap (``LineSet``), so the
executor's memory does not grow with the number of lines (custom_ids are unique per file, so a
line number names a request as well as its custom_id does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from zumik.core.records import zero_usage
from zumik.storage import fsutil


class LineSet:
    """A set of positive line numbers as a growable bitmap: 1 bit per line of the input."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self._count = 0

    def add(self, number: int) -> bool:
        """Add ``number``; False when it was there already."""
        byte, bit = number >> 3, 1 << (number & 7)
        if byte >= len(self._bits):
            self._bits.extend(bytes(max(byte + 1 - len(self._bits), len(self._bits))))
        if self._bits[byte] & bit:
            return False
        self._bits[byte] |= bit
        self._count += 1
        return True

    def __contains__(self, number: int) -> bool:
        byte = number >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (number & 7)))

    def __len__(self) -> int:
        return self._count


def entry_bytes(number: int, output_line: bytes) -> bytes:
    """The journal entry for input line ``number`` (``output_line`` ends in a newline)."""
    return b"%d\t%b" % (number, output_line)


class _Body(msgspec.Struct):
    usage: Any = None


class _Response(msgspec.Struct):
    status_code: int | None = None
    body: _Body | None = None


class Entry(msgspec.Struct):
    """What the journal needs of an output line (msgspec skips the rest)."""

    custom_id: str
    error: Any = None
    response: _Response | None = None
    provider: str | None = None

    @property
    def failed(self) -> bool:
        """The result-line classifier: a line succeeded only with a 2xx ``response`` and no
        ``error``. An HTTP error answer (``response.status_code`` 4xx/5xx, ``error`` null) and
        a failure without an answer (``response`` null, ``error`` set) both failed."""
        return is_failed(self)

    @property
    def usage(self) -> Any:
        return self.response.body.usage if self.response and self.response.body else None


def is_failed(entry: Entry) -> bool:
    """See ``Entry.failed``."""
    if entry.error is not None or entry.response is None:
        return True
    status = entry.response.status_code
    return status is None or not 200 <= status < 300


_ENTRY = msgspec.json.Decoder(Entry)


def iter_entries(path: Path) -> Iterator[tuple[int, bytes, Entry]]:
    """Committed entries of one segment: input line number, output line (with its newline)
    and what the journal needs of it."""
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                return  # torn tail
            number, tab, line = raw.partition(b"\t")
            if not tab or not number.isdigit():
                continue
            try:
                entry = _ENTRY.decode(line)
            except msgspec.DecodeError:
                continue
            yield int(number), line, entry


def tokens(value: Any) -> int:
    """A token count as a provider may send it: a whole number, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def total_tokens(usage: Any) -> int:
    """All the tokens of one upstream ``usage`` object (0 when it has none)."""
    if not isinstance(usage, dict):
        return 0
    prompt = tokens(usage.get("prompt_tokens", usage.get("input_tokens")))
    completion = tokens(usage.get("completion_tokens", usage.get("output_tokens")))
    return tokens(usage.get("total_tokens")) or prompt + completion


def add_usage(total: dict[str, Any], usage: Any) -> None:
    """Add an upstream ``usage`` object to a batch usage sum, whatever its shape:
    ``prompt_tokens``/``completion_tokens`` (chat, completions), ``input_tokens``/
    ``output_tokens`` (responses) or ``prompt_tokens`` alone (embeddings)."""
    if not isinstance(usage, dict):
        return

    prompt = tokens(usage.get("prompt_tokens", usage.get("input_tokens")))
    completion = tokens(usage.get("completion_tokens", usage.get("output_tokens")))
    total["input_tokens"] += prompt
    total["output_tokens"] += completion
    total["total_tokens"] += tokens(usage.get("total_tokens")) or prompt + completion
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    if isinstance(details, dict):
        total["input_tokens_details"]["cached_tokens"] += tokens(details.get("cached_tokens"))
    details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    if isinstance(details, dict):
        total["output_tokens_details"]["reasoning_tokens"] += tokens(
            details.get("reasoning_tokens")
        )


Prices = dict[str, tuple[float | None, float | None]]  # provider -> (input, output) per 1M


@dataclass
class Progress:
    """What the journal says is done: line numbers, counts, summed usage and (where priced)
    cost."""

    prices: Prices = field(default_factory=dict)
    done: LineSet = field(default_factory=LineSet)
    completed: int = 0
    failed: int = 0
    usage: dict[str, Any] = field(default_factory=zero_usage)
    input_cost: float = 0.0
    output_cost: float = 0.0
    priced: bool = False

    def record(self, number: int, failed: bool, usage: Any, provider: str | None = None) -> None:
        self.done.add(number)
        if failed:
            self.failed += 1
            return
        self.completed += 1
        add_usage(self.usage, usage)
        price = self.prices.get(provider or "")
        if price is not None and isinstance(usage, dict):
            tokens_in = tokens(usage.get("prompt_tokens", usage.get("input_tokens")))
            tokens_out = tokens(usage.get("completion_tokens", usage.get("output_tokens")))
            self.input_cost += tokens_in * (price[0] or 0.0) / 1e6
            self.output_cost += tokens_out * (price[1] or 0.0) / 1e6
            self.priced = True

    def cost(self) -> dict[str, float] | None:
        """The batch's cost at the configured prices, or None when nothing was priced."""
        if not self.priced:
            return None
        return {
            "input": round(self.input_cost, 6),
            "output": round(self.output_cost, 6),
            "total": round(self.input_cost + self.output_cost, 6),
        }


def recover(segments: list[Path], repair: bool, prices: Prices | None = None) -> Progress:
    """Rebuild progress from every segment, oldest first (the first entry for a line wins)."""
    progress = Progress(prices or {})
    for path in segments:
        if repair:
            fsutil.repair_tail(path)
        for number, _, entry in iter_entries(path):
            if number not in progress.done:
                progress.record(number, entry.failed, entry.usage, entry.provider)
    return progress


class JournalWriter:
    """Appends whole lines to this epoch's segment; ``sync`` makes them durable.

    Given the event loop, lines finished in one loop iteration are written together with one
    ``os.write`` at the end of that iteration (what a kill could lose is then no more than what
    was in flight); without it every append is written at once.
    """

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.path = path
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._end = os.lseek(self.fd, 0, os.SEEK_END)  # only this writer appends to the segment
        fsutil.fsync_dir(path.parent)
        self.dirty = False
        self._loop = loop
        self._pending: list[bytes] = []
        self.error: OSError | None = None  # the last failed write (disk full, ...)

    def append(self, line: bytes) -> None:
        """Queue ``line`` (it must end in a newline) for this loop iteration's write."""
        if self._loop is None:
            self._write(line)
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(line)

    def flush(self) -> None:
        """Write what is queued; on failure keep nothing half-written and remember the error.

        Lines that could not be written are dropped: they were not journaled, so the next
        claim sends them again (at-least-once upstream, exactly-once output).
        """
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self.error is not None:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            self.error = exc
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self._end)  # no torn line left behind
            return
        self._end += len(data)
        self.dirty = True

    def sync(self) -> None:
        if self.dirty and self.fd >= 0:
            self.dirty = False
            os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            self.flush()
            with contextlib.suppress(OSError):
                os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1


@dataclass
class Merged:
    """What ``merge`` wrote: the summary of every line, and so how many lines each file holds."""

    summary: Progress
    combined: bool

    @property
    def output_lines(self) -> int:
        return self.summary.completed + (self.summary.failed if self.combined else 0)

    @property
    def error_lines(self) -> int:
        return self.summary.failed


def merge(
    segments: list[Path],
    out_path: Path,
    err_path: Path,
    prices: Prices | None = None,
    combined: bool = False,
) -> Merged:
    """Write each input line's first entry once: successes to ``out_path``, failures to
    ``err_path`` (as OpenAI does). ``combined``: ``out_path`` gets every line, failures too."""
    summary = Progress(prices or {})
    with open(out_path, "wb") as out_f, open(err_path, "wb") as err_f:
        for path in segments:
            for number, line, entry in iter_entries(path):
                if number in summary.done:
                    continue
                bad = entry.failed
                summary.record(number, bad, entry.usage, entry.provider)
                if bad:
                    err_f.write(line)
                if combined or not bad:
                    out_f.write(line)
        for f in (out_f, err_f):
            f.flush()
            if f.tell():
                os.fsync(f.fileno())
    return Merged(summary, combined)
