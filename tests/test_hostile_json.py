"""Valid JSON that Zumik refuses: nesting deeper than ``ZUMIK_MAX_JSON_DEPTH`` and lone
surrogates. Refused at upload with the line and the field; a file stored before the rule (by an
older Zumik) fails its batch's validation instead of pausing the batch at the line forever."""

from __future__ import annotations

import json

import pytest
from conftest import AUTH_A, create_batch, jsonl, request_line, upload, wait_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from zumik.core.jsontext import surrogate_path, too_deep
from zumik.core.lines import LineError, check_request, target_of
from zumik.execution.wire import request_of


def depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


tricky_text = st.text(alphabet='[]{}"\\ab', max_size=6)
nested = st.recursive(
    st.none() | st.integers() | tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=2),
    max_leaves=30,
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(value=nested, limit=st.integers(0, 8))
def test_depth_check_agrees_with_the_real_depth(value, limit):
    raw = json.dumps(value).encode()
    assert too_deep(raw, limit) == (depth(value) > limit)


def test_depth_check_is_cheap_on_ordinary_lines_and_exact_on_deep_ones():
    line = json.dumps(request_line("a", "[[[[ {{{{ " * 50)).encode()  # brackets in a string
    assert not too_deep(line, 10)
    assert too_deep(b"[" * 11 + b"]" * 11, 10) and not too_deep(b"[" * 10 + b"]" * 10, 10)
    assert too_deep(b"[" * 5000, 100)  # unterminated: a recursive decoder would still dive


def test_surrogate_path_names_the_field():
    assert surrogate_path({"a": [{"b": "ok"}, {"c": "x\ud800"}]}) == "a[1].c"
    assert surrogate_path({"k\udc00": 1}) == "k\\udc00"
    assert surrogate_path({"emoji": "\U0001f600", "n": 1}) is None


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "x\\udc00y", "\\ud83d\\u0041"])
@pytest.mark.parametrize("where", ["custom_id", "skipped field", "body field"])
def test_typed_decodes_refuse_a_lone_surrogate_even_in_a_field_they_skip(escape, where):
    """The fast paths (``check_request``, ``target_of``, ``request_of``) rely on this: a line
    with a lone surrogate escape anywhere fails msgspec's decode and goes to ``parse_line``,
    which names the field; an escaped pair decodes (an emoji is fine)."""
    doc = {
        "custom_id": "r1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    }
    text = json.dumps(doc)
    line = {
        "custom_id": text.replace('"r1"', f'"r1{escape}"'),
        "skipped field": '{"note": "' + escape + '", ' + text[1:],
        "body field": text.replace('"body": {', '"body": {"note": "' + escape + '", '),
    }[where].encode()
    for decode in (check_request, target_of, request_of):
        with pytest.raises(LineError):
            decode(line, 1)
    emoji = json.dumps({**doc, "custom_id": "r\U0001f600"})  # json.dumps escapes it as a pair
    assert "\\ud83d\\ude00" in emoji and check_request(emoji.encode(), 1)[0] == "r\U0001f600"
    assert request_of(emoji.encode(), 1)[0] == "r\U0001f600"


def test_deep_lines_within_the_limit_are_accepted(make_app):
    client = make_app(max_json_depth=10).test_client()
    line = request_line("a")
    line["body"]["response_format"] = json.loads("[" * 8 + "]" * 8)  # depth 2 + 8 = 10
    assert upload(client, jsonl([line])).status_code == 200
    line["body"]["response_format"] = json.loads("[" * 9 + "]" * 9)
    response = upload(client, jsonl([line]))
    assert response.status_code == 400
    message = response.get_json()["error"]["message"]
    assert "Line 1: nested deeper than the 10-level limit" in message


def test_a_batch_over_a_file_stored_before_the_rule_fails_instead_of_looping(make_app, settings):
    """The input written by an older Zumik (which accepted these lines) is put in place of a
    valid file's content; the batch must end ``failed`` naming each line, promptly."""
    client = make_app(start=True).test_client()
    stored = upload(client, jsonl([request_line(f"r{i}") for i in range(4)])).get_json()
    legacy = (
        b"\n".join(
            [
                json.dumps(request_line("ok")).encode(),
                json.dumps(request_line("\ud800")).encode(),  # custom_id
                json.dumps(request_line("c", "hi \udfff")).encode(),  # message content
                json.dumps(request_line("d")).encode()[:-2]
                + b',"x":'
                + b"[" * 3000
                + b"]" * 3000
                + b"}}",  # 3,000 deep
            ]
        )
        + b"\n"
    )
    (settings.data_dir / "proj-a" / "files" / f"{stored['id']}.data").write_bytes(legacy)
    batch = create_batch(client, stored["id"]).get_json()
    record = wait_batch(client, batch["id"], timeout=20)
    assert record["status"] == "failed", record
    errors = {e["line"]: e for e in record["errors"]["data"]}
    assert sorted(errors) == [2, 3, 4], errors
    assert errors[2]["param"] == "custom_id" and errors[2]["code"] == "invalid_unicode"
    assert errors[3]["param"] == "body.messages[0].content"
    assert errors[4]["code"] == "nesting_too_deep"
    assert client.get(f"/v1/batches/{batch['id']}", headers=AUTH_A).status_code == 200
