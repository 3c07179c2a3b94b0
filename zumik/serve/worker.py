"""Zumik's gunicorn worker: gthread, defended against slow clients.

gthread gives each connection a pool thread while it reads the request; 20 clients sending
headers at 1 byte/s, or a stalled upload and a few downloaders that never read, held every
thread and every other tenant waited. Here:

- the request head (request line and headers) is read by the worker's event loop, without a
  thread, and a connection that has not sent all of it within ``ZUMIK_HEADER_TIMEOUT`` seconds
  is closed; a thread is given only to a complete head (kept-alive connections too);
- while a thread serves a request, each blocking read or write waits at most
  ``ZUMIK_CLIENT_TIMEOUT`` seconds, and past that long the body and the response together must
  have moved ``ZUMIK_CLIENT_MIN_RATE`` bytes per second on average; a slower client is cut off
  (the app sees a disconnect, answered 400; a download simply stops);
- ``ZUMIK_THREADS`` (32) threads per worker, so slow transfers that are still within the
  limits leave threads for everyone else.

Under TLS terminated by gunicorn itself (``--certfile``) the head is read by the thread, as in
plain gthread; put nginx in front instead (docs/deploy.md).
"""

from __future__ import annotations

import collections
import errno
import selectors
import socket
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

from zumik.serve.error_pages import JsonErrorPages

MAX_HEAD = 64 * 1024  # past this much without the blank line, a thread takes over (431 there)
SEND_PIECE = 256 * 1024


class ClientTooSlow(TimeoutError):
    """The client moved its body or response slower than ``ZUMIK_CLIENT_MIN_RATE``."""


@dataclass(frozen=True)
class ClientLimits:
    """How long and how slowly a client may keep a connection busy."""

    header_timeout: float = 10.0
    io_timeout: float = 30.0
    min_rate: float = 1024.0

    @classmethod
    def from_app(cls, app: Any) -> ClientLimits:
        zumik = getattr(app, "extensions", {}).get("zumik")
        if zumik is None:
            from zumik.settings import load_settings

            settings = load_settings()
        else:
            settings = zumik.settings
        return cls(settings.header_timeout, settings.client_timeout, settings.client_min_rate)


class ClientSocket(socket.socket):
    """A client connection whose blocking mode has a timeout and a minimum average rate."""

    limits: ClientLimits
    too_slow: bool

    @classmethod
    def adopt(cls, sock: socket.socket, limits: ClientLimits) -> ClientSocket:
        new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        new.limits, new.too_slow = limits, False
        new.mark()
        return new

    def mark(self) -> None:
        """Start measuring the rate (a thread starts serving a request)."""
        self._since, self._moved = time.monotonic(), 0

    def setblocking(self, flag: bool) -> None:
        if flag:  # gunicorn's threads use blocking mode: bound every wait
            self.settimeout(self.limits.io_timeout)
        else:
            super().setblocking(False)

    def _account(self, count: int) -> None:
        if self.gettimeout() == 0.0:  # the event loop's non-blocking reads
            return
        self._moved += count
        elapsed = time.monotonic() - self._since
        if elapsed > self.limits.io_timeout and self._moved < self.limits.min_rate * elapsed:
            self.too_slow = True
            raise ClientTooSlow(
                f"{self._moved} bytes in {elapsed:.0f} s is below {self.limits.min_rate:g} bytes/s"
            )

    def _timed(self, call, *args):
        if self.too_slow:
            raise ClientTooSlow("connection already cut off as too slow")
        try:
            return call(*args)
        except TimeoutError:
            self.too_slow = True
            raise

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = self._timed(super().recv, bufsize, flags)
        self._account(len(data))
        return data

    def sendall(self, data, flags: int = 0) -> None:
        # In pieces: socket.sendall's timeout bounds the whole call, not each wait.
        view = memoryview(data).cast("B")
        while view:
            sent = self._timed(super().send, view[:SEND_PIECE], flags)
            view = view[sent:]
            self._account(sent)

    def sendfile(self, file, offset: int = 0, count: int | None = None) -> int:
        total = 0
        while count is None or total < count:
            step = SEND_PIECE if count is None else min(SEND_PIECE, count - total)
            sent = self._timed(super().sendfile, file, offset + total, step)
            if not sent:
                break
            total += sent
            self._account(sent)
        return total


class ClientConn(TConn):
    """A gthread connection that collects its request head in the event loop."""

    def __init__(self, cfg, sock, client, server) -> None:
        super().__init__(cfg, sock, client, server)
        self.head: bytearray | None = None

    def close(self, graceful: bool = False) -> None:
        # A graceful close lingers up to 2 s on the event loop's thread: not for a slow peer.
        too_slow = getattr(self.sock, "too_slow", False)
        super().close(graceful=graceful and not too_slow)


class ZumikWorker(JsonErrorPages, ThreadWorker):
    """gthread with the slow-client defences described in the module docstring, answering
    gunicorn's own errors (400, 414, 431) in the JSON envelope (``zumik.serve.error_pages``)."""

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.limits = ClientLimits.from_app(self.wsgi)
        self.heads: collections.deque[ClientConn] = collections.deque()

    # -- the event loop's side ---------------------------------------------------------------
    def accept(self, listener) -> None:
        try:
            client, addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = ClientConn(
            self.cfg, ClientSocket.adopt(client, self.limits), addr, listener.getsockname()
        )
        if self.cfg.is_ssl:
            self.enqueue_req(conn)
        else:
            self._await_head(conn)

    def on_client_socket_readable(self, conn, client) -> None:
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        if self.cfg.is_ssl or not isinstance(conn, ClientConn):
            self.enqueue_req(conn)
        else:
            self._await_head(conn)

    def _await_head(self, conn: ClientConn) -> None:
        conn.head = bytearray()
        conn.timeout = time.monotonic() + self.limits.header_timeout
        self.heads.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._read_head, conn))

    def _read_head(self, conn: ClientConn, _sock) -> None:
        assert conn.head is not None
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            start = max(0, len(conn.head) - 3)
            conn.head += data
            if (
                b"\r\n\r\n" not in conn.head[start:]
                and b"\n\n" not in conn.head[start:]
                and len(conn.head) <= MAX_HEAD
            ):
                return
        self.poller.unregister(conn.sock)
        self.heads.remove(conn)
        if not data:  # the client left
            self.nr_conns -= 1
            conn.close()
            return
        conn.data_ready = True
        self.enqueue_req(conn)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self.heads and self.heads[0].timeout <= now:
            conn = self.heads.popleft()
            self.poller.unregister(conn.sock)
            self.nr_conns -= 1
            conn.close()

    def _cap_keepalive(self, deadline: float) -> None:
        super()._cap_keepalive(deadline)
        for conn in self.heads:  # stopping: heads still arriving get as long as kept-alives
            conn.timeout = min(conn.timeout, deadline)

    # -- a pool thread's side ------------------------------------------------------------------
    def handle(self, conn):
        head = getattr(conn, "head", None)
        if head is not None:
            conn.head = None
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(bytes(head))
        if isinstance(conn.sock, ClientSocket):
            conn.sock.mark()
        return super().handle(conn)

    def handle_request(self, req, conn):
        try:
            return super().handle_request(req, conn)
        except TimeoutError as exc:
            self.log.info("Closing the connection of %s: too slow (%s)", conn.client, exc)
            return False

    def _keepalive_after(self, conn, keepalive):
        if getattr(conn.sock, "too_slow", False):
            return False
        return super()._keepalive_after(conn, keepalive)
