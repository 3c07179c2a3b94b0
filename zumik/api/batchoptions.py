"""Zumik's batch-create extensions (issue 25), checked as strictly as OpenAI's fields:
``completion_window`` beyond ``24h``, ``max_cost`` / ``max_total_tokens`` budgets and
``priority``. They arrive as top-level JSON keys (the SDKs' ``extra_body``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from zumik.api.errors import bad_request
from zumik.core.records import PRIORITIES
from zumik.execution.routing import Router
from zumik.settings import Settings

EXTENSION_FIELDS = {"max_cost", "max_total_tokens", "priority"}
WINDOW = re.compile(r"^[1-9][0-9]{0,5}h$")
MAX_COST = 1e9  # USD: anything above is a typo, not a budget
MAX_TOKENS = 10**15


@dataclass(frozen=True)
class BatchOptions:
    """The checked extension fields of one create (absent ones None; priority defaults)."""

    window: str = "24h"
    window_seconds: int = 86_400
    max_cost: float | None = None
    max_total_tokens: int | None = None
    priority: str = "normal"

    def record_fields(self) -> dict[str, Any]:
        """What the batch record stores (and GET shows) of them."""
        return {
            "max_cost": self.max_cost,
            "max_total_tokens": self.max_total_tokens,
            "priority": self.priority,
        }


def check_batch_input(meta: dict[str, Any], file_id: str, settings: Settings) -> int:
    """The request count of a file a batch may run over (purpose ``batch``, 1 to
    ``max_requests`` requests); a 400 naming ``input_file_id`` otherwise."""
    if meta.get("purpose") != "batch":
        raise bad_request(
            f"File {file_id} has purpose {meta.get('purpose')!r}; a batch input must have "
            "purpose 'batch'",
            "input_file_id",
        )
    requests = int(meta.get("requests", 0))
    if requests == 0:
        raise bad_request(f"File {file_id} holds no requests", "input_file_id")
    if requests > settings.max_requests:
        raise bad_request(
            f"File {file_id} holds {requests} requests, over the limit of "
            f"{settings.max_requests}; split it",
            "input_file_id",
        )
    return requests


def window_seconds(window: Any, settings: Settings) -> int:
    """Seconds of a ``completion_window``: ``24h`` (``ZUMIK_COMPLETION_WINDOW`` long) or any
    ``<N>h`` from ``ZUMIK_MIN_WINDOW`` to ``ZUMIK_MAX_WINDOW``; else a 400 naming the field."""
    if not isinstance(window, str):
        raise bad_request(
            f"Invalid type for 'completion_window': expected a string, but got "
            f"{type(window).__name__}",
            "completion_window",
            "invalid_type",
        )
    if window == "24h":
        return settings.completion_window
    low, high = settings.min_window // 3600, settings.max_window // 3600
    if (
        WINDOW.match(window)
        and settings.min_window <= int(window[:-1]) * 3600 <= settings.max_window
    ):
        return int(window[:-1]) * 3600
    raise bad_request(
        f"Invalid value for 'completion_window': {window[:40]!r}. Supported values are: "
        f"'24h', or whole hours from '{low}h' to '{high}h' (e.g. '{max(low, 1)}h')",
        "completion_window",
        "invalid_value",
    )


def _number(body: dict[str, Any], name: str, maximum: float, integer: bool) -> Any:
    value = body.get(name)
    if value is None:
        return None
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(
            f"Invalid type for '{name}': expected {kind}, but got {type(value).__name__}",
            name,
            "invalid_type",
        )
    if integer and isinstance(value, float):
        if not value.is_integer():
            raise bad_request(f"'{name}' must be {kind}, got {value!r}", name, "invalid_value")
        value = int(value)
    if not (math.isfinite(value) and 0 < value <= maximum):
        raise bad_request(
            f"'{name}' must be greater than 0 and at most {maximum:g}, got {value!r}",
            name,
            "invalid_value",
        )
    return value if integer else float(value)


def check_batch_options(
    body: dict[str, Any], settings: Settings, router: Router, models: set[str] | None = None
) -> BatchOptions:
    """Check the window and the extension fields of a create body.

    ``max_cost`` needs prices: every model of ``models`` (the input file's) must route to a
    provider with a configured price, else 400 (the budget could never be judged)."""
    window = body.get("completion_window", "24h")
    seconds = window_seconds(window, settings)
    max_cost = _number(body, "max_cost", MAX_COST, integer=False)
    max_tokens = _number(body, "max_total_tokens", MAX_TOKENS, integer=True)
    priority = body.get("priority", "normal")
    if priority is None:
        priority = "normal"
    if not isinstance(priority, str) or priority not in PRIORITIES:
        raise bad_request(
            f"Invalid value for 'priority': {str(priority)[:40]!r}. Supported values are: "
            f"{', '.join(repr(p) for p in PRIORITIES)}",
            "priority",
            "invalid_value",
        )
    if max_cost is not None:
        unpriced = sorted(m for m in models or () if not _priced(router, m))
        if unpriced or models is None:
            raise bad_request(
                "'max_cost' needs prices: configure input_price/output_price for the "
                f"provider of {', '.join(repr(m) for m in unpriced[:3]) or 'every model'}, "
                "or use 'max_total_tokens'",
                "max_cost",
                "invalid_value",
            )
    return BatchOptions(window, seconds, max_cost, max_tokens, priority)


def _priced(router: Router, model: str) -> bool:
    route = router.resolve(model)
    return route is not None and all(
        t.provider.input_price is not None or t.provider.output_price is not None
        for t in route.targets
    )
