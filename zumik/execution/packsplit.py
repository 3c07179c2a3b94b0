"""Splitting one packed embeddings answer back into one answer per batch line.

Each line gets a normal embeddings answer for itself alone, in the provider's own shape: the
answer's top-level fields as the provider wrote them, ``data`` with the line's own items
re-indexed from 0, and ``usage`` with the line's share of the packed request's counts. Shares
are whole numbers that add up exactly to what the provider reported (largest remainder), from
per-item token counts when they are known, else in proportion to input length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

MAX_TOKENS = 1 << 40  # a count from a provider above this is nonsense: no usage is shared


def distribute(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split into whole shares in proportion to ``weights`` (largest remainder: the
    shares add up to ``total`` exactly; ties go to the earlier weight). All-zero weights
    count as equal."""
    if not weights:
        return []
    if sum(weights) <= 0:
        weights = [1] * len(weights)
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    left = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in order[:left]:
        shares[i] += 1
    return shares


def item_weight(item: Any) -> int:
    """Proportional weight of one input item: characters of a text, tokens of a token list."""
    return len(item) if isinstance(item, str | list) else 1


def line_weights(
    lines_items: Sequence[Sequence[Any]], counts: Sequence[int] | None, reported: int
) -> list[int]:
    """Each line's weight for sharing ``reported`` prompt tokens.

    ``counts`` are per-item token counts (a tokenizer's, in pack order) or None. When they
    differ from ``reported`` by the same number per item (a BOS the tokenizer left out), that
    offset is added to each item, and the shares come out exact. Token-id inputs are their own
    exact counts."""
    flat = [item for items in lines_items for item in items]
    if counts is None or len(counts) != len(flat):
        counts = [item_weight(item) for item in flat]
    gap = reported - sum(counts)
    if flat and gap and gap % len(flat) == 0 and min(counts) + gap // len(flat) >= 0:
        offset = gap // len(flat)
        counts = [c + offset for c in counts]
    weights, at = [], 0
    for items in lines_items:
        weights.append(sum(counts[at : at + len(items)]))
        at += len(items)
    return weights


def _bounded(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS:
        return value
    return None


def split_usage(usage: Any, weights: Sequence[int]) -> list[dict[str, int] | None]:
    """Per-line usage objects: every whole-number count of the provider's ``usage`` split by
    ``weights`` (other fields are left out: they cannot be shared). None per line when the
    provider sent no usage."""
    if not isinstance(usage, dict):
        return [None] * len(weights)
    parts: list[dict[str, int]] = [{} for _ in weights]
    for key, value in usage.items():
        count = _bounded(value)
        if count is None:
            continue
        for part, share in zip(parts, distribute(count, weights), strict=True):
            part[key] = share
    return list(parts)


def reported_prompt_tokens(usage: Any) -> int:
    """The packed answer's prompt tokens (0 when absent or out of bounds)."""
    if not isinstance(usage, dict):
        return 0
    return _bounded(usage.get("prompt_tokens", usage.get("total_tokens"))) or 0


def ordered_items(answer: Any, count: int) -> list[Any] | None:
    """The answer's ``data`` items in input order, or None unless it holds exactly ``count``
    items with the indexes 0..count-1 (anything else cannot be split safely)."""
    if not isinstance(answer, dict):
        return None
    data = answer.get("data")
    if not isinstance(data, list) or len(data) != count:
        return None
    slots: list[Any] = [None] * count
    for item in data:
        index = item.get("index") if isinstance(item, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
            return None
        if slots[index] is not None:
            return None
        slots[index] = item
    return slots


def split_answer(
    answer: dict[str, Any],
    items: list[Any],
    lines_items: Sequence[Sequence[Any]],
    usages: Sequence[dict[str, int] | None],
) -> list[bytes]:
    """One compact JSON answer per line: the provider's fields in its order, ``data`` the
    line's items re-indexed from 0, ``usage`` the line's share (left out if it had none)."""
    bodies, at = [], 0
    for line_items, usage in zip(lines_items, usages, strict=True):
        own = [{**item, "index": i} for i, item in enumerate(items[at : at + len(line_items)])]
        at += len(line_items)
        body: dict[str, Any] = {}
        for key, value in answer.items():
            if key == "data":
                body[key] = own
            elif key == "usage":
                if usage is not None:
                    body[key] = usage
            else:
                body[key] = value
        bodies.append(msgspec.json.encode(body))
    return bodies
