"""One concurrency budget per provider across executors (gunicorn workers and hosts).

Each executor publishes, about once a second, what it has of each adaptive provider (its
learned limit, requests in flight, whether it wants more) to
``<data dir>/.providers/<provider>/<host id>-<pid>[-<tag>].json`` (temp file + rename: readers never
see half a file), and reads the others'. Its share of the provider's learned limit is
max-min fair (``share``): executors that want no more keep what they use, the others split the
rest equally; so two workers' batches split one limit instead of each sending its own. An entry
older than ``STALE_SECONDS``, or of a dead process on this host, is ignored (its owner was
killed: it holds nothing any more); an executor removes its own entries when it stops. The
files are advisory and rewritten every second, so they are not fsynced.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zumik.storage import fsutil

FOLDER = ".providers"
PUBLISH_EVERY = 1.0
STALE_SECONDS = 5.0
MAX_ENTRY_BYTES = 4096  # a peer's entry is small; a bigger file is not read
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Entry:
    """One executor's published state for one provider."""

    owner: str
    limit: float
    in_flight: int
    wanting: bool


def _number(value: Any, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return 0.0
    return min(max(float(value), 0.0), high)


class ProviderBudget:
    """This executor's entry for one provider, and the peers' entries."""

    def __init__(self, data_dir: Path, provider: str, tag: str = "") -> None:
        self.folder = Path(data_dir) / FOLDER / (_UNSAFE.sub("_", provider)[:100] or "_")
        self.host = fsutil.host_id()
        self.owner = f"{self.host}-{os.getpid()}" + (f"-{tag}" if tag else "")
        self.path = self.folder / f"{self.owner}.json"

    def publish(self, limit: float, in_flight: int, wanting: bool) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        doc = {
            "host": self.host,
            "pid": os.getpid(),
            "at": time.time(),
            "limit": limit,
            "in_flight": in_flight,
            "wanting": wanting,
        }
        tmp = fsutil.temp_path(self.folder)
        tmp.write_bytes(json.dumps(doc, separators=(",", ":")).encode())
        os.replace(tmp, self.path)

    def peers(self, now: float | None = None) -> list[Entry]:
        """The other live executors' entries (stale or dead ones skipped, never an error)."""
        now = time.time() if now is None else now
        entries = []
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        for name in names:
            if not name.endswith(".json") or name == self.path.name:
                continue
            try:
                with open(self.folder / name, "rb") as f:
                    raw = f.read(MAX_ENTRY_BYTES + 1)
                if len(raw) > MAX_ENTRY_BYTES:
                    continue
                doc = json.loads(raw)
            except (OSError, ValueError, RecursionError):
                continue
            if not isinstance(doc, dict):
                continue
            at = _number(doc.get("at"), now + 60)
            if now - at > STALE_SECONDS:
                continue
            pid = int(_number(doc.get("pid"), 1 << 22))
            if doc.get("host") == self.host and not fsutil.pid_alive(pid):
                continue
            entries.append(
                Entry(
                    name.removesuffix(".json"),
                    _number(doc.get("limit"), 1e6),
                    int(_number(doc.get("in_flight"), 1e6)),
                    doc.get("wanting") is True,
                )
            )
        return entries

    def withdraw(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def share(limit: float, peers: list[Entry]) -> float:
    """This executor's fraction of the provider's ``limit``: what the executors that want no
    more do not use, split equally among the others and this one."""
    if not peers or limit <= 0:
        return 1.0
    rest = limit - sum(peer.in_flight for peer in peers if not peer.wanting)
    wanting = 1 + sum(1 for peer in peers if peer.wanting)
    return min(1.0, max(1.0, rest / wanting) / limit)
