"""Pieces of ``zumik.batchfile`` the executor leans on: the custom_id hash set, request bodies
forwarded unparsed, and ``request_of``'s fallback to the full parser."""

from __future__ import annotations

import json
import random

import pytest
from conftest import request_line

from zumik.core.lines import LineError
from zumik.core.validator import HashSet
from zumik.execution.wire import RequestBody, request_of


def test_hash_set_agrees_with_a_python_set():
    ids, model = HashSet(), set()
    rng = random.Random(3)
    for _ in range(30_000):  # grows the table several times
        text = f"id-{rng.randrange(20_000)}"
        assert ids.add(text) == (text not in model)
        model.add(text)


def test_request_body_is_forwarded_as_sent_unless_the_model_changes():
    raw = b'{"model":"alias","messages":[{"role":"user","content":"h\\u00e9"}],"n":1}'
    custom_id, body = request_of(
        b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":' + raw + b"}", 1
    )
    assert custom_id == "a" and body.model == "alias"
    assert body.payload_for("alias") is body.raw and body.raw == raw
    renamed = json.loads(body.payload_for("real-model"))
    assert renamed == {**json.loads(raw), "model": "real-model"}
    assert RequestBody.of({"model": "m", "messages": []}).model == "m"


def test_request_of_falls_back_to_the_full_parser():
    odd = json.dumps(request_line("b")).replace('"custom_id"', '"custom_id": "x", "custom_id"')
    assert request_of(odd.encode(), 4)[0] == "b"  # duplicate keys: the last one wins
    with pytest.raises(LineError, match="Line 7"):
        request_of(b'{"custom_id": "c", "body": []}', 7)
