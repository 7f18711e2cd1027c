"""HTTP front end: POST /graphql executed with graphql-core against the bundled schema.

Adds what the real API does around execution: token exchange and expiry, admin and
machine-session gates, faults on demand, an optional rate limiter, request accounting.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import socket
import ssl
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from graphql import (
    GraphQLError,
    OperationDefinitionNode,
    build_schema,
    execute,
    parse,
    validate,
)

from .resolvers import Ctx, field_resolver
from .world import World

_SCHEMA = None


def schema() -> Any:
    global _SCHEMA
    if _SCHEMA is None:
        sdl = resources.files("exporter.simulator").joinpath("schema.graphql").read_text()
        _SCHEMA = build_schema(sdl)
    return _SCHEMA


# Fields an older self-hosted release lacks (the weakly evidenced ones of the API notes, 13).
OLD_SELF_HOSTED = frozenset({"Query.seats", "Query.metrics", "WorkerPool.schedulableRunsCount"})
# What a machine-user API key may be refused (`not available for machine sessions`; API notes,
# 12 and 13): `sim.gate_fields(MACHINE_SESSION_GATES)`, or any subset.
MACHINE_SESSION_GATES = frozenset(
    {"Stack.state", "stacks", "searchStacksSuggestions", "usage", "publicWorkerPool", "metrics"}
)


def schema_without(missing: frozenset[str]) -> Any:
    """The schema minus some fields (``Type.field``): an older release, which answers a
    document selecting one with ``Cannot query field "x" on type "Y".``"""
    if not missing:
        return schema()
    sdl = resources.files("exporter.simulator").joinpath("schema.graphql").read_text()
    variant = build_schema(sdl)
    for coordinate in missing:
        type_name, field = coordinate.split(".")
        del variant.type_map[type_name].fields[field]  # type: ignore[union-attr]
    return variant


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Faults:
    """Faults on demand. Each is optionally limited to one operation name and `times` uses."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[dict[str, Any]] = []

    def _add(self, kind: str, operation: str | None, times: int | None, **kw: Any) -> None:
        with self._lock:
            self._items.append({"kind": kind, "operation": operation, "times": times, **kw})

    def latency(self, seconds: float, operation: str | None = None, times: int | None = None):
        self._add("latency", operation, times, seconds=seconds)

    def http_status(
        self, code: int, operation: str | None = None, times: int | None = 1, body: str = ""
    ) -> None:
        self._add("http_status", operation, times, code=code, body=body or f"error {code}")

    def rate_limit(self, retry_after: int = 1, operation: str | None = None, times: int | None = 1):
        self._add("rate_limit", operation, times, retry_after=retry_after)

    def malformed(self, operation: str | None = None, times: int | None = 1, kind: str = "json"):
        self._add("malformed", operation, times, variant=kind)

    def field_error(
        self,
        field: str,
        message: str = "internal error",
        operation: str | None = None,
        times: int | None = None,
    ) -> None:
        self._add("field_error", operation, times, field=field, message=message)

    def drop_connection(self, operation: str | None = None, times: int | None = 1) -> None:
        self._add("drop", operation, times)

    def rewrite(
        self,
        fn: Callable[[dict[str, Any]], dict[str, Any]],
        operation: str | None = None,
        times: int | None = None,
    ) -> None:
        """Pass the executed answer through `fn` before sending it (fields the API adds on its
        own, such as a `secret` nobody selected)."""
        self._add("rewrite", operation, times, fn=fn)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def take(self, kind: str, operation: str | None, field: str | None = None) -> Any:
        """Consume one matching fault of `kind` (counting down `times`), or None."""
        with self._lock:
            for f in self._items:
                if f["kind"] != kind or (f["operation"] and f["operation"] != operation):
                    continue
                if field is not None and f.get("field") != field:
                    continue
                if f["times"] is not None:
                    f["times"] -= 1
                    if f["times"] <= 0:
                        self._items.remove(f)
                return f
        return None

    def take_field_error(self, field: str, operation: str | None) -> str | None:
        if not self._items:
            return None
        f = self.take("field_error", operation, field)
        return f["message"] if f else None


class _TokenBucket:
    def __init__(self, rps: float, burst: int) -> None:
        self.rps, self.burst = rps, burst
        self.tokens, self.at = float(burst), time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        """0 when allowed, else seconds until a token is available."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rps)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rps


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # clients that time out or vanish mid-answer are expected (faults, stop()); stay quiet
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class Simulator:
    """The Spacelift API simulator: serves `world` over HTTP in a daemon thread."""

    def __init__(
        self,
        world: World,
        key_id: str = "01HXSIMKEY0000000000000000",
        key_secret: str = "sim-secret",
        token_ttl: int = 3600,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,  # serve HTTPS (self-hosted Spacelift, private CA)
        missing_fields: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        self.world = world
        self.tls = tls
        self.schema = schema_without(frozenset(missing_fields))
        self.validation_status = 200  # HTTP status of a validation error (gqlgen sends 422)
        self.key_id, self.key_secret, self.key_name = key_id, key_secret, "spacelift-exporter"
        self.token_ttl = token_ttl
        self.host, self._port = host, port
        self.admin = True
        self.unauthorized_http_401 = False
        self.issued_tokens: list[str] = []
        self.gated: set[str] = set()
        self.faults = Faults()
        self.requests: Counter[str] = Counter()
        self.request_log: list[dict[str, Any]] = []
        self._acct = threading.Lock()
        self._tokens: dict[str, float] = {}  # jwt -> exp
        self._docs: OrderedDict[str, Any] = OrderedDict()  # query -> (document, errors)
        self._docs_lock = threading.Lock()
        self._limiter: _TokenBucket | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()  # open client connections (keep-alive)

    # ----------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self._port

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.endpoint + "/graphql"

    def start(self) -> Simulator:
        handler = type("Handler", (_Handler,), {"sim": self})
        self._httpd = _Server((self.host, self._port), handler)
        if self.tls is not None:  # the handshake runs in the handler's thread, not in accept
            self._httpd.socket = self.tls.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="spacelift-sim", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._port = self._httpd.server_address[1]
            self._httpd = None
            # also end keep-alive connections, so no client is served after stop()
            with self._acct:
                conns, self._conns = list(self._conns), set()
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- switches
    def gate_fields(self, fields: set[str] | list[str]) -> None:
        """Answer these fields with `not available for machine sessions`: root fields by name
        (`usage`) and any field by coordinate (`Stack.state`, `Query.metrics`)."""
        self.gated = {f.removeprefix("Query.") for f in fields}

    def rate_limit(self, requests_per_second: float | None, burst: int = 1) -> None:
        """Steady limiter (429 + Retry-After when exceeded); None switches it off."""
        self._limiter = _TokenBucket(requests_per_second, burst) if requests_per_second else None

    def reset_counts(self) -> None:
        with self._acct:
            self.requests.clear()
            self.request_log.clear()

    # ----------------------------------------------------------------- tokens
    def issue_token(self, ttl: int | None = None) -> str:
        now = int(self.world.clock.now())
        exp = now + (self.token_ttl if ttl is None else ttl)
        header = {"alg": "HS256", "typ": "JWT"}
        claims = {
            "aud": [self.endpoint],
            "iat": now,
            "nbf": now,
            "exp": exp,
            "sub": f"api::{self.key_id}",
            "iss": "api-key",
            "jti": secrets.token_hex(8),
            "adm": self.admin,
        }
        jwt = ".".join(
            (
                _b64(json.dumps(header).encode()),
                _b64(json.dumps(claims).encode()),
                _b64(secrets.token_bytes(32)),
            )
        )
        with self._acct:
            if len(self._tokens) > 1000:  # forget long-expired tokens
                self._tokens = {t: e for t, e in self._tokens.items() if e > now}
            self._tokens[jwt] = exp
            self.issued_tokens.append(jwt)  # every JWT ever issued, for leak checks in tests
        return jwt

    def expire_tokens(self) -> None:
        with self._acct:
            self._tokens.clear()

    def _token_ok(self, auth: str | None) -> bool:
        if not auth or not auth.lower().startswith("bearer "):
            return False
        exp = self._tokens.get(auth[7:].strip())
        return exp is not None and self.world.clock.now() < exp

    def _exchange(self, key_id: str | None, secret: str | None) -> Any:
        if key_id != self.key_id or secret != self.key_secret:
            raise GraphQLError("unauthorized")
        jwt = self.issue_token()
        return {"id": self.key_id, "jwt": jwt, "validUntil": self._tokens[jwt], "login": None}

    # ----------------------------------------------------------------- documents
    def _document(self, query: str) -> tuple[Any, list[GraphQLError]]:
        with self._docs_lock:
            hit = self._docs.get(query)
            if hit is not None:
                self._docs.move_to_end(query)
                return hit
        try:
            doc = parse(query)
            errors = validate(self.schema, doc)
        except GraphQLError as exc:
            doc, errors = None, [exc]
        with self._docs_lock:
            self._docs[query] = (doc, errors)
            if len(self._docs) > 256:
                self._docs.popitem(last=False)
        return doc, errors


def _operation(doc: Any, name: str | None) -> OperationDefinitionNode | None:
    ops = [d for d in (doc.definitions if doc else []) if isinstance(d, OperationDefinitionNode)]
    if name:
        return next((o for o in ops if o.name and o.name.value == name), None)
    return ops[0] if len(ops) == 1 else None


class _Handler(BaseHTTPRequestHandler):
    sim: Simulator
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # headers and body go out in two writes; without NODELAY, Nagle plus delayed ACKs
        # add ~40 ms to every keep-alive request
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.sim._acct:
            self.sim._conns.add(self.connection)

    def finish(self) -> None:
        with self.sim._acct:
            self.sim._conns.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: no per-request lines
        pass

    def do_GET(self) -> None:
        self._entry = None  # GETs are not GraphQL requests; not counted
        body = b"Spacelift API simulator. POST GraphQL documents to /graphql.\n"
        self._send(200, body, "text/plain")

    def _send(self, code: int, body: bytes, ctype: str = "application/json", headers=None):
        entry = getattr(self, "_entry", None)
        if entry is not None:  # record before answering, so a client never sees it unset
            entry["status"] = code
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(payload).encode(), headers=headers)

    def do_POST(self) -> None:
        sim = self.sim
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        entry: dict[str, Any] = {
            "operation_name": "<anonymous>",
            "operation_type": None,
            "root_fields": [],
            "variables": None,
            "status": None,
        }
        try:
            body = json.loads(raw or b"{}")
            query = body.get("query") or ""
            variables = body.get("variables") or {}
            op_name = body.get("operationName") or None
        except (ValueError, AttributeError):
            body, query, variables, op_name = None, "", {}, None
        doc, errors = sim._document(query) if query else (None, [GraphQLError("no query")])
        op = _operation(doc, op_name)
        name = op_name or (op.name.value if op is not None and op.name else None)
        entry["operation_name"] = name or "<anonymous>"
        entry["variables"] = variables
        if op is not None:
            entry["operation_type"] = op.operation.value
            entry["root_fields"] = [
                s.name.value for s in op.selection_set.selections if hasattr(s, "name")
            ]
        with sim._acct:
            sim.requests[entry["operation_name"]] += 1
            sim.request_log.append(entry)
        self._entry = entry
        self._answer(sim, body, doc, errors, op, name, variables)

    def _answer(self, sim, body, doc, errors, op, name, variables) -> int | None:
        if body is None or self.path.split("?")[0].rstrip("/") not in ("/graphql", ""):
            self._json(400, {"errors": [{"message": "invalid request body"}]})
            return 400
        faults = sim.faults
        if faults.take("drop", name):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # no response at all
            return None
        if sim._limiter is not None:
            wait = sim._limiter.take()
            if wait:
                self._rate_limited(max(1, int(wait + 0.999)))
                return 429
        f = faults.take("rate_limit", name)
        if f:
            self._rate_limited(f["retry_after"])
            return 429
        f = faults.take("http_status", name)
        if f:
            self._send(f["code"], f["body"].encode(), "text/plain")
            return f["code"]
        f = faults.take("latency", name)
        if f:
            time.sleep(f["seconds"])
        f = faults.take("malformed", name)
        if f:
            if f["variant"] == "shape":
                self._json(200, {"data": {"workerPools": "oops", "stacks": 42}})
            else:
                self._send(
                    200, b"<html>502 Bad Gateway: upstream hiccup</html>", "application/json"
                )
            return 200
        authed = sim._token_ok(self.headers.get("Authorization"))
        exchange_only = op is not None and op.operation.value == "mutation"
        if sim.unauthorized_http_401 and not authed and not exchange_only:
            self._json(401, {"errors": [{"message": "unauthorized"}]})
            return 401
        if errors:
            # graphql-core quotes names 'x'; the real API (as graphql-js) writes "x"
            formatted = [{**e.formatted, "message": e.message.replace("'", '"')} for e in errors]
            self._json(sim.validation_status, {"errors": formatted})
            return sim.validation_status
        if op is None:
            self._json(200, {"errors": [{"message": "unknown operation"}]})
            return 200
        ctx = Ctx(sim, authed, f"api::{sim.key_id}")
        with sim.world.lock:
            sim.world.sync()
            result = execute(
                sim.schema,
                doc,
                context_value=ctx,
                variable_values=variables,
                operation_name=name,
                field_resolver=field_resolver,
            )
        payload = result.formatted
        f = faults.take("rewrite", name)
        if f:
            payload = f["fn"](payload)
        self._json(200, payload)
        return 200

    def _rate_limited(self, retry_after: int) -> None:
        payload = {"errors": [{"message": "rate limit exceeded", "extensions": {"code": "429"}}]}
        self._json(429, payload, {"Retry-After": str(retry_after)})
