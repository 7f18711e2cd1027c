"""Serve a ``spacelift-exporter doctor --capture`` directory back, by operation name.

Each POST gets the next captured answer of its ``operationName`` (the last one repeats), so
real API answers attached to a bug report replay through the exporter as a regression test:

    with Replay(Path("tests/fixtures/captures/machine-key")) as replay:
        ... point the exporter at replay.url ...
"""

from __future__ import annotations

import json
import socket
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class Replay:
    def __init__(self, directory: Path, host: str = "127.0.0.1") -> None:
        self.answers: dict[str, list[tuple[int, Any]]] = defaultdict(list)
        for path in sorted(directory.glob("*.json")):
            record = json.loads(path.read_text())
            self.answers[record["operation"]].append((record["status"], record["body"]))
        self.served: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"replay": self})
        self._httpd = ThreadingHTTPServer((host, 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/graphql"

    def next(self, operation: str) -> tuple[int, Any]:
        with self._lock:
            answers = self.answers.get(operation)
            if not answers:
                return 200, {"errors": [{"message": f"no captured answer for {operation}"}]}
            n = self.served[operation]
            self.served[operation] = n + 1
            return answers[min(n, len(answers) - 1)]

    def __enter__(self) -> Replay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    replay: Replay
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # headers and body go out in two writes: without NODELAY each answer waits ~40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            operation = str(json.loads(self.rfile.read(length)).get("operationName"))
        except (ValueError, AttributeError):
            operation = ""
        status, body = self.replay.next(operation)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
