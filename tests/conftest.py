"""Shared fixtures: settings on ``tmp_path``, the app and its client, a fake provider, and a
real gunicorn server for end-to-end tests."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

sys.path.insert(0, str(Path(__file__).parent))

from fake_provider import ProviderThread, free_port  # noqa: E402

from zumik import create_app  # noqa: E402
from zumik.settings import Settings, load_settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KEY_A, KEY_B = "key-a", "key-b"
AUTH_A = {"Authorization": f"Bearer {KEY_A}"}
AUTH_B = {"Authorization": f"Bearer {KEY_B}"}


def request_line(
    custom_id: str, content: str = "hello", model: str = "zumik-echo", **body: Any
) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": content}], **body},
    }


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def echo_lines(n: int, model: str = "zumik-echo", prefix: str = "r") -> bytes:
    return jsonl([request_line(f"{prefix}{i}", f"message {i}", model) for i in range(n)])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        {},
        data_dir=tmp_path / "data",
        api_keys={KEY_A: "proj-a", KEY_B: "proj-b"},
        poll_interval=0.05,
    )


@pytest.fixture
def make_app(settings: Settings) -> Iterator[Callable[..., Any]]:
    apps = []

    def build(clock: Callable[[], float] = time.time, start: bool = False, **overrides: Any):
        app = create_app(settings.replace(**overrides), clock=clock, start_executor=start)
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["zumik"].executor.stop()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def upload(
    client, content: bytes, auth: dict[str, str] = AUTH_A, filename: str = "in.jsonl", **fields: str
):
    data = {"file": (io.BytesIO(content), filename), **fields}
    return client.post("/v1/files", headers=auth, data=data, content_type="multipart/form-data")


def create_batch(client, file_id: str, auth: dict[str, str] = AUTH_A, **extra: Any):
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        **extra,
    }
    return client.post("/v1/batches", headers=auth, json=body)


def wait_batch(
    client,
    batch_id: str,
    statuses=("completed", "failed", "cancelled", "expired"),
    timeout: float = 30.0,
    auth: dict[str, str] = AUTH_A,
) -> dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        record = client.get(f"/v1/batches/{batch_id}", headers=auth).get_json()
        if record["status"] in statuses:
            return record
        if time.time() > deadline:
            raise AssertionError(f"batch still {record['status']}: {record}")
        time.sleep(0.05)


def output_lines(client, file_id: str, auth: dict[str, str] = AUTH_A) -> list[dict[str, Any]]:
    data = client.get(f"/v1/files/{file_id}/content", headers=auth).data
    return [json.loads(line) for line in data.splitlines()]


async def drive(executor) -> None:
    """Run the executor in this thread, step by step, until no batch is left to run."""
    async with executor.opened():
        await executor.run_until_idle()


@pytest.fixture
def provider() -> Iterator[ProviderThread]:
    thread = ProviderThread().start()
    yield thread
    thread.stop()


# -- real gunicorn ------------------------------------------------------------------------------
class Server:
    """A gunicorn master running Zumik on a free port."""

    def __init__(self, data_dir: Path, env: dict[str, str], workers: int = 2) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "ZUMIK_DATA_DIR": str(data_dir),
            "ZUMIK_API_KEYS": f"{KEY_A}=proj-a,{KEY_B}=proj-b",
            "ZUMIK_POLL_INTERVAL": "0.1",
            **env,
        }
        self.workers = workers
        self.log = data_dir.parent / f"gunicorn-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    signal_group = False  # stop signals the whole process group (a master in a namespace)

    def gunicorn_command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:zumik.serve.gunicorn_conf",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            "--graceful-timeout",
            "10",
            "zumik.serve.wsgi:app",
        ]

    def start(self) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self._launch(self.gunicorn_command())

    def _launch(self, cmd: list[str], timeout: float = 30) -> Server:
        """Start ``cmd`` in a session of its own, logging to ``self.log``; wait for /healthz."""
        self._log_file = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd,
            env=self.env,
            cwd=ROOT,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not start: {self.log.read_text()[-3000:]}")

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid in out.split()]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                (os.killpg if self.signal_group else os.kill)(self.proc.pid, sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if hasattr(self, "_log_file"):
            self._log_file.close()

    def kill_all(self) -> None:
        """SIGKILL the master and every worker at once (the whole server dies)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@contextlib.contextmanager
def unreaped_zombie() -> Iterator[int]:
    """The pid of a process that has exited but is not reaped yet, as a worker SIGKILLed with
    its master stays until init reaps it (on some hosts never); reaped on exit."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{process.pid}/stat")
    deadline = time.time() + 10
    try:
        while stat.read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.time() < deadline
            time.sleep(0.01)
        yield process.pid
    finally:
        process.wait()


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(
        env: dict[str, str] | None = None, workers: int = 2, data_dir: Path | None = None
    ) -> Server:
        server = Server(data_dir or tmp_path / "data", env or {}, workers).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
