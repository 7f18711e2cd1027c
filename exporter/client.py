"""Spacelift GraphQL client: token exchange and refresh, retries, typed errors.

Knows nothing about Prometheus beyond reporting its traffic to ``SelfMetrics``. Every document
goes through ``graphql_doc.inspect`` first, so only queries and the token exchange are sent.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from exporter import __version__, trust
from exporter.config import AccountConfig, ConfigError, HttpConfig
from exporter.errors import (
    AuthError,
    ClientClosed,
    MalformedResponseError,
    PermissionDeniedError,
    PollTimeout,
    QueryError,
    RateLimitedError,
    ServerError,
    SpaceliftError,
    TransportFailure,
)
from exporter.graphql_doc import inspect
from exporter.selfmetrics import SelfMetrics
from exporter.transport import (
    ACCEPT_ENCODING,
    AnswerTooLarge,
    AnswerUnreadable,
    RequestDeadlines,
    cut,
    loads,
    read_body,
)

log = logging.getLogger(__name__)

# Re-exchange when the JWT has less than this left (Spacelift's own clients use 30 s).
REFRESH_MARGIN = 60.0
# After a failed exchange, wait this long (doubling up to the cap) before trying again, so
# five areas polling a dead endpoint do not hammer the auth mutation.
EXCHANGE_BACKOFF = (5.0, 300.0)

EXCHANGE_DOCUMENT = """
mutation SpaceliftExporterGetToken($id: ID!, $secret: String!) {
  apiKeyUser(id: $id, secret: $secret) { jwt validUntil }
}
"""

MAX_TOKEN_CHARS = 16_384  # sent in a header at every request; Spacelift's are ~1 KB
# API key tokens live 1 h, user sessions 10 h. A longer lifetime (a self-hosted setting) is
# used for at most a week before the key is exchanged again; one past ten years is nonsense.
MAX_TOKEN_LIFETIME = 7 * 86400.0
ABSURD_TOKEN_LIFETIME = 3650 * 86400.0
MAX_ERRORS = 100  # entries of errors[] (and of a path) looked at; the rest is noise

VIEWER_DOCUMENT = "query SpaceliftExporterViewer { viewer { id } }"

PERMISSION_MESSAGES = ("unauthorized", "not available for machine sessions", "forbidden")
# An older server's validation error for a field its schema lacks (graphql-js wording).
UNKNOWN_FIELD = re.compile(r"""Cannot query field ["'](\w+)["'] on type ["'](\w+)["']""")


@dataclass(frozen=True)
class FieldError:
    message: str
    path: tuple[str | int, ...]
    locations: tuple[tuple[int, int], ...] = ()  # (line, column) in the document sent

    @property
    def is_permission(self) -> bool:
        text = self.message.lower()
        return any(m in text for m in PERMISSION_MESSAGES)

    @property
    def unknown_field(self) -> str | None:
        """``Type.field`` when the server's schema has no such field, else None."""
        m = UNKNOWN_FIELD.search(self.message)
        return f"{m.group(2)}.{m.group(1)}" if m else None


@dataclass(frozen=True)
class Result:
    """A GraphQL answer: ``data`` may be partial when ``errors`` name some fields."""

    operation: str
    data: Mapping[str, Any] | None
    errors: tuple[FieldError, ...]
    status: int = 200
    server_time: float | None = None  # the answer's Date header: Spacelift's clock

    def require(self, *roots: str) -> Mapping[str, Any]:
        """The data, if every root field named is present and none of them errored.

        Errors on other fields are tolerated (the rest of the answer is usable).
        """
        blocking = [e for e in self.errors if not e.path or e.path[0] in roots]
        if self.data is None or blocking or any(self.data.get(r) is None for r in roots):
            raise classify(self.operation, blocking or list(self.errors))
        return self.data


def classify(operation: str, errors: list[FieldError]) -> SpaceliftError:
    if not errors:
        return MalformedResponseError(f"{operation}: answer has no data")
    text = cut("; ".join(sorted({e.message for e in errors})))
    if all(e.is_permission for e in errors):
        return PermissionDeniedError(f"{operation}: {text}")
    return QueryError(f"{operation}: {text}")


class SpaceliftClient:
    def __init__(
        self,
        account: AccountConfig,
        http: HttpConfig,
        metrics: SelfMetrics | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] | None = None,
        rng: Callable[[], float] = random.random,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.account = account.name
        self.endpoint = account.endpoint
        parts = urlsplit(account.endpoint)
        self._host = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        self._creds = account.credentials
        self._cfg = http
        self._metrics = metrics
        self._clock = clock
        self._closed = threading.Event()
        self._sleep = (
            self._closed.wait if sleep is None else sleep
        )  # a retry pause ends when the client closes
        self._rng = rng
        # A one-shot command (`once`) reports a refused connection at once instead of retrying.
        self.one_shot = False
        self._http = httpx.Client(
            timeout=http.timeout,
            transport=transport,
            verify=trust.verify(http.ca_cert_path),
            headers={
                "User-Agent": f"spacelift-exporter/{__version__}",
                "Spacelift-Client-Type": "spacelift-exporter",
                "Accept-Encoding": ACCEPT_ENCODING,
            },
        )
        self._deadlines = RequestDeadlines()
        self._deadlines.install(self._http)
        self._lock = threading.Lock()
        self._jwt: str | None = None
        self._valid_until = 0.0  # by our clock: when we exchanged plus the token's lifetime
        self._exchange_failures = 0
        self._exchange_not_before = 0.0
        self._last_exchange_error = ""
        self._exchange_failed: tuple[float, SpaceliftError] | None = None  # (monotonic, error)
        self._scope = threading.local()  # per-thread poll deadline, set by budget()
        self._denied: dict[str, str] = {}  # operation -> token it was refused with after a retry

    def __repr__(self) -> str:
        return f"SpaceliftClient(account={self.account!r}, endpoint={self.endpoint!r})"

    def close(self) -> None:
        """Stop: retry pauses end, blocked reads wake, and polls in flight end as ClientClosed."""
        self._closed.set()
        self._deadlines.abort()
        self._http.close()

    # -- public API -----------------------------------------------------------------------

    @contextmanager
    def budget(self, seconds: float) -> Iterator[None]:
        """Bound the total time of every query made in this block (one poll) by this thread."""
        previous = getattr(self._scope, "deadline", None)
        self._scope.deadline = time.monotonic() + seconds
        try:
            yield
        finally:
            self._scope.deadline = previous

    def query(
        self,
        document: str,
        variables: Mapping[str, Any] | None = None,
        *,
        deadline: float | None = None,
    ) -> Result:
        """Send a named query; re-exchange and retry once if the token was refused."""
        op = inspect(document)
        if op.is_mutation:
            raise AuthError("the token exchange is not sent through query()")
        if deadline is None:
            deadline = getattr(self._scope, "deadline", None)
        if deadline is None:
            deadline = time.monotonic() + self._cfg.poll_timeout
        token = self._token(deadline)
        result = self._send(op.name, document, variables, token, deadline)
        if not _refused(result):
            return result
        if self._creds.token is not None:
            self._explain_token_refusal(deadline)
            return result  # the token works: the refusal is a permission gap
        if self._denied.get(op.name) == token:
            return result  # refused with this very token after a fresh exchange already
        log.info("token refused, exchanging the API key again", extra={"account": self.account})
        self._invalidate(token)
        token = self._token(deadline)
        result = self._send(op.name, document, variables, token, deadline)
        if _refused(result):
            if result.status in (401, 403):
                raise AuthError(f"{op.name}: HTTP {result.status} even with a fresh token")
            # A fresh token refused too: the key lacks permission for this document.
            # Remember it, so later polls with this token skip the pointless re-exchange.
            self._denied[op.name] = token
        return result

    def _explain_token_refusal(self, deadline: float) -> None:
        """A pre-generated token was refused: expired or revoked (AuthError), or a gap."""
        assert self._creds.token is not None
        expiry = _jwt_expiry(self._creds.token.reveal())
        if expiry is not None and expiry <= self._clock():
            raise AuthError("the pre-generated API token has expired")
        # `viewer` is null for a session Spacelift does not accept (spacectl's own test).
        viewer = self._send(
            "SpaceliftExporterViewer", VIEWER_DOCUMENT, None, self._creds.token.reveal(), deadline
        )
        if not isinstance((viewer.data or {}).get("viewer"), Mapping):
            raise AuthError("the pre-generated API token was refused (not logged in)")

    # -- token ------------------------------------------------------------------------------

    def _token(self, deadline: float) -> str:
        if self._creds.token is not None:
            return self._creds.token.reveal()
        waiting_since = time.monotonic()
        with self._lock:  # concurrent pollers wait here and share one exchange
            now = self._clock()
            if self._jwt is not None and self._valid_until - now >= REFRESH_MARGIN:
                return self._jwt
            still_valid = self._jwt is not None and self._valid_until > now
            failed = self._exchange_failed
            if not still_valid and failed is not None and failed[0] >= waiting_since:
                # The exchange this poller waited for failed: share its failure rather than
                # trying again in turn (five areas against a dead endpoint took 5x the time).
                raise type(failed[1])(str(failed[1]))
            if now < self._exchange_not_before:
                if still_valid:
                    return self._jwt  # type: ignore[return-value]
                if self.one_shot:
                    raise AuthError(self._last_exchange_error)
                raise AuthError(
                    f"API key refused {self._exchange_failures} time(s), next attempt in "
                    f"{self._exchange_not_before - now:.0f}s: {self._last_exchange_error}"
                )
            try:
                self._jwt, self._valid_until = self._exchange(deadline)
            except SpaceliftError as exc:
                self._exchange_failed = (time.monotonic(), exc)
                self._exchange_error(exc, now, still_valid)
                return self._jwt  # type: ignore[return-value]  # still valid, else raised
            self._exchange_failed = None
            self._exchange_failures = 0
            self._exchange_not_before = 0.0
            self._count_exchange("success")
            return self._jwt

    def _exchange_error(self, exc: SpaceliftError, now: float, still_valid: bool) -> None:
        """Count and back off a failed exchange; raise unless the current token still works."""
        if isinstance(exc, AuthError):
            # Refused credentials: back off (doubling) so five areas do not hammer it.
            self._exchange_failures += 1
            base, cap = EXCHANGE_BACKOFF
            backoff = min(cap, base * 2 ** (self._exchange_failures - 1))
            self._exchange_not_before = now + backoff
            self._last_exchange_error = str(exc)
            self._count_exchange("failure")
        else:
            # Spacelift unreachable or failing: an outage, reported as such (its own kind,
            # outcome "error", not a refusal), retried at the next poll; a token that is
            # still valid keeps serving meanwhile.
            self._count_exchange("error")
            if still_valid:
                log.warning("token refresh failed, using the current token until it expires")
        if not still_valid:
            raise exc

    def _exchange(self, deadline: float) -> tuple[str, float]:
        op = inspect(EXCHANGE_DOCUMENT)
        key_id = self._creds.key_id or ""
        try:
            secret = self._creds.secret()  # re-read from the file each time (OIDC keys rotate)
        except ConfigError as exc:
            raise AuthError(f"cannot read the API key secret: {exc}") from None
        variables = {"id": key_id, "secret": secret.reveal()}
        result = self._send(op.name, EXCHANGE_DOCUMENT, variables, None, deadline)
        user = (result.data or {}).get("apiKeyUser")
        if not isinstance(user, Mapping) or not user.get("jwt"):
            reason = cut("; ".join(e.message for e in result.errors)) or "no token in the answer"
            raise AuthError(f"API key {key_id!r} was refused: {reason}")
        try:
            jwt, valid_until = str(user["jwt"]), float(user["validUntil"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedResponseError("apiKeyUser answer without a usable validUntil") from exc
        if len(jwt) > MAX_TOKEN_CHARS:
            raise MalformedResponseError(f"apiKeyUser answer with a {len(jwt)}-character token")
        lifetime = _lifetime(jwt, valid_until, result.server_time, self._clock())
        if not math.isfinite(lifetime) or lifetime > ABSURD_TOKEN_LIFETIME:
            raise MalformedResponseError(f"apiKeyUser token valid for {lifetime:.0f}s")
        # A lifetime of 0 or less (a replayed or odd answer): used for this request only.
        return jwt, self._clock() + min(lifetime, MAX_TOKEN_LIFETIME)

    def _invalidate(self, token: str) -> None:
        with self._lock:
            if self._jwt == token:
                self._jwt = None

    def _count_exchange(self, outcome: str) -> None:
        if self._metrics:
            self._metrics.token_exchange(self.account, outcome)

    # -- HTTP -------------------------------------------------------------------------------

    def _send(
        self,
        operation: str,
        document: str,
        variables: Mapping[str, Any] | None,
        token: str | None,
        deadline: float,
    ) -> Result:
        body = {"query": document, "variables": dict(variables or {}), "operationName": operation}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        attempt = 0
        while True:
            if self._closed.is_set():
                raise ClientClosed(f"{operation}: the exporter is stopping")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PollTimeout(f"{operation}: poll time budget exhausted")
            timeout = min(self._cfg.timeout, remaining)
            started = time.perf_counter()
            failure: SpaceliftError
            try:
                resp, content = self._post(body, headers, timeout)
            except httpx.TimeoutException:
                self._observe(operation, "timeout", started)
                failure = TransportFailure(
                    f"{operation}: {self._host}: request timed out "
                    f"(no complete answer in {timeout:.3g}s)"
                )
            except (AnswerTooLarge, AnswerUnreadable) as exc:
                self._observe(operation, "malformed", started)
                raise MalformedResponseError(f"{operation}: {exc}") from None
            except (httpx.HTTPError, RuntimeError) as exc:  # refused, reset, dropped, protocol
                if self._closed.is_set():  # RuntimeError: "the client has been closed"
                    raise ClientClosed(f"{operation}: the exporter is stopping") from None
                if isinstance(exc, RuntimeError):
                    raise
                self._observe(operation, "connection_error", started)
                failure = TransportFailure(f"{operation}: {self._host}: {_describe(exc)}")
                if self.one_shot and isinstance(exc, httpx.ConnectError):
                    raise failure from None
            else:
                status = resp.status_code
                if status == 429:
                    self._observe(operation, "rate_limited", started)
                    if self._metrics:
                        self._metrics.rate_limited(self.account)
                    # An HTTP date is read against Spacelift's own clock (its Date header).
                    server_now = _http_date(resp.headers.get("Date")) or time.time()
                    wait = _retry_after(resp.headers.get("Retry-After"), server_now)
                    wait = wait if wait is not None else self._backoff(attempt)
                    if attempt >= self._cfg.retries or wait > deadline - time.monotonic():
                        raise RateLimitedError(
                            f"{operation}: rate limited (Retry-After {wait:.0f}s)"
                        )
                    log.warning(
                        "rate limited by Spacelift, waiting",
                        extra={"account": self.account, "operation": operation, "wait": wait},
                    )
                    self._sleep(wait)
                    attempt += 1
                    continue
                if status in (401, 403):
                    self._observe(operation, "unauthorized", started)
                    return Result(operation, None, (FieldError("unauthorized", ()),), status)
                if status >= 500:
                    self._observe(operation, "server_error", started)
                    failure = ServerError(f"{operation}: HTTP {status}")
                elif status != 200:
                    # A 4xx names what Spacelift disliked (a removed field, a bad variable).
                    self._observe(operation, "http_error", started)
                    unknown = [e for e in _errors(content) if e.unknown_field]
                    if unknown:
                        # Some GraphQL servers answer a validation error with a 4xx (gqlgen:
                        # 422): a field this release lacks, which the caller may leave out.
                        return Result(operation, None, tuple(unknown), status)
                    messages = _error_messages(content)
                    raise QueryError(
                        f"{operation}: HTTP {status}" + (f": {messages}" if messages else "")
                    )
                else:
                    result = self._parse(operation, content, started)
                    return replace(result, server_time=_http_date(resp.headers.get("Date")))
            pause = self._backoff(attempt)
            if attempt >= self._cfg.retries or pause >= deadline - time.monotonic():
                raise failure  # the real cause, not a budget timeout after a last sleep
            log.debug("retrying", extra={"account": self.account, "operation": operation})
            self._sleep(pause)
            attempt += 1

    def _post(
        self, body: Mapping[str, Any], headers: Mapping[str, str], timeout: float
    ) -> tuple[httpx.Response, bytes]:
        """One request, bounded as a whole by ``timeout`` and in size by read_body."""
        with (
            self._deadlines.until(time.monotonic() + timeout),
            self._http.stream(
                "POST", self.endpoint, json=body, headers=headers, timeout=timeout
            ) as resp,
        ):
            # Bodies of 429, 401/403 and 5xx are never used: not read.
            wanted = resp.status_code < 500 and resp.status_code not in (401, 403, 429)
            return resp, read_body(resp) if wanted else b""

    def _parse(self, operation: str, content: bytes, started: float) -> Result:
        try:
            payload = loads(content)
        except AnswerUnreadable as exc:
            self._observe(operation, "malformed", started)
            raise MalformedResponseError(f"{operation}: {exc}") from None
        data = payload.get("data") if isinstance(payload, dict) else None
        raw_errors = payload.get("errors") if isinstance(payload, dict) else None
        if not isinstance(payload, dict) or (data is None and not raw_errors):
            self._observe(operation, "malformed", started)
            raise MalformedResponseError(f"{operation}: answer has neither data nor errors")
        if data is not None and not isinstance(data, dict):
            self._observe(operation, "malformed", started)
            raise MalformedResponseError(f"{operation}: data is not an object")
        if raw_errors is not None and not isinstance(raw_errors, list):
            self._observe(operation, "malformed", started)
            raise MalformedResponseError(f"{operation}: errors is not a list")
        errors = tuple(_field_error(e) for e in (raw_errors or [])[:MAX_ERRORS])
        self._observe(operation, "graphql_error" if errors else "success", started)
        return Result(operation, data, errors)

    def _observe(self, operation: str, outcome: str, started: float) -> None:
        if self._metrics:
            self._metrics.request(self.account, operation, outcome, time.perf_counter() - started)

    def _backoff(self, attempt: int) -> float:
        ceiling: float = min(self._cfg.backoff_max, self._cfg.backoff_base * 2.0**attempt)
        return ceiling / 2 + self._rng() * ceiling / 2  # "equal jitter"


def _errors(content: bytes) -> list[FieldError]:
    """The ``errors[]`` of a non-200 answer, if it has any."""
    try:
        payload = loads(content)
    except AnswerUnreadable:
        return []
    errors = payload.get("errors") if isinstance(payload, dict) else None
    if not isinstance(errors, list):
        return []
    return [_field_error(e) for e in errors[:MAX_ERRORS]]


def _error_messages(content: bytes) -> str:
    return cut("; ".join(e.message for e in _errors(content)))


def _refused(result: Result) -> bool:
    return any("unauthorized" in e.message.lower() for e in result.errors)


def _field_error(raw: Any) -> FieldError:
    """One entry of ``errors[]``, its text cut: it reaches logs, the landing page and errors."""
    if not isinstance(raw, dict):
        return FieldError(cut(str(raw)), ())
    path = raw.get("path") or ()
    path = path[:MAX_ERRORS] if isinstance(path, list) else ()
    raw_locations = raw.get("locations")
    locations = tuple(
        (loc["line"], loc["column"])
        for loc in (raw_locations[:10] if isinstance(raw_locations, list) else [])
        if isinstance(loc, dict)
        and isinstance(loc.get("line"), int)
        and isinstance(loc.get("column"), int)
    )
    return FieldError(
        cut(str(raw.get("message", ""))),
        tuple(p if isinstance(p, int) else cut(str(p), 100) for p in path),
        locations,
    )


def _describe(exc: httpx.HTTPError) -> str:
    """``connection refused`` from ``[Errno 111] Connection refused``; the class otherwise."""
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)).strip()
    return cut(text.lower() if text else type(exc).__name__, 200)


def _http_date(value: str | None) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp() if value else None
    except (TypeError, ValueError):
        return None


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def _lifetime(jwt: str, valid_until: float, server_time: float | None, now: float) -> float:
    """How long the token lives, by Spacelift's own clock: ``validUntil`` minus the time it
    was issued (the JWT's ``iat``, else the answer's Date header). Comparing ``validUntil``
    with our clock instead would re-exchange the key at every request when ours runs ahead."""
    issued = _jwt_claim(jwt, "iat")
    if issued is None:
        issued = server_time if server_time is not None else now
    return valid_until - issued


def session_admin(client: SpaceliftClient) -> bool | None:
    """The ``adm`` claim of the client's session JWT (Spacelift sets it on admin sessions),
    read without verifying it; None when unknown. For ``doctor``'s "who is this key"."""
    token = client._creds.token.reveal() if client._creds.token is not None else client._jwt
    parts = (token or "").split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    adm = claims.get("adm") if isinstance(claims, dict) else None
    return adm if isinstance(adm, bool) else None


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it (we only want to explain a 401)."""
    return _jwt_claim(token, "exp")


def _jwt_claim(token: str, name: str) -> float | None:
    """A numeric claim of a JWT, read without verifying it."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
        value = float(str(claims[name]))
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None
    return value if value == value and abs(value) < 1e13 else None  # not NaN, not absurd
