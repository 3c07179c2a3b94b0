"""A real webhook receiver for tests: an HTTP server that checks every delivery with the
official openai SDK (``client.webhooks.unwrap``) and records what it got.

It listens only between ``start()`` and ``stop()`` (a receiver that is down refuses the
connection) and always on the same port. While ``hanging`` is set, requests get no answer
until ``stop()`` (a slow receiver; they are counted in ``seen`` but never become deliveries);
``fail_next`` answers that many with 503. ``reply_body`` and ``reply_headers`` are sent with
every answer (a hostile receiver: a gzip bomb, a huge body).
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
from fake_provider import free_port


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    verified_with: list[str]  # the secrets the SDK accepted it with
    event: Any  # what unwrap returned (None when no secret verified it)


class Receiver:
    def __init__(self, secrets: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.secrets = list(secrets or [])
        self.deliveries: list[Delivery] = []
        self.seen: list[str] = []  # the webhook-id of every request, answered or not
        self.fail_next = 0
        self.hanging = False
        self.reply_body = b""
        self.reply_headers: dict[str, str] = {}
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.sdk = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")

    def start(self) -> Receiver:
        receiver = self
        self._release.clear()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.seen.append(self.headers.get("webhook-id", ""))
                if receiver.hanging:
                    receiver._release.wait(60)
                    return
                status = receiver._record(dict(self.headers.items()), body)
                self.send_response(status)
                for name, value in receiver.reply_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(receiver.reply_body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the sender may hang up mid-body
                    self.wfile.write(receiver.reply_body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def unwrap(self, body: bytes, headers: dict[str, str], secret: str) -> Any:
        """The SDK's own check and parse; raises InvalidWebhookSignatureError when it refuses."""
        return self.sdk.webhooks.unwrap(body, headers, secret=secret)

    def _record(self, headers: dict[str, str], body: bytes) -> int:
        verified, event = [], None
        for secret in self.secrets:
            try:
                event = self.unwrap(body, headers, secret)
                verified.append(secret)
            except openai.InvalidWebhookSignatureError:
                pass
        with self._lock:
            self.deliveries.append(Delivery(headers, body, verified, event))
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503
        return 200 if verified else 400

    def events(self) -> list[dict[str, Any]]:
        """The body of every delivery, parsed."""
        return [json.loads(d.body) for d in self.deliveries]
