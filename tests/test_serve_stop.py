"""Stopping ``zumik serve`` as a user does: Ctrl-C (SIGINT to the whole process group)
mid-batch ends every process within a few seconds, on real gunicorn started by ``zumik serve``.
The hang it once had (1 stop in 8): gthread's SIGINT/SIGQUIT handler shuts its thread pool
down inside the signal handler, which deadlocks when the signal lands while the main thread
holds the pool's lock in ``submit``."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import types
from concurrent import futures

import pytest
import requests
from conftest import AUTH_A, Server, jsonl, request_line

from zumik.serve.worker import ZumikWorker

STOP_WITHIN = 15.0


class ZumikServe(Server):
    """``zumik serve`` (which execs gunicorn) in a session of its own."""

    signal_group = True

    def gunicorn_command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "zumik.cli",
            "serve",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]


def api(server, method: str, path: str, **kwargs):
    return requests.request(method, server.url + path, headers=AUTH_A, timeout=30, **kwargs)


def started_batch(server, lines: int) -> str:
    content = jsonl([request_line(f"r{i}", f"message {i}", "m") for i in range(lines)])
    file_id = api(server, "POST", "/v1/files", files={"file": ("in.jsonl", content)}).json()["id"]
    return api(
        server,
        "POST",
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
    ).json()["id"]


def wait_running(server, batch_id: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        batch = api(server, "GET", f"/v1/batches/{batch_id}").json()
        if batch["request_counts"]["completed"] > 0:
            return
        time.sleep(0.1)
    raise AssertionError("the batch never started")


def stop_takes(server, sig: int) -> float:
    """Send ``sig`` to the server's process group; seconds until every process of it ended."""
    assert server.proc is not None
    pgid = server.proc.pid
    started = time.monotonic()
    os.killpg(pgid, sig)
    deadline = started + 60
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)  # anyone left in the group?
        except ProcessLookupError:
            break
        if server.proc.poll() is not None and not _group_alive(pgid):
            break
        time.sleep(0.05)
    took = time.monotonic() - started
    server.proc.wait(5)
    return took


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_mid_batch(tmp_path, provider, sig: int, tries: int) -> list[float]:
    requests.post(provider.url.replace("/v1", "/_control"), json={"latency": 0.05}, timeout=5)
    env = {"ZUMIK_UPSTREAM_URL": provider.url, "ZUMIK_CONCURRENCY": "16"}
    took = []
    for attempt in range(tries):
        server = ZumikServe(tmp_path / f"data{attempt}", env, workers=2).start()
        try:
            wait_running(server, started_batch(server, 3000))
            took.append(stop_takes(server, sig))
        finally:
            server.stop(signal.SIGKILL)
    print(f"\nstop by {signal.Signals(sig).name} took (s):", [round(t, 2) for t in took])
    return took


def test_ctrl_c_of_zumik_serve_mid_batch_ends_within_15_s(tmp_path, provider):
    took = stop_mid_batch(tmp_path, provider, signal.SIGINT, 2)
    assert max(took) < STOP_WITHIN, took


def test_sigterm_of_zumik_serve_mid_batch_ends_within_15_s(tmp_path, provider):
    took = stop_mid_batch(tmp_path, provider, signal.SIGTERM, 2)
    assert max(took) < STOP_WITHIN, took


@pytest.mark.slow
def test_ctrl_c_of_zumik_serve_mid_batch_20_of_20(tmp_path, provider):
    took = stop_mid_batch(tmp_path, provider, signal.SIGINT, 20)
    assert sum(t < STOP_WITHIN for t in took) == 20, took


def test_the_quit_handler_takes_no_lock_the_interrupted_thread_may_hold():
    """The signal handler runs in the main thread between two bytecodes, here while it holds
    the thread pool's lock (inside ``submit``): it must end the worker, not wait for that
    lock forever; and the master's SIGQUIT after the terminal's SIGINT changes nothing."""
    worker = object.__new__(ZumikWorker)
    worker.tpool = futures.ThreadPoolExecutor(1)
    worker.cfg = types.SimpleNamespace(worker_int=lambda _: None)
    worker.alive = True
    ended: list[str] = []

    def interrupted_inside_submit() -> None:
        with worker.tpool._shutdown_lock:  # what submit holds
            try:
                worker.handle_quit(signal.SIGINT, None)
            except SystemExit:
                ended.append("exit")
            ended.append(repr(worker.handle_quit(signal.SIGQUIT, None)))

    thread = threading.Thread(target=interrupted_inside_submit, daemon=True)
    thread.start()
    thread.join(5)
    assert ended == ["exit", "None"], "the handler waited for the pool's lock"
    assert worker.alive is False
    worker.tpool.shutdown()
