"""Webhooks for batch events: signed as the openai SDK verifies them, registered with
``zumik webhooks``, delivered at least once from a durable outbox (real gunicorn, a real
receiver that checks every delivery with ``client.webhooks.unwrap``)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import openai
import pytest
import requests
from conftest import (
    TERMINAL,
    create_batch,
    echo_lines,
    jsonl,
    request_line,
    unreaped_zombie,
    upload,
    wait_batch,
    wait_until,
)
from webhook_receiver import Receiver

from zumik.api.openapi import DOCUMENT
from zumik.cli import main as cli
from zumik.core.records import Status, move
from zumik.webhooks import outbox, signing
from zumik.webhooks import registry as webhooks
from zumik.webhooks.delivery import Deliverer

FAST = {
    "ZUMIK_WEBHOOK_POLL_INTERVAL": "0.1",
    "ZUMIK_WEBHOOK_BACKOFF": "0.2",
    "ZUMIK_WEBHOOK_MAX_BACKOFF": "0.5",
}


def zumik(capsys, data_dir: Path, *args: str) -> tuple[int, list[str]]:
    """Run the ``zumik`` command in-process; its exit code and stdout lines."""
    capsys.readouterr()
    code = cli.main(["--data-dir", str(data_dir), *args])
    return code, capsys.readouterr().out.splitlines()


def add_endpoint(capsys, data_dir: Path, project: str, url: str, *extra: str) -> tuple[str, str]:
    code, out = zumik(capsys, data_dir, "webhooks", "add", project, url, *extra)
    assert code == 0
    return out[0], out[1]


def wait_status(server, batch_id: str, statuses=TERMINAL) -> dict:
    return server.wait_batch(batch_id, statuses)


def outbox_entries(data_dir: Path, project: str = "proj-a") -> dict[str, dict]:
    directory = data_dir / project / "outbox"
    found = {}
    for name in os.listdir(directory) if directory.exists() else []:
        if name.startswith("wh_"):
            try:
                found[name] = json.loads((directory / name).read_bytes())
            except (FileNotFoundError, ValueError):
                continue
    return found


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(start: bool = True) -> Receiver:
        receiver = Receiver()
        made.append(receiver)
        return receiver.start() if start else receiver

    yield make
    for receiver in made:
        receiver.stop()


# -- signing and the registry ---------------------------------------------------------------
def test_signature_is_what_the_sdk_verifies():
    sdk = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    old, new = signing.new_secret(), signing.new_secret()
    body = (
        b'{"id":"evt_1","object":"event","type":"batch.completed","created_at":1,'
        b'"data":{"id":"batch_1"}}'
    )
    now = int(time.time())
    headers = {
        "webhook-id": "wh_1",
        "webhook-timestamp": str(now),
        "webhook-signature": signing.signature_header([new, old], "wh_1", now, body),
    }
    assert headers["webhook-signature"].count("v1,") == 2
    for secret in (old, new):  # either secret verifies a header signed by both
        event = sdk.webhooks.unwrap(body, headers, secret=secret)
        assert event.type == "batch.completed" and event.data.id == "batch_1"
    refused = [
        (body.replace(b"batch_1", b"batch_2"), headers, new),  # tampered body
        (body, headers, signing.new_secret()),  # another secret
        (body, {**headers, "webhook-id": "wh_2"}, new),  # another id
        (body, {**headers, "webhook-timestamp": str(now - 301)}, new),  # too old
    ]
    for payload, hdrs, secret in refused:
        with pytest.raises(openai.InvalidWebhookSignatureError):
            sdk.webhooks.verify_signature(payload, hdrs, secret=secret)


def test_cli_add_list_rotate_remove(tmp_path, capsys):
    data = tmp_path / "data"
    endpoint_id, secret = add_endpoint(
        capsys,
        data,
        "proj-a",
        "https://hooks.example/zumik",
        "--events",
        "batch.completed,batch.failed",
    )
    assert endpoint_id.startswith("we_") and secret.startswith("whsec_")
    assert oct((data / "webhooks.json").stat().st_mode & 0o777) == "0o600"
    code, out = zumik(capsys, data, "webhooks", "list")
    assert code == 0 and endpoint_id in out[0] and "https://hooks.example/zumik" in out[0]
    assert "batch.completed,batch.failed; 1 active secret(s); 0 pending" in out[1]
    assert "no delivery yet" in out[2]
    assert secret not in "\n".join(out)  # shown once, never listed
    for bad in (
        ["proj-a", "ftp://x/y"],
        ["proj-a", "http:///nohost"],
        ["proj-a", "not a url"],
        ["../evil", "http://127.0.0.1/"],
        ["proj-a", "http://127.0.0.1/", "--events", "batch.done"],
    ):
        assert zumik(capsys, data, "webhooks", "add", *bad)[0] == 2
    code, out = zumik(capsys, data, "webhooks", "rotate", endpoint_id, "--grace", "600")
    assert code == 0 and out[0].startswith("whsec_") and out[0] != secret
    assert "2 active secret(s)" in zumik(capsys, data, "webhooks", "list", "proj-a")[1][1]
    assert zumik(capsys, data, "webhooks", "list", "proj-b")[1] == []
    zumik(capsys, data, "webhooks", "rotate", endpoint_id, "--grace", "0")
    assert "1 active secret(s)" in zumik(capsys, data, "webhooks", "list")[1][1]
    assert zumik(capsys, data, "webhooks", "rotate", "we_nope")[0] == 2
    assert zumik(capsys, data, "webhooks", "remove", endpoint_id)[0] == 0
    assert zumik(capsys, data, "webhooks", "remove", endpoint_id)[0] == 1
    assert zumik(capsys, data, "webhooks", "list")[1] == []


def test_one_claim_per_entry_and_dead_claims_come_back(tmp_path):
    """Two deliverers racing over the same outbox each claim a disjoint set; a claim whose
    process is gone is pending again at the next scan."""
    data = tmp_path / "data"
    directory = data / "proj-a" / "outbox"
    directory.mkdir(parents=True)
    for i in range(200):
        (directory / f"wh_{i:032x}.json").write_text(
            json.dumps({"webhook_id": f"wh_{i:032x}", "next_at": 0})
        )
    results: list[list[outbox.Claimed]] = [[], []]
    boxes = [outbox.Outbox(data, lease=60), outbox.Outbox(data, lease=60)]
    threads = [
        threading.Thread(target=lambda i=i: results[i].extend(boxes[i].claim_due(500)))
        for i in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = [c.entry["webhook_id"] for r in results for c in r]
    assert len(names) == 200 == len(set(names))
    dead = (
        directory / f"{names[0]}{outbox.CLAIM_MARK}{int(time.time() * 1000)}-999999999-"
        f"{outbox.HOST}"
    )
    results[0][0].path.rename(dead)  # as if its holder (no such pid) had been killed
    old = directory / f"{names[1]}{outbox.CLAIM_MARK}1000-1-otherhost"  # lease long gone
    results[0][1].path.rename(old)
    assert boxes[1].claim_due(10) == []  # this scan puts them back...
    assert sorted(c.entry["webhook_id"] for c in boxes[1].claim_due(10)) == sorted(names[:2])


def test_a_claim_of_a_killed_but_unreaped_worker_comes_back_before_its_lease(tmp_path):
    """A worker SIGKILLed with its master stays a zombie until init reaps it (on some hosts
    never): its claim is dead all the same, not held until the lease runs out."""
    data = tmp_path / "data"
    directory = data / "proj-a" / "outbox"
    directory.mkdir(parents=True)
    (directory / "wh_1.json").write_text(json.dumps({"webhook_id": "wh_1", "next_at": 0}))
    with unreaped_zombie() as pid:
        claim = outbox.Outbox(data, lease=3600).claim_due(1)[0]
        claim.path.rename(
            directory / f"wh_1{outbox.CLAIM_MARK}{int(time.time() * 1000)}-{pid}-{outbox.HOST}"
        )  # as the zombie's claim
        box = outbox.Outbox(data, lease=3600)
        assert box.claim_due(1) == []  # this scan puts it back...
        assert [c.entry["webhook_id"] for c in box.claim_due(1)] == ["wh_1"]


def test_an_entry_waits_for_its_terminal_record(make_app, receivers, settings):
    """A kill after the outbox entry but before the terminal record: the entry waits (nothing
    is sent for a batch that has not ended) until the next finalize stores the record."""
    receiver = receivers()
    _, secret = webhooks.add_endpoint(settings.data_dir, "proj-a", receiver.url)
    receiver.secrets = [secret]
    app = make_app()  # no executor: the batch stays where it is put
    client = app.test_client()
    batch_id = create_batch(client, upload(client, echo_lines(1)).get_json()["id"]).get_json()["id"]
    store = app.extensions["zumik"].store("proj-a")
    now = int(time.time())
    ended = move(store.get_batch(batch_id), Status.COMPLETED, now)
    assert outbox.enqueue(settings.data_dir, "proj-a", ended) == 1  # ...and then the kill

    async def deliver() -> None:
        stopping = asyncio.Event()
        task = asyncio.create_task(
            Deliverer(settings.replace(webhook_poll_interval=0.05)).run(stopping)
        )
        await asyncio.sleep(0.6)
        assert receiver.seen == []  # the batch is still validating: nothing sent
        # one entry, never attempted (keyed by webhook id: a snapshot may catch the pending file
        # and the claim it is being put back from at once, both the same entry)
        entries = outbox_entries(settings.data_dir).values()
        assert list({e["webhook_id"]: e["attempts"] for e in entries}.values()) == [0]
        await asyncio.to_thread(
            store.update_batch, batch_id, lambda r: move(r, Status.COMPLETED, now)
        )  # the next finalize
        for _ in range(100):
            if receiver.deliveries:
                break
            await asyncio.sleep(0.05)
        stopping.set()
        await task

    asyncio.run(deliver())
    assert [d.event.data.id for d in receiver.deliveries] == [batch_id]
    assert receiver.deliveries[0].verified_with == [secret]
    assert receiver.deliveries[0].event.created_at == now


# -- delivery end to end --------------------------------------------------------------------
def test_every_batch_event_is_delivered_once_and_verified(
    gunicorn, provider, receivers, tmp_path, capsys
):
    data = tmp_path / "data"
    receiver, other = receivers(), receivers()
    endpoint_id, secret = add_endpoint(capsys, data, "proj-a", receiver.url)
    _, failed_only = add_endpoint(capsys, data, "proj-a", other.url, "--events", "batch.failed")
    _, project_b = add_endpoint(capsys, data, "proj-b", other.url)
    receiver.secrets, other.secrets = [secret], [failed_only, project_b]
    config = tmp_path / "zumik.toml"
    config.write_text(
        f'[providers.fake]\nbase_url = "{provider.url}"\n'
        '[models."m1"]\nprovider = "fake"\nmodel = "m1"\n'
    )
    requests.post(provider.url.replace("/v1", "/_control"), json={"hang_seconds": 5})
    server = gunicorn({"ZUMIK_CONFIG": str(config), **FAST})
    completed = server.start_batch(jsonl([request_line(f"c{i}", "hi", "m1") for i in range(5)]))
    failed = server.start_batch(jsonl([request_line("x", "hi", "no-such-model")]))
    cancelled = server.start_batch(jsonl([request_line("h", "#fail:hang:1", "m1")]))
    wait_status(server, cancelled, ("in_progress",))
    server.api("POST", f"/v1/batches/{cancelled}/cancel")
    batches = {b: wait_status(server, b) for b in (completed, failed, cancelled)}
    assert [b["status"] for b in batches.values()] == ["completed", "failed", "cancelled"]
    wait_until(lambda: len(receiver.deliveries) >= 3 and other.deliveries, what="deliveries")
    time.sleep(0.5)  # an absence is checked over a window: time for a duplicate, were there one
    assert len(receiver.deliveries) == 3 and len(other.deliveries) == 1
    for delivery in receiver.deliveries:
        assert delivery.verified_with == [secret]  # the official SDK's unwrap accepted it
        event, batch = delivery.event, batches[delivery.event.data.id]
        assert event.type == f"batch.{batch['status']}" and event.object == "event"
        assert event.created_at == batch[f"{batch['status']}_at"]
        assert event.id.startswith("evt_") and delivery.headers["webhook-id"].startswith("wh_")
        schema = DOCUMENT["webhooks"][event.type]["post"]["requestBody"]["content"][
            "application/json"
        ]["schema"]  # as /openapi.json documents it
        assert (
            json.loads(delivery.body).keys() == set(schema["required"]) == set(schema["properties"])
        )
    assert len({d.headers["webhook-id"] for d in receiver.deliveries}) == 3
    only = other.deliveries[0]  # batch.failed only, and nothing from the other project
    assert only.event.type == "batch.failed" and only.verified_with == [failed_only]
    # a tampered body is refused by the SDK
    delivery = receiver.deliveries[0]
    tampered = delivery.body.replace(b'"data":{"id":"batch_', b'"data":{"id":"batch_f')
    with pytest.raises(openai.InvalidWebhookSignatureError):
        receiver.unwrap(tampered, delivery.headers, secret)
    code, out = zumik(capsys, data, "webhooks", "list", "proj-a")
    line = out[out.index(next(x for x in out if x.startswith(endpoint_id))) + 2]
    assert "attempt 1: delivered" in line and outbox_entries(data) == {}


def test_expired_batch_event(make_app, provider, receivers, settings):
    receiver = receivers()
    endpoint, secret = webhooks.add_endpoint(settings.data_dir, "proj-a", receiver.url)
    receiver.secrets = [secret]
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.2})
    now = [time.time()]
    client = make_app(
        start=True,
        clock=lambda: now[0],
        upstream_url=provider.url,
        concurrency=2,
        webhook_poll_interval=0.05,
    ).test_client()
    file_id = upload(client, echo_lines(20, model="m1")).get_json()["id"]
    batch_id = create_batch(client, file_id).get_json()["id"]
    wait_batch(client, batch_id, statuses=("in_progress",))
    now[0] += 86_401
    batch = wait_batch(client, batch_id)
    assert batch["status"] == "expired"
    wait_until(lambda: receiver.deliveries, what="the expired event")
    event = receiver.deliveries[0].event
    assert receiver.deliveries[0].verified_with == [secret]
    assert (event.type, event.data.id, event.created_at) == (
        "batch.expired",
        batch_id,
        batch["expired_at"],
    )


def test_non_2xx_is_retried_until_the_window_closes(make_app, receivers, settings, capsys):
    flaky, broken = receivers(), receivers()
    _, secret = webhooks.add_endpoint(settings.data_dir, "proj-a", flaky.url)
    broken_id = webhooks.add_endpoint(settings.data_dir, "proj-a", broken.url)[0].id
    flaky.secrets, flaky.fail_next = [secret], 2  # 503, 503, then 200
    broken.secrets = []  # verifies nothing: answers 400 every time
    client = make_app(
        start=True,
        webhook_poll_interval=0.05,
        webhook_backoff=0.1,
        webhook_max_backoff=0.2,
        webhook_retry_window=3,
    ).test_client()
    batch_id = create_batch(client, upload(client, echo_lines(2)).get_json()["id"]).get_json()["id"]
    assert wait_batch(client, batch_id)["status"] == "completed"
    wait_until(lambda: len(flaky.deliveries) == 3, what="the third attempt")
    assert len({d.headers["webhook-id"] for d in flaky.deliveries}) == 1
    assert [d.verified_with for d in flaky.deliveries] == [[secret]] * 3
    wait_until(lambda: outbox_entries(settings.data_dir) == {}, what="the broken one given up")
    attempts = len(broken.deliveries)
    assert attempts >= 3
    time.sleep(0.5)  # an absence is checked over a window: an attempt, were there one
    assert len(broken.deliveries) == attempts  # no attempt after giving up
    out = zumik(capsys, settings.data_dir, "webhooks", "list")[1]
    last = out[out.index(next(x for x in out if x.startswith(broken_id))) + 2]
    assert f"attempt {attempts}: gave up: HTTP 400" in last


def test_receiver_down_then_slow_then_server_killed(gunicorn, receivers, tmp_path, capsys):
    """Down: retried with backoff until it is back. Slow: each attempt times out and is retried
    with the same webhook-id. SIGKILL of the whole server while an attempt is in flight: the
    restarted server delivers it."""
    data = tmp_path / "data"
    receiver = receivers(start=False)
    endpoint_id, secret = add_endpoint(capsys, data, "proj-a", receiver.url)
    receiver.secrets = [secret]
    env = {**FAST, "ZUMIK_WEBHOOK_TIMEOUT": "3"}
    server = gunicorn(env)
    first = server.start_batch(echo_lines(3))
    assert wait_status(server, first)["status"] == "completed"
    entry = wait_until(
        lambda: [e for e in outbox_entries(data).values() if e["attempts"] >= 3],
        what="three failed attempts",
    )[0]
    listed = zumik(capsys, data, "webhooks", "list")[1]
    assert "1 pending" in listed[1] and "failed: ClientConnectorError" in listed[2]
    receiver.start()  # back up
    wait_until(lambda: receiver.deliveries, what="delivery once the receiver is back")
    assert receiver.deliveries[0].headers["webhook-id"] == entry["webhook_id"]
    assert receiver.deliveries[0].event.data.id == first
    assert receiver.deliveries[0].verified_with == [secret]

    receiver.hanging = True  # slow: no answer within ZUMIK_WEBHOOK_TIMEOUT
    second = server.start_batch(echo_lines(3))
    assert wait_status(server, second)["status"] == "completed"
    wait_until(lambda: len(receiver.seen) >= 3, what="a retry after a timed-out attempt")
    server.kill_all()  # SIGKILL master and workers while that retry is in flight
    claims = [name for name in outbox_entries(data) if outbox.CLAIM_MARK in name]
    assert len(claims) == 1  # the dead worker's claim on the entry
    listed = zumik(capsys, data, "webhooks", "list")[1]
    assert "attempt 1: failed: timed out after 3 s" in listed[2]
    receiver.hanging = False
    gunicorn(env)  # same data dir
    wait_until(lambda: len(receiver.deliveries) >= 2, what="delivery after the restart")
    delivery = receiver.deliveries[1]
    assert delivery.event.data.id == second and delivery.verified_with == [secret]
    assert len(receiver.seen) == 4  # two attempts timed out, the third delivered
    assert set(receiver.seen[1:]) == {delivery.headers["webhook-id"]}  # one id throughout
    wait_until(lambda: outbox_entries(data) == {}, what="an empty outbox")


def test_rotation_both_secrets_sign_during_the_grace(gunicorn, receivers, tmp_path, capsys):
    data = tmp_path / "data"
    receiver = receivers()
    endpoint_id, old = add_endpoint(capsys, data, "proj-a", receiver.url)
    server = gunicorn(FAST, workers=1)

    def deliver_one() -> object:
        count = len(receiver.deliveries)
        server.start_batch(echo_lines(1))
        wait_until(lambda: len(receiver.deliveries) > count, what="a delivery")
        return receiver.deliveries[-1]

    receiver.secrets = [old]
    assert deliver_one().verified_with == [old]
    code, out = zumik(capsys, data, "webhooks", "rotate", endpoint_id, "--grace", "600")
    new = out[0]
    receiver.secrets = [old, new]
    during = deliver_one()  # both sign: a receiver with either secret verifies it
    assert during.verified_with == [old, new]
    assert during.headers["webhook-signature"].count("v1,") == 2
    newest = zumik(capsys, data, "webhooks", "rotate", endpoint_id, "--grace", "0")[1][0]
    receiver.secrets = [old, new, newest]
    after = deliver_one()  # no grace: only the newest secret signs
    assert after.verified_with == [newest]
