"""A hostile Spacelift endpoint on loopback: raw sockets, so it can misbehave as HTTP allows.

``Hostile.behave(fn)`` sets what every request gets: ``fn(conn)`` writes whatever bytes it
likes (slow headers, a dripping body, an endless chunked stream, a gzip bomb, deep JSON...).
Behaviours that never end stop when the endpoint closes, so a test is bounded in time.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import zlib
from collections.abc import Callable
from functools import cache
from typing import Any

Behaviour = Callable[["Conn"], None]


class Conn:
    def __init__(self, sock: socket.socket, stopped: threading.Event) -> None:
        self.sock = sock
        self.stopped = stopped

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def pause(self, seconds: float) -> bool:
        """Wait; False once the endpoint is closing (the behaviour should return)."""
        return not self.stopped.wait(seconds)


class Hostile:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/graphql"
        self.requests = 0
        self._behaviour: Behaviour = answer({"data": {}})
        self._stopped = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def behave(self, behaviour: Behaviour) -> None:
        self._behaviour = behaviour

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def __enter__(self) -> Hostile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._socks.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        conn = Conn(sock, self._stopped)
        try:
            while _read_request(sock):
                with self._lock:
                    self.requests += 1
                self._behaviour(conn)
        except OSError:
            pass  # the client gave up: that is what the tests want


def _read_request(sock: socket.socket) -> bool:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        body += chunk
    return True


# -- behaviours ------------------------------------------------------------------------------


def answer(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None, encoding: str = ""
) -> Behaviour:
    """A complete answer; ``payload`` is JSON-encoded unless it is bytes already."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    extra = dict(headers or {})
    if encoding:
        extra["Content-Encoding"] = encoding
    head = _head(status, {"Content-Length": str(len(body)), **extra})

    def behave(conn: Conn) -> None:
        conn.send(head + body)

    return behave


def slow_headers(every: float = 0.1) -> Behaviour:
    """The status line, then one header byte at a time, never finishing the headers."""

    def behave(conn: Conn) -> None:
        conn.send(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while conn.pause(every):
            conn.send(b"a")

    return behave


def drip_body(every: float = 0.1) -> Behaviour:
    """Headers at once, then a (JSON whitespace) body one byte at a time."""

    def behave(conn: Conn) -> None:
        conn.send(_head(200, {"Content-Length": "1000000"}))
        while conn.pause(every):
            conn.send(b" ")

    return behave


def endless_chunks(every: float = 0.05) -> Behaviour:
    """A chunked body that never sends its last chunk."""

    def behave(conn: Conn) -> None:
        conn.send(_head(200, {"Transfer-Encoding": "chunked"}))
        while conn.pause(every):
            conn.send(b"400\r\n" + b" " * 0x400 + b"\r\n")

    return behave


@cache
def gzip_bomb(inflated: int) -> bytes:
    """``inflated`` bytes of JSON whitespace, gzip-compressed (about 1000:1)."""
    z = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = b" " * (1 << 20)
    parts = [z.compress(block) for _ in range(inflated >> 20)]
    return b"".join(parts) + z.flush()


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} Hostile", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
