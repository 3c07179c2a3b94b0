"""Property tests for the JSONL validator through the real upload route: any byte string is
either refused with a clean 400 that names a line (and stores nothing), or accepted and
returned byte for byte."""

from __future__ import annotations

import io
import json
import re

import pytest
from conftest import AUTH_A, request_line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zumik.core.lines import LineError, check_line, parse_line

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

valid_line = st.builds(
    lambda i, text: json.dumps(request_line(f"id{i}", text)).encode(),
    st.integers(0, 10**6),
    st.text(max_size=30),
)
mutations = st.sampled_from(
    [
        b"",
        b"{",
        b"}",
        b"\r",
        b"\xef\xbb\xbf",
        b"\xff",
        b"null",
        b'"custom_id"',
        b"[]",
        b"\x00",
        b" ",
        b'"\\ud800"',
        b'"\\ud83d\\ude00"',
        b"[" * 150 + b"]" * 150,
        b"[" * 1500,
    ]
)
line = st.one_of(
    valid_line,
    mutations,
    st.tuples(valid_line, mutations).map(lambda t: t[0][:-1] + t[1]),
    st.binary(max_size=40),
)
document = st.one_of(
    st.binary(max_size=300),
    st.lists(line, max_size=8).map(lambda ls: b"\n".join(ls)),
    st.lists(valid_line, min_size=1, max_size=5).map(lambda ls: b"\n".join(ls) + b"\n"),
)


def files_on_disk(settings_) -> list[str]:
    root = settings_.data_dir / "proj-a" / "files"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.slow
@FUZZ
@given(content=document)
def test_any_bytes_are_refused_cleanly_or_round_trip(client, settings, content):
    before = files_on_disk(settings)
    response = client.post(
        "/v1/files",
        headers=AUTH_A,
        data={"file": (io.BytesIO(content), "f.jsonl")},
        content_type="multipart/form-data",
    )
    if response.status_code == 200:
        file_id = response.get_json()["id"]
        assert client.get(f"/v1/files/{file_id}/content", headers=AUTH_A).data == content
        client.delete(f"/v1/files/{file_id}", headers=AUTH_A)
    else:
        assert response.status_code == 400, response.get_data(as_text=True)
        error = response.get_json()["error"]
        assert error["param"] == "file"
        assert re.search(r"Line \d+|no request lines", error["message"]), error["message"]
    assert files_on_disk(settings) == before


def verdict(check, raw: bytes) -> tuple[str, str]:
    try:
        result = check(raw, 1)
    except LineError as exc:
        return "refused", str(exc)
    return "accepted", result if isinstance(result, str) else result.custom_id


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
near_valid = st.builds(
    lambda cid, method, url, model, messages, stream, extra: json.dumps(
        {
            "custom_id": cid,
            "method": method,
            "url": url,
            "body": {"model": model, "messages": messages, **stream},
            **extra,
        },
        ensure_ascii=False,
    ).encode(),
    st.one_of(st.text(max_size=6), json_value),
    st.sampled_from(["POST", "GET", 1]),
    st.sampled_from(["/v1/chat/completions", "/v1/embeddings", None]),
    st.one_of(st.text(max_size=6), json_value),
    st.one_of(st.lists(json_value, max_size=2), json_value),
    st.sampled_from([{}, {"stream": True}, {"stream": False}, {"stream": "yes"}]),
    st.dictionaries(st.text(max_size=5), json_value, max_size=2),
)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(
    raw=st.one_of(
        near_valid, line, st.tuples(near_valid, mutations).map(lambda t: t[0][:-1] + t[1])
    )
)
def test_fast_line_check_gives_the_same_verdict_as_the_full_parser(raw):
    assert verdict(check_line, raw) == verdict(parse_line, raw)
