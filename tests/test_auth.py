"""Keys: bearer and x-api-key, hashed storage, revocation without restart, the keys command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from zumik.storage.keys import create_key, hash_key, list_keys, revoke_key


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic a2V5LWE="},
        {"Authorization": "Bearer "},
        {"x-api-key": "wrong"},
    ],
)
def test_missing_or_wrong_key_is_401(client, headers):
    response = client.get("/v1/files", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_api_key"


def test_x_api_key_header_works(client):
    assert client.get("/v1/files", headers={"x-api-key": "key-a"}).status_code == 200


def test_stored_keys_are_hashed_and_revocable_live(client, settings):
    key = create_key(settings.data_dir, "team-x")
    assert key.startswith("zk_")
    stored = "".join(p.read_text() for p in settings.data_dir.glob("keys*.json"))
    assert key not in stored and hash_key(key) in stored
    assert client.get("/v1/files", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    [entry] = list_keys(settings.data_dir)
    assert entry["project"] == "team-x" and key not in json.dumps(entry)
    assert revoke_key(settings.data_dir, entry["id"]) == 1
    assert client.get("/v1/files", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_invalid_project_names_are_refused(settings):
    for name in ("../x", "a/b", ".hidden", "", "x" * 65):
        with pytest.raises(ValueError):
            create_key(settings.data_dir, name)


@pytest.mark.slow
def test_keys_command(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "zumik.cli", "--data-dir", str(tmp_path), "keys", *args],
            capture_output=True,
            text=True,
        )

    created = run("create", "proj1")
    assert created.returncode == 0
    key = created.stdout.strip()
    assert key.startswith("zk_")
    listed = run("list")
    assert "proj1" in listed.stdout and key not in listed.stdout
    assert run("revoke", key).returncode == 0
    assert "proj1" not in run("list").stdout
    assert run("create", "../etc").returncode == 2
