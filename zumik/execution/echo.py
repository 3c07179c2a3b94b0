"""The built-in ``zumik-echo`` model: an answer in each batch endpoint's own shape.

It echoes the request's text back (chat, completions, responses), derives a deterministic unit
vector from each input (embeddings) and flags nothing (moderations), with plausible usage, so a
quick start or a client library sees exactly the shapes a real provider sends.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import time
from typing import Any

from zumik.core.lines import CHAT, COMPLETIONS, EMBEDDINGS, MODERATIONS, RESPONSES

MODEL = "zumik-echo"
EMBEDDING_DIMENSIONS = 32
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


def _tokens(value: Any) -> int:
    """A rough token count (4 characters a token, at least 1)."""
    text = value if isinstance(value, str) else json.dumps(value)
    return len(text) // 4 + 1


def _text_of(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        texts = [p for p in parts if isinstance(p, str)]
        if texts:
            return "".join(texts)
    return json.dumps(content)


def _last_user_text(items: Any) -> str:
    if isinstance(items, str):
        return items
    if isinstance(items, list):
        for item in reversed(items):
            if isinstance(item, dict) and item.get("role", "user") == "user":
                return _text_of(item.get("content", ""))
    return ""


def _chat(body: dict[str, Any], now: int) -> dict[str, Any]:
    messages = body.get("messages") or []
    content = _last_user_text(messages)
    prompt, completion = _tokens(messages), _tokens(content)
    return {
        "id": "chatcmpl-echo",
        "object": "chat.completion",
        "created": now,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def _completions(body: dict[str, Any], now: int) -> dict[str, Any]:
    prompt = body.get("prompt", "")
    prompts = (
        prompt
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt)
        else [prompt]
    )
    texts = [p if isinstance(p, str) else json.dumps(p) for p in prompts]
    used_in = sum(_tokens(t) for t in texts)
    used_out = used_in
    return {
        "id": "cmpl-echo",
        "object": "text_completion",
        "created": now,
        "model": MODEL,
        "choices": [
            {"index": i, "text": text, "logprobs": None, "finish_reason": "stop"}
            for i, text in enumerate(texts)
        ],
        "usage": {
            "prompt_tokens": used_in,
            "completion_tokens": used_out,
            "total_tokens": used_in + used_out,
        },
    }


def _responses(body: dict[str, Any], now: int) -> dict[str, Any]:
    given = body.get("input", "")
    text = _last_user_text(given)
    used_in, used_out = _tokens(given), _tokens(text)
    return {
        "id": "resp_echo",
        "object": "response",
        "created_at": now,
        "status": "completed",
        "model": MODEL,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "metadata": body.get("metadata") or {},
        "output": [
            {
                "type": "message",
                "id": "msg_echo",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "usage": {
            "input_tokens": used_in,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": used_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": used_in + used_out,
        },
    }


def embedding(value: Any, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic unit vector for ``value`` (equal inputs, equal vectors)."""
    seed = json.dumps(value, sort_keys=True).encode()
    raw = b""
    counter = 0
    while len(raw) < 4 * dimensions:
        raw += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    numbers = [
        (n / 0xFFFFFFFF) * 2 - 1 for n in struct.unpack(f"<{dimensions}I", raw[: 4 * dimensions])
    ]
    norm = math.sqrt(sum(x * x for x in numbers)) or 1.0
    return [round(x / norm, 6) for x in numbers]


def _embeddings(body: dict[str, Any], now: int) -> dict[str, Any]:
    given = body.get("input", "")
    if isinstance(given, str) or (
        isinstance(given, list) and given and all(isinstance(t, int) for t in given)
    ):
        inputs = [given]
    else:
        inputs = list(given) if isinstance(given, list) else [given]
    dimensions = body.get("dimensions")
    if (
        not isinstance(dimensions, int)
        or isinstance(dimensions, bool)
        or not 0 < dimensions <= 4096
    ):
        dimensions = EMBEDDING_DIMENSIONS
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(inputs):
        vector: Any = embedding(item, dimensions)
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    used = sum(_tokens(item) if isinstance(item, str) else len(item) for item in inputs)
    return {
        "object": "list",
        "data": data,
        "model": MODEL,
        "usage": {"prompt_tokens": used, "total_tokens": used},
    }


def _moderations(body: dict[str, Any], now: int) -> dict[str, Any]:
    given = body.get("input", "")
    count = len(given) if isinstance(given, list) else 1
    result = {
        "flagged": False,
        "categories": dict.fromkeys(MODERATION_CATEGORIES, False),
        "category_scores": dict.fromkeys(MODERATION_CATEGORIES, 0.0),
        "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
    }
    return {"id": "modr-echo", "model": MODEL, "results": [result] * count}


ANSWERS = {
    CHAT: _chat,
    COMPLETIONS: _completions,
    RESPONSES: _responses,
    EMBEDDINGS: _embeddings,
    MODERATIONS: _moderations,
}


def answer(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """The echo model's answer to ``body`` sent to ``endpoint``."""
    return ANSWERS[endpoint](body, int(time.time()))
