"""Spacelift webhooks: run state changes pushed by Spacelift, counted the moment they happen.

A user points a Spacelift *named webhook* at ``POST /webhooks/spacelift`` (the path is
configurable) and routes run events to it with a notification policy. Each delivery is:

1. **Verified before anything is parsed**: ``X-Signature-256`` must be ``sha256=`` + the hex
   HMAC-SHA256 of the raw body under the account's webhook secret, compared in constant time
   (Spacelift's docs, integrations/webhooks.md "Validating payload": "X-Signature-256 contains
   the SHA256 hash. We're using the exact same mechanism as GitHub"). Missing or wrong: 401.
2. **Parsed with bounds** (the default run payload of integrations/webhooks.md "Run events"):
   ``account`` (the account's subdomain), ``state``, ``stateVersion`` ("the ordinal number of
   the state, which can be used to ensure that notifications that may be sent or received
   out-of-order are correctly processed"), ``timestamp`` (unix time of the transition),
   ``run { id type createdAt commit { timestamp } }`` and ``stack { id }``. Anything else: 400.
3. **Recorded** in the account's run ledger, the same one the runs poller feeds
   (``run_ledger.Ledger.observe``), so a run is counted once whichever source sees it end
   first, and a replayed or older delivery changes nothing. Never a call to Spacelift: a
   delivery is answered in well under a millisecond of work, because Spacelift disables a
   webhook after 10 consecutive failures and retries (up to 3 times) on 5xx only.

The HTTP mechanics (body size limit answered with 413 before the body is read, the time a
sender may take) belong to the web server (``exporter.httpd``, mounted by ``exporter.web``);
``Receiver.handle`` is given the complete body, and told of bodies cut short.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.areas.run_ledger import WebhookObs
from exporter.config import AccountConfig, account_name
from exporter.selfmetrics import SelfMetrics

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-signature-256"  # headers are looked up lower-case
_SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")
_ID = re.compile(r"[A-Za-z0-9_.:/@+-]{1,256}")  # run ids are ULIDs, stack ids slugs
_ENUM = re.compile(r"[A-Z][A-Z_]{0,39}")  # RunState / RunType values
MAX_STATE_VERSION = 1_000_000

# Outcomes (spacelift_webhook_deliveries_total{outcome}) and the status each is answered with.
# A duplicate or stale delivery is answered 200: it was received fine, and a 4xx would count
# towards Spacelift disabling the webhook.
STATUS = {
    "accepted": 200,
    "duplicate": 200,
    "stale": 200,
    "bad_signature": 401,
    "malformed": 400,
    "too_large": 413,
    "unknown_account": 400,
    "overloaded": 503,
    "queued": 200,  # recorded after the poll in progress; counted then, with its outcome
}


class Malformed(ValueError):
    """The body is not a run event of the expected shape (the message says where)."""


@dataclass(frozen=True)
class Answer:
    status: int
    outcome: str
    account: str  # the label it was counted under ("" when no configured account is known)
    message: str

    def body(self) -> bytes:
        return json.dumps({"outcome": self.outcome, "message": self.message}).encode() + b"\n"


def signature(secret: bytes, body: bytes) -> str:
    """The X-Signature-256 value Spacelift sends: ``sha256=`` + hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def parse(body: bytes) -> tuple[str, WebhookObs]:
    """A run event's body -> (the ``account`` it names, the observation). Raises Malformed."""
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError) as exc:  # not JSON, too deep, absurd numbers
        raise Malformed(f"not JSON: {type(exc).__name__}") from None
    if not isinstance(raw, dict):
        raise Malformed("not a JSON object")
    run, stack = raw.get("run"), raw.get("stack")
    if not isinstance(run, dict) or not isinstance(stack, dict) or "state" not in raw:
        raise Malformed("not a run event (needs state, run and stack)")
    commit = run.get("commit")
    commit_ts = None
    if isinstance(commit, dict) and commit.get("timestamp") is not None:
        commit_ts = _time(commit, "timestamp", "run.commit")
    version = raw.get("stateVersion")
    if isinstance(version, bool) or not isinstance(version, int):
        raise Malformed("stateVersion: expected a whole number")
    if not 0 <= version <= MAX_STATE_VERSION:
        raise Malformed("stateVersion: out of range")
    obs = WebhookObs(
        run_id=_match(run, "id", _ID, "run"),
        stack_id=_match(stack, "id", _ID, "stack"),
        run_type=_match(run, "type", _ENUM, "run"),
        state=_match(raw, "state", _ENUM, ""),
        state_version=version,
        timestamp=_time(raw, "timestamp", ""),
        created_at=_time(run, "createdAt", "run"),
        commit_ts=commit_ts,
    )
    return _match(raw, "account", _ID, ""), obs


def _match(o: Mapping[str, Any], key: str, pattern: re.Pattern[str], where: str) -> str:
    value = o.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise Malformed(f"{where + '.' if where else ''}{key}: missing or not a valid value")
    return value


def _time(o: Mapping[str, Any], key: str, where: str) -> float:
    """Unix seconds; milli-, micro- and nanoseconds are scaled down (notification policy
    inputs use nanoseconds; a custom payload might pass them through)."""
    value = o.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Malformed(f"{where + '.' if where else ''}{key}: expected a unix timestamp")
    value = float(value)
    while value > 1e11:  # ms, µs or ns (1e11 seconds is the year 5138)
        value /= 1000
    if value <= 0:
        raise Malformed(f"{where + '.' if where else ''}{key}: expected a unix timestamp")
    return value


# The account's ledger: (account, observation) -> outcome, or None when the account has no
# runs area to record it in.
Sink = Callable[[str, WebhookObs], "str | None"]


@dataclass(frozen=True)
class _Target:
    name: str  # the account's name in the config (the ``account`` label)
    aliases: frozenset[str]  # what the payload's ``account`` may say: name and subdomain
    secret: Callable[[], bytes]


class Receiver:
    """Verifies, parses and records deliveries; counts every outcome. Thread-safe."""

    def __init__(
        self,
        accounts: Sequence[AccountConfig],
        sink: Sink,
        metrics: SelfMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.targets = [
            _Target(a.name, frozenset({a.name, account_name(a.endpoint)}), a.webhook_secret.reveal)
            for a in accounts
            if a.webhook_secret is not None
        ]
        self.sink = sink
        self.metrics = metrics
        self.clock = clock
        self._last_warning: dict[str, float] = {}
        self._warn_lock = threading.Lock()
        metrics.init_webhooks([t.name for t in self.targets])

    def _label(self, targets: Sequence[_Target]) -> str:
        """The account a refused delivery is counted under: the only candidate, else ""."""
        return targets[0].name if len(targets) == 1 else ""

    def handle(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        """One complete delivery (``headers`` with lower-case names)."""
        targets = self.targets
        given = headers.get(SIGNATURE_HEADER, "").strip().lower()
        # Every configured secret is tried (in constant time each), so which account's secret
        # matched is not told by the time taken.
        signed = [t for t in targets if _verify(t.secret(), body, given)]
        if not signed:
            return self._refuse(
                "bad_signature",
                self._label(targets),
                "missing X-Signature-256" if not given else "X-Signature-256 does not match",
            )
        try:
            named, obs = parse(body)
        except Malformed as exc:
            return self._refuse("malformed", self._label(signed), str(exc))
        target = next((t for t in signed if named in t.aliases), None)
        if target is None:
            if any(named in t.aliases for t in targets):  # another account's secret signed it
                return self._refuse("bad_signature", self._label(signed), "wrong account secret")
            return self._refuse("unknown_account", self._label(signed), "account not configured")
        now = self.clock()
        outcome = self.sink(target.name, obs)
        if outcome is None:
            return self._refuse("unknown_account", target.name, "runs area disabled")
        if outcome == "overloaded":
            return self._refuse(outcome, target.name, "too many deliveries waiting")
        counted = None if outcome == "queued" else outcome  # queued: counted when recorded
        self.metrics.webhook_delivery(target.name, counted, at=now, delay=now - obs.timestamp)
        log.debug(
            "webhook delivery",
            extra={"account": target.name, "outcome": outcome, "state": obs.state},
        )
        return Answer(STATUS[outcome], outcome, target.name, outcome)

    def refuse_body(self, outcome: str, message: str) -> Answer:
        """A delivery the server cut short: too_large (413) or malformed (truncated, slow)."""
        return self._refuse(outcome, self._label(self.targets), message)

    def _refuse(self, outcome: str, account: str, message: str) -> Answer:
        self.metrics.webhook_delivery(account, outcome)
        self._warn(account, outcome, message)
        return Answer(STATUS[outcome], outcome, account, message)

    def _warn(self, account: str, outcome: str, message: str) -> None:
        """A refused delivery is logged at most once a minute per account and outcome (a
        flood of bad deliveries must not flood the log); the counter has them all."""
        now = time.monotonic()
        key = f"{account}/{outcome}"
        with self._warn_lock:
            if now - self._last_warning.get(key, -math.inf) < 60:
                return
            self._last_warning[key] = now
        log.warning(
            "webhook delivery refused",
            extra={"account": account, "outcome": outcome, "reason": message[:200]},
        )


def _verify(secret: bytes, body: bytes, given: str) -> bool:
    if not secret:
        return False
    ok = hmac.compare_digest(signature(secret, body).encode(), given.encode())
    return ok and _SIGNATURE.fullmatch(given) is not None


class Flusher:
    """Serves what deliveries changed: a thread that, shortly after a delivery is recorded,
    rebuilds the runs snapshots it touched and re-renders them, at most every ``every``
    seconds (a burst of deliveries costs one rebuild, not one each), and writes --state.file
    at most every ``save_every`` seconds. ``stop`` flushes and saves."""

    def __init__(
        self,
        flush: Callable[[bool], None],
        wake: threading.Event,
        save_every: float = 1.0,
        every: float = 0.25,
    ) -> None:
        self._flush = flush
        self._wake = wake
        self._save_every = save_every
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="webhook-flush", daemon=True)

    def start(self) -> Flusher:
        self._thread.start()
        return self

    def _loop(self) -> None:
        last_save = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(self._save_every)
            self._wake.clear()
            save = time.monotonic() - last_save >= self._save_every
            try:
                self._flush(save)
            except Exception:  # a bug here must not stop the thread for good
                log.exception("serving webhook deliveries failed")
            if save:
                last_save = time.monotonic()
            self._stop.wait(self._every)  # deliveries meanwhile wait for the next rebuild

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self._flush(True)


@dataclass(frozen=True)
class Endpoint:
    """The receiver as the web server mounts it: its path and the largest body it reads (a
    larger one is answered 413 unread; the server's request timeout cuts off slow senders).
    """

    path: str
    receiver: Receiver
    max_body_bytes: int
