"""``Idempotency-Key`` for the two creating routes (``POST /v1/files``, ``POST /v1/batches``).

A client that retries a create after a lost response (the SDKs retry connection errors and
5xx) sends the same key again; the retry then answers with the object the first request made
instead of storing a second file or running a second batch. Keys are per project and kept
``idempotency_ttl`` seconds in ``<project>/idempotency/<sha256 of key>.json`` as
``{"route", "fingerprint", "object_id", "created_at"}``. Lookups and writes happen under the
project's quota lock, together with the commit they guard, so concurrent retries on several
workers still make exactly one object. A key reused for a different request is refused (400).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zumik.core.exceptions import InvalidRequest
from zumik.storage import accounting, fsutil

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255


def fingerprint(parts: dict[str, Any]) -> str:
    """A stable digest of what makes two requests "the same request"."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def check_key(raw: str | None) -> str | None:
    """The header value when present and sane; a clear 400 otherwise."""
    if raw is None:
        return None
    if not 1 <= len(raw) <= MAX_KEY_LENGTH or not raw.isprintable():
        raise InvalidRequest(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable characters",
            param=HEADER,
            code="invalid_value",
        )
    return raw


@dataclass(frozen=True)
class IdempotentRequest:
    """One keyed create request; ``replay`` and ``remember`` run under the project lock."""

    folder: Path
    key: str
    route: str
    fingerprint: str
    now: float
    ttl: int

    @property
    def path(self) -> Path:
        return self.folder / (hashlib.sha256(self.key.encode()).hexdigest() + ".json")

    @property
    def key_id(self) -> str:
        """The key's name in the usage ledger."""
        return "key_" + self.path.name[:-5]

    @property
    def expires_at(self) -> int:
        return int(self.now) + self.ttl

    def changes(self) -> dict[str, Any]:
        """The ledger change ``remember`` makes: one more record (or an expired one renewed),
        swept at ``expires_at``."""
        earlier = fsutil.read_json(self.path)
        before = accounting.key_contribution(earlier) if isinstance(earlier, dict) else None
        return {self.key_id: (before, (0, 0, 1, self.expires_at))}

    def replay(self, lookup: Callable[[str], dict[str, Any] | None]) -> dict[str, Any] | None:
        """The object an earlier request with this key made, if it still exists."""
        entry = fsutil.read_json(self.path)
        if not isinstance(entry, dict) or entry.get("created_at", 0) + self.ttl <= self.now:
            return None
        if entry.get("route") != self.route or entry.get("fingerprint") != self.fingerprint:
            raise InvalidRequest(
                f"This {HEADER} was already used for a different request; use a "
                "new key for a new request",
                param=HEADER,
                code="idempotency_key_reused",
            )
        return lookup(entry["object_id"])

    def remember(self, object_id: str) -> None:
        """Record that this key made ``object_id``."""
        self.folder.mkdir(exist_ok=True)
        fsutil.write_json(
            self.path,
            {
                "route": self.route,
                "fingerprint": self.fingerprint,
                "object_id": object_id,
                "created_at": int(self.now),
                "expires_at": self.expires_at,
            },
        )


def sweep(folder: Path, now: float, ttl: int) -> int:
    """Remove keys older than ``ttl``; returns how many."""
    removed = 0
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    for name in names:
        if not name.endswith(".json"):
            continue
        entry = fsutil.read_json(folder / name)
        if not isinstance(entry, dict) or entry.get("created_at", 0) + ttl <= now:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / name)
                removed += 1
    return removed
