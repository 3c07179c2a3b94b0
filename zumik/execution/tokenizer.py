"""A provider's own tokenizer, where it offers one, for estimates (issue 25).

Probed once per provider per process and remembered (a failed probe is retried after
``REPROBE_SECONDS``), in this order:

- vLLM: ``POST <root>/tokenize`` with ``{"model", "messages"}`` (the chat rendered by the
  server's own template, as ``/v1/chat/completions`` will) or ``{"model", "prompt"}``;
  answers ``{"count": n, "tokens": [...]}``.
- llama.cpp's server: ``POST <root>/tokenize`` with ``{"content"}``; chat messages are first
  rendered by its ``POST <root>/apply-template`` where it has one.
- llama-cpp-python: ``POST <root>/extras/tokenize`` with ``{"input"}``.

``<root>`` is the provider's ``base_url`` without its ``/v1``. Every answer is read under a
timeout and a byte cap; any failure is an answer of None (the caller falls back to its
heuristic), never an exception.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import requests

from zumik.execution.routing import ProviderConfig

CONNECT_TIMEOUT, READ_TIMEOUT = 2.0, 10.0
MAX_ANSWER_BYTES = 8 << 20  # a tokens list of ~1M tokens
REPROBE_SECONDS = 300.0
MAX_COUNT = 1 << 40
PROBE_MESSAGES = [{"role": "user", "content": "Hello, how are you today?"}]


@dataclass(frozen=True)
class Tokenizer:
    """How one provider tokenizes: ``kind`` is ``vllm``, ``llamacpp`` or ``llamacpp-python``."""

    provider: str
    kind: str
    root: str
    headers: dict[str, str]
    chat_template: bool  # the server renders chat messages itself (vllm, llamacpp with one)
    read_timeout: float = READ_TIMEOUT

    def count(
        self, session: requests.Session, model: str, messages: Any = None, text: Any = None
    ) -> int | None:
        """Tokens of a chat ``messages`` list or of a ``text``; None when it cannot say."""
        if self.kind == "vllm":
            body = {"model": model, "messages": messages} if messages else None
            if body is None and isinstance(text, str):
                body = {"model": model, "prompt": text}
            return _count(_post(session, self, "/tokenize", body)) if body else None
        if messages:
            if not self.chat_template:
                return None
            rendered = _post(session, self, "/apply-template", {"messages": messages})
            text = rendered.get("prompt") if isinstance(rendered, dict) else None
        if not isinstance(text, str) or not text:
            return None
        if self.kind == "llamacpp":
            return _count(_post(session, self, "/tokenize", {"content": text}))
        return _count(_post(session, self, "/extras/tokenize", {"input": text, "model": model}))


def _post(
    session: requests.Session, tokenizer: Tokenizer, path: str, body: dict[str, Any] | None
) -> Any:
    """The JSON answer of one POST, or None (error status, timeout, too big, not JSON)."""
    if body is None:
        return None
    try:
        with session.post(
            tokenizer.root + path,
            json=body,
            headers=tokenizer.headers,
            timeout=(min(CONNECT_TIMEOUT, tokenizer.read_timeout), tokenizer.read_timeout),
            stream=True,
        ) as response:
            if response.status_code != 200:
                return None
            chunks, size = [], 0
            for chunk in response.iter_content(1 << 16):
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    return None
                chunks.append(chunk)
        return msgspec.json.decode(b"".join(chunks))
    except (requests.RequestException, msgspec.DecodeError, ValueError, RecursionError):
        return None


def _count(answer: Any) -> int | None:
    """A token count from ``{"count": n}`` or ``{"tokens": [...]}``, bounded; else None."""
    if not isinstance(answer, dict):
        return None
    count = answer.get("count")
    if isinstance(count, int) and not isinstance(count, bool) and 0 < count < MAX_COUNT:
        return count
    tokens = answer.get("tokens")
    if isinstance(tokens, list) and tokens:
        return len(tokens)
    return None


def root_of(base_url: str) -> str:
    """``http://host:8000/v1`` -> ``http://host:8000`` (where the tokenize routes live)."""
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


def probe(
    provider: ProviderConfig, model: str, seconds: float = 3 * READ_TIMEOUT
) -> Tokenizer | None:
    """Find which tokenizer ``provider`` offers, if any: a few small requests, all within
    ``seconds``."""
    if provider.is_echo or not provider.base_url.startswith(("http://", "https://")):
        return None
    headers = dict(provider.headers)
    if provider.api_key:
        headers["Authorization"] = f"Bearer {provider.api_key}"
    root = root_of(provider.base_url)
    deadline = time.monotonic() + seconds

    def within(kind: str, templated: bool) -> Tokenizer | None:
        left = min(READ_TIMEOUT, deadline - time.monotonic())
        return Tokenizer(provider.name, kind, root, headers, templated, left) if left > 0 else None

    with requests.Session() as session:
        vllm = within("vllm", True)
        if vllm and vllm.count(session, model, messages=PROBE_MESSAGES):
            return Tokenizer(provider.name, "vllm", root, headers, True)
        llama = within("llamacpp", False)
        if llama and llama.count(session, model, text="Hello"):
            rendered = _post(session, llama, "/apply-template", {"messages": PROBE_MESSAGES})
            templated = isinstance(rendered, dict) and isinstance(rendered.get("prompt"), str)
            return Tokenizer(provider.name, "llamacpp", root, headers, templated)
        python = within("llamacpp-python", False)
        if python and python.count(session, model, text="Hello"):
            return Tokenizer(provider.name, "llamacpp-python", root, headers, False)
    return None


class TokenizerCache:
    """What each provider was found to offer, probed once and remembered (thread-safe)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._found: dict[str, tuple[Tokenizer | None, float]] = {}
        self._clock = clock

    def get(
        self, provider: ProviderConfig, model: str, seconds: float = 3 * READ_TIMEOUT
    ) -> Tokenizer | None:
        """``provider``'s tokenizer (probed within ``seconds`` the first time), or None."""
        with self._lock:
            known = self._found.get(provider.name)
        now = self._clock()
        if known is not None and (known[0] is not None or now - known[1] < REPROBE_SECONDS):
            return known[0]
        found = probe(provider, model, seconds)
        with self._lock:
            self._found[provider.name] = (found, now)
        return found

    def forget(self, provider: str) -> None:
        """Probe ``provider`` again next time (its tokenizer failed mid-estimate)."""
        with self._lock:
            self._found.pop(provider, None)


CACHE = TokenizerCache()


def heuristic_tokens(size: int) -> int:
    """The heuristic: one token per 4 bytes of the prompt's JSON (at least 1)."""
    return max(1, math.ceil(size / 4))
