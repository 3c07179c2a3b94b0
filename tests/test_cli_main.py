"""The ``zumik`` command's own help, ``keys list`` and the lines ``zumik serve`` starts with."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zumik.cli import main as cli
from zumik.execution.routing import Router
from zumik.settings import load_settings
from zumik.storage.keys import create_key


def help_of(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "zumik.cli", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_help_is_plain_text_and_serve_shows_its_defaults():
    top = help_of()
    assert "``" not in top and "batch run|estimate|status|list|cancel|download" in top
    serve = help_of("serve")
    assert "(default: $ZUMIK_HOST or 127.0.0.1" in serve and "$ZUMIK_PORT or 8080)" in serve
    assert "$ZUMIK_WORKERS or 2)" in serve and "worker processes" in serve


def test_keys_list_shows_times_sorted(tmp_path, capsys, monkeypatch):
    clock = iter([1_800_000_100.0, 1_800_000_000.0])
    monkeypatch.setattr("time.time", lambda: next(clock))
    create_key(tmp_path, "later")  # made first, with the later time
    create_key(tmp_path, "earlier")
    monkeypatch.undo()
    assert cli.main(["--data-dir", str(tmp_path), "keys", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["id", "project"]
    assert "earlier" in lines[1] and "2027-01-15 08:00:00" in lines[1]
    assert "later" in lines[2] and "2027-01-15 08:01:40" in lines[2]


@pytest.mark.parametrize("keys", [False, True])
def test_serve_starts_by_saying_what_it_uses(tmp_path, capsys, keys):
    if keys:
        create_key(tmp_path, "default")
    settings = load_settings({}, data_dir=tmp_path)
    cli._banner(settings, Router.from_settings(settings), "0.0.0.0", 8123, 3)
    err = capsys.readouterr().err
    assert f"data dir:  {tmp_path.absolute()}" in err
    assert "http://127.0.0.1:8123/" in err and "workers:   3" in err
    assert "none: zumik-echo answers" in err
    assert (f"keys:      {tmp_path.absolute() / 'keys.json'}" in err) is keys
