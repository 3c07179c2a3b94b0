"""The webhook outbox entry is written from the settled record, after the record update: never
from inside the update's change function, which runs again whenever another writer publishes
first (its first outcome may never be stored). And no kill can leave a terminal batch without
its entry: the active marker stays until the entry is written, the next claim settles it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import create_batch, echo_lines, settle, upload

from zumik.core.records import Status, move
from zumik.execution.finalize import Finalizing
from zumik.ops.metrics import Metrics
from zumik.webhooks import outbox
from zumik.webhooks import registry as webhooks


def entries(data_dir: Path) -> list[dict]:
    folder = outbox.outbox_dir(data_dir, "proj-a")
    return [json.loads(p.read_bytes()) for p in sorted(folder.glob("wh_*.json"))]


class Ending(Finalizing):
    """The finalize step alone, on a real store (what a BatchRun is made of)."""

    def __init__(self, app, batch_id: str) -> None:
        zumik = app.extensions["zumik"]
        self.settings, self.clock, self.metrics = zumik.settings, time.time, Metrics()
        self.store = zumik.store("proj-a")
        self.batch, self.batch_id = self.store.batch(batch_id), batch_id


def new_batch(app) -> str:
    client = app.test_client()
    file_id = upload(client, echo_lines(2)).get_json()["id"]
    return create_batch(client, file_id).get_json()["id"]


def test_an_outcome_the_retried_change_dropped_writes_no_entry(make_app, settings):
    webhooks.add_endpoint(settings.data_dir, "proj-a", "http://127.0.0.1:9/hook")
    app = make_app()
    batch_id = new_batch(app)
    ending = Ending(app, batch_id)
    calls = []

    def change(current: dict) -> bool:
        calls.append(current["status"])
        if len(calls) == 1:  # another writer publishes first: a cancel arrives
            ending.batch.doc.update(lambda r: move(r, Status.CANCELLING, int(time.time())))
            return True  # (this first outcome is never stored: its version is taken)
        return current["status"] == Status.VALIDATING

    record = ending.make_terminal(Status.COMPLETED, change)
    assert calls == ["validating", "cancelling"]  # the change ran again on the newer version
    assert record["status"] == "cancelling"
    assert entries(settings.data_dir) == []  # no "batch.completed" for a batch not ended
    assert ending.batch.is_marked_active()


def test_the_entry_is_built_from_the_record_as_stored(make_app, settings):
    webhooks.add_endpoint(settings.data_dir, "proj-a", "http://127.0.0.1:9/hook")
    app = make_app()
    batch_id = new_batch(app)
    record = Ending(app, batch_id).make_terminal(Status.FAILED, lambda current: None)
    [entry] = entries(settings.data_dir)
    assert entry["type"] == "batch.failed" and entry["batch_id"] == batch_id
    assert entry["body"] == outbox.event_body(record)
    assert json.loads(entry["body"])["created_at"] == record["failed_at"]
    assert not app.extensions["zumik"].store("proj-a").batch(batch_id).is_marked_active()


def test_a_kill_after_the_terminal_record_is_settled_by_the_next_claim(make_app, settings):
    """The finisher died after storing the terminal record and before writing the entry: the
    batch is still marked active; the next executor claims it and writes the entry then."""
    webhooks.add_endpoint(settings.data_dir, "proj-a", "http://127.0.0.1:9/hook")
    app = make_app()
    batch_id = new_batch(app)
    handle = app.extensions["zumik"].store("proj-a").batch(batch_id)
    now = int(time.time())
    stored = handle.update(lambda r: move(r, Status.COMPLETED, now), keep_active=True)
    assert entries(settings.data_dir) == [] and handle.is_marked_active()  # ...the kill
    settle(app.test_client())  # the next executor
    [entry] = entries(settings.data_dir)
    assert entry["type"] == "batch.completed" and entry["body"] == outbox.event_body(stored)
    assert not handle.is_marked_active()
