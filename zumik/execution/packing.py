"""Packing the lines of an ``/v1/embeddings`` batch into one upstream request each.

Lines that share a model (so a route) and every request option but ``input`` are grouped, up
to the provider's ``embedding_pack`` inputs and ``embedding_pack_bytes`` of lines, and sent as
one request whose ``input`` is the list of their items (a line whose ``input`` is a list keeps
its items together). The answer is split back into one normal result line per batch line
(``zumik.execution.packsplit``). A pack holds one fair-scheduler slot and one provider
concurrency slot, like a line: slots count requests in flight, and a pack is one request; the
provider's tpm bucket is charged the pack's tokens.

Failures: a pack the provider answers with an error it will not retry (4xx), or whose answer
cannot be split, is sent again line by line, so a bad line fails alone with the provider's own
error; 5xx and timeouts are retried as a pack by ``Upstream``, and a pack that still fails is
then sent line by line too (a line that kills the provider fails alone). Lines of a pack are
journaled together once the answer is in, so a crash re-sends at most the packs in flight.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from zumik.execution import packsplit
from zumik.execution.packcheck import PackChecks
from zumik.execution.results import response_line
from zumik.execution.routing import Route, Router
from zumik.execution.upstream import Outcome, Upstream
from zumik.execution.wire import RequestBody

log = logging.getLogger("zumik.packing")
Line = tuple[int, str, RequestBody]  # input line number, custom_id, body
Result = tuple[bytes, bool, Any, str | None, str] | None  # what the run journals for a line
SendLine = Callable[[int, str, RequestBody], Awaitable[Result]]
MAX_OPEN_PACKS = 16  # packs being filled at once (lines of many option sets interleaved)

_checks: weakref.WeakKeyDictionary[Upstream, PackChecks] = weakref.WeakKeyDictionary()


def checks_for(upstream: Upstream) -> PackChecks:
    """The pack checks of this process's upstream (verdicts live as long as it does)."""
    found = _checks.get(upstream)
    if found is None:
        found = _checks[upstream] = PackChecks()
    return found


def _items(value: Any) -> tuple[str, list[Any]] | None:
    """The kind (``text`` or ``tokens``) and items of an ``input``, or None if it is not one
    that packs (an empty one, or a shape the provider must judge alone)."""
    if isinstance(value, str):
        return ("text", [value]) if value else None
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(x, str) and x for x in value):
        return "text", list(value)
    if all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return "tokens", [value]
    if all(
        isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x)
        for x in value
    ):
        return "tokens", list(value)
    return None


@dataclass
class Pack:
    """Lines bound for one request, and the items of each."""

    route: Route
    options: dict[str, Any]  # the body without ``input``
    lines: list[Line] = field(default_factory=list)
    items: list[list[Any]] = field(default_factory=list)
    size: int = 0  # bytes of the lines' bodies
    count: int = 0  # items over all lines

    def add(self, line: Line, items: list[Any]) -> None:
        self.lines.append(line)
        self.items.append(items)
        self.size += len(line[2].raw)
        self.count += len(items)

    def body(self) -> RequestBody:
        flat = [item for items in self.items for item in items]
        return RequestBody.of({**self.options, "input": flat})


class Packer:
    """Groups one run's pending lines into packs and sends them."""

    def __init__(
        self, router: Router, upstream: Upstream, endpoint: str, next_request_id: Callable[[], str]
    ) -> None:
        self.router = router
        self.upstream = upstream
        self.endpoint = endpoint
        self.next_request_id = next_request_id
        self.checks = checks_for(upstream)

    def _caps(self, route: Route) -> tuple[int, int]:
        targets = route.targets
        return (
            min(t.provider.embedding_pack for t in targets),
            min(t.provider.embedding_pack_bytes for t in targets),
        )

    def units(self, lines: Iterator[Line]) -> Iterator[Line | Pack]:
        """``lines`` as packs (and lines that go alone), in about input order: a pack is
        handed out when it is full, when more than ``MAX_OPEN_PACKS`` are open (the fullest
        goes), and at the end."""
        open_packs: dict[tuple[Any, ...], Pack] = {}
        for line in lines:
            planned = self._plan(line)
            if planned is None:
                yield line
                continue
            key, route, options, items = planned
            items_cap, bytes_cap = self._caps(route)
            pack = open_packs.get(key)
            if pack is not None and (
                pack.count + len(items) > items_cap or pack.size + len(line[2].raw) > bytes_cap
            ):
                yield self._ready(open_packs.pop(key))
                pack = None
            if pack is None:
                pack = open_packs[key] = Pack(route, options)
            pack.add(line, items)
            if pack.count >= items_cap or pack.size >= bytes_cap:
                yield self._ready(open_packs.pop(key))
            elif len(open_packs) > MAX_OPEN_PACKS:
                fullest = max(open_packs, key=lambda k: open_packs[k].count)
                yield self._ready(open_packs.pop(fullest))
        for pack in open_packs.values():
            yield self._ready(pack)

    @staticmethod
    def _ready(pack: Pack) -> Line | Pack:
        return pack.lines[0] if len(pack.lines) == 1 else pack  # one line: sent as it is

    def _plan(self, line: Line) -> tuple[tuple[Any, ...], Route, dict[str, Any], list[Any]] | None:
        body = line[2]
        route = self.router.resolve(body.model)
        if route is None or self.checks.refused(route):
            return None
        items_cap, bytes_cap = self._caps(route)
        if items_cap <= 1:
            return None
        try:
            obj = body.obj
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return None
        if not isinstance(obj, dict):
            return None
        found = _items(obj.get("input"))
        if found is None or len(found[1]) > items_cap or len(body.raw) > bytes_cap:
            return None
        kind, items = found
        options = {k: v for k, v in obj.items() if k != "input"}
        key = (kind, msgspec.json.encode(dict(sorted(options.items()))))
        return key, route, options, items

    # -- sending -----------------------------------------------------------------------------
    async def send(self, pack: Pack, send_line: SendLine) -> list[tuple[int, Result]]:
        """Send ``pack``; each line's result, in pack order (line by line when the pack was
        refused, failed, or its answer does not split)."""
        try:
            if await self.checks.allows(self.upstream, pack.route, pack.options, self.endpoint):
                outcome = await self.upstream.send(pack.route, pack.body(), self.endpoint)
                if outcome.ok:
                    results = await self._split(pack, outcome)
                    if results is not None:
                        return results
        except Exception:  # a bug here must not fail 64 lines: each goes alone instead
            log.exception("a pack of %d lines raised; sending them one by one", len(pack.lines))
        return await self.one_by_one(pack, send_line)

    async def one_by_one(self, pack: Pack, send_line: SendLine) -> list[tuple[int, Result]]:
        """Each line of ``pack`` as its own request (concurrently: the provider's limits
        gate them), each with its own answer or error."""
        results = await asyncio.gather(*(send_line(*line) for line in pack.lines))
        return [(line[0], result) for line, result in zip(pack.lines, results, strict=True)]

    async def _split(self, pack: Pack, outcome: Outcome) -> list[tuple[int, Result]] | None:
        try:
            answer = msgspec.json.decode(outcome.body or b"")
        except msgspec.DecodeError:
            return None
        items = packsplit.ordered_items(answer, pack.count)
        if items is None:
            return None
        reported = packsplit.reported_prompt_tokens(outcome.usage)
        counts = await self._token_counts(pack, outcome)
        weights = packsplit.line_weights(pack.items, counts, reported)
        usages = packsplit.split_usage(outcome.usage, weights)
        bodies = packsplit.split_answer(answer, items, pack.items, usages)
        results: list[tuple[int, Result]] = []
        for (number, custom_id, body), own, usage in zip(pack.lines, bodies, usages, strict=True):
            line_outcome = Outcome(
                ok=True,
                body=own,
                usage=usage,
                status_code=outcome.status_code,
                request_id=outcome.request_id,
                attempts=outcome.attempts,
                provider=outcome.provider,
            )
            line = response_line(custom_id, line_outcome, self.next_request_id())
            results.append((number, (line, True, usage, outcome.provider, body.model)))
        return results

    async def _token_counts(self, pack: Pack, outcome: Outcome) -> list[int] | None:
        """Per-item token counts for exact usage shares: token-id items count themselves,
        texts are counted by the provider's tokenizer when it has one."""
        flat = [item for items in pack.items for item in items]
        if all(isinstance(item, list) for item in flat):
            return [len(item) for item in flat]
        target = next((t for t in pack.route.targets if t.provider.name == outcome.provider), None)
        if target is None or not all(isinstance(item, str) for item in flat):
            return None
        return await self.checks.token_counts(self.upstream, target, flat)
