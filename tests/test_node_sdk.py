"""Smoke test with the official ``openai`` Node SDK (npm): upload, batch, poll, download.

Runs when ``node`` and ``npm`` are on the machine (the npm registry is reachable from CI); when
they are not, the test is skipped with that reason, so the CI log says so."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import KEY_A, ROOT

pytestmark = pytest.mark.slow  # the Node SDK against real gunicorn

NODE_DIR = ROOT / "tests" / "node"


def test_node_sdk_smoke(gunicorn):
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node/npm not installed: the Node SDK smoke test did not run")
    if not (NODE_DIR / "node_modules" / "openai").exists():
        install = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert install.returncode == 0, install.stderr[-2000:]
    server = gunicorn()
    result = subprocess.run(
        ["node", "smoke.mjs"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": shutil.os.environ["PATH"],
            "ZUMIK_URL": server.url + "/v1",
            "ZUMIK_KEY": KEY_A,
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["counts"]["completed"] == 3
