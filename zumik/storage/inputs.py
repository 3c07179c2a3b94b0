"""Reading a stored batch input file line by line (1 MiB at a time), as the rules see it."""

from __future__ import annotations

from collections.abc import Iterator

from zumik.core.lines import clean_line


def iter_lines(path: str, chunk_size: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, raw_line)`` for each non-blank line of a stored input file."""
    number = 0
    pending = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_size)
            if not chunk:
                break
            parts = (pending + chunk).split(b"\n") if pending else chunk.split(b"\n")
            pending = parts.pop()
            for raw in parts:
                number += 1
                raw = clean_line(raw, number)
                if raw.strip():
                    yield number, raw
    if pending:
        number += 1
        raw = clean_line(pending, number)
        if raw.strip():
            yield number, raw
