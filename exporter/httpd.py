"""A small HTTP/1.1 server with every input bounded: the mechanics behind ``exporter.web``.

Why not ``http.server``: it gives each connection a thread for its whole life (500 slow or
idle connections are 500 threads), listens with a backlog of 5, never reads request bodies
(so a body is parsed as the next request) and leaves Nagle on. Why not cheroot (measured in
``bench/http_load.py``): it reads request heads in its worker threads with a per-recv
timeout, so a client dripping a byte every few seconds holds a worker for good, and it
accepts ``Content-Length`` together with ``Transfer-Encoding``.

The shape here: one I/O thread accepts, does TLS handshakes and reads each request (head
and body) without blocking, so idle, slow and half-open connections cost a little memory and
no thread; a fixed pool of worker threads runs complete requests and writes the answers.
Everything a client controls has a limit: the head's size and lines, the body's size (per
route, refused with 413 before it is read), the time to send a request, the time to read an
answer, idle time between requests, connections in all and per client address.

Routes know nothing of this: a listener is given ``handler(Request) -> Response`` and
``body_limit(method, path) -> int``; a response body may be a sequence of byte chunks,
written in order without joining them.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What one client may cost. The defaults fit a few Prometheus servers and a webhook."""

    backlog: int = 1024  # the kernel caps it at net.core.somaxconn
    workers: int = 16  # threads that run requests; slow or idle connections hold none
    max_connections: int = 512  # open connections in all (the oldest idle one makes room)
    max_connections_per_client: int = 256  # by client address
    max_head_bytes: int = 16 * 1024  # request line and headers
    max_headers: int = 100
    request_timeout: float = 10.0  # from a request's first byte to its last
    idle_timeout: float = 90.0  # keep-alive between requests (Prometheus scrapes each minute)
    write_timeout: float = 30.0  # the whole answer, however slowly the client reads
    handshake_timeout: float = 10.0
    # Bodies being received, in all: slow senders of large bodies cost memory, not threads,
    # and this bounds it (512 connections x a 1 MiB webhook limit would be 512 MiB).
    max_pending_body_bytes: int = 32 * 1024 * 1024


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    client: str  # the peer's address
    peer_cert: dict[str, Any] | None = None  # a verified TLS client certificate


Body = bytes | Sequence[bytes]


@dataclass
class Response:
    status: int
    body: Body = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False  # close the connection after this answer


Handler = Callable[[Request], Response]
BodyLimit = Callable[[str, str], int]

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
# Go's answer to plain HTTP on a TLS port, sent before any handshake.
PLAIN_HTTP_ON_TLS = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)
_DRAIN_BYTES, _DRAIN_SECONDS = 1 << 20, 2.0  # what a refused client may still send
_IOV_MAX = 1024  # buffers one sendmsg takes on Linux (the rest go in the next call)
_TLS_HANDSHAKE = 0x16  # the first byte of every TLS ClientHello record
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class BadRequest(Exception):
    """A request the server refuses before any route sees it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def body_size(body: Body) -> int:
    return len(body) if isinstance(body, bytes | bytearray) else sum(len(c) for c in body)


def plain(status: int, text: str = "", **kw: Any) -> Response:
    return Response(status, (text or REASONS.get(status, "")).encode() + b"\n", **kw)


@dataclass
class _Listener:
    sock: socket.socket
    handler: Handler
    body_limit: BodyLimit
    tls: Callable[[], ssl.SSLContext | None] | None  # None: plain HTTP; else the current context
    # Told (path, status) of a request cut short before its route saw it: 413 (body over the
    # limit), 408 (body too slow), 400 (the client hung up mid-body). Webhooks count these.
    refused: Callable[[str, int], None] | None = None


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    listener: _Listener
    client: str
    # "sniff" (TLS, before the handshake), "handshake", "read", "busy" (a worker has it),
    # "drain" (answered and closing)
    state: str
    deadline: float
    buf: bytearray = field(default_factory=bytearray)
    started: bool = False  # a request's first byte has arrived
    head: tuple[str, str, str, dict[str, str], bool] | None = None
    need: int = 0  # body bytes still expected after the head
    reserved: int = 0  # of Limits.max_pending_body_bytes, until the request is answered
    idle_since: float = 0.0


class Server:
    """Serve one or more listeners; ``shutdown()`` then ``server_close()`` to stop."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._sel = selectors.DefaultSelector()
        self._listeners: list[_Listener] = []
        self._conns: dict[socket.socket, _Conn] = {}
        self._per_client: dict[str, int] = {}
        self._work: queue.Queue[_Conn | None] = queue.Queue()
        self._returned: queue.Queue[tuple[_Conn, bool]] = queue.Queue()
        self._calls: queue.Queue[Callable[[], object]] = queue.Queue()
        self._next_expiry = 0.0
        self._reserved = 0  # body bytes reserved by connections being read or served
        self._reserved_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- setting up -------------------------------------------------------------------

    def listen(
        self,
        host: str,
        port: int,
        handler: Handler,
        body_limit: BodyLimit = lambda method, path: 64 * 1024,
        tls: Callable[[], ssl.SSLContext | None] | None = None,
        refused: Callable[[str, int], None] | None = None,
    ) -> tuple[str, int]:
        """Add a listener (before or after ``start``); returns the bound address."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(self.limits.backlog)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        listener = _Listener(sock, handler, body_limit, tls, refused)
        self._listeners.append(listener)
        self._call_soon(lambda: self._sel.register(sock, selectors.EVENT_READ, listener))
        address: tuple[str, int] = sock.getsockname()[:2]
        return address

    @property
    def server_address(self) -> tuple[str, int]:
        """The first listener's address."""
        address: tuple[str, int] = self._listeners[0].sock.getsockname()[:2]
        return address

    def start(self) -> None:
        self.io_thread = threading.Thread(target=self._loop, name="http-io", daemon=True)
        self._threads = [self.io_thread] + [
            threading.Thread(target=self._worker, name=f"http-{i}", daemon=True)
            for i in range(self.limits.workers)
        ]
        for t in self._threads:
            t.start()

    def shutdown(self) -> None:
        self._stop.set()
        self._wake()
        for _ in range(self.limits.workers):
            self._work.put(None)
        deadline = time.monotonic() + 5  # workers busy writing to slow clients are daemons
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def server_close(self) -> None:
        for listener in self._listeners:
            listener.sock.close()
        for conn in list(self._conns.values()):
            conn.sock.close()
        self._conns.clear()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the I/O thread -----------------------------------------------------------------

    def _call_soon(self, fn: Callable[[], object]) -> None:
        """Selector changes happen on the I/O thread only (once it runs)."""
        if not self._threads:
            fn()
            return
        self._calls.put(fn)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._sel.select(timeout=1.0)
            except OSError:  # closed under us at shutdown
                return
            try:
                self._step(events)
            except Exception:  # a bug here must not stop the server: log it and go on
                log.exception("http server error")

    def _step(self, events: list[tuple[selectors.SelectorKey, int]]) -> None:
        for key, _ in events:
            if key.data is None:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
            elif isinstance(key.data, _Listener):
                self._accept(key.data)
            else:
                try:
                    self._readable(key.data)
                except Exception:
                    log.exception("http connection error")
                    self._close(key.data)
        self._take_returned()
        now = time.monotonic()
        if now >= self._next_expiry:  # not on every event: it walks every connection
            self._next_expiry = now + 0.25
            self._expire(now)

    def _accept(self, listener: _Listener) -> None:
        lim = self.limits
        for _ in range(64):  # a burst, without starving the connections already open
            try:
                sock, addr = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                log.debug("accept failed", exc_info=True)
                return
            client = str(addr[0])
            if self._per_client.get(client, 0) >= lim.max_connections_per_client:
                self._refuse(sock, listener, client, "too many connections from your address")
            elif len(self._conns) >= lim.max_connections and not self._evict_idle():
                self._refuse(sock, listener, client, "too many connections")
            elif listener.tls is not None:
                self._add(sock, listener, client, "sniff", lim.handshake_timeout)
            else:
                self._add(sock, listener, client, "read", lim.idle_timeout)

    def _refuse(self, sock: socket.socket, listener: _Listener, client: str, why: str) -> None:
        log.debug("connection refused", extra={"reason": why, "client": client})
        if listener.tls is not None or len(self._conns) >= self.limits.max_connections + 64:
            sock.close()  # no plain answer on a TLS port, and no unbounded draining
            return
        self._refuse_request(self._add(sock, listener, client, "drain", 0.0), 503, why)

    def _add(
        self, sock: socket.socket, listener: _Listener, client: str, state: str, timeout: float
    ) -> _Conn:
        sock.setblocking(False)
        # Answers go out as soon as they are written, not after the client's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        now = time.monotonic()
        conn = _Conn(sock, listener, client, state, now + timeout, idle_since=now)
        self._conns[sock] = conn
        self._per_client[client] = self._per_client.get(client, 0) + 1
        self._sel.register(sock, selectors.EVENT_READ, conn)
        return conn

    def _evict_idle(self) -> bool:
        idle = [c for c in self._conns.values() if c.state == "read" and not c.started]
        if not idle:
            return False
        self._close(min(idle, key=lambda c: c.idle_since))
        return True

    def _reserve(self, conn: _Conn, length: int) -> bool:
        with self._reserved_lock:
            if self._reserved + length > self.limits.max_pending_body_bytes:
                return False
            self._reserved += length
            conn.reserved = length
            return True

    def _release(self, conn: _Conn) -> None:
        with self._reserved_lock:
            self._reserved -= conn.reserved
            conn.reserved = 0

    def _close(self, conn: _Conn) -> None:
        if self._conns.pop(conn.sock, None) is None:
            return
        self._release(conn)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        left = self._per_client.get(conn.client, 1) - 1
        if left:
            self._per_client[conn.client] = left
        else:
            self._per_client.pop(conn.client, None)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns.values() if c.deadline < now and c.state != "busy"]:
            if conn.started and conn.state == "read":
                self._cut_short(conn, 408)
                self._refuse_request(conn, 408, "request not received in time")
            else:
                self._close(conn)

    def _cut_short(self, conn: _Conn, status: int) -> None:
        """Tell the listener a request whose head was read never reached its route."""
        refused = conn.listener.refused
        if refused is None or conn.head is None:
            return
        try:
            refused(conn.head[1], status)
        except Exception:
            log.exception("refused-request callback failed")

    def _refuse_request(self, conn: _Conn, status: int, message: str) -> None:
        """Answer from the I/O thread (a short answer fits any socket buffer), then close."""
        text = message.encode() + b"\n"
        data = (
            f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: text/plain; "
            f"charset=utf-8\r\nContent-Length: {len(text)}\r\nConnection: close\r\n\r\n"
        ).encode() + text
        self._send_and_drain(conn, data)

    def _send_and_drain(self, conn: _Conn, data: bytes) -> None:
        """Send a last answer and close cleanly: closing with unread bytes from the client
        (the body we refused, the rest of its request) would reset the connection and the
        client might never read the answer. So stop writing, then read and drop what the
        client still sends, for a moment and up to a size."""
        try:
            conn.sock.send(data)
            if isinstance(conn.sock, ssl.SSLSocket):
                self._close(conn)  # a TLS close_notify needs a blocking unwrap: just close
                return
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.state, conn.need = "drain", _DRAIN_BYTES
        conn.deadline = time.monotonic() + _DRAIN_SECONDS
        self._drain(conn)

    def _drain(self, conn: _Conn) -> None:
        while True:
            try:
                data = conn.sock.recv(65536)
            except BlockingIOError:
                return
            conn.need -= len(data)
            if not data or conn.need <= 0:
                self._close(conn)
                return

    def _readable(self, conn: _Conn) -> None:
        try:
            if conn.state == "sniff":
                self._sniff(conn)
            elif conn.state == "handshake":
                self._handshake(conn)
            elif conn.state == "read":
                self._read(conn)
            elif conn.state == "drain":
                self._drain(conn)
        except (OSError, ssl.SSLError):
            log.debug("connection error", exc_info=True, extra={"client": conn.client})
            self._close(conn)

    def _sniff(self, conn: _Conn) -> None:
        first = conn.sock.recv(1, socket.MSG_PEEK)
        if not first:
            self._close(conn)
            return
        if first[0] != _TLS_HANDSHAKE:
            self._send_and_drain(conn, PLAIN_HTTP_ON_TLS)
            return
        assert conn.listener.tls is not None
        ctx = conn.listener.tls()
        if ctx is None:  # TLS cannot be configured right now: close rather than serve plain
            self._close(conn)
            return
        self._sel.unregister(conn.sock)
        del self._conns[conn.sock]
        conn.sock = ctx.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
        self._conns[conn.sock] = conn
        self._sel.register(conn.sock, selectors.EVENT_READ, conn)
        conn.state = "handshake"
        self._handshake(conn)

    def _handshake(self, conn: _Conn) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._sel.modify(sock, selectors.EVENT_READ, conn)
            return
        except ssl.SSLWantWriteError:
            self._sel.modify(sock, selectors.EVENT_WRITE, conn)
            return
        self._sel.modify(sock, selectors.EVENT_READ, conn)
        conn.state = "read"
        conn.idle_since = time.monotonic()
        conn.deadline = conn.idle_since + self.limits.idle_timeout
        self._read(conn)  # the first request may already be in the handshake's last record

    def _read(self, conn: _Conn) -> None:
        while True:
            while True:
                try:
                    data = conn.sock.recv(65536)
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    break
                if not data:  # the client is done sending: answer what is complete, then close
                    self._advance(conn)
                    if conn.state != "busy":
                        self._cut_short(conn, 400)
                        self._close(conn)
                    return
                if not conn.started:
                    conn.started = True
                    conn.deadline = time.monotonic() + self.limits.request_timeout
                conn.buf += data
                if len(conn.buf) > self.limits.max_head_bytes + conn.need:
                    break  # enough to judge this request; the rest waits
                if len(data) < 65536 and not isinstance(conn.sock, ssl.SSLSocket):
                    # Drained: save the recv that would only fail. The selector is
                    # level-triggered, so whatever arrives meanwhile is reported again.
                    break
            self._advance(conn)
            # TLS may hold decrypted bytes the selector cannot see: read on while it does.
            sock = conn.sock
            if not (
                conn.state == "read"
                and sock in self._conns
                and isinstance(sock, ssl.SSLSocket)
                and sock.pending()
            ):
                return

    def _advance(self, conn: _Conn) -> None:
        """Parse what is buffered; hand a complete request to the workers."""
        try:
            if conn.head is None:
                while conn.buf.startswith(b"\r\n"):  # a stray line end after a body: ignored
                    del conn.buf[:2]
                end = conn.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(conn.buf) > self.limits.max_head_bytes:
                        raise BadRequest(431, "request head too large")
                    return
                if end > self.limits.max_head_bytes:
                    raise BadRequest(431, "request head too large")
                method, target, version, headers = _parse_head(
                    bytes(conn.buf[:end]), self.limits.max_headers
                )
                del conn.buf[: end + 4]
                length = _content_length(headers)
                path, _, query = target.partition("?")
                limit = conn.listener.body_limit(method, path)
                if length > limit:
                    # Refused unread; the connection must close since the body is not consumed.
                    conn.head = (method, path, query, headers, False)
                    self._cut_short(conn, 413)
                    raise BadRequest(413, f"request body larger than {limit} bytes")
                if length and not self._reserve(conn, length):
                    raise BadRequest(503, "too many request bodies in progress: retry shortly")
                keep = _keep_alive(version, headers)
                conn.head = (method, path, query, headers, keep)
                conn.need = length
                if len(conn.buf) < length and headers.get("expect", "").lower() == "100-continue":
                    with contextlib.suppress(OSError):  # curl waits 1 s for it otherwise
                        conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            if len(conn.buf) < conn.need:
                return
        except BadRequest as exc:
            self._refuse_request(conn, exc.status, str(exc))
            return
        self._sel.unregister(conn.sock)
        conn.state = "busy"
        self._work.put(conn)

    def _take_returned(self) -> None:
        while not self._calls.empty():
            self._calls.get_nowait()()
        while True:
            try:
                conn, keep = self._returned.get_nowait()
            except queue.Empty:
                return
            if not keep or self._stop.is_set():
                self._close(conn)
                continue
            conn.state = "read"
            conn.started = bool(conn.buf)
            now = time.monotonic()
            conn.idle_since = now
            conn.deadline = now + (
                self.limits.request_timeout if conn.started else self.limits.idle_timeout
            )
            try:
                if conn.sock.gettimeout() != 0.0:  # a slow answer left it blocking (_write)
                    conn.sock.setblocking(False)
                self._sel.register(conn.sock, selectors.EVENT_READ, conn)
            except (OSError, ValueError):
                self._close(conn)
                continue
            if conn.buf:  # a pipelined request arrived with the last one (the selector
                self._advance(conn)  # reports a half-closed client as readable after)
            elif isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
                self._readable(conn)  # decrypted bytes the selector cannot see

    # -- the workers --------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            conn = self._work.get()
            if conn is None:
                return
            keep = False
            try:
                keep = self._serve(conn)
            except Exception:
                log.debug("connection error", exc_info=True, extra={"client": conn.client})
            self._returned.put((conn, keep))
            self._wake()

    def _serve(self, conn: _Conn) -> bool:
        assert conn.head is not None
        method, path, query, headers, keep = conn.head
        body = bytes(conn.buf[: conn.need])
        del conn.buf[: conn.need]
        self._release(conn)  # the route holds the body now, not the server
        conn.head, conn.need = None, 0
        peer = conn.sock.getpeercert() if isinstance(conn.sock, ssl.SSLSocket) else None
        request = Request(method, path, query, headers, body, conn.client, peer or None)
        try:
            response = conn.listener.handler(request)
        except Exception:
            log.exception("request failed", extra={"path": path})
            response = plain(500, close=True)
        keep = keep and not response.close
        self._write(conn.sock, response, send_body=method != "HEAD", keep=keep)
        return keep

    def _write(self, sock: socket.socket, response: Response, send_body: bool, keep: bool) -> None:
        chunks = [response.body] if isinstance(response.body, bytes) else list(response.body)
        lines = [
            f"HTTP/1.1 {response.status} {REASONS.get(response.status, '')}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {sum(len(c) for c in chunks)}",
        ]
        lines += [f"{name}: {value}" for name, value in response.headers]
        if not keep:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        deadline = time.monotonic() + self.limits.write_timeout
        pieces: list[bytes | memoryview] = [head, *(c for c in chunks if c and send_body)]
        if sock.gettimeout() == 0.0 and not isinstance(sock, ssl.SSLSocket):
            # The socket arrives non-blocking: the head and the chunks go to the kernel in
            # one system call and without a copy when they fit in its buffer (a scrape's
            # answer usually does); what does not goes out below, blocking.
            sent = 0
            with contextlib.suppress(BlockingIOError, InterruptedError):
                sent = sock.sendmsg(pieces[:_IOV_MAX])
            pieces = _after(pieces, sent)
        elif len(pieces) > 1 and len(pieces[1]) <= 16 * 1024:
            pieces[:2] = [head + pieces[1]]  # a small body rides with the head (one record)
        for data in pieces:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("client too slow to read the answer")
            sock.settimeout(left)  # bounds the whole sendall, not each send within it
            sock.sendall(data)


def _after(pieces: list[bytes | memoryview], sent: int) -> list[bytes | memoryview]:
    """What is left of ``pieces`` once their first ``sent`` bytes are written."""
    for i, piece in enumerate(pieces):
        if sent < len(piece):
            return [memoryview(piece)[sent:] if sent else piece, *pieces[i + 1 :]]
        sent -= len(piece)
    return []


def _parse_head(raw: bytes, max_headers: int) -> tuple[str, str, str, dict[str, str]]:
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[0] or not set(parts[0]) <= _TOKEN:
        raise BadRequest(400, "malformed request line")
    method, target, version = (p.decode("latin-1") for p in parts)
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if version.startswith("HTTP/"):
            raise BadRequest(505, "only HTTP/1.0 and HTTP/1.1 are served")
        raise BadRequest(400, "malformed request line")
    if not target.startswith("/") or any(ord(ch) <= 32 or ord(ch) == 127 for ch in target):
        raise BadRequest(400, "malformed request target")
    if len(lines) - 1 > max_headers:
        raise BadRequest(431, f"more than {max_headers} headers")
    headers: dict[str, str] = {}
    lengths = 0
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        # No folded lines, no space before the colon, no bare CR or LF: each is a way to make
        # two parsers (a proxy's and ours) read different requests.
        if not sep or not name or not set(name) <= _TOKEN or b"\r" in value or b"\n" in value:
            raise BadRequest(400, "malformed header line")
        key = name.decode("latin-1").lower()
        text = value.strip(b" \t").decode("latin-1")
        if key == "content-length":
            lengths += 1
        if key in headers:
            if key in ("content-length", "host", "transfer-encoding"):
                raise BadRequest(400, f"more than one {key} header")
            headers[key] += ", " + text
        else:
            headers[key] = text
    if version == "HTTP/1.1" and "host" not in headers:
        raise BadRequest(400, "HTTP/1.1 request without Host")
    return method, target, version, headers


def _content_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:
        if "content-length" in headers:
            raise BadRequest(400, "both Content-Length and Transfer-Encoding")
        # No chunked request bodies: nothing here needs them, and refusing them leaves no
        # room to disagree with a proxy about where a body ends.
        raise BadRequest(411, "send the body with a Content-Length")
    value = headers.get("content-length", "0")
    if not value.isascii() or not value.isdigit() or len(value) > 15:
        raise BadRequest(400, "malformed Content-Length")
    return int(value)


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    if version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens
