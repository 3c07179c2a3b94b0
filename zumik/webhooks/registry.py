"""Webhook endpoints, per project, managed with ``zumik webhooks`` (signing: ``signing.py``).

The registry is ``<data_dir>/webhooks.json``: endpoint id -> project, url, event types and the
signing secrets. It is a versioned document like ``keys.json`` (``zumik.storage.versioned``):
each edit is published as the next version with create-if-absent, so edits on two hosts at once
both stay, and readers re-read it when a newer version appears (as ``zumik.storage.keys``
does). Secrets are stored in the clear (they sign), in a 0600 file like every Zumik file.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from zumik.storage import fsutil, versioned
from zumik.storage.store import valid_project
from zumik.storage.versioned import VersionedDoc
from zumik.webhooks.signing import new_secret

EVENT_TYPES = ("batch.completed", "batch.failed", "batch.expired", "batch.cancelled")
ENDPOINT_PREFIX = "we_"
MAX_URL_LENGTH = 2048
REGISTRY_FILE = "webhooks.json"
STATUS_DIR = ".webhooks"  # <endpoint id>.json: the last delivery attempt and its result


class WebhookConfigError(ValueError):
    """An operator's bad input to ``zumik webhooks``; the message names the fix."""


# -- endpoints --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    """A registered receiver: where to send which events, and the secrets that sign them."""

    id: str
    project: str
    url: str
    events: tuple[str, ...]
    created_at: int
    secrets: tuple[dict[str, Any], ...]  # {"secret", "created_at", "expires_at" (None: current)}

    @classmethod
    def from_json(cls, endpoint_id: str, doc: dict[str, Any]) -> Endpoint:
        return cls(
            endpoint_id,
            doc["project"],
            doc["url"],
            tuple(doc["events"]),
            doc["created_at"],
            tuple(doc["secrets"]),
        )

    def active_secrets(self, now: float) -> list[str]:
        """Secrets that sign now: the current one and rotated ones still in their grace."""
        return [
            s["secret"]
            for s in self.secrets
            if s.get("expires_at") is None or s["expires_at"] > now
        ]


def check_url(url: str) -> str:
    """An http(s) URL with a host, or WebhookConfigError."""
    parts = urlsplit(url) if len(url) <= MAX_URL_LENGTH else None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() for c in url)
    ):
        raise WebhookConfigError(
            f"invalid webhook URL {url[:100]!r}: use http:// or https:// "
            f"with a host (at most {MAX_URL_LENGTH} characters)"
        )
    return url


def check_events(events: list[str] | None) -> tuple[str, ...]:
    """The event types asked for (all four by default); unknown ones are an error."""
    if not events:
        return EVENT_TYPES
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise WebhookConfigError(
            f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}"
        )
    return tuple(t for t in EVENT_TYPES if t in events)


def _edit(data_dir: Path, change: Any) -> Any:
    return versioned.edit(data_dir / REGISTRY_FILE, change)


def add_endpoint(
    data_dir: Path,
    project: str,
    url: str,
    events: list[str] | None = None,
    now: float | None = None,
) -> tuple[Endpoint, str]:
    """Register an endpoint; returns it and its secret (shown to the operator once)."""
    if not valid_project(project):
        raise WebhookConfigError(f"invalid project name {project!r}")
    doc: dict[str, Any] = {
        "project": project,
        "url": check_url(url),
        "events": list(check_events(events)),
        "created_at": int(now or time.time()),
        "secrets": [],
    }
    secret = new_secret()
    doc["secrets"].append({"secret": secret, "created_at": doc["created_at"], "expires_at": None})
    endpoint_id = ENDPOINT_PREFIX + secrets.token_hex(12)
    _edit(data_dir, lambda document: document.__setitem__(endpoint_id, doc))
    return Endpoint.from_json(endpoint_id, doc), secret


def remove_endpoint(data_dir: Path, endpoint_id: str) -> bool:
    """Forget an endpoint; its pending deliveries are dropped when next due."""
    removed = _edit(data_dir, lambda document: document.pop(endpoint_id, None))
    (data_dir / STATUS_DIR / f"{endpoint_id}.json").unlink(missing_ok=True)
    return removed is not None


def rotate_secret(data_dir: Path, endpoint_id: str, grace: float, now: float | None = None) -> str:
    """A new current secret; the old ones keep signing for ``grace`` seconds. Returns it."""
    if not grace >= 0:
        raise WebhookConfigError(f"the grace must be 0 or more seconds, not {grace!r}")
    now = now or time.time()
    secret = new_secret()

    def rotate(document: dict[str, Any]) -> None:
        doc = document.get(endpoint_id)
        if doc is None:
            raise WebhookConfigError(f"no webhook endpoint {endpoint_id!r}")
        kept = []
        for old in doc["secrets"]:
            ends = (
                now + grace
                if old.get("expires_at") is None
                else min(old["expires_at"], now + grace)
            )
            if ends > now:
                kept.append({**old, "expires_at": int(ends)})
        doc["secrets"] = [{"secret": secret, "created_at": int(now), "expires_at": None}, *kept]

    _edit(data_dir, rotate)
    return secret


def load_endpoints(data_dir: Path) -> dict[str, Endpoint]:
    """Every endpoint, read now."""
    document = VersionedDoc(data_dir / REGISTRY_FILE).read() or {}
    return {eid: Endpoint.from_json(eid, doc) for eid, doc in document.items()}


def subscribers(data_dir: Path, project: str, event_type: str) -> list[Endpoint]:
    """The project's endpoints that asked for ``event_type`` (no registry file: none)."""
    return [
        e
        for e in load_endpoints(data_dir).values()
        if e.project == project and event_type in e.events
    ]


class Registry:
    """A cached view of the registry for the delivery loop: re-read when the file changes."""

    def __init__(self, data_dir: Path) -> None:
        self._endpoints = versioned.Cached(
            data_dir / REGISTRY_FILE,
            lambda document: {eid: Endpoint.from_json(eid, doc) for eid, doc in document.items()},
        )

    def get(self, endpoint_id: str) -> Endpoint | None:
        return self._endpoints.get().get(endpoint_id)


# -- delivery status (what ``zumik webhooks list`` shows) -------------------------------------
def write_status(data_dir: Path, endpoint_id: str, status: dict[str, Any]) -> None:
    directory = data_dir / STATUS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    fsutil.write_json(directory / f"{endpoint_id}.json", status)


def read_status(data_dir: Path, endpoint_id: str) -> dict[str, Any] | None:
    return fsutil.read_json(data_dir / STATUS_DIR / f"{endpoint_id}.json")
