"""The HTTP endpoint's routes: /, the metrics path, /healthz and /readyz. Scrapes only read bytes.

The server mechanics (connections, limits, TLS handshakes) are in ``exporter.httpd``.
"""

from __future__ import annotations

import html
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from exporter import __version__
from exporter.app import App
from exporter.areas.fields import remedy
from exporter.httpd import Limits, Request, Response, Server, plain
from exporter.webconfig import ReloadCollector, WebAuth
from exporter.webhooks import Endpoint

log = logging.getLogger(__name__)


# Probes carry no password and show no Spacelift data: they stay open under basic auth.
# /health is the probe path of Spacelift's official exporter (its Kubernetes example).
OPEN_PATHS = ("/healthz", "/health", "/readyz")


@dataclass(frozen=True)
class Route:
    """One path: a small function from the request to the response; no socket in sight."""

    fn: Callable[[App, Request], Response]
    methods: tuple[str, ...] = ("GET", "HEAD")
    max_body: int = 0  # a larger request body is refused with 413 before it is read
    public: bool = False  # no basic auth: the route authenticates requests itself


def metrics(app: App, request: Request) -> Response:
    # The pre-rendered parts as they are (no copy of the body), compressed once per change.
    gz = accepts_gzip(request.headers.get("accept-encoding"))
    chunks, ctype, encoding = app.exposition.body(request.headers.get("accept"), gz)
    return Response(200, chunks, ctype, [("Content-Encoding", encoding)] if encoding else [])


def healthz(app: App, request: Request) -> Response:
    return plain(200, "ok")


def readyz(app: App, request: Request) -> Response:
    pending = [f"{a}/{r}" for a, r in app.pending()]  # ready means rendered
    if pending:
        return plain(503, "waiting for a first successful poll of: " + ", ".join(pending))
    return plain(200, "ready")


def landing(app: App, request: Request) -> Response:
    return Response(200, landing_page(app).encode(), "text/html; charset=utf-8")


def routes(app: App) -> dict[str, Route]:
    return {
        app.config.telemetry_path: Route(metrics),
        "/healthz": Route(healthz),
        "/health": Route(healthz),
        "/readyz": Route(readyz),
        "/": Route(landing),
    }


def webhook_route(hook: Endpoint) -> Route:
    """Spacelift's deliveries: POST only, the body limit from the config, and no basic auth
    (Spacelift cannot send it; the X-Signature-256 check is the authentication)."""

    def deliver(app: App, request: Request) -> Response:
        answer = hook.receiver.handle(request.body, request.headers)
        return Response(answer.status, answer.body(), "application/json")

    return Route(deliver, ("POST",), hook.max_body_bytes, public=True)


class Web:
    """Routes behind basic auth, client certificate names and the configured headers."""

    def __init__(self, app: App, auth: WebAuth, table: dict[str, Route]) -> None:
        self.app, self.auth, self.routes = app, auth, table

    def body_limit(self, method: str, path: str) -> int:
        route = self.routes.get(path)
        return route.max_body if route is not None else 0

    def handle(self, request: Request) -> Response:
        response = self._route(request)
        response.headers.extend(self.auth.headers.items())
        return response

    def _route(self, request: Request) -> Response:
        auth = self.auth
        auth.refresh()  # a changed web config applies from this request on
        if not auth.client_allowed(request.peer_cert):
            return plain(403, "client certificate not allowed")
        route = self.routes.get(request.path)
        if route is None:
            return plain(404, "not found")
        if request.method not in route.methods:
            return plain(405, "method not allowed", headers=[("Allow", ", ".join(route.methods))])
        if (
            request.path not in OPEN_PATHS
            and not route.public
            and not auth.allowed(request.headers.get("authorization"))
        ):
            realm = 'Basic realm="spacelift-exporter"'
            return plain(401, "unauthorized", headers=[("WWW-Authenticate", realm)])
        return route.fn(self.app, request)


def serve(
    app: App,
    host: str,
    port: int,
    auth: WebAuth | None = None,
    limits: Limits | None = None,
    webhook: Endpoint | None = None,
) -> tuple[Server, threading.Thread]:
    """Serve the exporter's routes on host:port (with ``webhook``, its route too). Another
    listener (say for webhooks) is one more ``server.listen(...)`` with its own routes, and
    the same TLS and limits: ``listen_webhook``."""
    auth = auth or WebAuth(None)
    if auth.path is not None:
        app.registry.register(ReloadCollector(auth))
    table = routes(app)
    if webhook is not None:
        table[webhook.path] = webhook_route(webhook)
    web = Web(app, auth, table)
    server = Server(limits)
    server.listen(host, port, web.handle, web.body_limit, tls_of(auth), _refused(webhook))
    server.start()
    return server, server.io_thread


def listen_webhook(
    server: Server, app: App, host: str, port: int, auth: WebAuth, webhook: Endpoint
) -> tuple[str, int]:
    """The webhook on a listener of its own (it faces the internet; /metrics need not): that
    path only, everything else 404. Returns the bound address."""
    web = Web(app, auth, {webhook.path: webhook_route(webhook)})
    return server.listen(host, port, web.handle, web.body_limit, tls_of(auth), _refused(webhook))


def _refused(webhook: Endpoint | None) -> Callable[[str, int], None] | None:
    """Count the deliveries the server cuts short before the route sees them: a body over
    the limit (413, unread), or one that never arrives whole (truncated, or too slow)."""
    if webhook is None:
        return None

    def refused(path: str, status: int) -> None:
        if path != webhook.path:
            return
        if status == 413:
            webhook.receiver.refuse_body("too_large", f"over {webhook.max_body_bytes} bytes")
        else:
            webhook.receiver.refuse_body("malformed", "body incomplete (truncated or too slow)")

    return refused


def tls_of(auth: WebAuth) -> Callable[[], ssl.SSLContext | None] | None:
    """TLS or not is fixed at start; the context itself is re-read with the web config."""
    if not auth.tls_enabled:
        return None

    def current() -> ssl.SSLContext | None:
        auth.refresh()
        return auth.ssl

    return current


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
    gaps = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(v)}</td>" for v in (account, area, field, reason))
        + f"<td>{html.escape(remedy(field, reason))}</td></tr>\n"
        for account, area, field, reason in app.unavailable_fields()
    )
    fields = (
        "<h2>Fields unavailable</h2>\n<p>Served without them; only the metrics needing them "
        "are missing. Asked for again about hourly.</p>\n"
        '<table border="1" cellpadding="4">\n<tr><th>Account</th><th>Area</th><th>Field</th>'
        f"<th>Reason</th><th>Remedy</th></tr>\n{gaps}</table>\n"
        if gaps
        else ""
    )
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
{fields}</body></html>
"""
