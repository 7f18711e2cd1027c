"""What the webhook receiver sustains: deliveries per second, answer times, memory.

The real exporter (``python -m exporter``, its own process) receives webhooks and polls the
simulator (this process: 1,000 stacks, runs interval 5 s) on loopback.

1. Throughput: for 1, 10 and 50 concurrent senders (keep-alive connections, in 1 to 4
   processes of their own so the senders' Python does not slow anything else),
   ``--seconds`` each: deliveries per second and the p50 / p99 answer time as the sender
   sees it. Each delivery is a signed default-shaped run event (docs
   integrations/webhooks.md) of a distinct run, six per run (QUEUED ... FINISHED) sent in
   order by one sender, so each does the full work: verify, parse, record, count.
2. Memory: the exporter's resident memory while it receives 100,000 deliveries of the
   simulator's own runs (a busy account whose clock runs ahead: every state change of every
   run, signed by ``exporter/simulator/webhooks.py``'s payload builder, 10 senders) and keeps
   polling, printed every 20,000 deliveries, with the runs it counted against the simulator's
   truth. Beside it, what the run ledger keeps (its state file): runs in progress, counted
   runs kept until a poll reads their list (a stack's proposed runs only when the sweep
   reaches it, so those fill up for one sweep lap, then level off: about 750,000 deliveries
   here, as the account's clock runs 100 times real time) and the heap a kept run costs.

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
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exporter.areas import AREAS  # noqa: E402
from exporter.areas.run_ledger import PROPOSED, Ledger  # noqa: E402
from exporter.simulator import SimClock, Simulator, World, WorldConfig  # noqa: E402
from exporter.simulator.webhooks import run_event  # noqa: E402

SECRET = b"bench-webhook-secret"
PATH = ("QUEUED", "READY", "PREPARING", "INITIALIZING", "PLANNING", "FINISHED")
HOOK = "/webhooks/spacelift"
SPEED = 100.0  # simulated seconds per real second in the memory phase
TERMINAL = {"FINISHED", "FAILED", "STOPPED", "CANCELED", "DISCARDED", "SKIPPED"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def signed(body: bytes) -> tuple[bytes, str]:
    return body, "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()


# -- 1. throughput: synthetic distinct runs, senders in processes of their own ------------


def bodies(stacks: list[str], now: float, first_run: int, runs: int) -> list[tuple[bytes, str]]:
    out = []
    for i in range(first_run, first_run + runs):
        stack = stacks[i % len(stacks)]
        for v, state in enumerate(PATH, 1):
            event = {
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
            out.append(signed(json.dumps(event).encode()))
    return out


def post_all(port: int, todo: list[tuple[bytes, str]], deadline: float | None) -> list[float]:
    """Post in order on one keep-alive connection; answer times."""
    times = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for body, sig in todo:
        if deadline is not None and time.monotonic() > deadline:
            break
        t = time.perf_counter()
        conn.request("POST", HOOK, body, {"X-Signature-256": sig})
        r = conn.getresponse()
        r.read()
        times.append(time.perf_counter() - t)
        if r.status != 200:
            raise SystemExit(f"delivery answered {r.status}")
    conn.close()
    return times


def sender_process(
    args: tuple[int, list[str], float, int, int, int, float],
) -> tuple[float, float, list[float]]:
    port, stacks, now, first_run, runs, threads, seconds = args
    todo = bodies(stacks, now, first_run, runs)
    n = 6 * (runs // threads)  # whole runs stay with one sender, in order
    deadline = time.monotonic() + seconds
    with ThreadPoolExecutor(threads) as pool:
        started = time.time()
        parts = list(pool.map(lambda k: post_all(port, todo[k * n : (k + 1) * n], deadline),
                              range(threads)))  # fmt: skip
        ended = time.time()
    return started, ended, [t for p in parts for t in p]


def throughput(port: int, stacks: list[str], senders: int, seconds: float, first: int) -> str:
    procs = min(senders, 4)
    runs = 20_000 // procs  # more than the time allows
    jobs = []
    for k in range(procs):
        threads = senders // procs + (1 if k < senders % procs else 0)
        jobs.append((port, stacks, time.time(), first + k * runs, runs, threads, seconds))
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        done = pool.map(sender_process, jobs)
    took = max(e for _, e, _ in done) - min(s for s, _, _ in done)  # process start-up left out
    times = [t for _, _, ts in done for t in ts]
    q = statistics.quantiles(times, n=1000)
    return (
        f"{senders:>8} {len(times):>11} {len(times) / took:>11.0f} {q[499] * 1000:>8.2f}"
        f" {q[989] * 1000:>8.2f}"
    )


# -- 2. memory: the simulator's own runs, as Spacelift would send them ---------------------


def scrape_sum(base: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in httpx.get(base + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


class LedgerView:
    """What the run ledger holds, from the state file the exporter keeps writing.

    Counted runs are kept (``done``) until a poll reads their list and raises its floor: a
    stack's tracked runs and tasks are read whenever its state changes, its proposed runs only
    when the sweep reaches it (every stack in turn, a few per poll). So the proposed runs kept
    fill up for one sweep lap, then level off; ``laps`` shows how far the sweep has come."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.laps = 0.0
        self._last: int | None = None
        self.proposed = 0

    def line(self) -> str:
        try:
            sec = json.loads(self.state.read_text())["sections"]["bench/runs"]
        except (OSError, ValueError, KeyError):
            return "-"
        order = sorted(sec["stacks"])
        if sec["sweep_cursor"] in order:
            at = order.index(sec["sweep_cursor"])
            if self._last is not None:
                self.laps += ((at - self._last) % len(order)) / len(order)
            self._last = at
        self.proposed = sum(len(ids) for _, kind, ids in sec["done"] if kind == PROPOSED)
        others = sum(len(ids) for _, kind, ids in sec["done"] if kind != PROPOSED)
        kib = self.state.stat().st_size / 1024
        return (
            f"{len(sec['active']):>6} {others:>9} {self.proposed:>9} {self.laps:>5.2f} {kib:>6.0f}"
        )


def bytes_per_kept_run(n: int = 10_000) -> float:
    """Heap per counted run the ledger keeps (its id and creation time in ``done``)."""
    led = Ledger(baseline=0.0)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):  # ULIDs, as Spacelift's run ids
        led.done.setdefault((f"stack-{i % 1000}", PROPOSED), {})[f"01J{i:023d}"] = 1.7e9 + i
    size = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return size / n


def memory(world: World, base: str, pid: int, deliveries: int, state: Path) -> None:
    events: list[tuple[bytes, str]] = []
    ended = [0]  # runs that reached a terminal state (the truth the exporter must count)

    def on_transition(run: Any, entry: dict[str, Any]) -> None:
        events.append(signed(json.dumps(run_event(world, run, entry, "bench")).encode()))
        ended[0] += entry["state"] in TERMINAL

    world.on_transition = on_transition
    sim0 = world.clock.now()
    counted0 = scrape_sum(base, "spacelift_runs_finished_total")  # the throughput phase runs
    real0 = time.monotonic()
    sent, report = 0, 20_000
    view = LedgerView(state)
    print(f"  {'':>10} {'':>13} {'':>11}  ledger (state file): runs kept")
    print(
        f"  {'deliveries':>10} {'resident MiB':>13} {'in progress':>11}"
        f"  {'active':>6} {'counted':>9} {'proposed':>9} {'sweep':>5} {'KiB':>6}"
    )
    print(f"  {0:>10} {rss_mib(pid):>13.1f} {len(world.active):>11}  {view.line()}")
    with ThreadPoolExecutor(10) as pool:
        while sent < deliveries:
            # The account's clock runs SPEED times real time (the exporter polls in real time)
            target = sim0 + (time.monotonic() - real0) * SPEED
            world.advance(max(0.0, target - world.clock.now()))
            if not events:
                time.sleep(0.05)  # nothing happened yet in the account
                continue
            batch, events[:] = events[:], []
            # one sender per run (Spacelift sends a run's changes in order), 10 at a time
            by_run: dict[bytes, list[tuple[bytes, str]]] = {}
            for body, sig in batch:
                by_run.setdefault(body.split(b'"id": "', 2)[1][:26], []).append((body, sig))
            lanes: list[list[tuple[bytes, str]]] = [[] for _ in range(10)]
            for i, run_events in enumerate(by_run.values()):
                lanes[i % 10].extend(run_events)
            list(pool.map(lambda lane: post_all(int(base.rsplit(":", 1)[1]), lane, None), lanes))
            before, sent = sent, sent + len(batch)
            if sent // report > before // report:
                print(
                    f"  {sent:>10} {rss_mib(pid):>13.1f} {len(world.active):>11}  {view.line()}",
                    flush=True,
                )
    world.config.activity = 0.0
    world.advance(4 * 3600)  # let everything in flight end (these deliveries are not sent)
    world.on_transition = None
    truth = ended[0]
    # the exporter polls every 5 s: wait for the runs whose last deliveries were not sent
    deadline = time.monotonic() + 120
    counted = 0.0
    while time.monotonic() < deadline:
        counted = scrape_sum(base, "spacelift_runs_finished_total") - counted0
        if counted >= truth:
            break
        time.sleep(2)  # the exporter's own poll interval decides; nothing to await
    print(f"  runs counted {counted:.0f}, runs that ended in the simulator {truth}")
    per_run = bytes_per_kept_run()
    print(
        f"  a counted run kept costs {per_run:.0f} bytes of heap: the {view.proposed} proposed"
        f" runs kept at the end (after {view.laps:.2f} sweep laps; they level off after one)"
        f" hold {view.proposed * per_run / 2**20:.1f} MiB"
    )


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--deliveries", type=int, default=100_000)
    a = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the exporter on the way out

    # The simulated clock starts now and runs ahead of real time in the memory phase (run
    # timestamps after the exporter's baseline, as with a real account).
    world = World(
        WorldConfig(
            seed=2,
            stacks=1000,  # a run every 10 simulated minutes per stack: stack locks rarely queue
            activity=10.0,  # 100 runs a simulated minute: about 1,500 deliveries a second
            pools=3,
            workers_per_pool=100,  # enough workers that queues stay short (a steady state)
            public_parallelism=400,
        ),
        SimClock(start=time.time()),
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    # Tokens valid for 6 simulated days (86 real minutes at SPEED): the clock runs ahead of the
    # exporter's, and the exporter keeps a token at most a week (a year, as this bench used to
    # ask for, was refused as malformed until 8596ec0: every poll failed).
    with Simulator(world, token_ttl=6 * 86400) as sim:
        cfg = {
            "accounts": [{"name": "bench", "endpoint": sim.url}],
            "areas": {name: {"enabled": name == "runs", "interval": "5s"} for name in AREAS},
            "state_file": str(workdir / "state.json"),  # its size: what the ledger holds
        }
        (workdir / "config.yml").write_text(yaml.safe_dump(cfg))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SPACELIFT_API_KEY_ID": sim.key_id,
            "SPACELIFT_API_KEY_SECRET": sim.key_secret,
            "SPACELIFT_WEBHOOK_SECRET": SECRET.decode(),
        }
        argv = [sys.executable, "-m", "exporter", "--config.file", str(workdir / "config.yml")]
        argv += ["--web.listen-address", f"127.0.0.1:{port}"]
        with (workdir / "exporter.log").open("wb") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(300):
                try:
                    if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)  # a process starting: nothing to await but its port
            stacks = sorted(world.stacks)
            print(f"python -m exporter (pid {proc.pid}) receiving webhooks on loopback,")
            print(f"polling the simulator's {len(stacks)} stacks every 5 s\n")
            print("1. throughput (senders in 1-4 processes of their own)")
            print(
                f"{'senders':>8} {'deliveries':>11} {'per second':>11} {'p50 ms':>8} {'p99 ms':>8}"
            )
            for i, senders in enumerate((1, 10, 50)):
                print(throughput(port, stacks, senders, a.seconds, i * 100_000), flush=True)
            print(f"\n2. memory over {a.deliveries:,} deliveries of the simulator's own runs")
            memory(world, base, proc.pid, a.deliveries, workdir / "state.json")
            outcomes = {
                o: scrape_sum(base, "spacelift_webhook_deliveries_total", outcome=o)
                for o in ("accepted", "duplicate", "stale", "bad_signature", "malformed")
            }
            print(f"  deliveries by outcome: {outcomes}")
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
