"""A lively simulated account for `spacelift-exporter demo`."""

from __future__ import annotations

from .clock import SimClock
from .server import Simulator
from .world import World, WorldConfig


def start_demo_simulator(port: int = 0, stacks: int = 60, seed: int = 1) -> Simulator:
    """Build a world on the real clock with steady activity and every scenario worth a
    metric or an alert, then start serving it."""
    cfg = WorldConfig(seed=seed, stacks=stacks, pools=3, workers_per_pool=3, activity=5.0)
    world = World(cfg, SimClock.real())
    with world.lock:
        by_pool: dict[str | None, list[str]] = {}
        for sid, st in world.stacks.items():
            by_pool.setdefault(st.worker_pool, []).append(sid)
        private = [pid for pid in world.pools if by_pool.get(pid)]
        public = by_pool.get(None, [])
        used: set[str] = set()

        def pick(candidates: list[str]) -> str | None:
            free = [s for s in candidates if s not in used]
            if free:
                used.add(free[0])
                return free[0]
            return None

        # a starved pool: one worker, several runs waiting for it
        if private:
            starved = private[0]
            world.set_workers(starved, 1)
            for sid in by_pool[starved][:6]:
                used.add(sid)
                world.trigger_run(sid, "PROPOSED").not_before = world._now  # ready at once
            world._schedule()
        # a failed stack
        sid = pick(public) or pick(list(world.stacks))
        if sid:
            world.finish_run(world.trigger_run(sid).id, "FAILED")
        # a locked stack
        sid = pick(list(world.stacks))
        if sid:
            world.lock_stack(sid, "alice", note="maintenance window")
        # a drifted stack (drift detection needs a private pool)
        sid = pick([s for p in private for s in by_pool[p]])
        if sid:
            world.stacks[sid].isDrifted = True
        # an unconfirmed tracked run waiting for a human
        sid = pick([s for s in world.stacks if not world.stacks[s].autodeploy])
        if sid:
            run = world.trigger_run(sid)
            world.stacks[sid].lock_holder = run.id
            world._set_state(run, "UNCONFIRMED")  # no worker needed while unconfirmed
        # a disabled stack
        sid = pick(list(world.stacks))
        if sid:
            world.stacks[sid].isDisabled = True
    return Simulator(world, port=port).start()
