"""Typed failures of a poll. ``kind`` is what the pipeline reports; ``permission`` is apart.

A poll that fails for lack of permission (a non-admin key reading usage, a field closed to
machine sessions) is a configuration gap, not an outage, so it must not page as one.
"""

from __future__ import annotations


class SpaceliftError(Exception):
    kind = "error"


class TransportFailure(SpaceliftError):
    """No HTTP answer: connection refused or dropped, or a request timeout, after retries."""

    kind = "unreachable"


class ServerError(SpaceliftError):
    """HTTP 5xx (after retries) or another unexpected HTTP status."""

    kind = "server_error"


class RateLimitedError(SpaceliftError):
    """HTTP 429 whose Retry-After does not fit in the poll's remaining time."""

    kind = "rate_limited"


class MalformedResponseError(SpaceliftError):
    """An answer that is not the JSON or the shape the document asked for."""

    kind = "malformed"


class AuthError(SpaceliftError):
    """The credentials did not yield a usable token (exchange refused, token expired)."""

    kind = "auth"


class PermissionDeniedError(SpaceliftError):
    """Authenticated, but the key may not read what the area asks for."""

    kind = "permission"


class PartialPermissionDenied(PermissionDeniedError):
    """Part of the area was refused; ``snapshot`` holds the part the key could read.

    The pipeline serves that snapshot (fresh data for what was read, nothing for the refused
    part) and reports the area as a permission gap, not as an outage.
    """

    def __init__(self, message: str, snapshot: object) -> None:
        super().__init__(message)
        self.snapshot = snapshot


class PartialFailure(SpaceliftError):
    """Part of an area of several documents failed (any kind but permission, which is
    ``PartialPermissionDenied``); ``snapshot`` holds the fresh parts and, for the failed
    part, its last good data. ``kind`` is the failed part's."""

    def __init__(self, message: str, snapshot: object, kind: str) -> None:
        super().__init__(message)
        self.snapshot = snapshot
        self.kind = kind


class QueryError(SpaceliftError):
    """GraphQL ``errors[]`` on a field the area cannot do without."""

    kind = "graphql_error"


class PollTimeout(SpaceliftError):
    """The poll used up its total time budget."""

    kind = "timeout"


class ReadOnlyViolation(Exception):
    """A document that is not a query (nor the token exchange) was about to be sent."""


class ClientClosed(SpaceliftError):
    """The exporter is stopping: a poll in flight ends without an answer (not an outage)."""

    kind = "shutdown"
