"""The HTTP server under hostile clients, over real sockets on loopback.

Each test speaks raw HTTP (or raw TLS) the way a broken or malicious client would, and checks
what a user would see: an answer with a clear status, a closed connection, a server that keeps
serving everyone else.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from exporter import httpd, web
from exporter.app import App
from exporter.httpd import Limits, Request, Response
from exporter.simulator import SimClock, Simulator
from exporter.webconfig import WebAuth
from tests.conftest import make_app
from tests.support.wait import until


@pytest.fixture(scope="module")
def echo() -> Iterator[httpd.Server]:
    """A bare server: the body's size and a count of requests, and a route taking 1 KiB."""
    seen: list[str] = []

    def handle(request: Request) -> Response:
        seen.append(request.path)
        return httpd.plain(200, f"{request.method} {request.path} body={len(request.body)}")

    server = httpd.Server(
        Limits(
            max_connections=40,
            max_connections_per_client=30,
            request_timeout=1.0,
            idle_timeout=1.0,
            workers=4,
        )
    )
    server.listen("127.0.0.1", 0, handle, lambda method, path: 1024 if path == "/post" else 0)
    server.start()
    server.seen = seen  # type: ignore[attr-defined]
    yield server
    server.shutdown()
    server.server_close()


def connect(server: httpd.Server) -> socket.socket:
    return socket.create_connection(server.server_address, timeout=5)


def exchange(server: httpd.Server, raw: bytes) -> bytes:
    """Send raw bytes and read everything until the server closes (or 5 s pass)."""
    with connect(server) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def statuses(answer: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"(?m)^HTTP/1\.[01] (\d{3}) ", answer)]


def test_a_body_is_never_read_as_a_second_request(echo: httpd.Server) -> None:
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = exchange(
        echo,
        b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (len(smuggled), smuggled),
    )
    assert statuses(answer) == [200]
    assert b"body=%d" % len(smuggled) in answer
    # GET with a body on a route that takes none: refused, and not parsed as a request either.
    answer = exchange(echo, b"GET /get HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        len(smuggled), smuggled))  # fmt: skip
    assert statuses(answer) == [413]
    assert "/smuggled" not in echo.seen  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"Content-Length: 5\r\nContent-Length: 5\r\n",
        b"Content-Length: 5\r\nContent-Length: 40\r\n",
        b"Content-Length: -5\r\n",
        b"Content-Length: +5\r\n",
        b"Content-Length: 5\r\n X-Folded: yes\r\n",
        b"Content Length: 5\r\n",
    ],
)
def test_ambiguous_lengths_are_a_400(echo: httpd.Server, headers: bytes) -> None:
    answer = exchange(echo, b"POST /post HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\nhello")
    assert statuses(answer) == [400]


def test_a_body_over_the_limit_is_refused_unread(echo: httpd.Server) -> None:
    with connect(echo) as sock:
        sock.sendall(b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        sock.sendall(b"x" * 65536)  # the client starts sending; the answer comes anyway
        answer = read_all(sock)
    assert statuses(answer) == [413]
    assert b"larger than 1024 bytes" in answer
    chunked = b"POST /post HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"  # noqa: E501
    assert statuses(exchange(echo, chunked)) == [411]


def test_expect_continue_is_answered_before_the_body(echo: httpd.Server) -> None:
    with connect(echo) as sock:
        sock.sendall(b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")  # fmt: skip
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        assert b"POST /post body=4" in sock.recv(1000)


def test_bodies_in_progress_are_bounded_in_all() -> None:
    """Slow senders of large bodies cost memory: past the budget a body is refused (503)."""
    server = httpd.Server(Limits(max_pending_body_bytes=1000))
    server.listen("127.0.0.1", 0, lambda r: httpd.plain(200, f"body={len(r.body)}"),
                  lambda method, path: 1000)  # fmt: skip
    server.start()
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 800\r\n\r\n"
    try:
        with connect(server) as slow:
            slow.sendall(head + b"x" * 100)  # 700 bytes still to come
            until(lambda: server._reserved == 800, timeout=5, what="the first body reserved")
            answer = exchange(server, head + b"y" * 800)
            assert statuses(answer) == [503]
            slow.sendall(b"x" * 700)
            assert b"body=800" in slow.recv(1000)
        assert b"body=800" in exchange(server, head + b"y" * 800)  # the budget came back
    finally:
        server.shutdown()
        server.server_close()


def test_keep_alive_serves_pipelined_requests_in_order(echo: httpd.Server) -> None:
    one = b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\r\n"
    last = b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = exchange(echo, one + one + last)
    assert statuses(answer) == [200, 200, 200]
    assert answer.index(b"POST /post body=3") < answer.index(b"GET /last")


def test_a_slow_sender_gets_408_and_holds_no_thread(echo: httpd.Server) -> None:
    """Clients sending their request slowly are cut off by the request deadline (1 s here),
    even one that keeps dripping bytes, and such clients cost no threads: everyone else is
    still served meanwhile."""
    threads_before = threading.active_count()
    slow = []
    for _ in range(25):
        sock = connect(echo)
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        slow.append(sock)
    dripper = connect(echo)
    dripper.sendall(b"GET /drip HTTP/1.1\r\n")
    stop = threading.Event()

    def drip() -> None:  # one byte every 0.2 s, for up to 5 s: never idle long
        for _ in range(25):
            if stop.wait(0.2):
                return
            try:
                dripper.send(b"X")
            except OSError:
                return

    dripping = threading.Thread(target=drip)
    dripping.start()
    try:
        assert threading.active_count() == threads_before + 1  # the dripping thread only
        assert statuses(exchange(echo, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")) == [200]
        assert statuses(read_all(dripper)) == [408]
        assert dripping.is_alive()  # cut off while still sending
        assert all(statuses(read_all(sock)) == [408] for sock in slow)
    finally:
        stop.set()
        dripping.join()
        dripper.close()
        for sock in slow:
            sock.close()


def test_connections_are_bounded_per_client_and_idle_ones_close(echo: httpd.Server) -> None:
    held = [connect(echo) for _ in range(30)]  # the per-client limit
    try:
        until(lambda: len(echo._conns) >= 30, timeout=5, what="30 connections accepted")
        answer = exchange(echo, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(answer) == [503]
        assert b"too many connections from your address" in answer
        # idle keep-alive connections are closed after idle_timeout (1 s here)
        assert all(read_all(sock) == b"" for sock in held)
    finally:
        for sock in held:
            sock.close()
    assert statuses(exchange(echo, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")) == [200]


def test_the_oldest_idle_connection_makes_room() -> None:
    server = httpd.Server(Limits(max_connections=3, workers=1))
    server.listen("127.0.0.1", 0, lambda r: httpd.plain(200))
    server.start()
    idle = []
    try:
        for _ in range(3):
            idle.append(connect(server))
            until(lambda: len(server._conns) == len(idle), timeout=5, what="accepted")
        answer = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(answer) == [200]  # a newcomer is served
        assert read_all(idle[0]) == b""  # by closing the connection idle the longest
    finally:
        for sock in idle:
            sock.close()
        server.shutdown()
        server.server_close()


def test_a_client_that_does_not_read_frees_its_worker() -> None:
    """A large answer to a client that never reads: the worker gives up after
    write_timeout (1 s here) and serves the next request; with one worker."""
    big = [b"x" * (1 << 20)] * 32
    server = httpd.Server(Limits(workers=1, write_timeout=1.0))
    server.listen("127.0.0.1", 0, lambda r: Response(200, big if r.path == "/big" else b"ok"))
    server.start()
    try:
        with connect(server) as stuck:
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
            answer = exchange(server, b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
            assert statuses(answer) == [200]
    finally:
        server.shutdown()
        server.server_close()


def test_answers_are_not_held_back_by_nagle(echo: httpd.Server) -> None:
    with connect(echo) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(sock.recv(65536)) == [200]
        conns = list(echo._conns)
        assert conns and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in conns)


def test_listen_backlog_fits_real_use(echo: httpd.Server) -> None:
    port = echo.server_address[1]
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    backlog = int(out.split()[2])  # Send-Q of a listening socket is its backlog
    assert backlog >= 128


def test_chunked_bodies_are_served_in_order_with_one_length() -> None:
    # The last is larger than any socket buffer: part goes in one sendmsg, the rest blocking.
    chunks = [b"a" * 70000, b"", b"b" * 10, b"c" * 300000, b"d" * (8 << 20)]
    server = httpd.Server(Limits(workers=1))
    server.listen("127.0.0.1", 0, lambda r: Response(200, chunks))
    server.start()
    try:
        answer = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert b"Content-Length: %d" % sum(map(len, chunks)) in head
        assert body == b"".join(chunks)
        answer = exchange(server, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.endswith(b"\r\n\r\n")  # HEAD: the length, no body
    finally:
        server.shutdown()
        server.server_close()


# -- through the exporter's routes and web config ------------------------------------------


@pytest.fixture
def app(sim: Simulator, clock: SimClock) -> Iterator[App]:
    application = make_app(sim, clock)
    yield application
    application.close()


def test_a_password_over_72_bytes_is_a_401(app: App, tmp_path: Path) -> None:
    cfg = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(4)).decode()
    cfg.write_text(f"basic_auth_users:\n  prom: '{hashed}'\n")
    server, _ = web.serve(app, "127.0.0.1", 0, WebAuth(cfg))
    try:
        import base64

        token = base64.b64encode(b"prom:" + b"x" * 100).decode()
        answer = exchange(
            server,
            f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        assert statuses(answer) == [401]
    finally:
        server.shutdown()
        server.server_close()


def test_plain_http_on_the_tls_port_is_told_so(app: App, tmp_path: Path) -> None:
    d = tmp_path
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(d / "s.key"), "-out", str(d / "s.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    cfg = d / "web.yml"
    cfg.write_text("tls_server_config: {cert_file: s.crt, key_file: s.key}\n")
    server, _ = web.serve(app, "127.0.0.1", 0, WebAuth(cfg), Limits(handshake_timeout=0.5))
    try:
        answer = exchange(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(answer) == [400]
        assert b"HTTP request to an HTTPS server" in answer
        with connect(server) as stalled:
            stalled.sendall(b"\x16\x03\x01")  # the start of a ClientHello, and no more
            assert read_all(stalled) == b""  # closed at handshake_timeout
        # and TLS on the same port still works
        ctx = ssl.create_default_context(cafile=str(d / "s.crt"))
        with ctx.wrap_socket(connect(server), server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert statuses(read_all(tls)) == [200]
    finally:
        server.shutdown()
        server.server_close()
