"""A small OpenAI-compatible provider for tests and benchmarks: a real HTTP server.

Answers ``POST /v1/chat/completions``, ``/v1/responses``, ``/v1/completions``,
``/v1/embeddings`` and ``/v1/moderations`` (each also without ``/v1``) in each endpoint's own
shape: the request's text back (the last user message, ``input`` or ``prompt``), a small vector
per embedding input, an unflagged moderation result. ``by_path`` counts requests per path.

Knobs:
- global, ``POST /_control`` with JSON: ``latency`` (seconds), ``overload_above`` (answer 429
  while more than N requests are in flight), ``hang_seconds`` (how long ``hang`` lasts),
  ``error_message`` (the message of every injected error answer, e.g. a hostile one),
  ``unavailable_seconds`` (answer 503 "loading model" to everything for that long, as vLLM or
  Ollama do while a model loads), ``big_bytes`` (size of ``#hostile:big`` answers);
- outage: ``ProviderThread.outage(down, unavailable)`` stops listening and drops every
  connection for ``down`` seconds (a killed process: connection refused), then answers 503
  for ``unavailable`` seconds;
- per request, directives in the request's text (last user message, ``input``, ``prompt``):
  ``#fail:<kind>:<n>`` fails the first ``n``
  attempts of that message, kind one of 429, 500, 502, 503, 400, reset, hang, badjson; ``#ra:<s>``
  adds ``Retry-After: s`` to its 429s; ``#hostile:<kind>`` answers with something hostile:
  ``big`` (a 200 of ``big_bytes``), ``gzipbomb`` (a 200 whose gzip body inflates to 64 MiB),
  ``deep`` (a 400 whose error body nests 100,000 deep), ``deep200`` (the same as a 200),
  ``retryafter`` (a 429 with a Retry-After that is neither number nor date, first attempt
  only), ``resetheader`` (a 200 with ``x-ratelimit-reset-requests`` of 5,000 digits).
- ``tokenize`` (global knob, default off): offer vLLM's ``POST /tokenize`` (at the root, not
  under ``/v1``): ``{"model", "messages"}`` or ``{"model", "prompt"}`` answers
  ``{"count", "max_model_len", "tokens"}``, the count equal to the ``prompt_tokens`` the chat
  (or completions) answer then reports for that request; off, the route answers 404;
  ``tokenize_latency`` (seconds) delays each of its answers;
- embeddings: ``input`` as a text, a token list or a list of either, a deterministic vector
  per input (packed or alone the same) and ``usage.prompt_tokens`` per item; knobs
  ``misserve_lists`` (list items after the first get wrong vectors), ``refuse_lists`` (a 400
  for a list ``input``), ``reject_marker`` (an
  item containing it gets a 400, default ``#reject``), ``tokenize_embeddings`` (``POST
  /tokenize`` counts a ``prompt`` as the embeddings do, less the BOS they add),
  ``embed_request_cost`` and ``embed_item_cost`` (seconds per request and per item, served one
  request at a time like a model server); ``by_item`` in ``/_stats`` counts each input sent.
- ``GET /_stats`` counts requests (per message content, per model, max in flight, times);
  ``POST /_reset`` zeroes them.

Run alone: ``python tests/fake_provider.py --port 8000`` (``--port-file`` writes the port).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gzip
import hashlib
import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import web

DIRECTIVE = re.compile(r"#fail:(\w+):(\d+)")
HOSTILE = re.compile(r"#hostile:(\w+)")
DEEP = b'{"error":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_001
RETRY_AFTER = re.compile(r"#ra:([\d.]+)")


class FakeProvider:
    """State and handlers of one fake provider."""

    def __init__(self) -> None:
        self.control: dict[str, Any] = {
            "latency": 0.0,
            "overload_above": None,
            "hang_seconds": 30.0,
            "big_bytes": 8 << 20,
            "misserve_lists": False,
            "refuse_lists": False,
            "reject_marker": "#reject",
            "tokenize_embeddings": False,
            "tokenize": False,
            "embed_request_cost": 0.0,
            "embed_item_cost": 0.0,
        }
        self._model_lock = asyncio.Lock()
        self.unavailable_until = 0.0
        self._bomb: bytes | None = None
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.by_content: collections.Counter[str] = collections.Counter()
        self.by_model: collections.Counter[str] = collections.Counter()
        self.by_path: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[str] = collections.Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.times: list[float] = []
        self.headers_seen: list[dict[str, str]] = []
        self.by_item: collections.Counter[str] = collections.Counter()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for path in (
            "/chat/completions",
            "/responses",
            "/completions",
            "/embeddings",
            "/moderations",
        ):
            app.router.add_post("/v1" + path, self.chat)
            app.router.add_post(path, self.chat)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/_control", self.set_control)
        app.router.add_get("/_stats", self.stats)
        app.router.add_post("/_reset", self.reset_stats)
        return app

    async def set_control(self, request: web.Request) -> web.Response:
        update = await request.json()
        if "unavailable_seconds" in update:
            self.unavailable_until = time.time() + float(update.pop("unavailable_seconds"))
        self.control.update(update)
        return web.json_response(self.control)

    async def tokenize(self, request: web.Request) -> web.Response:
        """vLLM's tokenize route (when the ``tokenize`` knob is on)."""
        embeddings = self.control.get("tokenize_embeddings")
        if not self.control.get("tokenize") and not embeddings:
            return web.json_response({"detail": "Not Found"}, status=404)
        body = await request.json()
        self.by_path["/tokenize"] += 1
        if embeddings and isinstance(body.get("prompt", body.get("content")), str):
            count = item_tokens(body.get("prompt", body.get("content"))) - 1  # less the BOS
            return web.json_response({"count": count, "tokens": list(range(count))})
        delay = float(self.control.get("tokenize_latency") or 0)
        if delay:
            await asyncio.sleep(delay)
        if "messages" in body:
            count = chat_prompt_tokens(body["messages"])
        elif isinstance(body.get("prompt"), str):
            count = max(1, len(body["prompt"]) // 4)
        else:
            return web.json_response({"error": "messages or prompt"}, status=400)
        return web.json_response(
            {"count": count, "max_model_len": 4096, "tokens": list(range(count))}
        )

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": self.requests,
                "by_content": dict(self.by_content),
                "by_model": dict(self.by_model),
                "by_path": dict(self.by_path),
                "statuses": dict(self.statuses),
                "max_in_flight": self.max_in_flight,
                "times": self.times,
                "headers": self.headers_seen[-5:],
                "by_item": dict(self.by_item),
            }
        )

    async def _embeddings(self, body: dict[str, Any], content: str) -> web.Response | None:
        """Embeddings extras: per-item counts, the reject marker (a 400 naming the item, as
        a server refusing one input does), and the per-request cost, served one request at
        a time like a model server (``embed_request_cost`` + ``embed_item_cost`` per item)."""
        items = embedding_items(body)
        for item in items:
            self.by_item[json.dumps(item) if not isinstance(item, str) else item] += 1
        if self.control.get("refuse_lists") and isinstance(body.get("input"), list):
            self.statuses["400"] += 1
            return web.json_response(
                {"error": {"message": "input must be a string", "type": "invalid_request_error"}},
                status=400,
            )
        marker = self.control.get("reject_marker")
        for index, item in enumerate(items):
            if marker and isinstance(item, str) and marker in item:
                self.statuses["400"] += 1
                return web.json_response(
                    {
                        "error": {
                            "message": f"input[{index}] is rejected: {item[:40]}",
                            "type": "invalid_request_error",
                            "param": "input",
                            "code": "invalid_input",
                        }
                    },
                    status=400,
                )
        cost = float(self.control.get("embed_request_cost") or 0) + len(items) * float(
            self.control.get("embed_item_cost") or 0
        )
        if cost:
            async with self._model_lock:
                await asyncio.sleep(cost)
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._chat(request)
        finally:
            self.in_flight -= 1

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        model = body.get("model", "")
        kind = request.path.removeprefix("/v1").strip("/")
        content = request_text(kind, body)
        self.requests += 1
        self.by_content[content] += 1
        self.by_model[model] += 1
        self.by_path[request.path] += 1
        self.times.append(time.time())
        self.headers_seen.append(
            {
                k.lower(): v
                for k, v in request.headers.items()
                if k.lower() in ("authorization", "x-team")
            }
        )
        attempt = self.by_content[content]
        if time.time() < self.unavailable_until:
            return self._status(503, "Loading model, try again later")
        overload = self.control.get("overload_above")
        if overload is not None and self.in_flight > overload:
            return self._status(429, "overloaded")
        latency = float(self.control.get("latency") or 0)
        if latency:
            await asyncio.sleep(latency)
        hostile = HOSTILE.search(content)
        if hostile:
            answer = self._hostile(hostile.group(1), attempt, model, content)
            if answer is not None:
                return answer
        for fail, times in DIRECTIVE.findall(content):
            if attempt <= int(times):
                return await self._fail(fail, content, request)
        if kind == "embeddings":
            refused = await self._embeddings(body, content)
            if refused is not None:
                return refused
            misserve = bool(self.control.get("misserve_lists"))
            self.statuses["200"] += 1
            answer = _embedding_answer(self.requests, model, body, content, misserve)
            return web.json_response(answer, headers={"x-request-id": f"req-{self.requests}"})
        self.statuses["200"] += 1
        answer = ANSWERS[kind](self.requests, model, body, content)
        return web.json_response(answer, headers={"x-request-id": f"req-{self.requests}"})

    def _hostile(self, kind: str, attempt: int, model: str, content: str) -> web.Response | None:
        self.statuses[f"hostile:{kind}"] += 1
        if kind == "big":
            pad = "x" * int(self.control["big_bytes"])
            return web.json_response({"id": "big", "choices": [], "pad": pad})
        if kind == "gzipbomb":
            if self._bomb is None:
                self._bomb = gzip.compress(b'{"pad":"' + b" " * (64 << 20) + b'"}', 9)
            return web.Response(
                body=self._bomb,
                content_type="application/json",
                headers={"Content-Encoding": "gzip"},
            )
        if kind in ("deep", "deep200"):
            return web.Response(
                body=DEEP, status=400 if kind == "deep" else 200, content_type="application/json"
            )
        if kind == "retryafter" and attempt == 1:
            return self._status(429, "slow down", {"Retry-After": "soon, maybe tomorrow"})
        if kind == "resetheader":
            answer = {
                "id": "r",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": content},
                    }
                ],
            }
            return web.json_response(
                answer,
                headers={
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": "9" * 5000,
                },
            )
        return None

    def _status(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        self.statuses[str(status)] += 1
        headers = {"x-request-id": f"req-{self.requests}", **(headers or {})}
        message = self.control.get("error_message") or message
        return web.json_response(
            {"error": {"message": message, "type": "test", "param": None, "code": None}},
            status=status,
            headers=headers,
        )

    async def _fail(self, kind: str, content: str, request: web.Request) -> web.StreamResponse:
        if kind in ("reset", "hang", "badjson"):
            self.statuses[kind] += 1
        if kind == "reset":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if kind == "hang":
            await asyncio.sleep(float(self.control["hang_seconds"]))
            return web.Response(status=504)
        if kind == "badjson":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        headers = {}
        found = RETRY_AFTER.search(content)
        if kind == "429" and found:
            headers["Retry-After"] = found.group(1)
        return self._status(int(kind), f"injected {kind}", headers)


def request_text(kind: str, body: dict[str, Any]) -> str:
    """The text of a request: the last message's content (chat), else ``input``/``prompt``."""
    if kind == "chat/completions":
        messages = body.get("messages") or [{}]
        return str(messages[-1].get("content", ""))
    value = body.get("prompt" if kind == "completions" else "input", "")
    if isinstance(value, list) and value and isinstance(value[-1], dict):  # responses items
        value = value[-1].get("content", "")
    return value if isinstance(value, str) else json.dumps(value)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def chat_prompt_tokens(messages: Any) -> int:
    """The fake's tokenizer: a token per 4 characters of the messages as JSON."""
    return max(1, len(json.dumps(messages)) // 4)


def _chat_answer(n: int, model: str, body: dict[str, Any], content: str) -> dict[str, Any]:
    prompt = chat_prompt_tokens(body.get("messages"))
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": _usage(prompt, max(1, len(content) // 4)),
    }


def _completion_answer(n: int, model: str, body: dict[str, Any], content: str) -> dict[str, Any]:
    tokens = max(1, len(content) // 4)
    return {
        "id": f"cmpl-{n}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": content, "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(tokens, tokens),
    }


def _responses_answer(n: int, model: str, body: dict[str, Any], content: str) -> dict[str, Any]:
    used_in, used_out = max(1, len(json.dumps(body.get("input"))) // 4), max(1, len(content) // 4)
    return {
        "id": f"resp_{n}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": model,
        "output": [
            {
                "type": "message",
                "id": f"msg_{n}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": content, "annotations": []}],
            }
        ],
        "usage": {
            "input_tokens": used_in,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": used_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": used_in + used_out,
        },
    }


def embedding_items(body: dict[str, Any]) -> list[Any]:
    """The items of an embeddings ``input``: a text, a token list, or a list of either."""
    given = body.get("input")
    if isinstance(given, list) and given and not isinstance(given[0], int):
        return given
    return [given]


def item_tokens(item: Any) -> int:
    """What this provider's model counts for one input: a token list's length, else one token
    per word plus a BOS (not in proportion to length, so shares by length are not exact)."""
    return len(item) if isinstance(item, list) else len(str(item).split()) + 1


def item_vector(item: Any) -> list[float]:
    """A deterministic 8-dimensional vector per input (the same packed or alone)."""
    digest = hashlib.sha256(json.dumps(item).encode()).digest()
    return [round(b / 255 - 0.5, 6) for b in digest[:8]]


def _embedding_answer(
    n: int, model: str, body: dict[str, Any], content: str, misserve: bool = False
) -> dict[str, Any]:
    items = embedding_items(body)
    data = [
        {
            "object": "embedding",
            "index": i,
            # misserve: list items after the first get another input's vector, as
            # llama-cpp-python without a pooling type does
            "embedding": item_vector([item, "shifted"] if misserve and i else item),
        }
        for i, item in enumerate(items)
    ]
    tokens = sum(item_tokens(item) for item in items)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _moderation_answer(n: int, model: str, body: dict[str, Any], content: str) -> dict[str, Any]:
    given = body.get("input")
    count = len(given) if isinstance(given, list) else 1
    return {
        "id": f"modr-{n}",
        "model": model,
        "results": [
            {
                "flagged": False,
                "categories": {"violence": False},
                "category_scores": {"violence": 0.01},
            }
        ]
        * count,
    }


ANSWERS = {
    "chat/completions": _chat_answer,
    "completions": _completion_answer,
    "responses": _responses_answer,
    "embeddings": _embedding_answer,
    "moderations": _moderation_answer,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProviderThread:
    """Runs a FakeProvider on a free port in a background thread (for in-process tests)."""

    def __init__(self) -> None:
        self.provider = FakeProvider()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._outages: list[Any] = []
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> ProviderThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def outage(self, down: float, unavailable: float = 0.0) -> None:
        """In the background: a killed provider for ``down`` s (nothing listens, every open
        connection dropped), then a restarted one loading its model (503) for ``unavailable``
        s."""
        self._outages.append(
            asyncio.run_coroutine_threadsafe(self._outage(down, unavailable), self._loop)
        )

    async def _outage(self, down: float, unavailable: float) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        await asyncio.sleep(down)
        self.provider.unavailable_until = time.time() + unavailable
        await self._start()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.provider.app(), access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        for outage in self._outages:
            outage.cancel()
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    port = args.port or free_port()
    provider = FakeProvider()
    provider.control["latency"] = args.latency
    if args.port_file:
        Path(args.port_file).write_text(str(port))
    web.run_app(provider.app(), host=args.host, port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
