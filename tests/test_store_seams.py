"""The store's seams: one way to build a ``ProjectStore`` (``ProjectStore.open``), and ids
checked by the store rather than by each caller."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from conftest import AUTH_A, create_batch, echo_lines, upload

import zumik
from zumik.core.records import Status, move
from zumik.storage.store import ProjectStore


def test_zumik_builds_a_project_store_one_way():
    package = Path(zumik.__file__).parent
    builders = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if re.search(r"(?<!class )\bProjectStore\(", path.read_text())
    )
    assert builders == [], builders  # every caller: ProjectStore.open(settings, project, ...)


def test_the_api_view_hides_a_record_past_its_ttl_the_workers_view_does_not(make_app, settings):
    client = make_app().test_client()
    file_id = upload(client, echo_lines(1)).get_json()["id"]
    batch_id = create_batch(client, file_id).get_json()["id"]
    long_ago = int(time.time()) - settings.batch_ttl - 10
    ProjectStore.open(settings, "proj-a").update_batch(
        batch_id, lambda r: move(r, Status.CANCELLED, long_ago)
    )
    assert ProjectStore.open(settings, "proj-a", api_view=True).get_batch(batch_id) is None
    assert client.get(f"/v1/batches/{batch_id}", headers=AUTH_A).status_code == 404
    assert ProjectStore.open(settings, "proj-a").get_batch(batch_id)["status"] == "cancelled"


def test_the_store_refuses_malformed_ids(settings):
    store = ProjectStore.open(settings, "proj-a").ensure()
    (store.root / "keys.json").write_text("{}")  # what a path trick would reach
    (store.files_dir / "..json").write_text("{}")
    for bad in ("../keys", ".", "", "file-../../keys", "batch_x/../../keys", "file-ZZ"):
        assert store.get_file(bad) is None, bad
        assert store.get_batch(bad) is None, bad
        assert store.delete_file(bad) is False, bad
    (store.active_dir / ".tmp-stray").write_text("")
    (store.active_dir / "notes").write_text("")
    assert store.active_ids() == []  # stray names in active/ are not batches


def test_callers_pass_ids_through_and_get_404(client):
    for path in ("/v1/files/not-an-id", "/v1/files/file-..", "/v1/batches/batch_%2e%2e"):
        answer = client.get(path, headers=AUTH_A)
        assert answer.status_code == 404, path
        assert answer.get_json()["error"]["type"] == "invalid_request_error"
    assert client.delete("/v1/files/not-an-id", headers=AUTH_A).status_code == 404


def test_upload_sessions_refuse_a_malformed_id(settings):
    from zumik.core.exceptions import NotFound
    from zumik.storage.upload_sessions import UploadSessions

    sessions = UploadSessions(ProjectStore.open(settings, "proj-a").ensure(), settings)
    for bad in ("../../keys", "upload_x/../y", ""):
        with pytest.raises(NotFound):
            sessions.get(bad)
