"""Pages of a project's batches, filtered by status, reading about the page whatever the
number of batches.

The store keeps an index per question (``zumik.storage.shards``): every batch record newest
first (``batch_ids``), the active ones (``active_ids``, at most ``ZUMIK_MAX_ACTIVE_BATCHES``)
and the ended ones per status (``status_index``). A page walks the filter's index, skips the
earlier pages by name, and reads only the records it shows. Counts are exact up to
``COUNT_CAP`` per filter (then shown as "at least"), so a tab costs at most that many names.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from zumik.storage.store import ACTIVE_STATUSES, ProjectStore

FILTERS = ("all", "active", "completed", "failed", "cancelled", "expired")
COUNT_CAP = 10_000  # names counted per filter per view; above it the count reads "10,000+"


class StatusIndex:
    """Reads the records a view needs (shared by a worker's threads; counts its reads for
    tests and benchmarks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reads = 0

    def read(self, store: ProjectStore, batch_id: str) -> dict[str, Any] | None:
        with self._lock:
            self.reads += 1
        return store.get_batch(batch_id)


def matches(status: str, wanted: str) -> bool:
    if wanted == "all":
        return True
    if wanted == "active":
        return status in ACTIVE_STATUSES
    return status == wanted


@dataclass
class BatchPage:
    records: list[dict[str, Any]]
    counts: dict[str, int]  # per filter (at most COUNT_CAP)
    page: int
    pages: int
    matching: int
    capped: frozenset[str] = frozenset()  # filters with more than COUNT_CAP batches


def _active(store: ProjectStore, index: StatusIndex) -> list[dict[str, Any]]:
    found = []
    for batch_id in sorted(store.active_ids(), reverse=True):
        record = index.read(store, batch_id)
        if record is not None and record.get("status") in ACTIVE_STATUSES:
            found.append(record)
    return found


def _walk(store: ProjectStore, wanted: str) -> Iterator[str]:
    if wanted == "all":
        return store.batch_ids()
    return store.status_index(wanted).iter_ids()


def batch_page(
    store: ProjectStore, index: StatusIndex, wanted: str, page: int, per_page: int
) -> BatchPage:
    """One page (1-based) of the project's batches whose status matches ``wanted``."""
    active = _active(store, index)
    counts = {"active": len(active)}
    capped = set()
    for name in FILTERS:
        if name != "active":
            counts[name] = sum(1 for _ in itertools.islice(_walk(store, name), COUNT_CAP + 1))
            if counts[name] > COUNT_CAP:
                counts[name] = COUNT_CAP
                capped.add(name)
    pages = max(1, -(-counts[wanted] // per_page))
    page = max(1, page) if wanted in capped else min(max(1, page), pages)
    start = (page - 1) * per_page
    if wanted == "active":
        records = active[start : start + per_page]
    else:
        records = []
        for batch_id in itertools.islice(_walk(store, wanted), start, start + per_page):
            record = index.read(store, batch_id)
            if record is not None and matches(record.get("status", ""), wanted):
                records.append(record)
    if wanted in capped:
        pages = max(pages, page + 1 if len(records) == per_page else page)
    return BatchPage(records, counts, page, pages, counts[wanted], frozenset(capped))
