"""Batch records: their shape, their states and the moves between them."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

WINDOW_SECONDS = {"24h": 86_400}


class Status(StrEnum):
    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


TERMINAL = frozenset({Status.FAILED, Status.COMPLETED, Status.EXPIRED, Status.CANCELLED})
PUBLIC_FIELDS = (
    "id",
    "object",
    "endpoint",
    "model",
    "errors",
    "input_file_id",
    "completion_window",
    "status",
    "output_file_id",
    "error_file_id",
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "request_counts",
    "metadata",
    "usage",
    "cost",
    "retry_of",  # Zumik extension: the batch this one retries (POST /v1/batches/{id}/retry)
)
# Zumik's extensions, shown beside OpenAI's fields (issue 25): the budget, the priority and
# when the budget stopped the batch.
EXTENSION_FIELDS = ("max_cost", "max_total_tokens", "priority", "budget_exceeded_at")
PRIORITIES = ("high", "normal", "low")  # the order lines are served in, within a project
STATUS_TIMESTAMP = {
    Status.IN_PROGRESS: "in_progress_at",
    Status.FINALIZING: "finalizing_at",
    Status.COMPLETED: "completed_at",
    Status.FAILED: "failed_at",
    Status.EXPIRED: "expired_at",
    Status.CANCELLING: "cancelling_at",
    Status.CANCELLED: "cancelled_at",
}


def zero_usage() -> dict[str, Any]:
    return {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }


def new_batch(
    batch_id: str,
    *,
    now: int,
    input_file_id: str,
    endpoint: str,
    window: str,
    metadata: dict[str, str] | None,
    total: int,
    window_seconds: int | None = None,
) -> dict[str, Any]:
    """A fresh record in ``validating`` with every field present (absent values null).

    ``window_seconds`` overrides how long the window lasts (``ZUMIK_COMPLETION_WINDOW``)."""
    record: dict[str, Any] = dict.fromkeys(PUBLIC_FIELDS)
    record.update(
        id=batch_id,
        object="batch",
        endpoint=endpoint,
        input_file_id=input_file_id,
        completion_window=window,
        status=Status.VALIDATING.value,
        created_at=now,
        expires_at=now + (window_seconds or WINDOW_SECONDS[window]),
        request_counts={"total": total, "completed": 0, "failed": 0},
        metadata=metadata,
        usage=zero_usage(),
    )
    return record


def public_batch(record: dict[str, Any]) -> dict[str, Any]:
    """The batch object as the API shows it: OpenAI's fields, then Zumik's extensions."""
    shown = {key: record.get(key) for key in PUBLIC_FIELDS}
    for key in EXTENSION_FIELDS:
        shown[key] = record.get(key)
    shown["priority"] = shown["priority"] or "normal"
    return shown


def priority_rank(record: dict[str, Any]) -> int:
    """0 for ``high``, 1 for ``normal`` (also when unset), 2 for ``low``."""
    value = record.get("priority") or "normal"
    return PRIORITIES.index(value) if value in PRIORITIES else 1


def move(record: dict[str, Any], status: Status, now: int) -> dict[str, Any]:
    """Set ``status`` and its timestamp (kept if already set, so replays are harmless)."""
    record["status"] = status.value
    stamp = STATUS_TIMESTAMP.get(status)
    if stamp and record.get(stamp) is None:
        record[stamp] = now
    return record


def request_cancel(record: dict[str, Any], now: int) -> dict[str, Any]:
    """Cancel moves a running batch to ``cancelling``; any other status is kept."""
    if record["status"] in (Status.VALIDATING, Status.IN_PROGRESS):
        move(record, Status.CANCELLING, now)
    return record


def ended_at(record: dict[str, Any]) -> int | None:
    """When a terminal batch ended (None while it is active)."""
    status = record.get("status")
    return record.get(STATUS_TIMESTAMP[status]) if status in TERMINAL else None


def is_terminal(record: dict[str, Any]) -> bool:
    return record.get("status") in TERMINAL
