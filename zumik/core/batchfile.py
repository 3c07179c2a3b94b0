"""Batch input lines: streaming JSONL validation and the shape of one request line.

The validator is fed bytes as they arrive (an upload) or as they are read (the executor), keeps
only the current partial line and an 8-byte hash per ``custom_id`` (in one flat array, not a
Python set), and so runs in small, bounded memory whatever the file size.
"""

from __future__ import annotations

import json
import mmap
from dataclasses import dataclass
from typing import Any

import msgspec

from zumik.core.jsontext import (
    DEFAULT_MAX_DEPTH,
    may_hold_surrogate,
    surrogate_message,
    surrogate_path,
    too_deep,
)

CHAT, RESPONSES, EMBEDDINGS, COMPLETIONS, MODERATIONS = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
)
SUPPORTED_ENDPOINTS = (CHAT, RESPONSES, EMBEDDINGS, COMPLETIONS, MODERATIONS)
# The body field each endpoint needs besides ``model``.
REQUIRED_FIELD = {
    CHAT: "messages",
    RESPONSES: "input",
    EMBEDDINGS: "input",
    COMPLETIONS: "prompt",
    MODERATIONS: "input",
}
BOM = b"\xef\xbb\xbf"


class LineError(Exception):
    """A bad input line: 1-based ``line``, an OpenAI-style ``code`` and the ``param`` at fault."""

    def __init__(self, line: int | None, code: str, message: str, param: str | None = None):
        where = f"Line {line}: " if line is not None else ""
        super().__init__(where + message)
        self.line = line
        self.code = code
        self.param = param
        self.detail = message

    def as_batch_error(self) -> dict[str, Any]:
        """The ``errors.data`` entry of a batch that failed validation."""
        return {"code": self.code, "message": self.detail, "param": self.param, "line": self.line}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


@dataclass(frozen=True)
class RequestLine:
    """One validated request line."""

    custom_id: str
    url: str
    body: dict[str, Any]


def parse_line(raw: bytes, line: int, max_depth: int = DEFAULT_MAX_DEPTH) -> RequestLine:
    """Parse and check one line (without its newline) of a batch input file."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LineError(line, "invalid_json_line", "not valid UTF-8") from None
    if too_deep(raw, max_depth):
        raise LineError(
            line, "nesting_too_deep", f"nested deeper than the {max_depth}-level limit for JSON"
        )
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise LineError(line, "invalid_json_line", f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise LineError(
            line, "invalid_json_line", f"expected a JSON object, got {type(obj).__name__}"
        )
    for name in ("custom_id", "method", "url", "body"):
        if name not in obj:
            raise LineError(
                line, "missing_required_parameter", f"missing required parameter '{name}'", name
            )
    custom_id, method, url, body = obj["custom_id"], obj["method"], obj["url"], obj["body"]
    if not isinstance(custom_id, str) or not custom_id:
        raise LineError(
            line, "invalid_value", "'custom_id' must be a non-empty string", "custom_id"
        )
    if method != "POST":
        raise LineError(
            line, "invalid_value", f"'method' must be \"POST\", not {method!r}", "method"
        )
    if url not in SUPPORTED_ENDPOINTS:
        raise LineError(
            line,
            "invalid_url",
            f"'url' {url!r} is not a supported endpoint; "
            f"supported: {', '.join(SUPPORTED_ENDPOINTS)}",
            "url",
        )
    if not isinstance(body, dict):
        raise LineError(line, "invalid_value", "'body' must be a JSON object", "body")
    check_body(url, body, line)
    if may_hold_surrogate(raw):
        path = surrogate_path(obj)
        if path is not None:
            raise LineError(line, "invalid_unicode", surrogate_message(path), path)
    return RequestLine(custom_id, url, body)


def check_body(url: str, body: dict[str, Any], line: int) -> int:
    """Check a request body for ``url``; return how many embedding inputs it holds (0 for
    other endpoints). ``LineError`` names the line and the field at fault."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise LineError(
            line, "invalid_request", "'body.model' must be a non-empty string", "body.model"
        )
    name = REQUIRED_FIELD[url]
    value = body.get(name)
    if url == CHAT:
        if not isinstance(value, list) or not value:
            raise LineError(
                line, "invalid_request", "'body.messages' must be a non-empty list", "body.messages"
            )
    elif not (isinstance(value, str) and value) and not (isinstance(value, list) and value):
        raise LineError(
            line,
            "invalid_request",
            f"'body.{name}' must be a non-empty string or a non-empty list (required by {url})",
            f"body.{name}",
        )
    if body.get("stream") is True:
        raise LineError(
            line,
            "streaming_unsupported",
            "'body.stream' is true; streaming is not supported in the Batch API",
            "body.stream",
        )
    if url != EMBEDDINGS:
        return 0
    if isinstance(value, str):
        return 1
    if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        return 1  # one input given as token ids
    for item in value:
        if not (isinstance(item, str) and item) and not (
            isinstance(item, list)
            and item
            and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
        ):
            raise LineError(
                line,
                "invalid_request",
                "'body.input' items must be non-empty strings or non-empty lists of token ids",
                "body.input",
            )
    return len(value)


def _stored_line(raw: bytes, number: int) -> RequestLine:
    """``parse_line`` for a line already stored, whatever depth limit it was uploaded under."""
    try:
        return parse_line(raw, number, max_depth=1 << 62)
    except RecursionError:
        raise LineError(number, "nesting_too_deep", "nested too deeply to decode") from None


def strict_decode(decoder: msgspec.json.Decoder, raw: bytes) -> Any:
    """``decoder.decode(raw)``, refusing invalid UTF-8 anywhere in ``raw``: msgspec does not
    check the strings of the fields it skips. Raises ``DecodeError`` or ``UnicodeDecodeError``."""
    if not raw.isascii():
        raw.decode("utf-8")
    return decoder.decode(raw)


class RequestBody:
    """A request body as it goes upstream: its raw JSON and its model, parsed only on demand.

    The executor forwards ``raw`` unchanged when the route keeps the model name, so the common
    path never builds or re-encodes the body in Python.
    """

    __slots__ = ("raw", "model", "_obj")

    def __init__(self, raw: bytes, model: str, obj: dict[str, Any] | None = None) -> None:
        self.raw = raw
        self.model = model
        self._obj = obj

    @classmethod
    def of(cls, body: dict[str, Any]) -> RequestBody:
        return cls(msgspec.json.encode(body), str(body.get("model")), body)

    @property
    def obj(self) -> dict[str, Any]:
        """The parsed body (decoded once, on first use)."""
        if self._obj is None:
            self._obj = msgspec.json.decode(self.raw)
        return self._obj

    def payload_for(self, model: str) -> bytes:
        """The bytes to send to a provider that calls the model ``model``."""
        if model == self.model:
            return self.raw
        return msgspec.json.encode({**self.obj, "model": model})


class _Request(msgspec.Struct):
    custom_id: str
    body: msgspec.Raw


class _Model(msgspec.Struct):
    model: str


_REQUEST = msgspec.json.Decoder(_Request)
_MODEL = msgspec.json.Decoder(_Model)


def request_of(raw: bytes, number: int) -> tuple[str, RequestBody]:
    """``custom_id`` and body of an input line already validated at upload.

    Two typed decodes that build nothing but the id, the body's raw bytes and its model; a line
    they do not accept (a lone surrogate escape among them) goes through ``parse_line``, which
    raises ``LineError`` if it is bad.
    """
    try:
        request = _REQUEST.decode(raw)
        model = _MODEL.decode(request.body).model
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        pass
    else:
        return request.custom_id, RequestBody(bytes(request.body), model)
    line = _stored_line(raw, number)
    return line.custom_id, RequestBody.of(line.body)


class _Target(msgspec.Struct):
    url: str
    body: _Model


_TARGET = msgspec.json.Decoder(_Target)


def target_of(raw: bytes, number: int) -> tuple[str, str]:
    """``url`` and ``body.model`` of an input line already validated at upload.

    A line stored before lone surrogates were refused at upload is refused here (``LineError``),
    so its batch fails validation instead of pausing at the line again and again (msgspec's
    decode refuses it, then ``parse_line`` names the field)."""
    try:
        target = _TARGET.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        pass
    else:
        return target.url, target.body.model
    line = _stored_line(raw, number)
    return line.url, line.body["model"]


class _FastBody(msgspec.Struct):
    model: str
    messages: Any = None
    input: Any = None
    prompt: Any = None
    stream: Any = None


class _FastLine(msgspec.Struct):
    custom_id: str
    method: str
    url: str
    body: _FastBody


_FAST_LINE = msgspec.json.Decoder(_FastLine)


def check_line(raw: bytes, line: int, max_depth: int = DEFAULT_MAX_DEPTH) -> str:
    """The ``custom_id`` of a valid request line; ``LineError`` otherwise."""
    return check_request(raw, line, max_depth)[0]


def check_request(
    raw: bytes, line: int, max_depth: int = DEFAULT_MAX_DEPTH
) -> tuple[str, str, int]:
    """``custom_id``, ``url`` and embedding input count of a valid request line;
    ``LineError`` otherwise.

    Same verdicts as ``parse_line``, about 4x faster on good lines: one typed decode in C
    (msgspec skips the fields it does not need) and a few comparisons. Anything the fast path
    does not accept goes through ``parse_line``, which decides and words the error; so do
    lines that may be too deep to decode. (A lone surrogate escape fails msgspec's decode even
    in a field it skips, so such a line takes the slow path too; escaped pairs need not.)
    """
    if too_deep(raw, max_depth):
        return _slow(raw, line, max_depth)
    try:
        fast = strict_decode(_FAST_LINE, raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return _slow(raw, line, max_depth)
    body = fast.body
    url = fast.url
    if not (fast.custom_id and fast.method == "POST" and url in SUPPORTED_ENDPOINTS):
        return _slow(raw, line, max_depth)
    if body.model and body.stream is not True:  # the common verdicts, without a call
        if url == CHAT:
            if type(body.messages) is list and body.messages:
                return fast.custom_id, url, 0
        elif url != EMBEDDINGS:
            value = body.prompt if url == COMPLETIONS else body.input
            if type(value) in (str, list) and value:
                return fast.custom_id, url, 0
    try:
        inputs = check_body(
            url,
            {
                "model": body.model,
                "messages": body.messages,
                "input": body.input,
                "prompt": body.prompt,
                "stream": body.stream,
            },
            line,
        )
    except LineError:
        return _slow(raw, line, max_depth)
    return fast.custom_id, url, inputs


def _slow(raw: bytes, line: int, max_depth: int) -> tuple[str, str, int]:
    request = parse_line(raw, line, max_depth)
    return request.custom_id, request.url, check_body(request.url, request.body, line)


class HashSet:
    """A set of ``custom_id`` hashes: 64-bit keys, open addressing in one anonymous mapping.

    8 to 32 bytes per id instead of ~100 for a set of digests, and its own ``mmap``, so the
    memory goes back to the system the moment the set is dropped (a freed heap block may not).
    Two different ids collide with odds of n^2 / 2^65 (1e-9 at 200,000 ids).
    """

    def __init__(self) -> None:
        self._allocate(1024)

    def _allocate(self, slots: int) -> None:
        self._map = mmap.mmap(-1, 8 * slots)
        self._table = memoryview(self._map).cast("Q")
        self._mask = slots - 1
        self._size = 0

    @staticmethod
    def key(text: str) -> int:
        """A nonzero 64-bit key: Python's own string hash (SipHash, seeded per process)."""
        return (hash(text) & 0xFFFF_FFFF_FFFF_FFFF) or 1

    def add(self, text: str) -> bool:
        """Add ``text``; False when it was there already."""
        if 2 * (self._size + 1) > len(self._table):
            self._grow()
        return self._insert(self.key(text))

    def _insert(self, key: int) -> bool:
        table, mask = self._table, self._mask
        slot = key & mask
        while table[slot]:
            if table[slot] == key:
                return False
            slot = (slot + 1) & mask
        table[slot] = key
        self._size += 1
        return True

    def _grow(self) -> None:
        old_map, old = self._map, self._table
        self._allocate(2 * len(old))
        for key in old:
            if key:
                self._insert(key)
        old.release()
        old_map.close()


class JsonlValidator:
    """Checks a batch input file fed in chunks; raises ``LineError`` at the first bad line."""

    def __init__(
        self,
        max_line_bytes: int,
        max_requests: int,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_embedding_inputs: int = 50_000,
    ) -> None:
        self.max_line_bytes = max_line_bytes
        self.max_requests = max_requests
        self.max_depth = max_depth
        self.max_embedding_inputs = max_embedding_inputs
        self.lines = 0  # physical lines seen
        self.requests = 0
        self.embedding_inputs = 0
        self._pending = b""
        self._blank_line: int | None = None
        self._seen = HashSet()

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk if self._pending else chunk
        parts = data.split(b"\n")
        self._pending = parts.pop()
        for raw in parts:
            self._line(raw)
        if self._pending_length() > self.max_line_bytes:
            raise LineError(
                self.lines + 1,
                "line_too_long",
                f"longer than the {self.max_line_bytes}-byte line limit",
            )

    def _pending_length(self) -> int:
        """The unfinished line's length as ``_line`` will count it: without a CR that may yet be
        followed by LF, and without the first line's BOM. So the verdict on a line never depends
        on where a read chunk happened to end."""
        pending = self._pending
        length = len(pending) - pending.endswith(b"\r")
        if self.lines == 0 and pending.startswith(BOM):
            length -= len(BOM)
        return length

    def finish(self) -> int:
        """End of input: check the last line; return the number of requests."""
        if self._pending:
            self._line(self._pending)
            self._pending = b""
        if self.requests == 0:
            raise LineError(None, "empty_file", "the file holds no request lines")
        return self.requests

    def _line(self, raw: bytes) -> None:
        self.lines += 1
        if self.lines == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > self.max_line_bytes:
            raise LineError(
                self.lines,
                "line_too_long",
                f"{len(raw)} bytes, over the {self.max_line_bytes}-byte line limit",
            )
        if raw[:1] != b"{" and not raw.strip():  # (a request line starts with "{")
            if self._blank_line is None:
                self._blank_line = self.lines
            return
        if self._blank_line is not None:
            raise LineError(self._blank_line, "invalid_json_line", "empty line between requests")
        custom_id, _, inputs = check_request(raw, self.lines, self.max_depth)
        self.requests += 1
        if inputs:
            self.embedding_inputs += inputs
            if self.embedding_inputs > self.max_embedding_inputs:
                raise LineError(
                    self.lines,
                    "too_many_inputs",
                    f"more than {self.max_embedding_inputs} embedding inputs in "
                    "one file (an embeddings batch's limit); split it",
                    "body.input",
                )
        if self.requests > self.max_requests:
            raise LineError(
                self.lines,
                "too_many_requests",
                f"more than {self.max_requests} requests in one file; split it",
            )
        if not self._seen.add(custom_id):
            raise LineError(
                self.lines,
                "duplicate_custom_id",
                f"custom_id {custom_id!r} is used by an earlier line; each must be unique",
                "custom_id",
            )


def iter_lines(path: str, chunk_size: int = 1 << 20):
    """Yield ``(line_number, raw_line)`` for each non-blank line of a stored input file."""
    number = 0
    pending = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_size)
            if not chunk:
                break
            parts = (pending + chunk).split(b"\n") if pending else chunk.split(b"\n")
            pending = parts.pop()
            for raw in parts:
                number += 1
                raw = _clean(raw, number)
                if raw:
                    yield number, raw
    if pending:
        number += 1
        raw = _clean(pending, number)
        if raw:
            yield number, raw


def _clean(raw: bytes, number: int) -> bytes:
    if number == 1 and raw.startswith(BOM):
        raw = raw[len(BOM) :]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw if raw.strip() else b""
