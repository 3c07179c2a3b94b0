"""End to end on real gunicorn (2 workers) with the official ``openai`` SDK as the client."""

from __future__ import annotations

import json

import openai
import pytest
from conftest import KEY_A, KEY_B, TERMINAL, echo_lines, wait_until

pytestmark = pytest.mark.slow  # the openai SDK against real gunicorn


def sdk(server, key: str = KEY_A) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def wait(client: openai.OpenAI, batch_id: str, timeout: float = 60.0, statuses=TERMINAL):
    return wait_until(
        lambda: (lambda b: b if b.status in statuses else None)(client.batches.retrieve(batch_id)),
        timeout,
        f"batch {batch_id} to reach {statuses}",
        interval=0.1,
    )


@pytest.fixture
def server(gunicorn, provider):
    return gunicorn({"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_MAX_ACTIVE_BATCHES": "3"})


def test_files_surface_through_the_sdk(server, tmp_path):
    client = sdk(server)
    path = tmp_path / "requests.jsonl"
    path.write_bytes(echo_lines(4))
    created = [client.files.create(file=path, purpose="batch") for _ in range(5)]
    first = created[0]
    assert first.filename == "requests.jsonl" and first.bytes == len(echo_lines(4))
    assert first.purpose == "batch" and first.status == "processed"
    # auto-paging walks every file exactly once, in both orders
    listed = [f.id for f in client.files.list(limit=2)]
    assert listed == [f.id for f in reversed(created)]
    assert [f.id for f in client.files.list(limit=2, order="asc")] == [f.id for f in created]
    assert list(client.files.list(purpose="batch_output")) == []
    assert client.files.retrieve(first.id).id == first.id
    assert client.files.wait_for_processing(first.id).status == "processed"
    assert client.files.content(first.id).content == echo_lines(4)
    expiring = client.files.create(
        file=("x.jsonl", echo_lines(1)),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert expiring.expires_at == expiring.created_at + 3600
    deleted = client.files.delete(first.id)
    assert deleted.deleted is True and deleted.id == first.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        sdk(server, KEY_B).files.content(created[1].id)
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("bad.jsonl", b"{nope}\n"), purpose="batch")
    assert "Line 1" in info.value.message and info.value.param == "file"
    with pytest.raises(openai.AuthenticationError) as auth:
        sdk(server, "wrong-key").files.list().data  # noqa: B018
    assert auth.value.code == "invalid_api_key"


def test_batch_flow_through_the_sdk(server, provider):
    client = sdk(server)
    content = echo_lines(25, model="m-upstream")
    input_file = client.files.create(file=("in.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=input_file.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "e2e"},
    )
    assert batch.status == "validating" and batch.request_counts.total == 25
    done = wait(client, batch.id)
    assert done.status == "completed" and done.metadata == {"run": "e2e"}
    assert done.request_counts.completed == 25 and done.request_counts.failed == 0
    assert done.usage.total_tokens > 0
    lines = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert sorted(x["custom_id"] for x in lines) == sorted(f"r{i}" for i in range(25))
    assert all(x["response"]["status_code"] == 200 for x in lines)
    assert [b.id for b in client.batches.list(limit=1)][0] == batch.id
    with pytest.raises(openai.NotFoundError):
        sdk(server, KEY_B).batches.retrieve(batch.id)
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(
            input_file_id=input_file.id, endpoint="/v1/audio/speech", completion_window="24h"
        )
    assert info.value.param == "endpoint"


def test_cancel_and_quota_through_the_sdk(server, provider):
    import requests

    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.5})
    client = sdk(server)
    input_file = client.files.create(file=("in.jsonl", echo_lines(300, model="m")), purpose="batch")
    batches = [
        client.batches.create(
            input_file_id=input_file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        for _ in range(3)
    ]
    with pytest.raises(openai.RateLimitError) as info:
        client.batches.create(
            input_file_id=input_file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert info.value.code == "quota_exceeded"
    with pytest.raises(openai.ConflictError):
        client.files.delete(input_file.id)
    for batch in batches:  # each one running before it is cancelled
        wait(client, batch.id, statuses=("in_progress",))
    for batch in batches:
        assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    for batch in batches:
        final = wait(client, batch.id, timeout=15)
        assert final.status == "cancelled" and final.cancelled_at is not None
        assert final.request_counts.completed < 300
    assert client.batches.cancel(batches[0].id).status == "cancelled"


ENDPOINT_BODIES = {
    "/v1/chat/completions": (
        {"messages": [{"role": "user", "content": "hi there"}]},
        "ChatCompletion",
    ),
    "/v1/responses": ({"input": "hi there"}, "Response"),
    "/v1/embeddings": ({"input": ["hi there", "second text"]}, "CreateEmbeddingResponse"),
    "/v1/completions": ({"prompt": "hi there"}, "Completion"),
    "/v1/moderations": ({"input": "hi there"}, "ModerationCreateResponse"),
}


def sdk_type(name: str):
    from openai.types import Completion, CreateEmbeddingResponse, ModerationCreateResponse
    from openai.types.chat import ChatCompletion
    from openai.types.responses import Response

    return {
        "ChatCompletion": ChatCompletion,
        "Response": Response,
        "Completion": Completion,
        "CreateEmbeddingResponse": CreateEmbeddingResponse,
        "ModerationCreateResponse": ModerationCreateResponse,
    }[name]


@pytest.mark.parametrize("endpoint", list(ENDPOINT_BODIES))
def test_every_endpoint_through_the_sdk(server, provider, endpoint):
    """Against the provider (one line fails with its 400) and the echo model, whose answers
    the SDK's own response types accept."""
    import requests

    client = sdk(server)
    body, type_name = ENDPOINT_BODIES[endpoint]
    lines = [
        {
            "custom_id": f"{model}-{i}",
            "method": "POST",
            "url": endpoint,
            "body": {"model": model, **body},
        }
        for model in ("served", "zumik-echo")
        for i in range(2)
    ]
    failing = {
        "custom_id": "fails",
        "method": "POST",
        "url": endpoint,
        "body": {
            "model": "served",
            **json.loads(json.dumps(body).replace("hi there", "#fail:400:9 bad")),
        },
    }
    content = "".join(json.dumps(x) + "\n" for x in [*lines[:2], failing]).encode()
    batch = client.batches.create(
        input_file_id=client.files.create(file=("p.jsonl", content), purpose="batch").id,
        endpoint=endpoint,
        completion_window="24h",
        output_expires_after={"anchor": "created_at", "seconds": 3600},
    )
    done = wait(client, batch.id)
    assert done.status == "completed" and done.model == "served"
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    [err] = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert sorted(x["custom_id"] for x in out) == ["served-0", "served-1"]
    assert err["custom_id"] == "fails" and err["response"]["status_code"] == 400
    output_file = client.files.retrieve(done.output_file_id)
    assert output_file.expires_at == output_file.created_at + 3600
    path = endpoint.removeprefix("/v1")
    # embeddings: the packing check (3), the pack the provider refuses with a 400, then each
    # line alone so that only the bad line fails
    sent = 3 + 1 + 3 if endpoint == "/v1/embeddings" else 3
    assert requests.get(provider.url.replace("/v1", "/_stats")).json()["by_path"] == {
        "/v1" + path: sent
    }
    echo_file = client.files.create(
        file=("e.jsonl", "".join(json.dumps(x) + "\n" for x in lines[2:]).encode()), purpose="batch"
    )
    echoed = wait(
        client,
        client.batches.create(
            input_file_id=echo_file.id, endpoint=endpoint, completion_window="24h"
        ).id,
    )
    assert echoed.request_counts.completed == 2 and echoed.error_file_id is None
    for raw in client.files.content(echoed.output_file_id).text.splitlines():
        sdk_type(type_name).model_validate(json.loads(raw)["response"]["body"])
