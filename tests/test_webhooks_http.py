"""The webhook receiver over real HTTP: the simulator's signed deliveries and hostile senders.

Each test runs the exporter's App and web server on loopback against the simulator, with the
simulator's webhook sender pointed at the receiver (``exporter/simulator/webhooks.py``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter import web, webhooks
from exporter.app import App
from exporter.areas import AREAS
from exporter.config import Overrides, load
from exporter.httpd import Limits, Server
from exporter.simulator import SimClock, Simulator, World, WorldConfig
from exporter.simulator.webhooks import WebhookSender, run_event, sign
from exporter.webconfig import WebAuth
from tests._runs_support import TERMINAL, lab, run_to_end, scrape, truth_finished
from tests.support.processes import ROOT, free_port
from tests.support.wait import until

SECRET = "hook-secret-3f9a"
START = 1_780_000_000.0
FINISHED = "spacelift_runs_finished_total"
DELIVERIES = "spacelift_webhook_deliveries_total"


@dataclass
class Rig:
    sim: Simulator
    app: App
    server: Server
    endpoint: webhooks.Endpoint
    flusher: webhooks.Flusher
    url: str

    @property
    def world(self) -> World:
        return self.sim.world

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(self.url, content=body, headers=headers or {}, timeout=5)

    def signed(self, payload: Any, secret: str = SECRET) -> httpx.Response:
        body = json.dumps(payload).encode()
        return self.post(body, sign(secret.encode(), body))

    def finished(self) -> dict[frozenset[tuple[str, str]], float]:
        return {k: v for k, v in scrape(self.app)[FINISHED].items() if v}

    def outcomes(self) -> dict[str, float]:
        return {dict(k)["outcome"]: v for k, v in scrape(self.app)[DELIVERIES].items() if v}


def start_rig(
    tmp_path: Path, *, state: bool = False, world: World | None = None, **hook: Any
) -> Rig:
    world = world or World(WorldConfig(seed=3, stacks=30, activity=0.0), SimClock(start=START))
    sim = Simulator(world).start()
    raw: dict[str, Any] = {
        "accounts": [{"name": "sim", "endpoint": sim.url}],
        "areas": {name: {"enabled": name == "runs"} for name in AREAS},
        "http": {"retries": 0},
        "webhook": {"max_body_size": 4096, **hook},
    }
    if state:
        raw["state_file"] = str(tmp_path / "state.json")
    env = {
        "SPACELIFT_API_KEY_ID": sim.key_id,
        "SPACELIFT_API_KEY_SECRET": sim.key_secret,
        "SPACELIFT_WEBHOOK_SECRET": SECRET,
    }
    cfg = load(Overrides(), env=env, raw=raw)
    app = App(cfg, clock=world.clock.now)
    w = cfg.webhook
    receiver = webhooks.Receiver(cfg.accounts, app.observe_webhook, app.self_metrics)
    endpoint = webhooks.Endpoint(w.path, receiver, w.max_body_bytes)
    flusher = webhooks.Flusher(app.flush_webhooks, app.webhook_wake, save_every=0.05).start()
    # a sender gets 1 s to send its request (the server's request timeout; 10 s by default)
    limits = Limits(request_timeout=1.0)
    server, _ = web.serve(app, "127.0.0.1", 0, limits=limits, webhook=endpoint)
    url = f"http://127.0.0.1:{server.server_address[1]}{w.path}"
    return Rig(sim, app, server, endpoint, flusher, url)


def stop_rig(rig: Rig) -> None:
    rig.server.shutdown()
    rig.server.server_close()
    rig.flusher.stop()
    rig.app.close()
    rig.sim.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = start_rig(tmp_path)
    yield r
    stop_rig(r)


def idle_stack(world: World) -> str:
    for sid, st in sorted(world.stacks.items()):
        if not st.isDisabled and all(r.state in TERMINAL for r in st.runs):
            st.autodeploy = True
            return sid
    raise AssertionError("no idle stack")


def test_a_run_is_counted_the_moment_its_delivery_arrives_and_once_with_polls(rig: Rig) -> None:
    world = rig.world
    t0 = world.clock.now()
    assert rig.app.poll_all()  # the listing: which space each stack is in
    with WebhookSender(world, rig.url, SECRET, account="sim") as sender:
        run = world.trigger_run(idle_stack(world), "TRACKED")
        run_to_end(world, run)
        assert sender.drain()
        assert set(sender.statuses) == {200}
    want = truth_finished(world, t0)
    assert sum(want.values()) == 1
    # no poll since the run began: the deliveries alone counted it, with its timings
    until(lambda: rig.finished() == want, timeout=10, what="the delivered run counted")
    m = scrape(rig.app)
    space = world.stacks[run.stack_id].space
    ready = next(h["timestamp"] for h in run.history if h["state"] == "READY")
    prep = next(h["timestamp"] for h in run.history if h["state"] == "PREPARING")
    assert m["spacelift_run_queue_wait_seconds_sum"] == {
        lab(space=space, run_type="TRACKED"): prep - ready
    }
    duration = m["spacelift_run_duration_seconds_sum"]
    assert duration == {
        lab(space=space, run_type="TRACKED", state=run.state): ended(run) - run.createdAt
    }
    assert rig.outcomes() == {"accepted": len(run.history)}
    assert m["spacelift_webhook_last_delivery_timestamp_seconds"]
    for _ in range(3):  # the polls that follow see the same run: still one
        world.advance(30)
        assert rig.app.poll_all()
        assert rig.finished() == want


def ended(run: Any) -> float:
    return float(run.history[-1]["timestamp"])


def test_unsigned_wrongly_signed_replayed_and_out_of_order_deliveries(rig: Rig) -> None:
    world = rig.world
    assert rig.app.poll_all()
    events: list[dict[str, Any]] = []
    world.on_transition = lambda run, entry: events.append(run_event(world, run, entry, "sim"))
    run_to_end(world, world.trigger_run(idle_stack(world), "TRACKED"))
    world.on_transition = None
    *middle, last = events
    body = json.dumps(last).encode()

    unsigned = rig.post(body)
    assert unsigned.status_code == 401
    wrong = rig.post(body, sign(b"not-the-secret", body))
    assert wrong.status_code == 401
    tampered = rig.post(body.replace(b'"sim"', b'"sim" '), sign(SECRET.encode(), body))
    assert tampered.status_code == 401
    assert rig.finished() == {}  # nothing recorded
    assert SECRET not in unsigned.text + wrong.text

    assert rig.signed(last).json()["outcome"] == "accepted"  # the end first ...
    assert rig.signed(last).json()["outcome"] == "duplicate"  # ... retried by Spacelift
    late = [rig.signed(e).json()["outcome"] for e in middle]  # ... the rest after it
    assert set(late) == {"stale"}
    until(lambda: sum(rig.finished().values()) == 1, timeout=10, what="counted once")
    assert rig.outcomes() == {
        "bad_signature": 3,
        "accepted": 1,
        "duplicate": 1,
        "stale": len(middle),
    }


def test_not_json_not_a_run_event_and_unknown_account(rig: Rig) -> None:
    for body, outcome in (
        (b"{not json", "malformed"),
        (b"[" * 2000 + b"]" * 2000, "malformed"),  # deeper than the parser goes
        (json.dumps({"title": "x", "severity": "ERROR", "account": "sim"}).encode(), "malformed"),
    ):
        r = rig.post(body, sign(SECRET.encode(), body))
        assert (r.status_code, r.json()["outcome"]) == (400, outcome)
    event = {
        "account": "someone-else",
        "state": "FINISHED",
        "stateVersion": 3,
        "timestamp": START,
        "run": {"id": "01RUN", "type": "TRACKED", "createdAt": START - 60},
        "stack": {"id": "stack-1"},
    }
    r = rig.signed(event)
    assert (r.status_code, r.json()["outcome"]) == (400, "unknown_account")
    assert rig.outcomes() == {"malformed": 3, "unknown_account": 1}
    assert "someone-else" not in scrape(rig.app)[DELIVERIES].__repr__()  # no label from input


def test_other_methods_and_paths(rig: Rig) -> None:
    r = httpx.get(rig.url)
    assert (r.status_code, r.headers["allow"]) == (405, "POST")
    assert httpx.post(rig.url.replace("/webhooks/spacelift", "/metrics")).status_code == 405


def raw_request(rig: Rig, head_length: int, body: bytes, *, close: bool = True) -> socket.socket:
    port = rig.server.server_address[1]
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(
        b"POST /webhooks/spacelift HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"X-Signature-256: sha256={'0' * 64}\r\nContent-Length: {head_length}\r\n\r\n".encode()
        + body
    )
    if close:
        sock.shutdown(socket.SHUT_WR)
    return sock


def answer(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def test_oversized_truncated_and_slow_deliveries(rig: Rig) -> None:
    # over the limit (4096 bytes here): 413 at once, without waiting for the body
    big = raw_request(rig, 10 << 20, b"x" * 100, close=False)
    assert answer(big).startswith(b"HTTP/1.1 413")
    # the body ends before its Content-Length: no answer, nothing recorded
    assert answer(raw_request(rig, 500, b"{" * 100)) == b""
    # a sender slower than the request timeout (1 s here) is cut off
    slow = raw_request(rig, 500, b"{", close=False)
    assert answer(slow).startswith(b"HTTP/1.1 408")
    until(lambda: rig.outcomes() == {"too_large": 1, "malformed": 2}, timeout=5, what="counted")


def test_a_flood_of_deliveries_while_polls_run(tmp_path: Path) -> None:
    world = World(WorldConfig(seed=5, stacks=40, activity=40.0), SimClock(start=START))
    rig = start_rig(tmp_path, world=world)
    try:
        t0 = world.clock.now()
        assert rig.app.poll_all()
        events: list[dict[str, Any]] = []
        world.on_transition = lambda run, entry: events.append(run_event(world, run, entry, "sim"))
        stop = threading.Event()

        def poll_loop() -> None:
            while not stop.wait(0.05):
                rig.app.poll_all()

        poller = threading.Thread(target=poll_loop)
        poller.start()
        try:
            for _ in range(10):
                world.advance(30)
            world.config.activity = 0.0
            world.advance(4 * 3600)  # everything in flight ends
            world.on_transition = None
            assert len(events) > 300
            bodies = [json.dumps(e).encode() for e in events] * 2  # and every one again
            with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:
                statuses = list(
                    pool.map(
                        lambda b: (
                            client.post(
                                rig.url, content=b, headers=sign(SECRET.encode(), b)
                            ).status_code
                        ),
                        bodies,
                    )
                )
        finally:
            stop.set()
            poller.join()
        assert set(statuses) == {200}
        for _ in range(3):  # the sweep visits every stack: the polls agree with the deliveries
            assert rig.app.poll_all()
            world.advance(30)
        until(lambda: rig.finished() == truth_finished(world, t0), timeout=10, what="the truth")
        outcomes = rig.outcomes()
        assert sum(outcomes.values()) == len(bodies)
        assert outcomes["duplicate"] + outcomes.get("stale", 0) >= len(events)
    finally:
        stop_rig(rig)


def test_restart_between_the_delivery_and_the_poll(tmp_path: Path) -> None:
    rig = start_rig(tmp_path, state=True)
    world = rig.world
    t0 = world.clock.now()
    try:
        assert rig.app.poll_all()
        with WebhookSender(world, rig.url, SECRET, account="sim") as sender:
            run_to_end(world, world.trigger_run(idle_stack(world), "TRACKED"))
            assert sender.drain()
        want = truth_finished(world, t0)
        until(lambda: rig.finished() == want, timeout=10, what="counted by its delivery")
    finally:
        rig.server.shutdown()
        rig.server.server_close()
        rig.flusher.stop()  # what a clean shutdown does: the ledger is saved
        rig.app.close()
    # a new process on the same state file: its first poll sees the run finished
    cfg = rig.app.config
    again = App(cfg, clock=world.clock.now)
    try:
        assert again.poll_all()
        assert {k: v for k, v in scrape(again)[FINISHED].items() if v} == want
    finally:
        again.close()
        rig.sim.stop()


def test_own_listener_serves_the_webhook_only(rig: Rig) -> None:
    _, port = web.listen_webhook(rig.server, rig.app, "127.0.0.1", 0, WebAuth(None), rig.endpoint)
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(base + "/metrics").status_code == 404
    assert httpx.get(base + "/healthz").status_code == 404
    body = b"{}"
    r = httpx.post(base + "/webhooks/spacelift", content=body, headers=sign(b"x", body))
    assert r.status_code == 401


def test_demo_honours_the_webhook_secret() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "demo", "--web.listen-address", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env={**os.environ, "SPACELIFT_WEBHOOK_SECRET": SECRET},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        until(lambda: httpx.get(base + "/readyz").status_code == 200, timeout=30, what="demo")
        event = {
            "account": "demo",
            "state": "FINISHED",
            "stateVersion": 5,
            "timestamp": time.time(),
            "run": {"id": "01REALSPACELIFTRUN", "type": "TRACKED", "createdAt": time.time() - 60},
            "stack": {"id": "a-stack-from-a-real-account"},
        }
        body = json.dumps(event).encode()
        url = base + "/webhooks/spacelift"
        assert httpx.post(url, content=body, headers=sign(SECRET.encode(), body)).json() == {
            "outcome": "accepted",
            "message": "accepted",
        }
        assert httpx.post(url, content=body, headers=sign(b"other", body)).status_code == 401

        def simulator_deliveries() -> float:
            for line in httpx.get(base + "/metrics").text.splitlines():
                if line.startswith(
                    'spacelift_webhook_deliveries_total{account="demo",outcome="accepted"}'
                ):
                    return float(line.split()[-1])
            return 0.0

        # the demo's simulator signs its own run events with the same secret
        until(lambda: simulator_deliveries() > 1, timeout=30, what="the simulator's deliveries")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err.decode()
    assert SECRET not in err.decode()


def test_a_delivery_is_answered_at_once_while_a_poll_holds_the_ledger(rig: Rig) -> None:
    world = rig.world
    assert rig.app.poll_all()
    events: list[dict[str, Any]] = []
    world.on_transition = lambda run, entry: events.append(run_event(world, run, entry, "sim"))
    run_to_end(world, world.trigger_run(idle_stack(world), "TRACKED"))
    world.on_transition = None
    poller: Any = rig.app.pollers[("sim", "runs")]
    with poller.lock:  # what a poll folding a large read into the ledger does
        answers = [rig.signed(e).json()["outcome"] for e in events]
        assert set(answers) == {"queued"}
        assert rig.finished() == {}
    # recorded and counted right after
    until(lambda: sum(rig.finished().values()) == 1, timeout=10, what="recorded after the poll")
    until(lambda: rig.outcomes() == {"accepted": len(events)}, timeout=10, what="counted")
