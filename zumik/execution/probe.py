"""Is a provider alive? One ``GET <base_url>/models``, capped and timed out.

Used to tell a dead provider from a poisoned request (``zumik.availability``): a line that
fails alone says nothing about its provider, and while a provider is down no line's own
request is the probe. Any HTTP answer that is not a provider-level failure (a 200, but also a
401 or a 404 from a server without ``/models``) means the provider is there; a connection
error, a timeout, a 429 or a 5xx gateway answer means it is not. At most ``PROBE_BYTES`` of the
answer are read, as sent (never decompressed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp

from zumik.execution.availability import is_provider_failure
from zumik.execution.routing import ProviderConfig

PROBE_BYTES = 64 * 1024
PROBE_TIMEOUT = 10.0

Prober = Callable[[], Awaitable[bool]]


def models_prober(session: aiohttp.ClientSession, provider: ProviderConfig) -> Prober:
    """The probe of ``provider``: True when its ``GET /models`` gets an answer."""
    url = provider.base_url.rstrip("/") + "/models"
    headers = dict(provider.headers)
    if provider.api_key:
        headers["Authorization"] = f"Bearer {provider.api_key}"
    timeout = aiohttp.ClientTimeout(total=min(PROBE_TIMEOUT, provider.timeout))

    async def probe() -> bool:
        try:
            async with session.get(
                url,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
                auto_decompress=False,
            ) as response:
                await response.content.read(PROBE_BYTES)  # the rest is dropped, unread
                return not is_provider_failure(None, response.status)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return False

    return probe
