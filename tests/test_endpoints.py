"""Every batch endpoint a self-hosted provider can serve: per-endpoint validation, each line to
its provider's matching path, usage summed whatever its shape, the echo model's answers,
aliases and retries alike, and what /v1/models and /openapi.json say."""

from __future__ import annotations

import base64
import struct

import pytest
import requests
from conftest import AUTH_A, create_batch, jsonl, output_lines, settle, upload, wait_batch

from zumik.core.lines import SUPPORTED_ENDPOINTS
from zumik.settings import load_settings

BODIES = {
    "/v1/chat/completions": lambda text: {"messages": [{"role": "user", "content": text}]},
    "/v1/responses": lambda text: {"input": text},
    "/v1/embeddings": lambda text: {"input": [text, text + " again"]},
    "/v1/completions": lambda text: {"prompt": text},
    "/v1/moderations": lambda text: {"input": text},
}


def line(custom_id: str, endpoint: str, text: str = "hello", model: str = "m1", **body) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": endpoint,
        "body": {"model": model, **BODIES[endpoint](text), **body},
    }


def run(client, lines: list[dict], endpoint: str, **extra) -> dict:
    file_id = upload(client, jsonl(lines)).get_json()["id"]
    created = create_batch(client, file_id, endpoint=endpoint, **extra)
    assert created.status_code == 200, created.get_json()
    if not client.application.extensions["zumik"].executor.running:
        settle(client)  # no executor thread: run the batch here, to its end
    return wait_batch(client, created.get_json()["id"])


def stats(provider) -> dict:
    return requests.get(provider.url.replace("/v1", "/_stats")).json()


@pytest.mark.parametrize("endpoint", SUPPORTED_ENDPOINTS)
def test_each_endpoint_goes_to_the_providers_matching_path(make_app, provider, endpoint):
    client = make_app(start=True, upstream_url=provider.url, retry_backoff=0.01).test_client()
    lines = [line(f"{i}", endpoint, f"text {i}") for i in range(4)]
    lines.append(line("flaky", endpoint, "#fail:500:1 retried"))
    batch = run(client, lines, endpoint)
    assert batch["status"] == "completed" and batch["endpoint"] == endpoint
    assert batch["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
    assert batch["model"] == "m1" and batch["error_file_id"] is None
    # one retry, same path; embeddings go as one pack (retried whole), after the packing
    # check's three requests (two probe texts packed, then each alone)
    sent = 2 + 3 if endpoint == "/v1/embeddings" else 6
    assert stats(provider)["by_path"] == {endpoint: sent}
    out = output_lines(client, batch["output_file_id"])
    bodies = [x["response"]["body"] for x in out]
    usage = batch["usage"]
    if endpoint == "/v1/moderations":  # moderation answers carry no usage
        assert usage["total_tokens"] == 0
        return
    if endpoint == "/v1/responses":
        inputs = sum(b["usage"]["input_tokens"] for b in bodies)
        outputs = sum(b["usage"]["output_tokens"] for b in bodies)
    else:
        inputs = sum(b["usage"]["prompt_tokens"] for b in bodies)
        outputs = sum(b["usage"].get("completion_tokens", 0) for b in bodies)
    assert (usage["input_tokens"], usage["output_tokens"]) == (inputs, outputs) and inputs > 0
    assert usage["total_tokens"] == inputs + outputs
    if endpoint == "/v1/embeddings":
        assert outputs == 0 and all(len(b["data"]) == 2 for b in bodies)


def test_the_echo_model_answers_every_endpoint_in_its_own_shape(make_app):
    client = make_app().test_client()
    answers = {}
    for endpoint in SUPPORTED_ENDPOINTS:
        lines = [line("a", endpoint, "the quick fox", "zumik-echo")]
        if endpoint == "/v1/embeddings":
            lines.append(
                line("b", endpoint, "x", "zumik-echo", encoding_format="base64", dimensions=8)
            )
        batch = run(client, lines, endpoint)
        assert batch["status"] == "completed" and batch["error_file_id"] is None, batch
        answers[endpoint] = {
            x["custom_id"]: x["response"]["body"]
            for x in output_lines(client, batch["output_file_id"])
        }
    chat = answers["/v1/chat/completions"]["a"]
    assert chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"]["content"] == "the quick fox"
    response = answers["/v1/responses"]["a"]
    assert response["object"] == "response" and response["status"] == "completed"
    assert response["output"][0]["content"][0] == {
        "type": "output_text",
        "text": "the quick fox",
        "annotations": [],
    }
    assert set(response["usage"]) >= {"input_tokens", "output_tokens", "total_tokens"}
    completion = answers["/v1/completions"]["a"]
    assert completion["object"] == "text_completion"
    assert completion["choices"][0]["text"] == "the quick fox"
    embeddings = answers["/v1/embeddings"]
    vectors = [d["embedding"] for d in embeddings["a"]["data"]]
    assert embeddings["a"]["object"] == "list" and len(vectors) == 2
    assert all(len(v) == 32 and abs(sum(x * x for x in v) - 1) < 1e-3 for v in vectors)
    assert vectors[0] != vectors[1]
    assert set(embeddings["a"]["usage"]) == {"prompt_tokens", "total_tokens"}
    packed = base64.b64decode(embeddings["b"]["data"][0]["embedding"])
    assert len(struct.unpack("<8f", packed)) == 8
    moderation = answers["/v1/moderations"]["a"]
    assert moderation["results"][0]["flagged"] is False
    assert "violence" in moderation["results"][0]["category_scores"]


BAD_LINES = [
    (line("a", "/v1/embeddings", model="m"), {"input": None}, "body.input"),
    (line("a", "/v1/embeddings"), {"input": []}, "body.input"),
    (line("a", "/v1/embeddings"), {"input": [["x"]]}, "body.input"),
    (line("a", "/v1/embeddings"), {"model": None}, "body.model"),
    (line("a", "/v1/responses"), {"input": 7}, "body.input"),
    (line("a", "/v1/completions"), {"prompt": ""}, "body.prompt"),
    (line("a", "/v1/moderations"), {"input": {}}, "body.input"),
    (line("a", "/v1/responses"), {"stream": True}, "body.stream"),
    (line("a", "/v1/completions"), {"stream": True}, "body.stream"),
]


@pytest.mark.parametrize(("good", "change", "param"), BAD_LINES)
def test_per_endpoint_validation_names_the_line_and_the_field(client, good, change, param):
    bad = {**good, "body": {**good["body"], **change}}
    response = upload(client, jsonl([line("ok", good["url"]), bad]))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert "Line 2:" in error["message"] and param in error["message"], error


def test_every_line_must_target_the_batch_endpoint(make_app):
    client = make_app().test_client()
    lines = [
        line("a", "/v1/embeddings", model="zumik-echo"),
        line("b", "/v1/chat/completions", model="zumik-echo"),
    ]
    batch = run(client, lines, "/v1/embeddings")
    assert batch["status"] == "failed"
    assert [(e["line"], e["code"]) for e in batch["errors"]["data"]] == [(2, "invalid_url")]


def test_an_embeddings_file_holds_a_bounded_number_of_inputs(make_app):
    client = make_app(max_embedding_inputs=5).test_client()
    fits = [line(f"{i}", "/v1/embeddings") for i in range(2)]  # 2 inputs each
    assert (
        upload(client, jsonl(fits + [line("x", "/v1/embeddings", input="one")])).status_code == 200
    )
    response = upload(client, jsonl(fits + [line("x", "/v1/embeddings")]))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "too_many_inputs" and "Line 3" in error["message"], error
    assert "5 embedding inputs" in error["message"]


def test_aliases_route_every_endpoint_alike(make_app, provider, tmp_path):
    config = tmp_path / "zumik.toml"
    config.write_text(f'''
[providers.local]
base_url = "{provider.url}"

[models."embed.small"]
provider = "local"
model = "bge-small"
''')
    settings = load_settings({"ZUMIK_CONFIG": str(config)})
    client = make_app(
        start=True, providers=settings.providers, models=settings.models, retry_backoff=0.01
    ).test_client()
    lines = [line(f"{i}", "/v1/embeddings", f"doc {i}", "embed.small") for i in range(3)]
    batch = run(client, lines, "/v1/embeddings")
    assert batch["request_counts"]["completed"] == 3 and batch["model"] == "embed.small"
    # the packing check's three requests, then the three lines in one pack
    assert stats(provider)["by_model"] == {"bge-small": 4}
    assert stats(provider)["by_path"] == {"/v1/embeddings": 4}


def test_a_mixed_model_batch_has_no_model(make_app, provider):
    client = make_app(start=True, upstream_url=provider.url).test_client()
    lines = [line("a", "/v1/completions", model="m1"), line("b", "/v1/completions", model="m2")]
    batch = run(client, lines, "/v1/completions")
    assert batch["status"] == "completed" and batch["model"] is None


def test_models_and_openapi_list_the_batch_endpoints(client):
    models = client.get("/v1/models", headers=AUTH_A).get_json()
    assert models["batch_endpoints"] == list(SUPPORTED_ENDPOINTS)
    echo = next(m for m in models["data"] if m["id"] == "zumik-echo")
    assert echo["endpoints"] == list(SUPPORTED_ENDPOINTS)
    document = client.get("/openapi.json").get_json()
    create = document["paths"]["/v1/batches"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]["properties"]
    assert create["endpoint"]["enum"] == list(SUPPORTED_ENDPOINTS)
    assert create["output_expires_after"]["properties"]["seconds"]["maximum"] == 2592000


def test_rate_limit_estimates_read_every_endpoints_prompt():
    """tpm pacing estimates a request before sending it: chat's messages, responses',
    embeddings' and moderations' input, completions' prompt, plus the output cap."""
    from zumik.execution.limits import estimate_tokens

    text = "x" * 400
    shapes = [{"messages": [{"role": "user", "content": text}]}, {"input": text}, {"prompt": text}]
    assert [estimate_tokens(body) for body in shapes] == [101, 101, 101]
    assert estimate_tokens({"input": text, "max_output_tokens": 50}) == 151
    assert estimate_tokens({"input": [text, text]}) > 200
