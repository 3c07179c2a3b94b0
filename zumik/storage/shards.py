"""Time-sharded name folders: one empty entry per object, so a page costs about the page.

Object ids lead with a millisecond clock (``zumik.core.ids``), so an id's first hex digits are
its creation time. An entry for id ``<prefix><12 hex clock><random>`` lives at
``<root>/<clock[:6]>/<clock[6:8]>/<id>``: a top folder spans ~4.7 hours, a sub-folder ~65 s.
Walking newest first lists the top folder (a few per day of history), the newest top's
sub-folders (at most 256) and then only the sub-folders the page needs, so a page of 20 reads a
bounded number of names whatever the number of objects. Entries are created empty (atomic) and
removed with one unlink; empty folders are pruned by ``prune``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

CLOCK_DIGITS = 12


def clock_of(object_id: str) -> str:
    """The id's 12 clock hex digits (what it sorts by)."""
    start = object_id.rfind("-") + 1 if "-" in object_id else object_id.rfind("_") + 1
    return object_id[start : start + CLOCK_DIGITS]


def _names(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []


class Shards:
    """One sharded folder of ids (``root``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, object_id: str) -> Path:
        clock = clock_of(object_id)
        return self.root / clock[:6] / clock[6:8] / object_id

    def add(self, object_id: str, durable: bool = True) -> None:
        """Create the entry (idempotent); ``durable``: fsync its folder."""
        path = self.path(object_id)
        try:
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
        os.close(fd)
        if durable:
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def discard(self, object_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(object_id))

    def has(self, object_id: str) -> bool:
        return self.path(object_id).exists()

    def iter_ids(self, descending: bool = True, after: str | None = None) -> Iterator[str]:
        """Ids in creation order (newest first when ``descending``), strictly past ``after``."""
        bound = clock_of(after) if after is not None else None

        def past(name: str, width: int) -> bool:
            """Whether a folder whose clock starts ``name`` may hold ids past ``after``."""
            if bound is None:
                return True
            head = bound[:width]
            return name <= head if descending else name >= head

        for top in sorted(_names(self.root), reverse=descending):
            if len(top) != 6 or not past(top, 6):
                continue
            for sub in sorted(_names(self.root / top), reverse=descending):
                if len(sub) != 2 or not past(top + sub, 8):
                    continue
                for object_id in sorted(_names(self.root / top / sub), reverse=descending):
                    if after is not None and (
                        object_id >= after if descending else object_id <= after
                    ):
                        continue
                    yield object_id

    def prune(self, keep_newest: bool = True) -> int:
        """Remove empty sub and top folders (the newest top is kept); returns how many."""
        removed = 0
        tops = sorted(_names(self.root))
        for top in tops[:-1] if keep_newest else tops:
            for sub in _names(self.root / top):
                with contextlib.suppress(OSError):
                    os.rmdir(self.root / top / sub)
                    removed += 1
            with contextlib.suppress(OSError):
                os.rmdir(self.root / top)
                removed += 1
        return removed
