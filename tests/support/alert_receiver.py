"""An Alertmanager webhook receiver inside the test process.

Collects every alert of every notification POSTed to it; tests wait on a condition variable
for the alert they expect instead of sleeping.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Alert = dict[str, Any]


class AlertReceiver:
    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body)
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver._cond:
                    receiver.notifications.append(payload)
                    receiver._cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet; the notifications are kept for failure messages

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def __enter__(self) -> AlertReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)

    def alerts(self) -> list[Alert]:
        """Every alert received so far, in arrival order (one entry per notification)."""
        with self._cond:
            return [a for n in self.notifications for a in n.get("alerts", [])]

    def wait_for(self, match: Callable[[Alert], bool], timeout: float, what: str = "") -> Alert:
        """The first received alert for which ``match`` holds; waits for it to arrive."""

        def found() -> Alert | None:
            return next((a for n in self.notifications for a in n["alerts"] if match(a)), None)

        with self._cond:
            if not self._cond.wait_for(found, timeout=timeout):
                got = [
                    (a["status"], a["labels"].get("alertname"), a["labels"].get("worker_pool_id"))
                    for n in self.notifications
                    for a in n["alerts"]
                ]
                raise TimeoutError(f"no alert {what} within {timeout}s; received: {got}")
            alert = found()
            assert alert is not None
            return alert
