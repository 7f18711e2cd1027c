"""``spacelift-exporter doctor``: the first command to run against a real account.

With the same connection flags (or configuration file) as ``run``, for each account it checks:

1. the connection and the credentials (token exchange, or the pre-generated token);
2. who the key is: ``viewer``, and where the key may list API keys, whether it is admin and
   whether it is a machine user;
3. the live schema, where the server answers introspection: every document the enabled areas
   may send is validated against it with graphql-core, field by field;
4. one probe (one poll) per enabled area: ok, fields missing or refused (the series they cost
   and the remedy), permission gap (the permission the area needs), or failure.

A table by default, ``--output json`` for automation. Exit 0 when every enabled area works
(fields left out included), 1 otherwise; a broken configuration exits 2 before this runs.
Nothing printed holds a secret or a token: the client never puts them in errors, and the
report holds only what this module writes into it.

``--capture DIR`` also writes every answer received, made safe to attach to a bug report:
tokens removed, names, ids and labels replaced by stable placeholders (``<id-3>``), enum
values (states, types) and numbers kept. ``exporter.simulator.replay`` serves such a
directory back by operation name, so a capture becomes a regression test.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import httpx
from graphql import GraphQLError, build_client_schema, get_introspection_query, parse, validate

from exporter.app import App
from exporter.areas import AREAS
from exporter.areas.fields import remedy
from exporter.client import SpaceliftClient, session_admin
from exporter.config import Config
from exporter.errors import AuthError, SpaceliftError

VIEWER = "query SpaceliftExporterDoctorViewer { viewer { id name } }"
KEYS = "query SpaceliftExporterDoctorKeys { apiKeys { id admin isMachineUser } }"
INTROSPECTION = get_introspection_query().replace(
    "query IntrospectionQuery", "query SpaceliftExporterDoctorIntrospection", 1
)

OK, DEGRADED, GAP, FAIL, SKIP = "ok", "degraded", "permission gap", "failed", "skipped"


def run(
    cfg: Config, *, output: str = "table", capture: Path | None = None, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    cfg = dataclasses.replace(cfg, state_file=None)  # a probe leaves no state behind
    recorder = Recorder(capture) if capture is not None else None
    app = App(cfg, transport=recorder)
    try:
        report = [_account(app, cfg, name) for name in app.clients]
    finally:
        app.close()
    healthy = all(c["status"] in (OK, DEGRADED, SKIP) for a in report for c in a["checks"])
    if output == "json":
        out.write(json.dumps({"ok": healthy, "accounts": report}, indent=2) + "\n")
    else:
        out.write(_table(report, healthy))
    return 0 if healthy else 1


def _check(name: str, status: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"check": name, "status": status, "detail": detail, **extra}


def _account(app: App, cfg: Config, name: str) -> dict[str, Any]:
    client = app.clients[name]
    account = next(a for a in cfg.accounts if a.name == name)
    checks: list[dict[str, Any]] = []
    report = {"account": name, "endpoint": account.endpoint, "checks": checks}
    how = "pre-generated token" if account.credentials.token is not None else "API key"
    try:
        with client.budget(cfg.http.poll_timeout):
            viewer = client.query(VIEWER)
    except SpaceliftError as exc:
        hint = "check the key id and secret" if isinstance(exc, AuthError) else "check the endpoint"
        checks.append(_check("connection", FAIL, f"{how}: {exc.kind}: {exc} ({hint})"))
        return report
    who = (viewer.data or {}).get("viewer")
    if not isinstance(who, Mapping):
        checks.append(_check("connection", FAIL, f"{how}: Spacelift does not know this session"))
        return report
    checks.append(_check("connection", OK, f"{how} accepted"))
    identity = _identity(client, cfg, account.credentials.key_id, who)
    checks.append(identity)
    checks.append(_schema(client, cfg, account.enabled_areas()))
    for area in account.enabled_areas():
        checks.append(_probe(app, name, area))
    if identity["machine_user"].startswith("unknown") and any(
        "machine session" in json.dumps(c) for c in checks
    ):
        identity["machine_user"] = "yes (Spacelift refused fields to machine sessions)"
    identity["detail"] = (
        f"{identity['detail']}; admin: {identity['admin']}; "
        f"machine user: {identity['machine_user']}"
    )
    return report


def _identity(
    client: SpaceliftClient, cfg: Config, key_id: str | None, who: Mapping[str, Any]
) -> dict[str, Any]:
    detail = f"viewer {who.get('name')!s} ({who.get('id')!s})"
    admin = machine = "unknown (the key may not list API keys)"
    try:
        with client.budget(cfg.http.poll_timeout):
            keys = client.query(KEYS).require("apiKeys")["apiKeys"]
        mine = next(
            (k for k in keys or [] if isinstance(k, Mapping) and k.get("id") == key_id), None
        )
        if mine is not None:
            admin = "yes" if mine.get("admin") else "no"
            machine = "yes" if mine.get("isMachineUser") else "no"
        else:
            admin = machine = "unknown (the key is not in the API key list)"
    except SpaceliftError:
        pass
    if admin.startswith("unknown"):
        claim = session_admin(client)
        if claim is not None:
            admin = ("yes" if claim else "no") + " (the session's adm claim)"
    return _check("identity", OK, detail, admin=admin, machine_user=machine)


def documents(areas: list[str]) -> dict[str, str]:
    """Every document the enabled areas may send, by operation name."""
    return {op: doc for area in areas for op, doc in AREAS[area].documents.items()}


def _schema(client: SpaceliftClient, cfg: Config, areas: list[str]) -> dict[str, Any]:
    try:
        with client.budget(cfg.http.poll_timeout):
            result = client.query(INTROSPECTION)
        data = result.data
        if not data or "__schema" not in data or result.errors:
            raise ValueError("; ".join(e.message for e in result.errors) or "no schema")
        schema = build_client_schema(data)  # type: ignore[arg-type]
    except (SpaceliftError, ValueError, TypeError, KeyError, GraphQLError) as exc:
        return _check("schema", SKIP, f"the server does not answer introspection ({exc})")
    problems = []
    docs = documents(areas)
    for op, doc in sorted(docs.items()):
        problems += [f"{op}: {e.message}" for e in validate(schema, parse(doc))]
    if problems:
        return _check(
            "schema",
            DEGRADED,
            f"{len(problems)} field(s) of the exporter's documents are not in this server's "
            "schema; the areas leave optional ones out (see below)",
            problems=problems,
        )
    return _check("schema", OK, f"{len(docs)} documents valid against the live schema")


def _probe(app: App, account: str, area: str) -> dict[str, Any]:
    key = (account, area)
    app.poll(key)
    st = app.store.get(key)
    gaps = [
        {"field": f, "reason": r, "remedy": remedy(f, r)}
        for acc, ar, f, r in app.unavailable_fields()
        if acc == account and ar == area
    ]
    name = f"area {area}"
    if st.ok:
        if gaps:
            fields = ", ".join(f"{g['field']} {g['reason']}" for g in gaps)
            return _check(name, DEGRADED, f"served without {fields}", fields=gaps)
        return _check(name, OK, "polled", fields=[])
    if st.permission_denied:
        detail = f"{st.error}. Needs: {AREAS[area].permission}"
        return _check(name, GAP, detail, fields=gaps)
    return _check(name, FAIL, f"{st.error_kind}: {st.error}", fields=gaps)


def _table(report: list[dict[str, Any]], healthy: bool) -> str:
    lines = []
    for acc in report:
        lines.append(f"Account {acc['account']} at {acc['endpoint']}")
        for c in acc["checks"]:
            lines.append(f"  {c['check']:<26} {c['status']:<15} {c['detail']}")
            for problem in c.get("problems", []):
                lines.append(f"  {'':<26} {'':<15}   {problem}")
            for gap in c.get("fields", []) if c["status"] != OK else []:
                lines.append(f"  {'':<26} {'':<15}   {gap['field']}: {gap['remedy']}")
        lines.append("")
    lines.append("Every enabled area works." if healthy else "Some areas do not work (see above).")
    return "\n".join(lines) + "\n"


# -- capture -------------------------------------------------------------------------------------

# Strings kept as they are: enum values (states, run types, drift states), error messages and
# paths (field names), and Spacelift's own names (system roles, the root space).
_ENUM = re.compile(r"^[A-Z][A-Z0-9_]*$")
_KEEP_KEYS = frozenset({"message", "path", "__typename"})
_KEEP_VALUES = frozenset({"root", "legacy", "space-admin", "space-reader", "space-writer"})
_TOKEN_KEYS = frozenset({"jwt", "token", "secret"})


class Sanitizer:
    """Replaces names, ids and labels by stable placeholders (the same value, the same
    placeholder, across every answer of a capture), so references between answers hold."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def __call__(self, value: Any, key: str = "") -> Any:
        if isinstance(value, Mapping):
            return {k: self._field(k, v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v, key) for v in value]
        if isinstance(value, str) and not (
            _ENUM.match(value) or key in _KEEP_KEYS or value in _KEEP_VALUES
        ):
            return self._placeholder(value, key)
        return value

    def _field(self, key: str, value: Any) -> Any:
        if key in _TOKEN_KEYS:
            return None if value is None else "<removed>"
        if key == "__schema":  # the schema is Spacelift's, not the account's
            return value
        return self(value, key)

    def _placeholder(self, value: str, key: str) -> str:
        if value not in self._seen:
            kind = re.sub(r"[^a-z]", "", key.lower())[:12] or "value"
            self._seen[value] = f"<{kind}-{len(self._seen) + 1}>"
        return self._seen[value]


class Recorder(httpx.BaseTransport):
    """An HTTP transport that writes every GraphQL answer, sanitized, into a directory."""

    def __init__(self, directory: Path, inner: httpx.BaseTransport | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.inner = inner or httpx.HTTPTransport()
        self.sanitize = Sanitizer()
        self.count = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        raw = b"".join(response.iter_raw())
        response.close()
        copy = httpx.Response(  # an unread stream: the client reads (and bounds) it as usual
            response.status_code,
            headers=response.headers,
            stream=httpx.ByteStream(raw),
            request=request,
        )
        try:
            operation = str(json.loads(request.content).get("operationName") or "anonymous")
            body = json.loads(httpx.Response(200, headers=response.headers, content=raw).read())
        except (ValueError, AttributeError, httpx.DecodingError):
            operation, body = "unreadable", None
        self.count += 1
        name = re.sub(r"[^A-Za-z0-9_]", "_", operation)
        record = {
            "operation": operation,
            "status": response.status_code,
            "body": self.sanitize(body),
        }
        path = self.directory / f"{self.count:03d}-{name}.json"
        path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        return copy

    def close(self) -> None:
        self.inner.close()
