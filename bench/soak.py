"""Does the exporter's memory stay flat over a long run? A simulated day in minutes.

A lively simulated account (runs starting, finishing, failing, stacks added and deleted) on a
manual clock; the runs and stacks areas poll every 30 simulated seconds with a state file.
Every simulated hour it prints the run ledger's sizes, the state file's size, the served
exposition's series and the process's resident memory (which includes the in-process
simulator's growing world). Columns that level off mean bounded growth. Asserts nothing.

    python bench/soak.py [--stacks 1000] [--hours 12] [--activity 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.app import App
from exporter.config import Overrides, load
from exporter.simulator import SimClock, Simulator, World, WorldConfig

KEY_ID, SECRET = "01HXSIMKEY0000000000000000", "sim-secret"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stacks", type=int, default=1000)
    parser.add_argument("--hours", type=int, default=12)
    parser.add_argument("--activity", type=float, default=3.0)
    args = parser.parse_args()

    rng = random.Random(7)
    clock = SimClock(start=1_780_000_000.0)
    world = World(WorldConfig(seed=7, stacks=args.stacks, activity=args.activity), clock)
    state = Path(tempfile.mkdtemp()) / "state.json"
    with Simulator(world, key_id=KEY_ID, key_secret=SECRET, token_ttl=3600) as sim:
        cfg = load(
            Overrides(),
            env={"SPACELIFT_API_KEY_ID": KEY_ID, "SPACELIFT_API_KEY_SECRET": SECRET},
            raw={
                "accounts": [{"name": "soak", "endpoint": sim.url}],
                "areas": {
                    name: {"enabled": name in ("runs", "stacks")}
                    for name in ("worker_pools", "public_worker_pool", "usage", "access")
                },
                "state_file": str(state),
            },
        )
        app = App(cfg, clock=clock.now)
        runs = app.pollers[("soak", "runs")]
        print(
            f"{'hour':>4} {'active':>6} {'done ids':>8} {'floors':>6} {'gaps':>4} "
            f"{'forgot':>6} {'counted':>8} {'state KB':>8} {'series':>7} {'RSS MB':>7} "
            f"{'wall s':>6}"
        )
        started = time.perf_counter()
        for step in range(args.hours * 120):
            if step % 240 == 239:  # churn: a stack deleted and one added every two hours
                with world.lock:
                    world.delete_stack(rng.choice(sorted(world.stacks)))
                    world.add_stack()
            world.advance(30)
            app.poll(("soak", "stacks"))
            app.poll(("soak", "runs"))
            sim.reset_counts()  # the simulator's request log is not the exporter's memory
            if step % 120 == 119:
                led = runs.ledger  # type: ignore[attr-defined]
                body, _ = app.exposition.render(None)
                series = sum(1 for ln in body.splitlines() if ln and not ln.startswith(b"#"))
                print(
                    f"{(step + 1) // 120:>4} {len(led.active):>6} "
                    f"{sum(len(d) for d in led.done.values()):>8} {len(led.floor):>6} "
                    f"{len(led.gaps):>4} {len(led.forgotten):>6} {sum(led.finished.values()):>8} "
                    f"{state.stat().st_size / 1024:>8.0f} {series:>7} {rss_mb():>7.0f} "
                    f"{time.perf_counter() - started:>6.0f}",
                    flush=True,
                )
        app.close()


if __name__ == "__main__":
    main()
