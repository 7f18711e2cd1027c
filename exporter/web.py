"""The HTTP endpoint: /, the metrics path, /healthz and /readyz. Scrapes only read bytes."""

from __future__ import annotations

import html
import logging
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exporter import __version__
from exporter.app import App
from exporter.webconfig import WebAuth

log = logging.getLogger(__name__)


# Probes carry no password and show no Spacelift data: they stay open under basic auth.
OPEN_PATHS = ("/healthz", "/readyz")


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle or half-open connection (or TLS handshake) frees its thread

    def do_GET(self) -> None:
        self._route(send_body=True)

    def do_HEAD(self) -> None:
        self._route(send_body=False)

    def _route(self, send_body: bool) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0]
        auth = self.server.auth
        peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        if not auth.client_allowed(peer):
            self._send(403, b"client certificate not allowed\n", "text/plain", send_body)
            return
        if path not in OPEN_PATHS and not auth.allowed(self.headers.get("Authorization")):
            self._send(401, b"unauthorized\n", "text/plain; charset=utf-8", send_body)
            return
        if path == app.config.telemetry_path:
            gz = accepts_gzip(self.headers.get("Accept-Encoding"))
            chunks, ctype, _ = app.exposition.body(self.headers.get("Accept"), gz)
            self._send(200, chunks, ctype, send_body, gz)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8", send_body)
        elif path == "/readyz":
            pending = [f"{a}/{r}" for a, r in app.pending()]
            if pending:
                body = ("waiting for a first successful poll of: " + ", ".join(pending)).encode()
                self._send(503, body + b"\n", "text/plain; charset=utf-8", send_body)
            else:
                self._send(200, b"ready\n", "text/plain; charset=utf-8", send_body)
        elif path == "/":
            self._send(200, landing_page(app).encode(), "text/html; charset=utf-8", send_body)
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8", send_body)

    def do_POST(self) -> None:
        self._send(405, b"method not allowed\n", "text/plain; charset=utf-8", True)

    def _send(
        self,
        status: int,
        body: bytes | list[bytes],
        ctype: str,
        send_body: bool,
        gzipped: bool = False,
    ) -> None:
        chunks = [body] if isinstance(body, bytes) else body  # parts written one by one
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(sum(map(len, chunks))))
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        if status == 405:
            self.send_header("Allow", "GET, HEAD")
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="spacelift-exporter"')
        for name, value in self.server.auth.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            for chunk in chunks:
                self.wfile.write(chunk)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("http " + format % args)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: App, auth: WebAuth) -> None:
        self.app = app
        self.auth = auth
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up or fails the TLS handshake is routine: one debug line, in
        # the configured log format, instead of socketserver's traceback on stderr.
        log.debug("connection error", exc_info=True, extra={"client": str(client_address[0])})

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        # A response is written in several pieces (headers, then each part of /metrics):
        # without this, Nagle's algorithm holds each small piece back for the client's
        # delayed ACK (40 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.auth.refresh()  # a changed web config applies from this connection on
        if self.auth.ssl is not None:
            # The handshake happens in the handler's thread, not in the accept loop.
            sock = self.auth.ssl.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr


def serve(
    app: App, host: str, port: int, auth: WebAuth | None = None
) -> tuple[Server, threading.Thread]:
    server = Server((host, port), app, auth or WebAuth(None))
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    return server, thread


def accepts_gzip(header: str | None) -> bool:
    for part in (header or "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            q = params.strip().removeprefix("q=")
            try:
                return not params or float(q) > 0
            except ValueError:
                return True
    return False


def landing_page(app: App) -> str:
    rows = []
    for (account, area), st in app.store.items():
        if st.ok:
            status = "ok"
        elif not st.polled:
            status = "not polled yet"
        elif st.permission_denied and st.partial:
            status = "permission denied for part of the area (serving what the key may read)"
        elif st.permission_denied:
            status = "permission denied (serving nothing for this area)"
        else:
            status = "failing, serving the last good data"
        last = (
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(st.last_success))
            if st.last_success is not None
            else "never"
        )
        cells = (account, area, status, last, st.error or "", st.polls, st.failures)
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in cells) + "</tr>\n")
    path = html.escape(app.config.telemetry_path)
    return f"""<!doctype html>
<html><head><title>Spacelift exporter</title></head>
<body>
<h1>Spacelift exporter</h1>
<p>Version {html.escape(__version__)}</p>
<ul><li><a href="{path}">Metrics</a></li><li><a href="/healthz">Health</a></li>
<li><a href="/readyz">Readiness</a></li></ul>
<h2>Polls</h2>
<table border="1" cellpadding="4">
<tr><th>Account</th><th>Area</th><th>Status</th><th>Last success</th><th>Last error</th>
<th>Polls</th><th>Failures</th></tr>
{"".join(rows)}
</table>
</body></html>
"""
