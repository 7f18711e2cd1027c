"""Run the simulator alone on the real clock: python -m exporter.simulator --port 9954."""

from __future__ import annotations

import argparse
import signal
import threading

from .clock import SimClock
from .server import Simulator
from .world import World, WorldConfig

DEFAULT_SECRET = "sim-secret"  # built-in demo value, not a secret


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m exporter.simulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9954)
    p.add_argument("--stacks", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--spaces", type=int, default=6)
    p.add_argument("--pools", type=int, default=3)
    p.add_argument("--workers-per-pool", type=int, default=3)
    p.add_argument("--activity", type=float, default=1.0)
    p.add_argument("--token-ttl", type=int, default=3600)
    p.add_argument("--key-id", default="01HXSIMKEY0000000000000000")
    p.add_argument("--key-secret", default=DEFAULT_SECRET)
    a = p.parse_args(argv)

    cfg = WorldConfig(
        seed=a.seed,
        stacks=a.stacks,
        spaces=a.spaces,
        pools=a.pools,
        workers_per_pool=a.workers_per_pool,
        activity=a.activity,
    )
    world = World(cfg, SimClock.real())
    sim = Simulator(world, a.key_id, a.key_secret, token_ttl=a.token_ttl, host=a.host, port=a.port)
    sim.start()
    shown = a.key_secret if a.key_secret == DEFAULT_SECRET else "<as given>"
    print(f"spacelift simulator at {sim.url} key_id={a.key_id} key_secret={shown}", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
