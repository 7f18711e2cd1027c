"""The exporter against a hostile endpoint over real HTTP on loopback: every poll is bounded.

Whatever the server does (slow headers, a dripping body, an endless stream, a gzip bomb, deep
JSON, absurd numbers and lists, a megabyte of error text), a poll ends within its budget as a
failure of a known kind with ``spacelift_up 0``, nothing it sent is exported, and nothing it
sent reaches a log line unbounded.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from exporter import logsetup
from exporter.app import App
from exporter.areas import AREAS
from exporter.config import Config, Overrides, load
from exporter.secret import Secret
from exporter.store import AreaState
from exporter.transport import MAX_ANSWER_BYTES, MAX_JSON_DEPTH
from tests.support import hostile
from tests.support.hostile import Hostile
from tests.support.processes import ROOT, free_port
from tests.support.wait import until

KEY = ("hostile", "worker_pools")
POLL_TIMEOUT = 1.5
POOL = {
    "id": "pool-1",
    "name": "pool",
    "space": "root",
    "pendingRuns": 1,
    "busyWorkers": 0,
    "schedulableRunsCount": 1,
    "workers": [],
}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Hostile]:
    with Hostile() as h:
        yield h


def config(url: str, area: str = "worker_pools") -> Config:
    raw = {
        "accounts": [{"name": "hostile", "endpoint": url}],
        "areas": {name: {"enabled": name == area} for name in AREAS},
        "http": {
            "timeout": "1s",
            "poll_timeout": f"{POLL_TIMEOUT}s",
            "retries": 1,
            "backoff_base": "50ms",
            "backoff_max": "100ms",
        },
    }
    return load(Overrides(), env={"SPACELIFT_API_TOKEN": "pre.generated.token"}, raw=raw)


def poll(
    endpoint: Hostile,
    behaviour: hostile.Behaviour,
    area: str = "worker_pools",
    url: str | None = None,
) -> tuple[App, AreaState, str]:
    """One poll of ``area`` against ``behaviour``; fails if it outlives its budget."""
    endpoint.behave(behaviour)
    app = App(config(url or endpoint.url, area))
    key = ("hostile", area)
    worker = threading.Thread(target=app.poll, args=(key,), daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(POLL_TIMEOUT + 3)
    assert not worker.is_alive(), f"the poll outlived its budget ({time.monotonic() - started}s)"
    body, _ = app.exposition.render("text/plain")
    app.close()
    return app, app.store.get(key), body.decode()


def up(exposition: str) -> str:
    line = next(x for x in exposition.splitlines() if x.startswith("spacelift_up{"))
    return line.rsplit(" ", 1)[1]


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(hostile.slow_headers(), id="slow-headers"),
        pytest.param(hostile.drip_body(), id="dripping-body"),
        pytest.param(hostile.endless_chunks(), id="endless-chunked"),
    ],
)
def test_a_poll_ends_by_its_budget_whatever_the_server_sends(
    endpoint: Hostile, behaviour: hostile.Behaviour
) -> None:
    _, state, exposition = poll(endpoint, behaviour)
    assert state.error_kind in ("unreachable", "timeout"), state.error
    assert up(exposition) == "0.0"


def big_list(n: int) -> bytes:
    # Items need not be valid pools: the list's length is refused before any is read.
    return b'{"data":{"workerPools":[' + b",".join([b"{}"] * n) + b"]}}"


def pools_with(**fields: Any) -> dict[str, Any]:
    return {"data": {"workerPools": [{**POOL, **fields}]}}


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [
        pytest.param(
            hostile.answer(hostile.gzip_bomb(2 * MAX_ANSWER_BYTES), encoding="gzip"),
            "once inflated",
            id="gzip-bomb",
        ),
        pytest.param(
            hostile.answer(b" ", headers={"Content-Length": str(MAX_ANSWER_BYTES + 1)}),
            "more than",
            id="declared-too-large",
        ),
        pytest.param(
            hostile.answer(b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
            "nested deeper",
            id="deep-json",
        ),
        pytest.param(
            hostile.answer(
                b'{"data":' + b'{"a":' * MAX_JSON_DEPTH + b"1" + b"}" * MAX_JSON_DEPTH + b"}"
            ),
            "nested deeper",
            id="deep-json-below-recursion-limit",
        ),
        pytest.param(hostile.answer(pools_with(pendingRuns=-5)), "out of range", id="negative"),
        pytest.param(
            hostile.answer(
                b'{"data":{"workerPools":[{"id":"p","name":"p","space":"s","workers":[],'
                b'"busyWorkers":0,"schedulableRunsCount":0,"pendingRuns":' + b"9" * 5000 + b"}]}}"
            ),
            "digit",
            id="5000-digits",
        ),
        pytest.param(
            hostile.answer(pools_with(busyWorkers=1e300)), "out of range", id="huge-float"
        ),
        pytest.param(
            hostile.answer(json.dumps(pools_with(pendingRuns=float("nan"))).encode()),
            "NaN",
            id="nan",
        ),
        pytest.param(hostile.answer(big_list(100_001)), "items", id="a-hundred-thousand-pools"),
        pytest.param(hostile.answer(pools_with(name="n" * 100_000)), "characters", id="long-name"),
        pytest.param(
            hostile.answer(b"\x00" * 10, encoding="br"), "Content-Encoding", id="unknown-encoding"
        ),
        pytest.param(
            hostile.answer(b"not gzip at all", encoding="gzip"), "inflated", id="broken-gzip"
        ),
    ],
)
def test_an_absurd_answer_is_malformed_and_never_exported(
    endpoint: Hostile, behaviour: hostile.Behaviour, why: str
) -> None:
    _, state, exposition = poll(endpoint, behaviour)
    assert state.error_kind == "malformed", state.error
    assert why in (state.error or ""), state.error
    assert up(exposition) == "0.0"
    assert not [x for x in exposition.splitlines() if x.startswith("spacelift_worker_pool_")]


def test_a_long_error_message_is_cut_before_logs_and_the_landing_page(
    endpoint: Hostile, caplog: pytest.LogCaptureFixture
) -> None:
    flood = "x" * 1_000_000 + "\nlevel=error msg=forged"
    errors = [{"message": flood, "path": ["workerPools"]}]
    errors += [
        {"message": f"{i}" * 10_000, "path": ["workerPools", "z" * 10_000]} for i in range(200)
    ]
    with caplog.at_level(logging.DEBUG):
        _, state, _ = poll(endpoint, hostile.answer({"data": None, "errors": errors}))
    assert state.error_kind == "graphql_error"
    assert state.error is not None and len(state.error) < 1000
    assert "\n" not in state.error
    for record in caplog.records:
        assert len(record.getMessage()) + len(str(record.__dict__.get("error", ""))) < 2000


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param(hostile.answer({"errors": []}, status=503), id="during-a-retry-pause"),
        pytest.param(hostile.drip_body(), id="during-a-blocked-read"),
    ],
)
def test_a_signal_ends_the_process_within_seconds(
    endpoint: Hostile, behaviour: hostile.Behaviour, tmp_path: Path
) -> None:
    endpoint.behave(behaviour)
    cfg = {
        "accounts": [{"name": "hostile", "endpoint": endpoint.url}],
        "areas": {name: {"enabled": name == "worker_pools"} for name in AREAS},
        # Long pauses and reads: without the fix the process would wait them out.
        "http": {"timeout": "60s", "poll_timeout": "5m", "backoff_base": "1m", "backoff_max": "2m"},
    }
    path = tmp_path / "config.yml"
    path.write_text(json.dumps(cfg))
    seen = endpoint.requests
    port = free_port()
    argv = [sys.executable, "-m", "exporter", "--config.file", str(path)]
    proc = subprocess.Popen(
        [*argv, "--web.listen-address", f"127.0.0.1:{port}"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "SPACELIFT_API_TOKEN": "pre.generated.token"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        until(lambda: endpoint.requests > seen, timeout=30, what="the exporter's first request")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=5)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, output
    assert "level=error" not in output and "Traceback" not in output, output


def test_once_returns_within_its_budget(endpoint: Hostile, tmp_path: Path) -> None:
    endpoint.behave(hostile.slow_headers())
    path = tmp_path / "config.yml"
    path.write_text(
        json.dumps(
            {
                "accounts": [{"name": "hostile", "endpoint": endpoint.url}],
                "http": {"timeout": "1s", "poll_timeout": f"{POLL_TIMEOUT}s"},
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "once", "--config.file", str(path)],
        env={**os.environ, "PYTHONPATH": str(ROOT), "SPACELIFT_API_TOKEN": "pre.generated.token"},
        capture_output=True,
        text=True,
        timeout=30,  # every area at once, each within 1.5 s: far less than this
        check=False,
    )
    assert proc.returncode == 1
    assert "timed out" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "user",
    [
        pytest.param({"jwt": "a.b.c", "validUntil": 1e300}, id="lifetime-absurd"),
        pytest.param({"jwt": "x" * 100_000, "validUntil": time.time() + 3600}, id="token-huge"),
    ],
)
def test_an_absurd_token_exchange_is_malformed(endpoint: Hostile, user: dict[str, Any]) -> None:
    endpoint.behave(hostile.answer({"data": {"apiKeyUser": user}}))
    cfg = config(endpoint.url)
    creds = replace(
        cfg.accounts[0].credentials, token=None, key_id="01HKEY", key_secret=Secret("s")
    )
    app = App(replace(cfg, accounts=(replace(cfg.accounts[0], credentials=creds),)))
    try:
        app.poll(KEY)
    finally:
        app.close()
    assert app.store.get(KEY).error_kind == "malformed", app.store.get(KEY).error


def test_a_signal_ends_once_within_seconds(endpoint: Hostile, tmp_path: Path) -> None:
    endpoint.behave(hostile.drip_body())
    path = tmp_path / "config.yml"
    path.write_text(
        json.dumps(
            {
                "accounts": [{"name": "hostile", "endpoint": endpoint.url}],
                "http": {"timeout": "60s", "poll_timeout": "5m"},
            }
        )
    )
    seen = endpoint.requests
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "once", "--config.file", str(path)],
        env={**os.environ, "PYTHONPATH": str(ROOT), "SPACELIFT_API_TOKEN": "pre.generated.token"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        until(lambda: endpoint.requests > seen, timeout=30, what="the first request of once")
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=5)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err


@pytest.mark.parametrize("area", ["stacks", "runs"])
def test_pages_whose_cursor_comes_back_are_malformed(endpoint: Hostile, area: str) -> None:
    page = {"edges": [], "pageInfo": {"endCursor": "c1", "hasNextPage": True}}
    _, state, _ = poll(
        endpoint, hostile.answer({"data": {"spaces": [], "searchStacks": page}}), area
    )
    assert state.error_kind == "malformed", state.error
    assert "again" in (state.error or "")


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_a_log_line_stays_one_bounded_line_whatever_it_carries(fmt: str) -> None:
    formatter = logsetup.JsonFormatter() if fmt == "json" else logsetup.LogfmtFormatter()
    record = logging.LogRecord("exporter.x", logging.WARNING, "", 0, "poll failed", None, None)
    record.error = "x" * 1_000_000 + "\r\nts=forged level=error msg=forged"
    line = formatter.format(record)
    assert "\n" not in line and "\r" not in line
    assert len(line) < 2 * logsetup.MAX_FIELD


def test_a_resolver_that_never_answers_ends_by_the_budget(
    endpoint: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No loopback server can make the system resolver hang: this one stand-in replaces it.
    real = socket.getaddrinfo
    release = threading.Event()

    def stuck(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "stuck-resolver.test":
            release.wait(30)
        return real("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", stuck)
    try:
        url = endpoint.url.replace("127.0.0.1", "stuck-resolver.test")
        _, state, _ = poll(endpoint, hostile.answer({"data": {}}), url=url)
    finally:
        release.set()
    assert state.error_kind in ("unreachable", "timeout"), state.error
