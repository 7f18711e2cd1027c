"""What the webhook receiver sustains: deliveries per second, answer times, memory.

The exporter's App and web server on loopback against the simulator (200 stacks, polled once
so the ledger knows them), the receiver mounted as in production. Each delivery is a signed
default-shaped run event (docs integrations/webhooks.md), six per run (QUEUED ... FINISHED),
every run distinct, so each delivery does the full work: verify, parse, record, count.

1. For 1, 10 and 50 concurrent senders (keep-alive connections), ``--seconds`` each: the
   deliveries per second and the p50 / p99 answer time as the sender sees it.
2. Resident memory before and after 100,000 deliveries (10 senders) while the account keeps
   being polled (a poll every 10,000 deliveries, after a real run on every stack, as in
   production), and what the ledger holds at the end.

Targets (issue 11): at least 1,000 deliveries/s, p99 under 50 ms at 10 senders, memory flat.
Prints figures; asserts nothing.

    python bench/webhooks.py [--seconds 5] [--deliveries 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import itertools
import json
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter import web, webhooks
from exporter.app import App
from exporter.areas import AREAS
from exporter.config import Overrides, load
from exporter.simulator import SimClock, Simulator, World, WorldConfig

SECRET = b"bench-webhook-secret"
PATH = ("QUEUED", "READY", "PREPARING", "INITIALIZING", "PLANNING", "FINISHED")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Deliveries:
    """Signed bodies of distinct runs on the world's stacks, six state changes a run."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.stacks = sorted(world.stacks)
        self.counter = itertools.count()
        self.lock = threading.Lock()
        self._runs: Iterator[list[tuple[bytes, str]]] = self._gen()
        self._pending: list[tuple[bytes, str]] = []

    def _gen(self) -> Iterator[list[tuple[bytes, str]]]:
        for i in self.counter:
            now = self.world.clock.now()
            stack = self.stacks[i % len(self.stacks)]
            out = []
            for v, state in enumerate(PATH, 1):
                body = json.dumps(
                    {
                        "account": "bench",
                        "state": state,
                        "stateVersion": v,
                        "timestamp": now + v,
                        "run": {
                            "id": f"01BENCH{i:019d}",
                            "branch": "main",
                            "commit": {"hash": "0" * 40, "timestamp": now - 600},
                            "createdAt": now,
                            "delta": {"added": 0, "changed": 1, "deleted": 0, "resources": 9},
                            "triggeredBy": "bench",
                            "type": "TRACKED",
                        },
                        "stack": {"id": stack, "name": stack, "description": "", "labels": []},
                    }
                ).encode()
                sig = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
                out.append((body, sig))
            yield out

    def take(self) -> tuple[bytes, str]:
        with self.lock:
            if not self._pending:
                self._pending = next(self._runs)[::-1]
            return self._pending.pop()


def send(url: str, source: Deliveries, stop: threading.Event, limit: list[int]) -> list[float]:
    """One sender: post until ``stop`` (or the shared ``limit`` runs out); answer times."""
    times = []
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            with source.lock:
                if limit[0] <= 0:
                    return times
                limit[0] -= 1
            body, sig = source.take()
            t = time.perf_counter()
            r = client.post(url, content=body, headers={"X-Signature-256": sig})
            times.append(time.perf_counter() - t)
            if r.status_code != 200:
                raise SystemExit(f"delivery answered {r.status_code}: {r.text}")
    return times


def burst(
    url: str, source: Deliveries, senders: int, seconds: float | None, count: int
) -> tuple[int, float, list[float]]:
    stop = threading.Event()
    limit = [count]
    started = time.perf_counter()
    with ThreadPoolExecutor(senders) as pool:
        futures = [pool.submit(send, url, source, stop, limit) for _ in range(senders)]
        if seconds is not None:
            time.sleep(seconds)
            stop.set()
        times = [t for f in futures for t in f.result()]
    return len(times), time.perf_counter() - started, times


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else values[0]


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--deliveries", type=int, default=100_000)
    a = p.parse_args()

    world = World(WorldConfig(seed=2, stacks=200, activity=0.0), SimClock(start=time.time() - 3600))
    with Simulator(world) as sim:
        cfg = load(
            Overrides(),
            env={
                "SPACELIFT_API_KEY_ID": sim.key_id,
                "SPACELIFT_API_KEY_SECRET": sim.key_secret,
                "SPACELIFT_WEBHOOK_SECRET": SECRET.decode(),
            },
            raw={
                "accounts": [{"name": "bench", "endpoint": sim.url}],
                "areas": {name: {"enabled": name == "runs"} for name in AREAS},
            },
        )
        app = App(cfg, clock=world.clock.now)
        receiver = webhooks.Receiver(cfg.accounts, app.observe_webhook, app.self_metrics)
        w = cfg.webhook
        endpoint = webhooks.Endpoint(w.path, receiver, w.max_body_bytes)
        flusher = webhooks.Flusher(app.flush_webhooks, app.webhook_wake).start()
        server, _ = web.serve(app, "127.0.0.1", 0, webhook=endpoint)
        url = f"http://127.0.0.1:{server.server_address[1]}{w.path}"
        try:
            assert app.poll_all()
            source = Deliveries(world)
            print(
                f"webhook receiver on loopback, {len(source.stacks)} stacks, {a.seconds:g} s a run"
            )
            print(
                f"{'senders':>8} {'deliveries':>11} {'per second':>11} {'p50 ms':>8} {'p99 ms':>8}"
            )
            for senders in (1, 10, 50):
                n, took, times = burst(url, source, senders, a.seconds, 10**12)
                print(
                    f"{senders:>8} {n:>11} {n / took:>11.0f} {pct(times, 0.5) * 1000:>8.2f}"
                    f" {pct(times, 0.99) * 1000:>8.2f}"
                )

            poller = app.pollers[("bench", "runs")]
            before = rss_mib()
            step = 10_000
            done = 0
            started = time.perf_counter()
            while done < a.deliveries:
                n, _, _ = burst(url, source, 10, None, min(step, a.deliveries - done))
                done += n
                # production: real runs keep finishing and polls keep reading the stacks
                world.advance(60)
                for sid in source.stacks:
                    world.finish_run(world.trigger_run(sid, "TRACKED").id)
                app.poll_all()
            took = time.perf_counter() - started
            after = rss_mib()
            led = poller.ledger
            assert led is not None
            print(
                f"\n{done} deliveries (10 senders, a poll every {step}) in {took:.1f} s:"
                f" {done / took:.0f}/s"
            )
            print(
                f"resident memory {before:.1f} MiB before, {after:.1f} MiB after"
                f" ({after - before:+.1f} MiB)"
            )
            print(
                f"ledger at the end: {sum(len(d) for d in led.done.values())} counted runs kept"
                f" (done), {len(led.active)} active, {len(led.pending)} parked,"
                f" {len(led.webhook_versions)} versions"
            )
            outcomes = {
                s.labels["outcome"]: s.value
                for m in app.registry.collect()
                if m.name == "spacelift_webhook_deliveries"
                for s in m.samples
                if s.value and s.name.endswith("_total")
            }
            print(f"outcomes: {outcomes}")
        finally:
            server.shutdown()
            server.server_close()
            flusher.stop()
            app.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
