"""Real batch clients against Zumik on real gunicorn, each in its own process as a user runs it:
litellm's batch functions and bespokelabs-curator's batch mode (the ``compat`` extra, pinned),
each with a batch where every line succeeds and one where the provider answers 400 for one
line. They must finish without crashing and count the failed line once.

Offline, honestly: the libraries get only the switches they document for working without the
network (``LITELLM_LOCAL_MODEL_COST_MAP``: litellm's bundled model cost map instead of fetching
it at import; curator's ``TELEMETRY_ENABLED=false``; Hugging Face's ``HF_HUB_OFFLINE`` /
``HF_DATASETS_OFFLINE`` for the datasets library curator writes its results with), and every
HTTP(S) proxy variable points at a recorder that refuses and logs any request meant for
anywhere but loopback: the test asserts it saw none.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import KEY_A
from fake_provider import free_port

pytestmark = pytest.mark.slow  # real batch clients in their own venv against real gunicorn

CLIENTS = Path(__file__).parent / "compat"
ROOT = Path(__file__).resolve().parent.parent
# The clients' own venv (.ci/run: python3 -m venv .venv-compat; pip install -e '.[compat]'),
# else this interpreter when it has them.
PYTHON = os.environ.get("ZUMIK_COMPAT_PYTHON") or next(
    (str(p) for p in [ROOT / ".venv-compat" / "bin" / "python"] if p.exists()), sys.executable
)
PACKAGES = {"litellm": "litellm", "curator": "bespokelabs.curator"}


class RecordingProxy:
    """An HTTP proxy that forwards nothing: it records each request line and answers 403."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.seen: list[str] = []
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    first = conn.recv(4096).split(b"\r\n", 1)[0]
                    self.seen.append(first.decode("latin-1"))
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def proxy():
    recorder = RecordingProxy()
    yield recorder
    recorder.close()


def require(name: str) -> None:
    probe = subprocess.run(
        [
            PYTHON,
            "-c",
            f"import importlib.util as u, sys; sys.exit(u.find_spec({PACKAGES[name]!r}) is None)",
        ],
        capture_output=True,
    )
    if probe.returncode != 0:
        message = (
            f"{name} is not installed for {PYTHON}: python3 -m venv .venv-compat && "
            ".venv-compat/bin/pip install -e '.[compat]'"
        )
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs the extra: never hide a broken client there
        pytest.skip(message)


def run_client(script: str, server, proxy: RecordingProxy, tmp_path: Path, scenario: str) -> dict:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "TELEMETRY_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(home / "hf"),
        "CURATOR_CACHE_DIR": str(tmp_path / "curator"),
        "OPENAI_API_KEY": KEY_A,
        **{
            name: proxy.url
            for name in (
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "ALL_PROXY",
                "http_proxy",
                "https_proxy",
                "all_proxy",
            )
        },
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    done = subprocess.run(
        [
            PYTHON,
            str(CLIENTS / script),
            server.url + "/v1",
            KEY_A,
            "served-model",
            str(tmp_path),
            scenario,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\ncompat: {script} {scenario}: {json.dumps(summary)}")
    assert proxy.seen == [], f"{script} tried to reach the network: {proxy.seen}"
    return summary


@pytest.fixture
def server(gunicorn, provider):
    return gunicorn({"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_RETRY_BACKOFF": "0.01"}, workers=1)


@pytest.mark.parametrize("scenario", ["ok", "one_fails"])
def test_litellm_batch_functions(server, proxy, tmp_path, scenario):
    require("litellm")
    result = run_client("litellm_batch.py", server, proxy, tmp_path, scenario)
    assert result["status"] == "completed"
    if scenario == "ok":
        assert result["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
        assert result["failed"] == [] and len(result["succeeded"]) == 3
    else:
        assert result["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
        assert result["failed"] == ["request-1"]  # once, not once per file
        assert sorted(result["succeeded"]) == ["request-0", "request-2"]
    assert result["usage_total_tokens"] > 0


@pytest.mark.parametrize("scenario", ["ok", "one_fails"])
def test_curator_batch_mode(server, proxy, tmp_path, scenario):
    require("curator")
    result = run_client("curator_batch.py", server, proxy, tmp_path, scenario)
    assert result["total"] == 3
    if scenario == "ok":
        assert (result["succeeded"], result["failed"]) == (3, 0)
        assert sorted(result["rows"]) == ["first", "second", "third"]
    else:
        # curator re-submits the failed request once (max_retries=1); it fails again and is
        # counted once
        assert (result["succeeded"], result["failed"]) == (2, 1)
        assert sorted(result["rows"]) == ["first", "third"]
    assert result["tokens"] > 0
