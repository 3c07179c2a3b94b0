"""Streaming JSONL validation.

The validator is fed bytes as they arrive (an upload) or as they are read, keeps only the
current partial line and an 8-byte hash per ``custom_id`` (in one flat array, not a Python
set), and so runs in small, bounded memory whatever the file size.
"""

from __future__ import annotations

import mmap

from zumik.core.jsontext import DEFAULT_MAX_DEPTH
from zumik.core.lines import BOM, LineError, check_request, clean_line


class HashSet:
    """A set of ``custom_id`` hashes: 64-bit keys, open addressing in one anonymous mapping.

    8 to 32 bytes per id instead of ~100 for a set of digests, and its own ``mmap``, so the
    memory goes back to the system the moment the set is dropped (a freed heap block may not).
    Two different ids collide with odds of n^2 / 2^65 (1e-9 at 200,000 ids).
    """

    def __init__(self) -> None:
        self._allocate(1024)

    def _allocate(self, slots: int) -> None:
        self._map = mmap.mmap(-1, 8 * slots)
        self._table = memoryview(self._map).cast("Q")
        self._mask = slots - 1
        self._size = 0

    @staticmethod
    def key(text: str) -> int:
        """A nonzero 64-bit key: Python's own string hash (SipHash, seeded per process)."""
        return (hash(text) & 0xFFFF_FFFF_FFFF_FFFF) or 1

    def add(self, text: str) -> bool:
        """Add ``text``; False when it was there already."""
        if 2 * (self._size + 1) > len(self._table):
            self._grow()
        return self._insert(self.key(text))

    def _insert(self, key: int) -> bool:
        table, mask = self._table, self._mask
        slot = key & mask
        while table[slot]:
            if table[slot] == key:
                return False
            slot = (slot + 1) & mask
        table[slot] = key
        self._size += 1
        return True

    def _grow(self) -> None:
        old_map, old = self._map, self._table
        self._allocate(2 * len(old))
        for key in old:
            if key:
                self._insert(key)
        old.release()
        old_map.close()


class JsonlValidator:
    """Checks a batch input file fed in chunks; raises ``LineError`` at the first bad line."""

    def __init__(
        self,
        max_line_bytes: int,
        max_requests: int,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_embedding_inputs: int = 50_000,
    ) -> None:
        self.max_line_bytes = max_line_bytes
        self.max_requests = max_requests
        self.max_depth = max_depth
        self.max_embedding_inputs = max_embedding_inputs
        self.lines = 0  # physical lines seen
        self.requests = 0
        self.embedding_inputs = 0
        self._pending = b""
        self._blank_line: int | None = None
        self._seen = HashSet()
        self.models: set[str] = set()  # the models lines name, up to two (then: several)

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk if self._pending else chunk
        parts = data.split(b"\n")
        self._pending = parts.pop()
        for raw in parts:
            self._line(raw)
        if self._pending_length() > self.max_line_bytes:
            raise LineError(
                self.lines + 1,
                "line_too_long",
                f"longer than the {self.max_line_bytes}-byte line limit",
            )

    @property
    def model(self) -> str | None:
        """The model every line names, or None when they name several."""
        return next(iter(self.models)) if len(self.models) == 1 else None

    def _pending_length(self) -> int:
        """The unfinished line's length as ``_line`` will count it: without a CR that may yet be
        followed by LF, and without the first line's BOM. So the verdict on a line never depends
        on where a read chunk happened to end."""
        pending = self._pending
        length = len(pending) - pending.endswith(b"\r")
        if self.lines == 0 and pending.startswith(BOM):
            length -= len(BOM)
        return length

    def finish(self) -> int:
        """End of input: check the last line; return the number of requests."""
        if self._pending:
            self._line(self._pending)
            self._pending = b""
        if self.requests == 0:
            raise LineError(None, "empty_file", "the file holds no request lines")
        return self.requests

    def _line(self, raw: bytes) -> None:
        self.lines += 1
        raw = clean_line(raw, self.lines)
        if len(raw) > self.max_line_bytes:
            raise LineError(
                self.lines,
                "line_too_long",
                f"{len(raw)} bytes, over the {self.max_line_bytes}-byte line limit",
            )
        if raw[:1] != b"{" and not raw.strip():  # (a request line starts with "{")
            if self._blank_line is None:
                self._blank_line = self.lines
            return
        if self._blank_line is not None:
            raise LineError(self._blank_line, "invalid_json_line", "empty line between requests")
        custom_id, _, inputs, model = check_request(raw, self.lines, self.max_depth)
        self.requests += 1
        if len(self.models) < 2:
            self.models.add(model)
        if inputs:
            self.embedding_inputs += inputs
            if self.embedding_inputs > self.max_embedding_inputs:
                raise LineError(
                    self.lines,
                    "too_many_inputs",
                    f"more than {self.max_embedding_inputs} embedding inputs in "
                    "one file (an embeddings batch's limit); split it",
                    "body.input",
                )
        if self.requests > self.max_requests:
            raise LineError(
                self.lines,
                "too_many_requests",
                f"more than {self.max_requests} requests in one file; split it",
            )
        if not self._seen.add(custom_id):
            raise LineError(
                self.lines,
                "duplicate_custom_id",
                f"custom_id {custom_id!r} is used by an earlier line; each must be unique",
                "custom_id",
            )
