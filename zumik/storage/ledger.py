"""The usage ledger: what a project holds, kept as running totals so admission costs O(1).

``<project>/ledger.json`` holds the totals of every object's *contribution* (files, bytes,
records, and when its files and bytes stop counting) plus the contributions it assumed for the
objects of the last change (``intent``)::

    {"v": 1, "files": F, "bytes": B, "records": R,
     "buckets": {"<hour>": [files, bytes]},        # contributions that expire in that hour
     "intent": {"<object id>": [before, after]}}   # each [files, bytes, records, expires_at] | null

Objects (keys are ids): a file (1 file, its bytes), a pending upload (1 file, its parts'
bytes, 1 record; an upload that is no longer pending: 1 record), a batch record and an
``Idempotency-Key`` (1 record each). Every change happens under the project's ``quota.lock``:
``load`` the ledger, decide, ``commit`` the new totals and the intent (one atomic write: temp,
fsync, replace), then make the change. A crash (or an error) between the commit and the end of
the change leaves an intent that disagrees with the disk; the next ``load`` (start-up recovery,
the janitor, or the next change) measures those few objects, corrects the totals and logs a
line. So the ledger cannot drift while every change goes through it, and a repair reads only
the objects of one change.

Expiry is exact without reading the project: each contribution with an ``expires_at`` has an
entry ``index/expiry/<hour>/<expires_at>.<files>.<bytes>.<id>`` and is summed in its hour's
bucket. ``usage`` subtracts whole past hours from the buckets and, for the current hour, the
entries already due: one small folder listing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from zumik.storage import fsutil

log = logging.getLogger("zumik.ledger")
HOUR = 3600
VERSION = 1
Contribution = tuple[int, int, int, int | None]  # files, bytes, records, expires_at
Measure = Callable[[str], "Contribution | None"]


def as_contribution(raw: Any) -> Contribution | None:
    if raw is None:
        return None
    files, size, records, expires = raw
    return int(files), int(size), int(records), None if expires is None else int(expires)


class Schedule:
    """Entries ``<root>/<hour>/<when>.<payload>``, read by hour (what is due first)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, when: int, payload: str) -> Path:
        return self.root / str(when // HOUR) / f"{when}.{payload}"

    def add(self, when: int, payload: str) -> None:
        path = self._path(when, payload)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))

    def remove(self, when: int, payload: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(when, payload))

    def hour(self, hour: int) -> list[tuple[int, str]]:
        """The entries of one hour: (when, payload)."""
        try:
            names = os.listdir(self.root / str(hour))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            when, dot, payload = name.partition(".")
            if dot and when.isdigit():
                found.append((int(when), payload))
        return found

    def due(self, now: float) -> Iterator[tuple[int, str]]:
        """Entries with ``when <= now``, oldest hour first (empty past hours are removed)."""
        try:
            hours = sorted(int(h) for h in os.listdir(self.root) if h.isdigit())
        except FileNotFoundError:
            return
        for hour in hours:
            if hour * HOUR > now:
                return
            entries = sorted(self.hour(hour))
            if not entries and (hour + 1) * HOUR <= now:
                with contextlib.suppress(OSError):
                    os.rmdir(self.root / str(hour))
            for when, payload in entries:
                if when <= now:
                    yield when, payload

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _entry(key: str, c: Contribution) -> str:
    return f"{c[0]}.{c[1]}.{key}"


class Ledger:
    """One project's ledger; call ``load``/``commit``/``rebuild`` under ``quota.lock``."""

    def __init__(self, root: Path, measure: Measure, clock: Callable[[], float]) -> None:
        self.root = root
        self.path = root / "ledger.json"
        self.expiry = Schedule(root / "index" / "expiry")
        self.measure = measure
        self.clock = clock

    # -- reading ---------------------------------------------------------------------------
    def read(self) -> dict[str, Any] | None:
        """The stored ledger as it is (no repair), or None when missing or unreadable."""
        try:
            state = fsutil.read_json(self.path)
        except (ValueError, OSError):
            return None
        if not isinstance(state, dict) or state.get("v") != VERSION:
            return None
        return state

    def load(self) -> dict[str, Any] | None:
        """The ledger with the last change's intent checked against the disk (None: missing;
        the caller rebuilds). A correction is logged and stored at once."""
        state = self.read()
        if state is None or not state.get("intent"):
            return state
        corrected = []
        for key, (raw_before, raw_after) in state["intent"].items():
            before, assumed = as_contribution(raw_before), as_contribution(raw_after)
            actual = self.measure(key)
            for stale in (before, assumed):  # the change may have stopped between entries
                if stale != actual:
                    self._entries(key, stale, None)
            self._entries(key, None, actual)
            if actual != assumed:
                self._totals(state, assumed, -1)
                self._totals(state, actual, 1)
                corrected.append(f"{key}: {assumed} -> {actual}")
        state["intent"] = {}
        if corrected:
            log.warning(
                "ledger of %s corrected after an interrupted change: %s",
                self.root.name,
                "; ".join(corrected),
            )
            self._write(state)
        return state

    def usage(self, state: dict[str, Any]) -> tuple[int, int, int]:
        """Files, bytes and records held at the clock's now (expired contributions left out)."""
        now = self.clock()
        files, size = state["files"], state["bytes"]
        current = int(now // HOUR)
        for hour, (bucket_files, bucket_bytes) in state["buckets"].items():
            if int(hour) < current:
                files -= bucket_files
                size -= bucket_bytes
        due_files = due_bytes = 0
        for when, payload in self.expiry.hour(current):
            if when <= now:
                parts = payload.split(".", 2)
                with contextlib.suppress(ValueError, IndexError):
                    due_files += int(parts[0])
                    due_bytes += int(parts[1])
        bucket = state["buckets"].get(str(current), [0, 0])  # the entries never exceed it
        return (
            files - min(due_files, bucket[0]),
            size - min(due_bytes, bucket[1]),
            state["records"],
        )

    # -- changing --------------------------------------------------------------------------
    def commit(
        self,
        state: dict[str, Any],
        changes: dict[str, tuple[Contribution | None, Contribution | None]],
    ) -> None:
        """Record ``changes`` (object id -> (before, after)) before making them."""
        for before, after in changes.values():
            self._totals(state, before, -1)
            self._totals(state, after, 1)
        state["intent"] = {key: [before, after] for key, (before, after) in changes.items()}
        self._write(state)
        for key, (before, after) in changes.items():
            self._entries(key, before, after)

    def _entries(self, key: str, old: Contribution | None, new: Contribution | None) -> None:
        if old == new:
            return
        if old is not None and old[3] is not None:
            self.expiry.remove(old[3], _entry(key, old))
        if new is not None and new[3] is not None:
            self.expiry.add(new[3], _entry(key, new))

    @staticmethod
    def _totals(state: dict[str, Any], c: Contribution | None, sign: int) -> None:
        if c is None:
            return
        files, size, records, expires = c
        state["files"] += sign * files
        state["bytes"] += sign * size
        state["records"] += sign * records
        if expires is not None and (files or size):
            hour = str(expires // HOUR)
            bucket = state["buckets"].setdefault(hour, [0, 0])
            bucket[0] += sign * files
            bucket[1] += sign * size
            if bucket == [0, 0]:
                del state["buckets"][hour]

    def _write(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fsutil.atomic_write(self.path, json.dumps(state, separators=(",", ":")).encode())

    def rebuild(self, objects: Iterable[tuple[str, Contribution]]) -> dict[str, Any]:
        """Count every object afresh (upgrade, or a missing or unreadable ledger)."""
        self.expiry.clear()
        state: dict[str, Any] = {
            "v": VERSION,
            "files": 0,
            "bytes": 0,
            "records": 0,
            "buckets": {},
            "intent": {},
        }
        for key, contribution in objects:
            self._totals(state, contribution, 1)
            self._entries(key, None, contribution)
        self._write(state)
        return state
