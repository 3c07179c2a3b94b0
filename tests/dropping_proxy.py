"""A TCP proxy that can lose responses: it forwards a request, waits until the server starts
answering (so the server has done the work), then closes the client's connection. This is what a
client sees when a load balancer or the network drops a response, and what makes the SDK retry."""

from __future__ import annotations

import contextlib
import socket
import threading

from fake_provider import free_port


class DroppingProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_port``; ``drop(n)`` loses the next n answers."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dropped = 0
        self._to_drop = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def drop(self, count: int) -> None:
        with self._lock:
            self._to_drop = count

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        with self._lock:
            lose = self._to_drop > 0
            self._to_drop -= lose
        threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
        if lose:
            with contextlib.suppress(OSError):
                upstream.recv(1)  # the server has answered: the work is done
            with self._lock:
                self.dropped += 1
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            return
        _pump(upstream, client)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
