"""What the webhook receiver sustains: deliveries per second, answer times, memory.

The exporter's App and web server (this process) on loopback, polling the simulator (its own
process: 200 stacks, a busy real-clock account) so the ledger knows the stacks; the receiver
mounted as in production; the senders in processes of their own (so their Python does not
slow the receiver). Each delivery is a signed default-shaped run event (docs
integrations/webhooks.md), six per run (QUEUED ... FINISHED) sent in order by one sender,
every run distinct, so each delivery does the full work: verify, parse, record, count.

1. For 1, 10 and 50 concurrent senders (keep-alive connections), ``--seconds`` each: the
   deliveries per second and the p50 / p99 answer time as the sender sees it.
2. Resident memory of this process before and after 100,000 deliveries (10 senders) while
   the account keeps being polled (a poll every 2,000 deliveries), and what the ledger holds
   at the end.

Targets (issue 11): at least 1,000 deliveries/s, p99 under 50 ms at 10 senders, memory flat.
Prints figures; asserts nothing.

    python bench/webhooks.py [--seconds 5] [--deliveries 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import multiprocessing
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter import web, webhooks
from exporter.app import App
from exporter.areas import AREAS
from exporter.config import Config, Overrides, load

ROOT = Path(__file__).resolve().parents[1]
SECRET = b"bench-webhook-secret"
KEY_ID, KEY_SECRET = "01HXSIMKEY0000000000000000", "sim-secret"  # the simulator's built-in key
PATH = ("QUEUED", "READY", "PREPARING", "INITIALIZING", "PLANNING", "FINISHED")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bodies(stacks: list[str], now: float, first_run: int, runs: int) -> list[tuple[bytes, str]]:
    """Signed bodies of ``runs`` distinct runs from ``first_run`` on, six state changes each,
    in order (a run's deliveries come from one sender, as Spacelift sends them)."""
    out = []
    for i in range(first_run, first_run + runs):
        stack = stacks[i % len(stacks)]
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
            out.append((body, "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()))
    return out


def sender_process(
    args: tuple[int, str, list[str], float, int, int, int, float | None],
) -> tuple[float, float, list[float]]:
    """A process of ``threads`` senders on keep-alive connections (apart from the exporter's
    process, so the senders' own Python does not slow the receiver): answer times."""
    port, path, stacks, now, first_run, runs, threads, seconds = args
    todo = bodies(stacks, now, first_run, runs)
    n = 6 * (runs // threads)  # whole runs stay with one sender, in order
    per = [todo[k * n : (k + 1) * n] for k in range(threads)]
    deadline = None if seconds is None else time.monotonic() + seconds
    results: list[list[float]] = [[] for _ in range(threads)]

    def one(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for body, sig in per[k]:
            if deadline is not None and time.monotonic() > deadline:
                break
            t = time.perf_counter()
            conn.request("POST", path, body, {"X-Signature-256": sig})
            r = conn.getresponse()
            r.read()
            results[k].append(time.perf_counter() - t)
            if r.status != 200:
                raise SystemExit(f"delivery answered {r.status}")
        conn.close()

    pool = [threading.Thread(target=one, args=(k,)) for k in range(threads)]
    started = time.time()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return started, time.time(), [x for r in results for x in r]


class Senders:
    """Runs numbered on from one burst to the next, so every delivery is a new run's."""

    def __init__(self, port: int, path: str, stacks: list[str]) -> None:
        self.port, self.path, self.stacks = port, path, stacks
        self.next_run = 0
        self.ctx = multiprocessing.get_context("spawn")

    def burst(
        self, senders: int, seconds: float | None, deliveries: int
    ) -> tuple[int, float, list[float]]:
        procs = min(senders, 4)
        runs_each = max(1, deliveries // 6 // procs)
        jobs = []
        for k in range(procs):
            threads = senders // procs + (1 if k < senders % procs else 0)
            runs = max(threads, runs_each - runs_each % threads)
            jobs.append(
                (
                    self.port,
                    self.path,
                    self.stacks,
                    time.time(),
                    self.next_run,
                    runs,
                    threads,
                    seconds,
                )
            )
            self.next_run += runs
        with self.ctx.Pool(procs) as pool:
            done = pool.map(sender_process, jobs)
        # from the first sender's start to the last one's end (process start-up left out)
        took = max(end for _, end, _ in done) - min(start for start, _, _ in done)
        times = [t for _, _, ts in done for t in ts]
        return len(times), took, times


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else values[0]


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--deliveries", type=int, default=100_000)
    a = p.parse_args()

    # The simulator in a process of its own (real clock, steady activity), so the memory
    # measured below is the exporter's alone.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        sim_port = probe.getsockname()[1]
    argv = ["--port", str(sim_port), "--stacks", "200", "--activity", "600", "--seed", "2"]
    sim = subprocess.Popen(
        [sys.executable, "-m", "exporter.simulator", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sim.stdout is not None
    sim.stdout.readline()  # "spacelift simulator at ..." once it listens
    try:
        cfg = load(
            Overrides(),
            env={
                "SPACELIFT_API_KEY_ID": KEY_ID,
                "SPACELIFT_API_KEY_SECRET": KEY_SECRET,
                "SPACELIFT_WEBHOOK_SECRET": SECRET.decode(),
            },
            raw={
                "accounts": [{"name": "bench", "endpoint": f"http://127.0.0.1:{sim_port}"}],
                "areas": {name: {"enabled": name == "runs"} for name in AREAS},
            },
        )
        run(cfg, a)
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    return 0


def run(cfg: Config, a: argparse.Namespace) -> None:
    app = App(cfg)
    receiver = webhooks.Receiver(cfg.accounts, app.observe_webhook, app.self_metrics)
    w = cfg.webhook
    endpoint = webhooks.Endpoint(w.path, receiver, w.max_body_bytes)
    flusher = webhooks.Flusher(app.flush_webhooks, app.webhook_wake).start()
    server, _ = web.serve(app, "127.0.0.1", 0, webhook=endpoint)
    try:
        assert app.poll_all()
        poller = app.pollers[("bench", "runs")]
        assert poller.ledger is not None
        stacks = sorted(poller.ledger.stacks)
        senders = Senders(server.server_address[1], w.path, stacks)
        print(
            f"webhook receiver on loopback, {len(stacks)} stacks; senders in 1-4 processes"
            f" of their own, {a.seconds:g} s a run"
        )
        print(f"{'senders':>8} {'deliveries':>11} {'per second':>11} {'p50 ms':>8} {'p99 ms':>8}")
        for count in (1, 10, 50):
            n, took, times = senders.burst(count, a.seconds, 60_000)
            print(
                f"{count:>8} {n:>11} {n / took:>11.0f} {pct(times, 0.5) * 1000:>8.2f}"
                f" {pct(times, 0.99) * 1000:>8.2f}"
            )

        before = rss_mib()
        step = 2_000  # a poll every 2,000 deliveries (a busy account: runs keep coming)
        done = 0
        started = time.perf_counter()
        for k in range(a.deliveries // step):
            n, _, _ = senders.burst(10, None, step)
            done += n
            app.poll_all()
            if (k + 1) % 10 == 0:
                print(f"  after {done:>6} deliveries: {rss_mib():.1f} MiB resident", flush=True)
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


if __name__ == "__main__":
    raise SystemExit(main())
