"""The server's own view of its load, when it offers one: its Prometheus ``/metrics``.

Requests waiting in the server's queue are the clearest sign that more concurrency only adds
latency: vLLM ``vllm:num_requests_waiting``, llama.cpp ``llamacpp:requests_deferred``, SGLang
``sglang:num_queue_reqs``. ``ServerLoad`` reads the provider's ``metrics_url`` every
``POLL_SECONDS`` (at most ``MAX_BYTES`` read, ``TIMEOUT_SECONDS`` per read) and hands the sum of
those gauges to the provider's limits (``ProviderLimits.server_queue``), which keep it at 0. A
read that fails or says nothing known changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re

import aiohttp

from zumik.execution.limits import ProviderLimits
from zumik.execution.routing import ProviderConfig

log = logging.getLogger("zumik.executor")
POLL_SECONDS = 0.5
TIMEOUT_SECONDS = 2.0
MAX_BYTES = 1 << 20  # a metrics page past this is not read further
WAITING_METRICS = (
    "vllm:num_requests_waiting",
    "llamacpp:requests_deferred",
    "sglang:num_queue_reqs",
)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)")


def waiting_requests(text: str) -> int | None:
    """The sum of the known queue-depth gauges in a Prometheus text page (None: none there)."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        match = _SAMPLE.match(line)
        if match is None or match.group(1) not in WAITING_METRICS:
            continue
        try:
            value = float(match.group(2))
        except ValueError:
            continue
        if math.isfinite(value) and value >= 0:
            total += min(value, 1e6)
            seen = True
    return int(total) if seen else None


async def read_capped(
    session: aiohttp.ClientSession, url: str, max_bytes: int = MAX_BYTES
) -> str | None:
    """The page at ``url``, or None (an error, a timeout, not 200, or over ``max_bytes``)."""
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    try:
        async with session.get(url, timeout=timeout) as response:
            if response.status != 200:
                return None
            chunks, size = [], 0
            while True:
                chunk = await response.content.read(1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    return None
                chunks.append(chunk)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return b"".join(chunks).decode("utf-8", "replace")


class ServerLoad:
    """Polls one provider's metrics page while the executor runs."""

    def __init__(
        self, session: aiohttp.ClientSession, provider: ProviderConfig, limits: ProviderLimits
    ) -> None:
        assert provider.metrics_url
        self.session, self.url, self.limits = session, provider.metrics_url, limits
        self.name = provider.name
        self.failures = 0

    async def run(self) -> None:
        while True:
            if self.limits.demand:  # nothing in flight: nothing to judge
                page = await read_capped(self.session, self.url)
                waiting = waiting_requests(page) if page is not None else None
                if waiting is None:
                    self.failures += 1
                    if self.failures in (1, 100):
                        log.warning("provider %s: no queue depth from %s", self.name, self.url)
                else:
                    self.limits.server_queue(waiting)
            await asyncio.sleep(POLL_SECONDS)
