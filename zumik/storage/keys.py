"""API key storage: ``zk_...`` keys stored only as SHA-256 hashes, mapped to a project.

Keys come from ``ZUMIK_API_KEYS`` (dev and tests) and from ``<data_dir>/keys.json`` (written by
``zumik keys``). The stored keys are a versioned document (``zumik.storage.versioned``): each
edit is published as the next version with create-if-absent, so two admins editing at once on
two hosts both keep their change, and every request looks up the next version's name, so a
revoke reaches every worker of every host on its next request without a restart or a cache
timeout.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path
from typing import Any

from zumik.storage import versioned
from zumik.storage.store import valid_project
from zumik.storage.versioned import VersionedDoc

KEY_PREFIX = "zk_"
KEYS_FILE = "keys.json"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class KeyRing:
    """Resolves a presented key to its project; the hashed store on disk is the truth."""

    def __init__(self, data_dir: Path, env_keys: dict[str, str]) -> None:
        self._env = {hash_key(key): project for key, project in env_keys.items()}
        for project in env_keys.values():
            if not valid_project(project):
                raise ValueError(f"ZUMIK_API_KEYS: invalid project name {project!r}")
        self._stored = versioned.Cached(data_dir / KEYS_FILE, _key_index)

    def project_for(self, key: str) -> str | None:
        """The project ``key`` belongs to, or None.

        Lookup is by the key's SHA-256, so what a timing probe could learn is about the digest
        of the presented string, never about a stored key.
        """
        return self.project_for_digest(hash_key(key))

    def project_for_digest(self, digest: str) -> str | None:
        """The project of the key whose SHA-256 is ``digest`` (what a dashboard session holds),
        or None once that key is revoked."""
        return self._env.get(digest) or self._stored.get()[0].get(digest)

    def is_admin(self, digest: str) -> bool:
        """Whether the key is an operator key (``zumik keys create --admin``)."""
        return digest in self._stored.get()[1]


# -- key management (the ``zumik keys`` command) --------------------------------------------
def _key_index(document: dict[str, Any]) -> tuple[dict[str, str], frozenset[str]]:
    """Stored keys: digest -> project, and the digests of operator keys."""
    return (
        {digest: entry["project"] for digest, entry in document.items()},
        frozenset(digest for digest, entry in document.items() if entry.get("admin")),
    )


def _edit_keys(data_dir: Path, change: Any) -> Any:
    return versioned.edit(data_dir / KEYS_FILE, change)


def create_key(data_dir: Path, project: str, admin: bool = False) -> str:
    """Make a new key for ``project``; only its hash is stored. Returns the key (shown once).

    An ``admin`` key is also an operator key: the dashboard's operator view shows it every
    project's active batches and the providers' state. On the API it is a key of ``project``."""
    if not valid_project(project):
        raise ValueError(
            f"invalid project name {project!r}: use letters, digits, '-' and '_' "
            "(at most 64, starting with a letter or digit)"
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    entry = {"project": project, "created_at": int(time.time()), "hint": key[:7] + "..."}
    if admin:
        entry["admin"] = True
    _edit_keys(data_dir, lambda doc: doc.__setitem__(hash_key(key), entry))
    return key


def list_keys(data_dir: Path) -> list[dict[str, Any]]:
    """Stored keys without secrets: hash prefix, project, hint, created_at."""
    document = VersionedDoc(data_dir / KEYS_FILE).read() or {}
    return [{"id": digest[:12], **entry} for digest, entry in sorted(document.items())]


def revoke_key(data_dir: Path, key_or_id: str) -> int:
    """Revoke by the key itself or by the id ``zumik keys list`` shows. Returns how many."""

    def revoke(document: dict[str, Any]) -> int:
        doomed = [
            d
            for d in document
            if d == hash_key(key_or_id) or (len(key_or_id) >= 8 and d.startswith(key_or_id))
        ]
        for digest in doomed:
            del document[digest]
        return len(doomed)

    return _edit_keys(data_dir, revoke)
