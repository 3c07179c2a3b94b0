"""Shared fixtures: settings on ``tmp_path``, the app and its client, a fake provider, and a
real gunicorn server for end-to-end tests."""

from __future__ import annotations

import asyncio
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


TERMINAL = ("completed", "failed", "cancelled", "expired")


def wait_until(
    condition: Callable[[], Any],
    timeout: float = 30.0,
    what: str = "the condition",
    interval: float = 0.05,
    retry_on: tuple[type[BaseException], ...] = (),
) -> Any:
    """Poll ``condition()`` until it returns something truthy, and return that; fail naming
    ``what`` (and the last value seen) after ``timeout`` seconds. Exceptions of the types in
    ``retry_on`` (a server not up yet) count as "not yet". The one wait loop of the suite:
    wait on a condition with a deadline, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
        except retry_on as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def wait_healthy(
    url: str,
    timeout: float = 30.0,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    **get: Any,
) -> None:
    """Wait until ``GET url`` answers 200 (a server we started is up); fail at once, with the
    tail of ``log``, if ``proc`` exits meanwhile."""

    def up() -> bool:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"the server exited ({proc.returncode}) before {url}: {tail}")
        try:
            return requests.get(url, timeout=2, **get).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(up, timeout, f"{url} to answer 200", interval=0.1)
    except AssertionError:
        tail = log.read_text(errors="replace")[-3000:] if log else ""
        raise RuntimeError(f"the server did not come up at {url}: {tail}") from None


def wait_batch(
    client,
    batch_id: str,
    statuses=TERMINAL,
    timeout: float = 30.0,
    auth: dict[str, str] = AUTH_A,
) -> dict[str, Any]:
    """Through the Flask test client: the batch once its status is one of ``statuses``."""
    return wait_until(
        lambda: (lambda r: r if r["status"] in statuses else None)(
            client.get(f"/v1/batches/{batch_id}", headers=auth).get_json()
        ),
        timeout,
        f"batch {batch_id} to reach {statuses}",
    )


def output_lines(client, file_id: str, auth: dict[str, str] = AUTH_A) -> list[dict[str, Any]]:
    data = client.get(f"/v1/files/{file_id}/content", headers=auth).data
    return [json.loads(line) for line in data.splitlines()]


async def drive(executor) -> None:
    """Run the executor in this thread, step by step, until no batch is left to run."""
    async with executor.opened():
        await executor.run_until_idle()


def settle(client) -> None:
    """For an app made without the executor thread: run every pending batch to its end here,
    in this thread (``run_until_idle``), instead of starting the thread and polling."""
    asyncio.run(drive(client.application.extensions["zumik"].executor))


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
        self._log_file.flush()
        wait_healthy(self.url + "/healthz", timeout, self.proc, self.log)
        return self

    # -- the API over HTTP, for tests on a real server -------------------------------------
    def api(
        self, method: str, path: str, auth: dict[str, str] = AUTH_A, **kwargs: Any
    ) -> requests.Response:
        """One request to this server's API (timed out, as every test request must be)."""
        kwargs.setdefault("timeout", 30)
        return requests.request(method, self.url + path, headers=auth, **kwargs)

    def start_batch(self, content: bytes, auth: dict[str, str] = AUTH_A, **extra: Any) -> str:
        """Upload ``content`` and start a chat-completions batch over it; the batch id."""
        uploaded = self.api(
            "POST",
            "/v1/files",
            auth,
            files={"file": ("in.jsonl", content)},
            data={"purpose": "batch"},
        )
        assert uploaded.status_code == 200, uploaded.text
        body = {
            "input_file_id": uploaded.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            **extra,
        }
        created = self.api("POST", "/v1/batches", auth, json=body)
        assert created.status_code == 200, created.text
        return created.json()["id"]

    def batch(self, batch_id: str, auth: dict[str, str] = AUTH_A) -> dict[str, Any]:
        answer = self.api("GET", f"/v1/batches/{batch_id}", auth)
        assert answer.status_code == 200, f"{self.url}: {answer.status_code} {answer.text}"
        return answer.json()

    def wait_batch(
        self,
        batch_id: str,
        statuses: tuple[str, ...] = TERMINAL,
        timeout: float = 60.0,
        auth: dict[str, str] = AUTH_A,
    ) -> dict[str, Any]:
        """The batch once its status is one of ``statuses`` (a server restarting meanwhile
        counts as "not yet")."""
        return wait_until(
            lambda: (lambda r: r if r["status"] in statuses else None)(self.batch(batch_id, auth)),
            timeout,
            f"batch {batch_id} to reach {statuses}",
            interval=0.1,
            retry_on=(requests.RequestException,),
        )

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
    try:
        wait_until(
            lambda: stat.read_text().rpartition(")")[2].split()[0] == "Z",
            10,
            "the child to become a zombie",
            interval=0.01,
        )
        yield process.pid
    finally:
        process.wait()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on a real gunicorn server is slow (seconds to start): marked so without anyone
    having to remember it, so `pytest -m "not slow"` stays a fast loop."""
    for item in items:
        if "gunicorn" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


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
