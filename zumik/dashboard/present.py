"""What the dashboard shows, computed once for templates and for the JSON the pages poll:
relative times, sizes, a batch's progress, throughput and ETA, its timeline, its failed lines."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from zumik.storage.store import ACTIVE_STATUSES

STATUS_LABELS = {"in_progress": "in progress"}
BADGES = {
    "validating": "run",
    "in_progress": "run",
    "finalizing": "run",
    "cancelling": "warn",
    "completed": "ok",
    "failed": "bad",
    "cancelled": "off",
    "expired": "warn",
}
TIMELINE = (
    ("created_at", "created"),
    ("in_progress_at", "in progress"),
    ("cancelling_at", "cancelling"),
    ("finalizing_at", "finalizing"),
    ("completed_at", "completed"),
    ("failed_at", "failed"),
    ("cancelled_at", "cancelled"),
    ("expired_at", "expired"),
)
FAILED_LINES_SHOWN = 20
FAILED_BYTES_READ = 256 * 1024
MESSAGE_CHARS = 400


def ago(ts: float | None, now: float) -> str:
    """``5 min ago`` / ``in 3 h`` / ``just now``."""
    if ts is None:
        return ""
    delta = now - ts
    text = duration(abs(delta))
    if abs(delta) < 5:
        return "just now"
    return f"{text} ago" if delta > 0 else f"in {text}"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86_400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{seconds // 86_400} d {seconds % 86_400 // 3600} h"


def breakable(name: str) -> Markup:
    """A long name with a line-break opportunity after each ``_ - . /`` (escaped): it wraps
    at its separators first, mid-word only where a part is wider than the column."""
    return Markup("<wbr>").join(escape(part) for part in re.split(r"(?<=[_\-./])", str(name)))


def when(ts: float | None) -> str:
    """Absolute UTC time, for titles and the timeline."""
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def iso(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def size(count: float | None) -> str:
    """Bytes as ``812 B``, ``4.2 KiB``, ``1.5 GiB``."""
    value = float(count or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""  # pragma: no cover


def number(value: float | None) -> str:
    return f"{int(value or 0):,}"


def share(part: float, whole: float) -> float:
    """``part`` as a percentage of ``whole``, 0 to 100."""
    return 0.0 if whole <= 0 else max(0.0, min(100.0, 100.0 * part / whole))


def progress(record: dict[str, Any], now: float) -> dict[str, Any]:
    """A batch's status and progress as the list, the detail page and the poll show them."""
    counts = record.get("request_counts") or {}
    total = int(counts.get("total") or 0)
    completed, failed = int(counts.get("completed") or 0), int(counts.get("failed") or 0)
    done = completed + failed
    status = record.get("status", "")
    rate = eta = ""
    started = record.get("in_progress_at")
    if status == "in_progress" and started and done:
        per_second = done / max(now - started, 0.5)
        rate = f"{per_second:,.1f} lines/s" if per_second < 100 else f"{per_second:,.0f} lines/s"
        eta = "ETA " + duration(max(total - done, 0) / per_second) if total > done else ""
    text = f"{number(done)} / {number(total)}"
    if failed:
        text += f" · {number(failed)} failed"
    return {
        "id": record.get("id"),
        "status": status,
        "status_label": STATUS_LABELS.get(status, status),
        "badge": BADGES.get(status, "off"),
        "active": status in ACTIVE_STATUSES,
        "total": total,
        "completed": completed,
        "failed": failed,
        "ok_pct": round(share(completed, total), 2),
        "fail_pct": round(share(failed, total), 2),
        "pct": round(share(done, total)),
        "text": text,
        "rate": rate,
        "eta": eta,
        "cancellable": status in ("validating", "in_progress"),
        "output_file_id": record.get("output_file_id"),
        "error_file_id": record.get("error_file_id"),
        "created_ago": ago(record.get("created_at"), now),
        "created_iso": iso(record.get("created_at")),
        "created_when": when(record.get("created_at")),
        "reason": reason(record),
        **cells(record, completed, failed, total),
        **durations(record, now, done),
    }


def reason(record: dict[str, Any]) -> str:
    """Why a failed batch failed: its first error (and how many more), else nothing."""
    errors = (record.get("errors") or {}).get("data") or []
    if record.get("status") != "failed" or not errors:
        return ""
    first = errors[0] if isinstance(errors[0], dict) else {}
    where = f"line {first['line']}: " if first.get("line") is not None else ""
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    message = str(first.get("message") or first.get("code") or "")[:MESSAGE_CHARS]
    return f"{where}{message}{more}"


def cells(record: dict[str, Any], completed: int, failed: int, total: int) -> dict[str, str]:
    """The counts and token usage as the page's cells show them (updated together by polls)."""
    usage = record.get("usage") or {}
    return {
        "completed_text": number(completed),
        "failed_text": number(failed),
        "total_text": number(total),
        "input_tokens": number(usage.get("input_tokens")),
        "cached_tokens": number((usage.get("input_tokens_details") or {}).get("cached_tokens")),
        "output_tokens": number(usage.get("output_tokens")),
        "reasoning_tokens": number(
            (usage.get("output_tokens_details") or {}).get("reasoning_tokens")
        ),
        "total_tokens": number(usage.get("total_tokens")),
    }


def durations(record: dict[str, Any], now: float, done: int) -> dict[str, str]:
    """How long it queued (created to running), has run (or ran), and per finished line."""
    created, started = record.get("created_at"), record.get("in_progress_at")
    ended = next(
        (
            record[key]
            for key in ("completed_at", "failed_at", "cancelled_at", "expired_at")
            if record.get(key)
        ),
        None,
    )
    queued = run = per_line = "—"
    if created is not None:
        until = started if started is not None else (ended or now)
        queued = duration(max(until - created, 0))
    if started is not None:
        seconds = max((ended or now) - started, 0)
        run = duration(seconds)
        if done:
            per_line = (
                f"{1000 * seconds / done:,.0f} ms"
                if seconds / done < 10
                else (duration(seconds / done))
            )
    return {"queued": queued, "run_time": run, "per_line": per_line}


def timeline(record: dict[str, Any], now: float) -> list[dict[str, str]]:
    """The status timestamps that are set, in time order."""
    steps = [(record[key], label) for key, label in TIMELINE if record.get(key) is not None]
    steps.sort(key=lambda step: step[0])
    return [
        {"label": label, "when": when(ts), "iso": iso(ts), "ago": ago(ts, now)}
        for ts, label in steps
    ]


def _failure(line: dict[str, Any]) -> dict[str, str]:
    error = line.get("error") if isinstance(line.get("error"), dict) else None
    response = line.get("response") if isinstance(line.get("response"), dict) else None
    code = message = ""
    if error:
        code, message = str(error.get("code") or ""), str(error.get("message") or "")
    elif response:
        body = response["body"] if isinstance(response.get("body"), dict) else {}
        inner = body["error"] if isinstance(body.get("error"), dict) else {}
        code = str(inner.get("code") or f"HTTP {response.get('status_code')}")
        message = str(inner.get("message") or "")
    if len(message) > MESSAGE_CHARS:
        message = message[:MESSAGE_CHARS] + "…"
    return {"custom_id": str(line.get("custom_id", "")), "code": code, "message": message}


def failed_lines(path: Path, limit: int = FAILED_LINES_SHOWN) -> tuple[list[dict[str, str]], bool]:
    """The first failed lines of an error file and whether more follow (reads a bounded prefix)."""
    out: list[dict[str, str]] = []
    try:
        with open(path, "rb") as f:
            budget = FAILED_BYTES_READ
            while budget > 0:
                raw = f.readline(budget)
                if not raw:
                    return out, False
                budget -= len(raw)
                if len(out) == limit:
                    return out, True
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(line, dict):
                    out.append(_failure(line))
            return out, True
    except FileNotFoundError:
        return out, False
