"""The README's quick start as a newcomer runs it: `zumik serve` with built-in defaults in an
empty folder (./data, no keys, no provider), the key it prints, then a batch through the CLI
with zumik-echo and the results downloaded."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import echo_lines, wait_healthy
from fake_provider import free_port

pytestmark = pytest.mark.slow  # `zumik serve` and the CLI as subprocesses


def test_quick_start_defaults_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZUMIK_", "OPENAI_"))}
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "zumik.cli", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url + "/healthz", 30, server, log)
        printed = log.read_text()
        key = re.search(r"zk_[A-Za-z0-9_-]+", printed).group(0)
        # the first lines say where the data is, the URL, the workers and the provider
        assert printed.startswith(f"zumik: data dir:  {tmp_path / 'data'}\n"), printed
        assert f"http://127.0.0.1:{port}/" in printed and "workers:   2" in printed
        assert "zumik-echo answers" in printed
        (tmp_path / "requests.jsonl").write_bytes(echo_lines(20))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "zumik.cli",
                "batch",
                "--interval",
                "0.2",
                "run",
                "requests.jsonl",
                "--out",
                "results.jsonl",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={**env, "OPENAI_BASE_URL": url + "/v1", "OPENAI_API_KEY": key},
        )
        assert done.returncode == 0, done.stderr
        assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 20
        assert (tmp_path / "data" / "default" / "files").is_dir()  # ./data, as documented
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
