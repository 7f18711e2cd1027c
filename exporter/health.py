"""Exporter health metrics, derived from the snapshot store at render time."""

from __future__ import annotations

import platform
from collections.abc import Iterable

from exporter import __revision__, __version__
from exporter.families import FamilyBuilder, MetricDef, counter, gauge
from exporter.store import AreaState, Key

UP = gauge(
    "spacelift_up",
    "1 if the account's Spacelift API answered the last poll of every area (a permission "
    "refusal or a field error is an answer); 0 if it was unreachable, failing, rate limiting, "
    "refusing the credentials, or not polled yet.",
)
# Failures that mean the API itself is not usable, as opposed to one area's answer.
OUTAGE_KINDS = frozenset(
    {"unreachable", "server_error", "rate_limited", "timeout", "auth", "malformed"}
)
POLL_SUCCESS = gauge("spacelift_poll_success", "1 if the area's last poll succeeded.", "area")
POLL_PERMISSION = gauge(
    "spacelift_poll_permission_denied",
    "1 if the API key may not read the area, or part of it, at the last poll (a permission "
    "gap, not an outage).",
    "area",
)
POLL_DURATION = gauge(
    "spacelift_poll_duration_seconds", "How long the area's last poll took.", "area"
)
LAST_SUCCESS = gauge(
    "spacelift_last_successful_poll_timestamp_seconds",
    "When the area last polled successfully; its metrics are from then.",
    "area",
)
POLLS = counter("spacelift_polls_total", "Polls of the area, successful or not.", "area")
FAILURES = counter("spacelift_poll_failures_total", "Polls of the area that failed.", "area")
FIELD_UNAVAILABLE = gauge(
    "spacelift_api_field_unavailable",
    "1 for each Spacelift field the area's documents are sent without: the server lacks it "
    "(reason=missing, an older release) or refuses it to this API key (reason=refused). The "
    "metrics needing it are absent; it is asked for again about hourly.",
    "area",
    "field",
    "reason",
)
# The name of Spacelift's official exporter (which labels it commit/goversion/version), so
# "which exporter build is running" panels work with either.
BUILD_INFO = MetricDef(
    "spacelift_build_info",
    "gauge",
    "Build of the running spacelift-exporter (value 1): version, source revision, Python.",
    ("version", "revision", "python_version"),
)

METRICS = (
    UP,
    POLL_SUCCESS,
    POLL_PERMISSION,
    POLL_DURATION,
    LAST_SUCCESS,
    POLLS,
    FAILURES,
    FIELD_UNAVAILABLE,
    BUILD_INFO,
)


def up(states: list[AreaState]) -> bool:
    polled = [st for st in states if st.polled]
    return bool(polled) and not any(not st.ok and st.error_kind in OUTAGE_KINDS for st in polled)


def collect(
    areas: list[tuple[Key, AreaState]],
    out: FamilyBuilder,
    unavailable: Iterable[tuple[str, str, str, str]] = (),
) -> None:
    """``unavailable``: (account, area, field, reason) of the fields left out of documents."""
    out.add(BUILD_INFO, (__version__, __revision__, platform.python_version()), 1)
    out.declare(FIELD_UNAVAILABLE)
    for gap in sorted(unavailable):
        out.add(FIELD_UNAVAILABLE, gap, 1)
    by_account: dict[str, list[AreaState]] = {}
    for (account, _), st in areas:
        by_account.setdefault(account, []).append(st)
    for account, states in sorted(by_account.items()):
        out.add(UP, (account,), 1 if up(states) else 0)
    for (account, area), st in sorted(areas, key=lambda kv: kv[0]):
        labels = (account, area)
        out.add(POLL_SUCCESS, labels, 1 if st.ok else 0)
        out.add(POLL_PERMISSION, labels, 1 if st.permission_denied else 0)
        out.add(POLL_DURATION, labels, st.last_duration)
        if st.last_success is not None:
            out.add(LAST_SUCCESS, labels, st.last_success)
        out.add(POLLS, labels, st.polls)
        out.add(FAILURES, labels, st.failures)
