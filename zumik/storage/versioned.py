"""Versioned JSON documents: read-modify-write that is correct on a shared filesystem.

A document is a chain of immutable files: ``<name>.json`` is version 1 and ``<name>.v<N>.json``
version N. A version is written whole to a temp file, fsynced, then published with ``link()``,
which is create-if-absent decided by the file server (NFSv3+, EFS, CephFS, JuiceFS, local
disks). Two writers that read the same version N both try to publish N+1; exactly one link
succeeds, the other gets EEXIST, re-reads and applies its change again to the newer version. A
writer holding a stale copy therefore cannot overwrite anything.

Reading needs nothing but lookups of names that never change meaning: a published version is
never replaced, so a cached name or cached content of it is never stale. The reader starts from
the newest version this process has seen (or 1) and opens N+1, N+2, ... until one does not
exist. It never lists a directory (listings can be cached) and never re-reads a replaced file
(which another host can read stale, or not at all, until its cache times out). A negative
lookup cache (NFS without ``lookupcache=positive``) can only make a read older, and a writer
then fails its link and retries; it can never make a write lose another's change.

Versions are not pruned while the document exists (records change a handful of times; counts
that change every second live elsewhere, see ``zumik.storage.progress``); removing the document
removes every version (``remove``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from zumik.storage import fsutil

Change = Callable[[dict[str, Any]], "dict[str, Any] | None"]
MAX_ATTEMPTS = 1000
T = TypeVar("T")
_hints: dict[str, int] = {}  # path of version 1 -> newest version this process has seen
_hints_lock = threading.Lock()
MAX_HINTS = 100_000


class Conflict(RuntimeError):
    """A change could not be published after many tries (another writer kept winning)."""


def _remember(key: str, version: int) -> None:
    with _hints_lock:
        if len(_hints) >= MAX_HINTS:
            _hints.clear()
        if _hints.get(key, 0) < version:
            _hints[key] = version


class VersionedDoc:
    """One document: ``path`` (``<dir>/<name>.json``) is version 1."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key = str(path)
        self._stem = path.name[:-5] if path.name.endswith(".json") else path.name

    def version_path(self, version: int) -> Path:
        if version <= 1:
            return self.path
        return self.path.with_name(f"{self._stem}.v{version}.json")

    # -- reading -------------------------------------------------------------------------------
    def _load(self, version: int) -> dict[str, Any] | None:
        try:
            with open(self.version_path(version), "rb") as f:
                data = f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:  # ESTALE: a cached handle of a removed file
            if exc.errno == 116:
                return None
            raise
        return json.loads(data)

    def read_version(self) -> tuple[int, dict[str, Any]] | None:
        """The newest version number and its document, or None when there is no document."""
        with _hints_lock:
            start = _hints.get(self.key, 1)
        version, doc = start, self._load(start)
        if doc is None and start > 1:  # removed (and perhaps made again): start over
            version, doc = 1, self._load(1)
        if doc is None:
            return None
        while True:
            newer = self._load(version + 1)
            if newer is None:
                break
            version, doc = version + 1, newer
        _remember(self.key, version)
        return version, doc

    def changed_since(self, version: int) -> bool:
        """Whether a version newer than ``version`` (0: none yet) may exist: two lookups of
        specific names, cheaper than reading the document."""
        if version == 0:
            return self.path.exists()
        return self.version_path(version + 1).exists() or not self.version_path(version).exists()

    def read(self) -> dict[str, Any] | None:
        found = self.read_version()
        return None if found is None else found[1]

    # -- writing -------------------------------------------------------------------------------
    def create(self, doc: dict[str, Any]) -> bool:
        """Publish version 1 if there is none; False if the document already exists."""
        return self._publish(1, doc)

    def update(self, change: Change) -> tuple[dict[str, Any], bool]:
        """Apply ``change`` to the newest version and publish the result as the next one.

        ``change`` gets a private copy, edits it in place or returns a new document, and may be
        called again (on a newer version) when another writer published first, so it must
        decide from the document alone. Returns the document as stored and whether this call
        wrote it (an unchanged document is not written again). KeyError if there is none.
        """
        for attempt in range(MAX_ATTEMPTS):
            found = self.read_version()
            if found is None:
                raise KeyError(self.key)
            version, current = found
            mine = copy.deepcopy(current)
            new = change(mine)
            mine = mine if new is None else new
            if mine == current:
                return current, False
            if self._publish(version + 1, mine):
                _remember(self.key, version + 1)
                return mine, True
            if attempt >= 10:  # a cache still hides the version that won: let it expire
                time.sleep(min(0.5, 0.01 * attempt))
        raise Conflict(f"{self.key}: no version could be published in {MAX_ATTEMPTS} tries")

    def _publish(self, version: int, doc: dict[str, Any]) -> bool:
        """Write ``doc`` as ``version`` unless that version exists (create-if-absent)."""
        target = self.version_path(version)
        tmp = fsutil.temp_path(target.parent, "v-")
        data = json.dumps(doc, separators=(",", ":")).encode()
        try:
            fsutil.write_durably(tmp, data)
            return fsutil.link_once(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    # -- removal -------------------------------------------------------------------------------
    def newest_version(self) -> int:
        found = self.read_version()
        return 0 if found is None else found[0]

    def remove(self) -> None:
        """Remove every version, newest first: a reader meanwhile sees an older version or
        none, never a gap it would mistake for the newest."""
        newest = max(self.newest_version(), 1)
        for version in range(newest, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.version_path(version))
        with _hints_lock:
            _hints.pop(self.key, None)


def edit(path: Path, change: Callable[[dict[str, Any]], T]) -> T:
    """Apply ``change`` to the document at ``path`` (created empty when missing) as one new
    version, re-applied if another edit won the race; what ``change`` returned on the version
    that was kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = VersionedDoc(path)
    if doc.read() is None:
        doc.create({})  # False when another edit created it first: fine
    result: list[T] = []

    def apply(document: dict[str, Any]) -> None:
        result[:] = [change(document)]  # may run again on a newer version: keep the last

    doc.update(apply)
    return result[0]


class Cached(Generic[T]):
    """What ``build`` makes of a document (``{}`` when missing), rebuilt only when a newer
    version exists (thread-safe)."""

    def __init__(self, path: Path, build: Callable[[dict[str, Any]], T]) -> None:
        self._doc = VersionedDoc(path)
        self._build = build
        self._version = 0
        self._value = build({})
        self._mutex = threading.Lock()

    def get(self) -> T:
        with self._mutex:
            if self._doc.changed_since(self._version):
                self._version, document = self._doc.read_version() or (0, {})
                self._value = self._build(document)
            return self._value
