"""``/openapi.json`` is true: every route is documented and every documented route exists,
and a bounded schemathesis run against real gunicorn finds no 5xx and no response that
breaks its schema."""

from __future__ import annotations

import re

import pytest
import schemathesis
from conftest import AUTH_A, Server, echo_lines
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from zumik.api.openapi import DOCUMENT

schema = schemathesis.openapi.from_dict(DOCUMENT)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_every_route_is_documented_and_every_documented_route_exists(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("dashboard"):
            continue  # the dashboard's pages are HTML for people, not API routes
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        routes |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {
        (path, method)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert routes == documented
    assert app.test_client().get("/openapi.json").get_json() == DOCUMENT


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("schemathesis") / "data", {}).start()
    import requests

    file_id = requests.post(
        server.url + "/v1/files",
        headers=AUTH_A,
        timeout=10,
        files={"file": ("a.jsonl", echo_lines(2))},
    ).json()["id"]
    requests.post(
        server.url + "/v1/batches",
        headers=AUTH_A,
        timeout=10,
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
    )
    yield server
    server.stop()


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case, live):
    case.call_and_validate(base_url=live.url, headers=AUTH_A, checks=CHECKS)
