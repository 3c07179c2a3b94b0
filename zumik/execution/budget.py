"""A batch's budget (issue 25): ``max_cost`` (USD at the configured prices) and/or
``max_total_tokens``. Once the batch's running usage passes either, its senders take no new
line; lines already in flight finish (so the overshoot is at most the lines in flight), and
finalizing gives every unsent line a ``budget_exceeded`` error line."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zumik.storage.journal import Progress

log = logging.getLogger("zumik.executor")


@dataclass
class Budget:
    """The limits of one batch and when they were first passed (None: not yet)."""

    max_cost: float | None = None
    max_total_tokens: int | None = None
    exceeded_at: int | None = None

    @classmethod
    def of(cls, record: dict[str, Any]) -> Budget:
        return cls(record.get("max_cost"), record.get("max_total_tokens"))

    def spent(self, progress: Progress, clock: Callable[[], float]) -> bool:
        """Whether the budget is passed (checked before each line is sent)."""
        if self.exceeded_at is not None:
            return True
        if self.max_cost is None and self.max_total_tokens is None:
            return False
        used = progress.usage["total_tokens"]
        cost = progress.input_cost + progress.output_cost
        if (self.max_total_tokens is not None and used > self.max_total_tokens) or (
            self.max_cost is not None and cost > self.max_cost
        ):
            self.exceeded_at = int(clock())
            log.info("budget passed: %d tokens, %.6f USD; sending no more lines", used, cost)
            return True
        return False
