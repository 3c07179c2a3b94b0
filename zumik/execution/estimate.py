"""Estimating a batch before it runs (issue 25): lines, input tokens, the most output tokens
the lines allow, cost at the configured prices and time at the measured throughput.

One streaming pass over the stored input file, as the validating step makes (the same
``invalid_url`` and ``model_not_found`` verdicts, raised as ``LineError``). Input tokens come
from the provider's own tokenizer where it offers one (``execution.tokenizer``; up to
``TOKENIZER_THREADS`` requests at once, within ``ZUMIK_ESTIMATE_SECONDS``), else from the
heuristic: the bytes of the line's prompt (``messages``, ``input``, ``prompt``,
``instructions``) as JSON, divided by 4. A line the tokenizer could not count, or that comes
after the time budget, gets the heuristic; the answer says how many lines were tokenized.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import requests

from zumik.core.lines import EMBEDDINGS, MODERATIONS, LineError, target_of
from zumik.execution.routing import ProviderConfig, Router, Target
from zumik.execution.tokenizer import CACHE, Tokenizer, TokenizerCache, heuristic_tokens
from zumik.ops.metrics import measured_throughput
from zumik.storage.inputs import iter_lines

TOKENIZER_THREADS = 8
MAX_OUTSTANDING = 64  # tokenizer requests queued or in flight at once
FAILURES_TO_GIVE_UP = 5  # tokenizer failures in a row before the rest use the heuristic
MAX_LINE_OUTPUT = 10**9  # a max_tokens above this is treated as this
MAX_MODELS = 1000


class _Body(msgspec.Struct):
    model: str
    messages: msgspec.Raw = msgspec.Raw(b"")
    input: msgspec.Raw = msgspec.Raw(b"")
    prompt: msgspec.Raw = msgspec.Raw(b"")
    instructions: msgspec.Raw = msgspec.Raw(b"")
    max_tokens: Any = None
    max_completion_tokens: Any = None
    max_output_tokens: Any = None


class _Line(msgspec.Struct):
    url: str
    body: _Body


_LINE = msgspec.json.Decoder(_Line)


def models_of(path: str) -> set[str]:
    """The models a stored input file names (at most ``MAX_MODELS``)."""
    models: set[str] = set()
    for number, raw in iter_lines(path):
        models.add(target_of(raw, number)[1])
        if len(models) >= MAX_MODELS:
            break
    return models


def _max_output(body: _Body) -> int | None:
    for value in (body.max_tokens, body.max_completion_tokens, body.max_output_tokens):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return min(value, MAX_LINE_OUTPUT)
    return None


@dataclass
class _Tally:
    """What one model's lines add up to."""

    target: Target
    tokenizer: Tokenizer | None
    lines: int = 0
    input_tokens: int = 0
    max_output: int | None = 0
    tokenized: int = 0
    failures: int = 0


def _target(router: Router, model: str, number: int) -> Target:
    route = router.resolve(model)
    if route is None:
        raise LineError(
            number,
            "model_not_found",
            f"The model {model!r} has no route; known: {', '.join(router.model_names())}",
            "body.model",
        )
    targets = list(route.targets)
    if route.strategy == "cheapest":
        targets.sort(key=lambda t: t.provider.price)
    return targets[0]


class Estimator:
    """One estimate of one file (not shared between requests)."""

    def __init__(
        self,
        router: Router,
        data_dir: Path,
        time_budget: float,
        cache: TokenizerCache = CACHE,
        use_tokenizer: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.router = router
        self.data_dir = data_dir
        self.cache = cache
        self.use_tokenizer = use_tokenizer
        self.clock = clock
        self.deadline = clock() + time_budget
        self.tallies: dict[str, _Tally] = {}
        self.out_of_time = False
        self._pending: collections.deque[tuple[_Tally, int, Future[int | None]]] = (
            collections.deque()
        )
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()

    def run(self, path: str, endpoint: str) -> dict[str, Any]:
        lines = 0
        try:
            for number, raw in iter_lines(path):
                lines += 1
                self._line(number, raw, endpoint)
            while self._pending:
                self._settle()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
        return self._answer(lines)

    def _line(self, number: int, raw: bytes, endpoint: str) -> None:
        try:
            line = _LINE.decode(raw)
            url, model, body = line.url, line.body.model, line.body
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            url, model = target_of(raw, number)  # a line msgspec refuses: heuristic on all
            body = _Body(model, input=msgspec.Raw(raw))
        if url != endpoint:
            raise LineError(
                number,
                "invalid_url",
                "The URL provided for this request does not match the batch endpoint.",
                "url",
            )
        tally = self.tallies.get(model)
        if tally is None:
            if len(self.tallies) >= MAX_MODELS:
                raise LineError(number, "too_many_models", f"more than {MAX_MODELS} models")
            target = _target(self.router, model, number)
            tokenizer = None
            if self.use_tokenizer and self.clock() < self.deadline:
                left = self.deadline - self.clock()
                tokenizer = self.cache.get(target.provider, target.model, left)
            tally = self.tallies[model] = _Tally(target, tokenizer)
        tally.lines += 1
        most = 0 if url in (EMBEDDINGS, MODERATIONS) else _max_output(body)
        tally.max_output = (
            None if most is None or tally.max_output is None else tally.max_output + most
        )
        size = sum(
            len(part) for part in (body.messages, body.input, body.prompt, body.instructions)
        )
        guess = heuristic_tokens(size)
        if tally.tokenizer is None or self.clock() >= self.deadline:
            self.out_of_time = self.out_of_time or tally.tokenizer is not None
            tally.input_tokens += guess
            return
        messages = msgspec.json.decode(body.messages) if body.messages else None
        text = msgspec.json.decode(body.prompt or body.input) if not messages else None
        if not isinstance(messages, list):
            messages = None
        if messages is None and not isinstance(text, str):
            tally.input_tokens += guess  # token ids, lists of prompts: the heuristic
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(TOKENIZER_THREADS, thread_name_prefix="zumik-tokenize")
        future = self._pool.submit(self._count, tally.tokenizer, tally.target.model, messages, text)
        self._pending.append((tally, guess, future))
        if len(self._pending) >= MAX_OUTSTANDING:
            self._settle()

    def _count(self, tokenizer: Tokenizer, model: str, messages: Any, text: Any) -> int | None:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return tokenizer.count(session, model, messages=messages, text=text)

    def _settle(self) -> None:
        """Wait for the oldest tokenizer request (no longer than the time budget)."""
        tally, guess, future = self._pending.popleft()
        try:
            count = future.result(timeout=max(0.0, self.deadline - self.clock()))
        except FutureTimeout:
            future.cancel()
            self.out_of_time = True
            count = None
        except Exception:
            count = None
        if count is None:
            tally.input_tokens += guess
            tally.failures += 1
            if tally.failures >= FAILURES_TO_GIVE_UP and tally.tokenizer is not None:
                self.cache.forget(tally.target.provider.name)
                tally.tokenizer = None
            return
        tally.failures = 0
        tally.input_tokens += count
        tally.tokenized += 1

    def _answer(self, lines: int) -> dict[str, Any]:
        tallies = self.tallies.values()
        input_tokens = sum(t.input_tokens for t in tallies)
        tokenized = sum(t.tokenized for t in tallies)
        outputs = [t.max_output for t in tallies]
        max_output = None if None in outputs else sum(o or 0 for o in outputs)
        return {
            "object": "batch.estimate",
            "lines": lines,
            "input_tokens": input_tokens,
            "input_tokens_method": "tokenizer" if lines and tokenized == lines else "heuristic",
            "tokenized_lines": tokenized,
            "tokenizer_time_budget_reached": self.out_of_time,
            "max_output_tokens": max_output,
            "models": {
                model: {
                    "lines": t.lines,
                    "input_tokens": t.input_tokens,
                    "max_output_tokens": t.max_output,
                    "provider": t.target.provider.name,
                    "input_tokens_method": ("tokenizer" if t.tokenized == t.lines else "heuristic"),
                }
                for model, t in self.tallies.items()
            },
            "cost": _cost(tallies, max_output),
            "eta_seconds": _eta(tallies, measured_throughput(self.data_dir)),
        }


def _priced(provider: ProviderConfig) -> bool:
    return provider.input_price is not None or provider.output_price is not None


def _cost(tallies: Any, max_output: int | None) -> dict[str, Any] | None:
    """low: input tokens at the input price; high: plus every line's most output at the
    output price (null when a line sets no maximum). Null unless every provider is priced."""
    tallies = list(tallies)
    if not tallies or not all(_priced(t.target.provider) for t in tallies):
        return None
    low = sum(t.input_tokens * (t.target.provider.input_price or 0.0) / 1e6 for t in tallies)
    high = None
    if max_output is not None:
        high = low + sum(
            (t.max_output or 0) * (t.target.provider.output_price or 0.0) / 1e6 for t in tallies
        )
    return {
        "low": round(low, 6),
        "high": None if high is None else round(high, 6),
        "currency": "USD",
    }


def _eta(tallies: Any, measured: dict[str, dict[str, float]]) -> dict[str, int] | None:
    """Per provider: low = its lines at the lines/s measured, high = its input and most output
    tokens at the tokens/s measured (not below low). Providers run side by side, so the batch's
    low is the slowest provider's low and its high the sum of the highs. Null when a provider
    was never measured."""
    by_provider: dict[str, list[int]] = {}
    for t in tallies:
        name = t.target.provider.name
        lines, tokens = by_provider.get(name, [0, 0])
        by_provider[name] = [lines + t.lines, tokens + t.input_tokens + (t.max_output or 0)]
    if not by_provider or any(name not in measured for name in by_provider):
        return None
    lows, highs = [], []
    for name, (lines, tokens) in by_provider.items():
        rates = measured[name]
        low = lines / rates["lines_per_second"]
        lows.append(low)
        highs.append(max(low, tokens / rates["tokens_per_second"]))
    return {"low": math.ceil(max(lows)), "high": math.ceil(sum(highs))}


def estimate_file(
    path: str,
    endpoint: str,
    router: Router,
    data_dir: Path,
    time_budget: float,
    use_tokenizer: bool = True,
) -> dict[str, Any]:
    """The estimate of a stored input file for ``endpoint`` (``LineError`` on a line that
    could not run)."""
    return Estimator(router, data_dir, time_budget, use_tokenizer=use_tokenizer).run(path, endpoint)
