"""The simulator's named webhook: a signed, real-shaped run event on every run state change.

The payload is Spacelift's default run event (docs integrations/webhooks.md, "Run events"):
``account``, ``state``, ``stateVersion``, ``timestamp``, ``run { id branch commit createdAt
delta triggeredBy type }`` and ``stack { id name description labels }``, signed like
Spacelift signs it: ``X-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` (and the older
``X-Signature: sha1=...``). ``stateVersion`` is the state's ordinal in the run's life (1 for
QUEUED, then 2, 3, ...), which is what lets a receiver order deliveries.

Deliveries go out from a thread of their own, in order, never under the world's lock; like
Spacelift, a 5xx or a connection error is retried (up to 3 times). The queue is bounded: when
the receiver cannot keep up, the oldest events are dropped (and counted).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import threading
from typing import Any

import httpx

from .model import Run
from .world import World

RETRIES = 3  # Spacelift's "Retry on failure": up to 3 times on a 5xx
MAX_QUEUE = 10_000


def sign(secret: bytes, body: bytes) -> dict[str, str]:
    return {
        "X-Signature": "sha1=" + hmac.new(secret, body, hashlib.sha1).hexdigest(),
        "X-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest(),
    }


def run_event(world: World, run: Run, entry: dict[str, Any], account: str) -> dict[str, Any]:
    """The default payload of one state change of ``run`` (``entry``: its history entry)."""
    stack = world.stacks.get(run.stack_id)
    commit = run.commit or {}
    delta = run.delta or {}
    return {
        "account": account,
        "state": entry["state"],
        "stateVersion": run.history.index(entry) + 1,
        "timestamp": entry["timestamp"],
        "run": {
            "id": run.id,
            "branch": run.branch,
            "commit": {
                "authorLogin": commit.get("authorLogin"),
                "authorName": commit.get("authorName"),
                "hash": commit.get("hash"),
                "message": commit.get("message"),
                "timestamp": commit.get("timestamp"),
                "url": commit.get("url"),
            },
            "createdAt": run.createdAt,
            "delta": {
                "added": delta.get("addCount", 0),
                "changed": delta.get("changeCount", 0),
                "deleted": delta.get("deleteCount", 0),
                "resources": delta.get("resources", 0),
            },
            "triggeredBy": run.triggeredBy,
            "type": run.type,
        },
        "stack": {
            "id": run.stack_id,
            "name": stack.name if stack else run.stack_id,
            "description": (stack.description or "") if stack else "",
            "labels": list(stack.labels) if stack else [],
        },
    }


class WebhookSender:
    """Posts every run state change of ``world`` to ``url``, signed with ``secret``.

    ``tick`` (seconds): also move a real-clock world forward on its own, so events happen
    (and are delivered) as they are due rather than when the API is next asked something.
    """

    def __init__(
        self,
        world: World,
        url: str,
        secret: str,
        *,
        account: str = "simulator",
        tick: float | None = None,
        timeout: float = 5.0,
        verify: bool = True,
    ) -> None:
        self.world = world
        self.url = url
        self.account = account
        self._secret = secret.encode()
        self._tick = tick
        self._http = httpx.Client(timeout=timeout, verify=verify)
        self._queue: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._busy = 0  # deliveries taken from the queue and not answered yet
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.statuses: collections.Counter[int] = collections.Counter()  # 0: no answer
        self.sent = 0
        self.dropped = 0

    def start(self) -> WebhookSender:
        with self.world.lock:
            self.world.on_transition = self._on_transition
        self._threads = [threading.Thread(target=self._send_loop, name="sim-webhooks", daemon=True)]
        if self._tick:
            self._threads.append(
                threading.Thread(target=self._tick_loop, name="sim-webhook-clock", daemon=True)
            )
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        with self.world.lock:
            if self.world.on_transition == self._on_transition:
                self.world.on_transition = None
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=10)
        self._http.close()

    def __enter__(self) -> WebhookSender:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every event so far has been answered (or given up on)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    # -- inside the world's lock: only build and queue ---------------------------------

    def _on_transition(self, run: Run, entry: dict[str, Any]) -> None:
        body = json.dumps(run_event(self.world, run, entry, self.account)).encode()
        with self._cond:
            if len(self._queue) >= MAX_QUEUE:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(body)
            self._cond.notify()

    # -- the sender's own threads --------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stop.is_set())
                if self._stop.is_set():
                    return
                body = self._queue.popleft()
                self._busy += 1
            try:
                self._deliver(body)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _deliver(self, body: bytes) -> None:
        headers = {"Content-Type": "application/json", **sign(self._secret, body)}
        for _ in range(1 + RETRIES):
            try:
                status = self._http.post(self.url, content=body, headers=headers).status_code
            except httpx.HTTPError:
                status = 0
            self.statuses[status] += 1
            self.sent += 1
            if status and status < 500:
                return
            if self._stop.wait(0.2):
                return

    def _tick_loop(self) -> None:
        assert self._tick is not None
        while not self._stop.wait(self._tick):
            self.world.sync()
