"""A line's length verdict never depends on where a read chunk ends: LF and CRLF files, with or
without a BOM, get the same answer whatever the alignment (a CR at the very end of a chunk
used to count toward the limit, though the line clean-up strips it)."""

from __future__ import annotations

import json

import pytest
from conftest import AUTH_A, request_line

from zumik.api.receiving import CHUNK
from zumik.core.lines import BOM, LineError
from zumik.core.validator import JsonlValidator


def line_of(size: int, custom_id: str = "a") -> bytes:
    """A valid request line of exactly ``size`` bytes (without its newline)."""
    base = len(json.dumps(request_line(custom_id, "")))
    line = json.dumps(request_line(custom_id, "x" * (size - base))).encode()
    assert len(line) == size
    return line


def verdict(document: bytes, chunk: int, max_line: int) -> str:
    validator = JsonlValidator(max_line, 100)
    try:
        for start in range(0, len(document), chunk):
            validator.feed(document[start : start + chunk])
        validator.finish()
    except LineError as exc:
        return f"refused: line {exc.line}, {exc.code}"
    return "accepted"


@pytest.mark.parametrize("bom", [b"", BOM], ids=["plain", "bom"])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_every_alignment_gets_the_same_verdict(newline, bom):
    max_line = 200
    for first in (max_line, max_line + 1):  # the first line (BOM stripped) exactly at the limit
        for second in (max_line, max_line + 1):
            document = bom + line_of(first, "a") + newline + line_of(second, "b") + newline
            expected = (
                "accepted"
                if first <= max_line and second <= max_line
                else f"refused: line {1 if first > max_line else 2}, line_too_long"
            )
            verdicts = {
                chunk: verdict(document, chunk, max_line) for chunk in range(1, len(document) + 1)
            }
            wrong = {c: v for c, v in verdicts.items() if v != expected}
            assert not wrong, (first, second, expected, wrong)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_a_2_mib_line_through_the_upload_route_at_every_alignment_near_a_chunk_end(
    client, settings, newline
):
    """The JSON-body upload feeds the validator in exact 1 MiB slices: a first line of k
    bytes puts the second line's CR (or LF) at ``CHUNK - 2 .. CHUNK + 1``."""
    limit = settings.max_line_bytes
    assert limit == 2 * CHUNK
    for size, accepted in ((limit, True), (limit + 1, False)):
        last = line_of(size, "long")
        for shift in (-2, -1, 0, 1):
            # the byte after the long line (its CR, or its LF) at offset 3 MiB - 1 + shift
            first = line_of(3 * CHUNK - 1 + shift - len(newline) - len(last), "first")
            document = first + newline + last + newline
            assert document.index(newline, len(first) + 1) == 3 * CHUNK - 1 + shift
            response = client.post(
                "/v1/files",
                headers=AUTH_A,
                json={"content": document.decode(), "filename": "a.jsonl"},
            )
            assert (response.status_code == 200) == accepted, (size, shift, response.get_json())
            if not accepted:
                assert "Line 2" in response.get_json()["error"]["message"]
