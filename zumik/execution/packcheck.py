"""What packing needs to know about a provider, learnt once per process: whether it serves
list inputs right, and its tokenizer's counts.

Some servers mis-serve lists (llama-cpp-python without a pooling type returns wrong vectors
for every item after the first). Before the first pack goes to a provider and model, two short
probe texts are embedded packed and one by one; if the vectors differ beyond ``TOLERANCE``
(relative to the vector's largest component, at least 1), that model is sent one line at a
time from then on, with one warning in the log. A probe that gets no clear answer (the
provider is down) decides nothing; after ``PROBE_TRIES`` of those the model is not packed.

The tokenizer (vLLM's and llama.cpp's ``POST /tokenize`` beside ``/v1``) gives per-item
counts, so each line's share of a packed request's usage is exact; a provider without one is
remembered as such after one try.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
import struct
from typing import Any

import aiohttp
import msgspec

from zumik.execution.packsplit import MAX_TOKENS, ordered_items
from zumik.execution.routing import Route, Target
from zumik.execution.upstream import Upstream
from zumik.execution.wire import RequestBody

log = logging.getLogger("zumik.packing")

PROBE_TEXTS = ("Zumik packing check: a short text.", "Zumik packing check, a second text.")
TOLERANCE = 1e-4
PROBE_TRIES = 3
TOKENIZE_TIMEOUT = 10.0
TOKENIZE_MAX_BYTES = 1 << 20
TOKENIZE_CONCURRENCY = 8  # tokenizer requests in flight per provider

Key = tuple[str, str, str]  # provider name, its base URL, the model name sent to it


def vector_of(item: Any) -> list[float] | None:
    """An embedding item's vector: a list of numbers, or base64 of little-endian float32."""
    value = item.get("embedding") if isinstance(item, dict) else None
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) % 4:
            return None
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    if isinstance(value, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in value
    ):
        return [float(x) for x in value]
    return None


def close(packed: list[float] | None, alone: list[float] | None) -> bool:
    """Whether a packed vector equals the one-by-one vector within ``TOLERANCE``."""
    if packed is None or alone is None or len(packed) != len(alone) or not alone:
        return False
    scale = max(1.0, max(abs(x) for x in alone))
    return all(
        math.isfinite(a) and math.isfinite(b) and abs(a - b) <= TOLERANCE * scale
        for a, b in zip(packed, alone, strict=True)
    )


def _vectors(body: bytes | None, count: int) -> list[list[float] | None] | None:
    try:
        answer = msgspec.json.decode(body or b"")
    except msgspec.DecodeError:
        return None
    items = ordered_items(answer, count)
    return None if items is None else [vector_of(item) for item in items]


def tokenize_url(base_url: str) -> str:
    """``POST /tokenize`` sits beside ``/v1`` on vLLM and llama.cpp's server."""
    return base_url.removesuffix("/v1") + "/tokenize"


class PackChecks:
    """Per-process verdicts (may a provider's model get packs?) and tokenizer knowledge."""

    def __init__(self) -> None:
        self.verdicts: dict[Key, bool] = {}
        self._checks: dict[Key, asyncio.Task[bool | None]] = {}
        self._unclear: dict[Key, int] = {}
        self._tokenizers: dict[str, str | None] = {}  # provider -> request form, None: none
        self._tokenize_gates: dict[str, asyncio.Semaphore] = {}

    @staticmethod
    def key(target: Target) -> Key:
        return (target.provider.name, target.provider.base_url, target.model)

    def refused(self, route: Route) -> bool:
        """Whether some target of ``route`` is known to mis-serve lists (never pack it)."""
        return any(self.verdicts.get(self.key(t)) is False for t in route.targets)

    async def allows(
        self, upstream: Upstream, route: Route, options: dict[str, Any], endpoint: str
    ) -> bool:
        """Whether a pack may go along ``route``: every target passed the check (run once)."""
        for target in route.targets:
            if target.provider.is_echo:
                continue
            key = self.key(target)
            verdict = self.verdicts.get(key)
            if verdict is None:
                verdict = await self._checked(key, upstream, target, options, endpoint)
            if not verdict:
                return False
        return True

    async def _checked(
        self, key: Key, upstream: Upstream, target: Target, options: dict[str, Any], endpoint: str
    ) -> bool:
        task = self._checks.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = self._checks[key] = asyncio.ensure_future(
                self._check(key, upstream, target, options, endpoint)
            )
        try:
            result = await asyncio.shield(task)  # a cancelled sender leaves the check running
        finally:
            if task.done() and self._checks.get(key) is task:
                del self._checks[key]
        return bool(result)

    async def _check(
        self, key: Key, upstream: Upstream, target: Target, options: dict[str, Any], endpoint: str
    ) -> bool | None:
        route = Route(target.model, "fallback", (target,))
        base = {k: v for k, v in options.items() if k not in ("input", "encoding_format")}
        base["model"] = target.model
        alone: list[list[float] | None] = []
        for text in PROBE_TEXTS:  # alone first: a request the model refuses anyway says nothing
            outcome = await upstream.send(route, RequestBody.of({**base, "input": text}), endpoint)
            vectors = _vectors(outcome.body, 1) if outcome.ok else None
            if vectors is None:
                return self._unclear_once(key)
            alone.append(vectors[0])
        packed = await upstream.send(
            route, RequestBody.of({**base, "input": list(PROBE_TEXTS)}), endpoint
        )
        status = packed.status_code
        if (
            not packed.ok
            and status is not None
            and 400 <= status < 500
            and status not in (408, 429)
        ):
            return self._decide(key, False, f"it answered a list input with HTTP {status}")
        packed_vectors = _vectors(packed.body, len(PROBE_TEXTS)) if packed.ok else None
        if packed_vectors is None:
            return self._unclear_once(key)
        same = all(close(p, a) for p, a in zip(packed_vectors, alone, strict=True))
        return self._decide(key, same, "its vectors for a packed list differ from one by one")

    def _decide(self, key: Key, verdict: bool, why: str) -> bool:
        self.verdicts[key] = verdict
        if not verdict:
            log.warning(
                "provider %r model %r: %s; its embedding lines go one at a time",
                key[0],
                key[2],
                why,
                extra={"provider": key[0], "model": key[2]},
            )
        return verdict

    def _unclear_once(self, key: Key) -> bool | None:
        self._unclear[key] = tries = self._unclear.get(key, 0) + 1
        if tries >= PROBE_TRIES:
            return self._decide(key, False, f"the packing check got no clear answer {tries} times")
        return None

    # -- tokenizer counts ------------------------------------------------------------------
    async def token_counts(
        self, upstream: Upstream, target: Target, texts: list[str]
    ) -> list[int] | None:
        """Each text's token count from the provider's tokenizer, or None (it has none, or a
        count could not be had: the caller falls back to proportional shares)."""
        provider = target.provider
        if provider.is_echo or not texts:
            return None
        name = provider.name
        if name in self._tokenizers and self._tokenizers[name] is None:
            return None
        url = tokenize_url(provider.base_url)
        headers = {"Content-Type": "application/json", **provider.headers}
        if provider.api_key:
            headers["Authorization"] = f"Bearer {provider.api_key}"
        gate = self._tokenize_gates.get(name)
        if gate is None:
            gate = self._tokenize_gates[name] = asyncio.Semaphore(TOKENIZE_CONCURRENCY)
        if name not in self._tokenizers:  # first use: learn whether and how it tokenizes
            form = None
            for candidate in ("prompt", "content"):
                if await self._count(upstream, url, headers, target.model, texts[0], candidate):
                    form = candidate
                    break
            self._tokenizers[name] = form
            if form is None:
                log.info("provider %r has no tokenizer endpoint; usage shared by length", name)
                return None
        form = self._tokenizers[name]
        assert form is not None

        async def one(text: str) -> int | None:
            async with gate:
                return await self._count(upstream, url, headers, target.model, text, form)

        counts = await asyncio.gather(*(one(text) for text in texts))
        if any(count is None for count in counts):
            return None
        return [count for count in counts if count is not None]

    async def _count(
        self,
        upstream: Upstream,
        url: str,
        headers: dict[str, str],
        model: str,
        text: str,
        form: str,
    ) -> int | None:
        """One text's count: vLLM takes ``prompt``, llama.cpp ``content``; None on anything
        but a bounded count in a 2xx JSON answer."""
        body: dict[str, Any] = {"model": model, form: text}
        if form == "content":
            body["add_special"] = True
        try:
            async with upstream.session.post(
                url,
                data=msgspec.json.encode(body),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=TOKENIZE_TIMEOUT),
            ) as response:
                if not 200 <= response.status < 300:
                    return None
                chunks, size = [], 0
                while chunk := await response.content.read(1 << 16):
                    size += len(chunk)
                    if size > TOKENIZE_MAX_BYTES:
                        return None
                    chunks.append(chunk)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        raw = b"".join(chunks)
        try:
            answer = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return None
        if not isinstance(answer, dict):
            return None
        count = answer.get("count")
        if count is None and isinstance(answer.get("tokens"), list):
            count = len(answer["tokens"])
        if not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= MAX_TOKENS:
            return None
        return count
