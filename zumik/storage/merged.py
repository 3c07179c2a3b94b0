"""Merged results of a retry chain: a batch, the batch it retries (``retry_of``, up to the
first) and every retry of them (``_retries``, kept on each original), as one output file and
one error file where the latest result of each ``custom_id`` wins."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from zumik.storage.retry_lines import line_failed
from zumik.storage.store import ProjectStore

MAX_CHAIN = 1000  # batches a chain may hold (a bound, not a limit anyone meets)


class _CustomId(msgspec.Struct):
    custom_id: str


_CUSTOM_ID = msgspec.json.Decoder(_CustomId)


def chain(store: ProjectStore, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every batch of ``record``'s retry chain, oldest first."""
    root = record
    seen = {root["id"]}
    while root.get("retry_of") and len(seen) < MAX_CHAIN:
        parent = store.get_batch(root["retry_of"])
        if parent is None or parent["id"] in seen:
            break
        seen.add(parent["id"])
        root = parent
    found = {root["id"]: root}
    queue = [root]
    while queue and len(found) < MAX_CHAIN:
        current = queue.pop()
        for child_id in current.get("_retries") or []:
            if child_id in found:
                continue
            child = store.get_batch(child_id)
            if child is not None:
                found[child_id] = child
                queue.append(child)
    return sorted(found.values(), key=lambda r: (r.get("created_at") or 0, r["id"]))


def _result_lines(store: ProjectStore, record: dict[str, Any]) -> Iterator[bytes]:
    for field in ("output_file_id", "error_file_id"):
        file_id = record.get(field)
        if file_id is None or store.get_file(file_id) is None:
            continue
        try:
            f = open(store.file_data_path(file_id), "rb")  # noqa: SIM115
        except FileNotFoundError:
            continue
        with f:
            for raw in f:
                if raw.endswith(b"\n"):
                    yield raw


def lines(store: ProjectStore, batches: list[dict[str, Any]], failed: bool) -> Iterator[bytes]:
    """The winning result lines that failed (``failed``) or succeeded: newest batch first,
    each ``custom_id`` once, from the batch that ran it last."""
    seen: set[str] = set()
    for record in reversed(batches):
        here: set[str] = set()
        for raw in _result_lines(store, record):
            try:
                custom_id = _CUSTOM_ID.decode(raw).custom_id
            except msgspec.DecodeError:
                continue
            if custom_id in seen or custom_id in here:
                continue
            here.add(custom_id)
            if line_failed(raw) == failed:
                yield raw
        seen |= here
