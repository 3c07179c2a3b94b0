"""A request as it goes upstream: ``RequestBody`` (raw bytes and model, parsed on demand) and
the typed decode of a stored input line into its ``custom_id`` and body."""

from __future__ import annotations

from typing import Any

import msgspec

from zumik.core.lines import Model, stored_line


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


_REQUEST = msgspec.json.Decoder(_Request)
_MODEL = msgspec.json.Decoder(Model)


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
    line = stored_line(raw, number)
    return line.custom_id, RequestBody.of(line.body)
