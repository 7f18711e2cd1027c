"""API budget of the runs area: requests per poll cycle against the naive method.

Runs the simulator at 100, 1,000 and 10,000 stacks with a realistic activity rate (new runs
per minute per 100 stacks; a run lives a few minutes, humans confirm within 15), polls the
runs area every 30 simulated seconds, and prints per cycle: requests made (counted by the
simulator), requests the naive method would make (the listing plus one request per stack),
their ratio, the issue's target ``S/50 + A/20 + pools + 2`` (A: stacks whose state changed
or whose runs moved since the previous poll) and the cycle's wall time. A last scenario
(``--large-queue``, 1,000 stacks) takes every worker of one pool away and queues 600
drift-detection runs there: six queue pages, of which a steady poll reads only the first.

Then the shared stack listing: the stacks area (every 60 s) and the runs area (every 30 s)
polled together for ``--minutes`` simulated minutes at several phases between the two,
printing ``searchStacks`` requests per minute with the listing shared and with each area
listing for itself (sharing switched off), and the ratio.

    python bench/api_budget.py [--sizes 100,1000,10000] [--cycles 6] [--activity 2]
                               [--large-queue 1000] [--listing-sizes 1000,10000] [--minutes 10]

Timings are of this machine and the in-process simulator; the request counts are the point.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.app import App
from exporter.areas import AREAS
from exporter.areas.runs import budget, naive_requests
from exporter.areas.stack_listing import StackListing
from exporter.config import Overrides, load
from exporter.simulator import SimClock, Simulator, World, WorldConfig

INTERVAL = 30.0
TOKEN_OP = "SpaceliftExporterGetToken"


def make_app(sim: Simulator, areas: tuple[str, ...] = ("runs",)) -> App:
    raw: dict[str, Any] = {
        "areas": {name: {"enabled": name in areas} for name in AREAS},
        "http": {"retries": 0, "poll_timeout": 600},
    }
    env = {"SPACELIFT_API_KEY_ID": sim.key_id, "SPACELIFT_API_KEY_SECRET": sim.key_secret}
    return App(load(Overrides(endpoint=sim.url), env=env, raw=raw), clock=sim.world.clock.now)


def changed_stacks(world: World, before: dict[str, Any], since: float) -> int:
    changed = {
        sid for sid, st in world.stacks.items() if before.get(sid) != (st.state, st.stateSetAt)
    }
    changed |= {
        r.stack_id
        for r in world.runs.values()
        if r.history and r.history[-1]["timestamp"] > since and r.stack_id in world.stacks
    }
    return len(changed)


def bench(
    stacks: int,
    cycles: int,
    warmup: int,
    activity: float,
    seed: int,
    large_queue: int = 0,
) -> list[dict[str, Any]]:
    clock = SimClock(start=1_780_000_000.0)
    pools = max(3, stacks // 400)
    world = World(
        WorldConfig(
            seed=seed,
            stacks=stacks,
            spaces=max(6, stacks // 200),
            pools=pools,
            workers_per_pool=max(3, stacks // 60),
            activity=activity,
            public_parallelism=max(10, stacks // 40),
        ),
        clock,
    )
    world.advance(900)  # let activity reach a steady state before the exporter starts
    if large_queue:  # one pool loses its workers while drift detection queues up there
        pool = sorted(world.pools)[0]
        world.set_workers(pool, 0)
        on_pool = sorted(
            s for s, st in world.stacks.items() if st.worker_pool == pool and not st.isDisabled
        )
        for i in range(large_queue):
            world.trigger_run(on_pool[i % len(on_pool)], "PROPOSED", drift_detection=True)
    rows = []
    with Simulator(world) as sim:
        app = make_app(sim)
        for cycle in range(warmup + cycles):
            before = {sid: (st.state, st.stateSetAt) for sid, st in world.stacks.items()}
            since = clock.now() - INTERVAL
            sim.reset_counts()
            started = time.perf_counter()
            ok = app.poll(("127.0.0.1", "runs"))
            wall = time.perf_counter() - started
            made = sum(n for op, n in sim.requests.items() if op != TOKEN_OP)
            s = len(world.stacks)
            a = changed_stacks(world, before, since)
            if cycle >= warmup:
                rows.append(
                    {
                        "scenario": f"queue{large_queue}" if large_queue else "steady",
                        "stacks": s,
                        "cycle": cycle - warmup + 1,
                        "ok": ok,
                        "requests": made,
                        "naive": naive_requests(s),
                        "changed": a,
                        "target": budget(s, a, len(world.pools)),
                        "wall": wall,
                        "active": len(world.active),
                    }
                )
            world.advance(INTERVAL)
        app.close()
    return rows


def listing_bench(stacks: int, minutes: int, phase: float, shared: bool, seed: int) -> float:
    """searchStacks requests per simulated minute with stacks (60 s) and runs (30 s) polled
    together, the stacks polls ``phase`` seconds after the runs polls."""
    clock = SimClock(start=1_780_000_000.0)
    world = World(WorldConfig(seed=seed, stacks=stacks, activity=2.0), clock)
    original = StackListing.max_age
    if not shared:  # each area sweeps for itself, as before the listing was shared
        StackListing.max_age = property(lambda self: 0.0)  # type: ignore[assignment,method-assign]
    try:
        with Simulator(world) as sim:
            app = make_app(sim, ("stacks", "runs"))
            account = next(iter(app.clients))
            events = sorted(
                [(t, "runs") for t in range(0, minutes * 60, 30)]
                + [(t + phase, "stacks") for t in range(0, minutes * 60, 60)]
            )
            start = clock.now()
            sim.reset_counts()
            for at, area in events:
                world.advance(start + at - clock.now())
                app.poll((account, area))
            app.close()
            return sim.requests["SpaceliftExporterStacks"] / minutes
    finally:
        StackListing.max_age = original  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--cycles", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--activity", type=float, default=2.0, help="runs/min per 100 stacks")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--large-queue", type=int, default=1000, help="stacks of the large-queue scenario (0: skip)"
    )
    ap.add_argument("--listing-sizes", default="1000,10000", help="shared listing scenario")
    ap.add_argument("--minutes", type=int, default=10, help="simulated minutes per listing run")
    args = ap.parse_args()
    header = (
        f"{'scenario':>9} {'stacks':>6} {'cycle':>5} {'active':>6} {'A':>5} "
        f"{'requests':>8} {'naive':>7} "
        f"{'ratio':>7} {'target':>7} {'ok':>3} {'wall_s':>7}"
    )
    print(f"runs area, poll every {INTERVAL:.0f}s, activity {args.activity} runs/min/100 stacks")
    print(header)
    print("-" * len(header))
    worst = 0.0
    runs = [(int(x), 0) for x in args.sizes.split(",")]
    if args.large_queue:
        runs.append((args.large_queue, 600))
    for size, queued in runs:
        for r in bench(size, args.cycles, args.warmup, args.activity, args.seed, queued):
            ratio = r["requests"] / r["naive"]
            worst = max(worst, r["requests"] / r["target"])
            print(
                f"{r['scenario']:>9} {r['stacks']:>6} {r['cycle']:>5} {r['active']:>6} "
                f"{r['changed']:>5} "
                f"{r['requests']:>8} {r['naive']:>7} {ratio:>7.3%} {r['target']:>7.1f} "
                f"{'y' if r['ok'] else 'n':>3} {r['wall']:>7.2f}"
            )
        print()
    print(f"worst requests/target: {worst:.2f} (<= 1 meets S/50 + A/20 + pools + 2)")
    print()
    print("stack listing (searchStacks requests per minute), stacks every 60s + runs every 30s")
    header = f"{'stacks':>6} {'phase_s':>7} {'separate':>9} {'shared':>7} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for size in (int(x) for x in args.listing_sizes.split(",") if x):
        for phase in (1.0, 15.0, 29.0):
            alone = listing_bench(size, args.minutes, phase, False, args.seed)
            shared = listing_bench(size, args.minutes, phase, True, args.seed)
            print(f"{size:>6} {phase:>7.0f} {alone:>9.1f} {shared:>7.1f} {shared / alone:>6.2f}")


if __name__ == "__main__":
    main()
