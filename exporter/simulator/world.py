"""The simulated account and its run state machine (a discrete-event simulation).

Events sit in a heap of (time, seq, kind, payload). `sync()` processes every event due up to
`clock.now()` in time order; the event RNG is consumed only there (and by explicit test
mutations), so the same config plus the same sequence of clock times gives the same world.
"""

from __future__ import annotations

import gc
import heapq
import random
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from .clock import SimClock
from .model import (
    BLOCKING_TYPES,
    ON_WORKER,
    STATE_TYPES,
    TERMINAL,
    WAITING_FOR_WORKER,
    ApiKey,
    PublicPool,
    Run,
    Space,
    Stack,
    Worker,
    metadata_json,
    stack_state_for,
    ulid,
)

RUN_RETENTION = 60  # runs kept per stack; older terminal runs are dropped

# Phase durations in seconds (min, max), drawn uniformly from the event RNG.
DURATIONS = {
    "QUEUED": (2, 10),
    "PREPARING": (5, 25),
    "INITIALIZING": (10, 45),
    "PLANNING": (20, 150),
    "PREPARING_REPLAN": (5, 20),
    "PREPARING_APPLY": (5, 20),
    "APPLYING": (30, 240),
    "PERFORMING": (10, 90),
    "DESTROYING": (30, 180),
    "HUMAN": (30, 900),  # time until a human confirms or discards an UNCONFIRMED run
}


@dataclass
class WorldConfig:
    seed: int = 1
    stacks: int = 50
    spaces: int = 6  # spaces besides root and legacy
    pools: int = 3
    workers_per_pool: int = 3
    api_keys: int = 8
    users: int = 12
    activity: float = 1.0  # new runs per minute per 100 stacks (Poisson); 0 = none
    runs_page_size: int = 50
    failure_rate: float = 0.1  # chance of FAILED at PLANNING and at APPLYING
    public_parallelism: int = 10
    history: bool = True  # seed stacks with past (terminal) runs


class World:
    def __init__(self, config: WorldConfig | None = None, clock: SimClock | None = None) -> None:
        self.config = config or WorldConfig()
        self.clock = clock or SimClock()
        self.lock = threading.RLock()
        self.rng = random.Random(self.config.seed * 7919 + 17)  # events only
        self._now = self.clock.now()
        self._events: list[tuple[float, int, str, Any]] = []
        self._seq = 0
        self._run_seq = 0
        self.spaces: dict[str, Space] = {}
        self.stacks: dict[str, Stack] = {}
        self.runs: dict[str, Run] = {}
        self.pools: dict[str, Any] = {}
        self.public_pool = PublicPool(parallelism=self.config.public_parallelism, world=self)
        self.api_keys: dict[str, ApiKey] = {}
        self.roles: dict[str, Any] = {}
        self.users: dict[str, Any] = {}
        self.user_groups: dict[str, Any] = {}
        self.user_bindings: list[dict[str, Any]] = []
        self.group_bindings: list[dict[str, Any]] = []
        self.stack_bindings: list[dict[str, Any]] = []
        self.active: dict[str, Run] = {}  # every non-terminal run
        self.waiting: dict[str, Run] = {}  # QUEUED / READY / CONFIRMED / REPLAN_REQUESTED
        self.private_seconds = 0.0  # worker time, for usage minutes
        self.public_seconds = 0.0
        self.recent_durations: deque[int] = deque(maxlen=500)
        self.stacks_version = 0  # bumped on add/delete (search ordering cache)
        from .account import Metrics, Seats, Usage
        from .seed import populate  # local import: seed.py imports this module

        self.usage = Usage(self)
        self.seats = Seats(self)
        self.metrics = Metrics(self)
        # the build allocates many small objects; cyclic GC passes only slow it down
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            populate(self)
        finally:
            if gc_was_enabled:
                gc.enable()
        if self.config.activity > 0:
            self._schedule_arrival(self._build_rng_next_arrival())

    # ------------------------------------------------------------------ time & events
    def now(self) -> int:
        return int(self._now)

    def _push(self, at: float, kind: str, payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, payload))

    def sync(self) -> None:
        """Process every event due up to clock.now(), in time order."""
        with self.lock:
            target = self.clock.now()
            while self._events and self._events[0][0] <= target:
                at, _, kind, payload = heapq.heappop(self._events)
                self._now = max(self._now, at)
                getattr(self, "_ev_" + kind)(payload)
            self._now = max(self._now, target)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.sync()

    def _rand_duration(self, phase: str) -> float:
        lo, hi = DURATIONS[phase]
        return self.rng.uniform(lo, hi)

    # ------------------------------------------------------------------ activity
    def _build_rng_next_arrival(self) -> float:
        rate = self._arrival_rate()
        return self._now + random.Random(self.config.seed).expovariate(rate) if rate else 0.0

    def _arrival_rate(self) -> float:
        # activity runs per minute per 100 stacks -> runs per second
        return self.config.activity * max(len(self.stacks), 1) / 100.0 / 60.0

    def _schedule_arrival(self, at: float) -> None:
        if at:
            self._push(at, "arrival")

    def _ev_arrival(self, _: Any) -> None:
        rng = self.rng
        if self.stacks:
            stack = self.stacks[rng.choice(list(self.stacks))]
            roll = rng.random()
            if not stack.isDisabled:
                if roll < 0.12 and stack.worker_pool and stack.drift_schedule:
                    self._trigger(stack, "PROPOSED", drift=True, triggered_by="drift-detection")
                elif roll < 0.55:
                    self._trigger(stack, "TRACKED", push=True)
                elif roll < 0.92:
                    self._trigger(stack, "PROPOSED", push=True)
                else:
                    self._trigger(stack, "TASK", triggered_by=rng.choice(["alice", "bob"]))
        rate = self._arrival_rate()
        if self.config.activity > 0 and rate:
            self._push(self._now + rng.expovariate(rate), "arrival")

    # ------------------------------------------------------------------ run lifecycle
    def _new_commit(self, stack: Stack, ts: float) -> dict[str, Any]:
        rng = self.rng
        return {
            "hash": f"{rng.getrandbits(160):040x}",
            "timestamp": int(ts - rng.uniform(30, 3600)),
            "authorName": rng.choice(["Alice Doe", "Bob Roe", "Carol Poe", "Dan Moe"]),
            "authorLogin": None,
            "message": rng.choice(["fix: tags", "feat: add bucket", "chore: bump", "refactor"]),
            "url": None,
            "tag": None,
        }

    def _trigger(
        self,
        stack: Stack,
        run_type: str,
        *,
        drift: bool = False,
        needs_approval: bool = False,
        push: bool = False,
        triggered_by: str | None = None,
        commit_timestamp: int | None = None,
    ) -> Run:
        now = self._now
        if push or stack.trackedCommit is None or commit_timestamp is not None:
            commit = self._new_commit(stack, now)
            if commit_timestamp is not None:
                commit["timestamp"] = int(commit_timestamp)
            if run_type == "TRACKED":
                stack.trackedCommit = commit
        else:
            commit = dict(stack.trackedCommit)
        self._run_seq += 1
        run = Run(
            id=ulid(now, self.rng),
            stack_id=stack.id,
            type=run_type,
            createdAt=int(now),
            title=commit["message"] if run_type != "TASK" else "terraform state list",
            branch=stack.branch,
            commit=commit,
            triggeredBy=triggered_by,
            driftDetection=drift,
            needsApproval=needs_approval,
            seq=self._run_seq,
            not_before=now + self._rand_duration("QUEUED"),
        )
        if run_type == "PROPOSED" and not drift:
            # a newer push supersedes proposed runs that have not started yet
            for old in list(self.waiting.values()):
                same = old.stack_id == stack.id and old.type == "PROPOSED"
                if same and not old.driftDetection and old.state in ("QUEUED", "READY"):
                    self._set_state(old, "STOPPED", note="superseded by a newer push")
        run.updatedAt = int(now)
        self._record(run, "QUEUED")
        stack.runs.insert(0, run)
        self.runs[run.id] = run
        self.active[run.id] = run
        self.waiting[run.id] = run
        self._retain(stack)
        self._on_state(run)
        self._push(run.not_before, "wake")
        return run

    def _retain(self, stack: Stack) -> None:
        while len(stack.runs) > RUN_RETENTION and stack.runs[-1].terminal:
            old = stack.runs.pop()
            self.runs.pop(old.id, None)

    def _record(self, run: Run, state: str, note: str | None = None, user: str | None = None):
        version = sum(1 for h in run.history if h["state"] == state) + 1
        run.state = state
        run.updatedAt = int(self._now)
        run.history.append(
            {
                "state": state,
                "stateVersion": version,
                "timestamp": int(self._now),
                "terminal": state in TERMINAL,
                "hasLogs": state in ON_WORKER or state in TERMINAL,
                "note": note,
                "username": user,
            }
        )

    def _set_state(self, run: Run, state: str, note: str | None = None, user: str | None = None):
        """Move a run to `state`, keeping every derived structure consistent."""
        run.token += 1  # any event scheduled for the previous state is now stale
        if run.worker is not None and state not in ON_WORKER:
            self._release(run)
        self._record(run, state, note, user)
        if state in TERMINAL:
            self.active.pop(run.id, None)
            self.waiting.pop(run.id, None)
            self.recent_durations.append(int(self._now) - run.createdAt)
            stack = self.stacks.get(run.stack_id)
            if stack is not None and stack.lock_holder == run.id:
                stack.lock_holder = None
            if stack is not None and run.type == "TRACKED" and state == "FINISHED":
                stack.isDrifted = False
        elif state in ("QUEUED", *WAITING_FOR_WORKER):
            self.waiting[run.id] = run
        else:
            self.waiting.pop(run.id, None)
        self._on_state(run)

    def _on_state(self, run: Run) -> None:
        """Stack state follows its most recent tracked (or destroy) run."""
        if run.type not in STATE_TYPES:
            return
        stack = self.stacks.get(run.stack_id)
        if stack is None:
            return
        latest = next((r for r in stack.runs if r.type in STATE_TYPES), None)
        if latest is not None and latest is not run:
            return
        new = stack_state_for(run.state)
        if new != stack.state:
            stack.state = new
            stack.stateSetAt = int(self._now)
        if run.state == "FINISHED":
            stack.lastApplyAt = int(self._now)

    def _release(self, run: Run) -> None:
        spent = self._now - run.started_at
        if run.worker == "public":
            self.public_pool.busy -= 1
            self.public_seconds += spent
        else:
            w: Worker = run.worker
            w.busy = False
            w.run_id = None
            w.availableAt = int(self._now)
            self.private_seconds += spent
        run.worker = None

    def _step_later(self, run: Run, phase: str) -> None:
        self._push(self._now + self._rand_duration(phase), "step", (run.id, run.token))

    def _ev_wake(self, _: Any) -> None:
        self._schedule()

    def _ev_step(self, payload: tuple[str, int]) -> None:
        run = self.runs.get(payload[0])
        if run is None or run.token != payload[1] or run.terminal:
            return
        rng, fail = self.rng, self.config.failure_rate
        s = run.state
        if s == "PREPARING":
            self._goto(run, "INITIALIZING")
        elif s == "INITIALIZING":
            nxt = {"TASK": "PERFORMING", "DESTROY": "DESTROYING"}.get(run.type, "PLANNING")
            self._goto(run, nxt)
        elif s == "PREPARING_REPLAN":
            self._goto(run, "PLANNING")
        elif s == "PLANNING":
            self._after_planning(run, rng.random() < fail)
        elif s == "PREPARING_APPLY":
            self._goto(run, "APPLYING")
        elif s in ("APPLYING", "PERFORMING", "DESTROYING"):
            self._set_state(run, "FAILED" if rng.random() < fail else "FINISHED")
        self._schedule()

    def _after_planning(self, run: Run, failed: bool) -> None:
        stack = self.stacks[run.stack_id]
        rng = self.rng
        if failed:
            self._set_state(run, "FAILED", note="plan failed")
            return
        changes = rng.random() < 0.85
        run.delta = {
            "addCount": rng.randint(0, 5) if changes else 0,
            "changeCount": rng.randint(1, 6) if changes else 0,
            "deleteCount": rng.randint(0, 2) if changes else 0,
            "resources": stack.entityCount,
        }
        if run.type == "PROPOSED":
            if run.driftDetection and changes and rng.random() < 0.4:
                stack.isDrifted = True
            self._set_state(run, "FINISHED")
        elif not changes:
            self._set_state(run, "FINISHED", note="no changes")
        elif stack.autodeploy:
            self._goto(run, "PREPARING_APPLY")
        else:
            self._set_state(run, "UNCONFIRMED")
            if self.config.activity > 0:
                self._push(self._now + self._rand_duration("HUMAN"), "human", (run.id, run.token))

    def _ev_human(self, payload: tuple[str, int]) -> None:
        run = self.runs.get(payload[0])
        if run is None or run.token != payload[1] or run.state != "UNCONFIRMED":
            return
        if self.rng.random() < 0.85:
            self._set_state(run, "CONFIRMED", user="alice")
        else:
            self._set_state(run, "DISCARDED", user="bob")
        self._schedule()

    def _goto(self, run: Run, state: str) -> None:
        self._set_state(run, state)
        self._step_later(run, state)

    def _schedule(self) -> None:
        """Promote eligible QUEUED runs, then hand free workers to waiting runs by priority."""
        now = self._now
        for run in sorted(self.waiting.values(), key=lambda r: r.seq):
            if run.state != "QUEUED" or run.needsApproval or run.not_before > now:
                continue
            stack = self.stacks[run.stack_id]
            if run.type in BLOCKING_TYPES:
                if stack.lock_holder is not None and stack.lock_holder != run.id:
                    continue
                stack.lock_holder = run.id
            self._set_state(run, "READY")
        ready = [r for r in self.waiting.values() if r.state in WAITING_FOR_WORKER]
        ready.sort(key=lambda r: (r.priority(), r.seq))
        for run in ready:
            slot = self._free_slot(self.stacks[run.stack_id].worker_pool)
            if slot is None:
                continue
            run.started_at = now
            if slot == "public":
                self.public_pool.busy += 1
            else:
                slot.busy, slot.run_id, slot.availableAt = True, run.id, None
            nxt = {"CONFIRMED": "PREPARING_APPLY", "REPLAN_REQUESTED": "PREPARING_REPLAN"}
            run.worker = slot
            self._goto(run, nxt.get(run.state, "PREPARING"))

    def _free_slot(self, pool_id: str | None) -> Any:
        if pool_id is None:
            pp = self.public_pool
            return "public" if pp.busy < pp.parallelism else None
        pool = self.pools.get(pool_id)
        if pool is None:
            return None
        return next((w for w in pool.workers if not w.busy and not w.drained), None)

    # ------------------------------------------------------------------ derived views
    def pool_runs(self, pool_id: str | None) -> tuple[list[Run], list[Run]]:
        """(in progress on the pool, waiting for a worker of the pool), each in queue order."""
        running = [
            r
            for r in self.active.values()
            if r.state in ON_WORKER and self.stacks[r.stack_id].worker_pool == pool_id
        ]
        running.sort(key=lambda r: (r.started_at, r.seq))
        pending = [
            r
            for r in self.waiting.values()
            if r.state in WAITING_FOR_WORKER and self.stacks[r.stack_id].worker_pool == pool_id
        ]
        pending.sort(key=lambda r: (r.priority(), r.seq))
        return running, pending

    # ------------------------------------------------------------------ test mutations
    def _begin(self) -> None:
        self.sync()
        self._now = max(self._now, self.clock.now())

    def trigger_run(
        self,
        stack_id: str,
        run_type: str = "TRACKED",
        *,
        drift_detection: bool = False,
        needs_approval: bool = False,
        commit_timestamp: int | None = None,
    ) -> Run:
        with self.lock:
            self._begin()
            run = self._trigger(
                self.stacks[stack_id],
                run_type,
                drift=drift_detection,
                needs_approval=needs_approval,
                push=run_type == "TRACKED",
                triggered_by="tester" if not drift_detection else "drift-detection",
                commit_timestamp=commit_timestamp,
            )
            self.sync()  # QUEUED -> READY happens after a short delay, on the event queue
            return run

    def approve(self, run_id: str) -> None:
        with self.lock:
            self._begin()
            run = self.runs[run_id]
            run.needsApproval = False
            run.history[-1]["note"] = "approved"
            self._schedule()

    def confirm(self, run_id: str) -> None:
        with self.lock:
            self._begin()
            run = self.runs[run_id]
            if run.state != "UNCONFIRMED":
                raise ValueError(f"run {run_id} is {run.state}, not UNCONFIRMED")
            self._set_state(run, "CONFIRMED", user="tester")
            self._schedule()

    def discard(self, run_id: str) -> None:
        with self.lock:
            self._begin()
            run = self.runs[run_id]
            if run.terminal:
                raise ValueError(f"run {run_id} is already {run.state}")
            self._set_state(run, "DISCARDED", user="tester")
            self._schedule()

    def finish_run(self, run_id: str, state: str = "FINISHED") -> None:
        """Force a run terminal now, releasing its worker and the stack lock."""
        if state not in TERMINAL:
            raise ValueError(f"{state} is not a terminal state")
        with self.lock:
            self._begin()
            run = self.runs[run_id]
            if not run.terminal:
                self._set_state(run, state)
            self._schedule()

    def add_stack(self, stack_id: str | None = None, **fields: Any) -> Stack:
        from .seed import make_stack

        with self.lock:
            self._begin()
            stack = make_stack(self, random.Random(len(self.stacks) + 99), stack_id, **fields)
            self.stacks[stack.id] = stack
            self.stacks_version += 1
            return stack

    def delete_stack(self, stack_id: str) -> None:
        with self.lock:
            self._begin()
            stack = self.stacks[stack_id]
            for run in list(stack.runs):
                if not run.terminal:
                    self._set_state(run, "CANCELED", note="stack deleted")
                self.runs.pop(run.id, None)
            del self.stacks[stack_id]
            self.stacks_version += 1
            self._schedule()

    def add_space(self, name: str, parent: str = "root") -> Space:
        with self.lock:
            self._begin()
            sid = f"{name.lower().replace(' ', '-')}-{ulid(self._now, self.rng)}"
            space = Space(id=sid, name=name, parentSpace=parent)
            self.spaces[sid] = space
            return space

    def lock_stack(self, stack_id: str, by: str | None, note: str | None = None) -> None:
        """Lock (by = user name) or unlock (by = None) a stack for exclusive use."""
        with self.lock:
            self._begin()
            st = self.stacks[stack_id]
            st.lockedBy = by
            st.lockedAt = int(self._now) if by else None
            st.lockNote = note if by else None

    def set_workers(self, pool_id: str, count: int) -> None:
        """Add idle workers or remove workers (idle ones first; busy ones fail their run)."""
        with self.lock:
            self._begin()
            pool = self.pools[pool_id]
            while len(pool.workers) < count:
                n = len(pool.workers)
                pool.workers.append(
                    Worker(
                        id=ulid(self._now, self.rng),
                        pool_id=pool_id,
                        createdAt=int(self._now),
                        availableAt=int(self._now),
                        metadata=metadata_json({"asg_id": f"{pool.name}-asg", "index": str(n)}),
                    )
                )
            while len(pool.workers) > count:
                idle = [w for w in pool.workers if not w.busy]
                victim = idle[-1] if idle else pool.workers[-1]
                if victim.busy and victim.run_id in self.runs:
                    self._set_state(self.runs[victim.run_id], "FAILED", note="worker lost")
                pool.workers.remove(victim)
            pool.updatedAt = int(self._now)
            self._schedule()

    def set_drained(self, pool_id: str, drained: bool) -> None:
        with self.lock:
            self._begin()
            for w in self.pools[pool_id].workers:
                w.drained = drained
            self._schedule()

    def add_api_key(self, name: str, **fields: Any) -> ApiKey:
        with self.lock:
            self._begin()
            kid = fields.pop("id", None) or ulid(self._now, self.rng)
            key = ApiKey(id=kid, name=name, createdAt=fields.pop("createdAt", self.now()), **fields)
            self.api_keys[kid] = key
            return key

    def delete_api_key(self, key_id: str) -> None:
        with self.lock:
            del self.api_keys[key_id]

    def use_api_key(self, key_id: str) -> None:
        with self.lock:
            self._begin()
            self.api_keys[key_id].lastUsedAt = self.now()

    def add_api_key_binding(self, key_id: str, role_slug: str, space_id: str) -> dict[str, Any]:
        with self.lock:
            self._begin()
            role = next(r for r in self.roles.values() if r.slug == role_slug)
            binding = {
                "id": ulid(self._now, self.rng),
                "apiKeyID": key_id,
                "roleID": role.id,
                "spaceID": space_id,
                "role": role,
            }
            self.api_keys[key_id].apiKeyRoleBindings.append(binding)
            return binding

    # ------------------------------------------------------------------ accounting
    def used_minutes(self) -> tuple[int, int]:
        """(private, public) worker minutes, counting runs still on a worker up to now."""
        priv, pub = self.private_seconds, self.public_seconds
        for r in self.active.values():
            if r.worker is not None:
                spent = self._now - r.started_at
                if r.worker == "public":
                    pub += spent
                else:
                    priv += spent
        return int(priv // 60), int(pub // 60)
