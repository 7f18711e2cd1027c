"""What a scrape and a poll cost as the account grows.

For accounts of 100, 1,000 and 10,000 stacks (the simulator, over real HTTP on loopback):
poll every area once, then measure the exposition's size, the time to re-render all of it,
the time a worker pool poll spends re-rendering (its own area only), and the time to serve
one scrape (the bytes are pre-rendered, so a scrape should not
grow with the work a poll does). Prints figures; asserts nothing.

    python bench/scrape_cost.py [--sizes 100,1000,10000] [--scrapes 200]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.app import App
from exporter.config import Overrides, load
from exporter.simulator import SimClock, Simulator, World, WorldConfig

KEY_ID, SECRET = "01HXSIMKEY0000000000000000", "sim-secret"


def measure(stacks: int, scrapes: int) -> dict[str, float]:
    clock = SimClock.real()
    world = World(
        WorldConfig(seed=1, stacks=stacks, pools=max(2, stacks // 200), activity=2.0), clock
    )
    with Simulator(world, key_id=KEY_ID, key_secret=SECRET) as sim:
        cfg = load(
            Overrides(),
            env={"SPACELIFT_API_KEY_ID": KEY_ID, "SPACELIFT_API_KEY_SECRET": SECRET},
            raw={"accounts": [{"name": "bench", "endpoint": sim.url}]},
        )
        app = App(cfg)
        started = time.perf_counter()
        ok = app.poll_all()
        poll_seconds = time.perf_counter() - started
        requests = sum(sim.requests.values())
        t0 = time.perf_counter()
        app.exposition.refresh()
        render_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        app.exposition.refresh("health", "worker_pools")  # what a worker pool poll pays
        pools_render_seconds = time.perf_counter() - t0
        body, _ = app.exposition.render(None)
        timings = []
        for _ in range(scrapes):
            t0 = time.perf_counter()
            app.exposition.render(None)
            timings.append(time.perf_counter() - t0)
        app.close()
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return {
        "ok": float(ok),
        "requests": requests,
        "poll_s": poll_seconds,
        "series": series,
        "bytes": len(body),
        "render_ms": render_seconds * 1000,
        "pools_render_ms": pools_render_seconds * 1000,
        "scrape_ms": statistics.median(timings) * 1000,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    head = f"{'stacks':>7} {'all ok':>6} {'requests':>8} {'poll s':>7} {'series':>7} "
    head += f"{'bytes':>9} {'render ms':>9} {'pools ms':>8} {'scrape ms':>9} {'max RSS MB':>10}"
    print(head)
    for n in sizes:
        m = measure(n, args.scrapes)
        print(
            f"{n:>7} {'yes' if m['ok'] else 'NO':>6} {m['requests']:>8.0f} {m['poll_s']:>7.2f} "
            f"{m['series']:>7.0f} {m['bytes']:>9.0f} {m['render_ms']:>9.1f} "
            f"{m['pools_render_ms']:>8.1f} "
            f"{m['scrape_ms']:>9.3f} {m['rss_mb']:>10.0f}"
        )
    print(
        "render ms: every area re-rendered; pools ms: what a worker pool poll re-renders "
        "(its area and poll health); scrape ms: median time to serve pre-rendered bytes."
    )


if __name__ == "__main__":
    main()
