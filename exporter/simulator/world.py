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
from collections.abc import Callable
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
    stack_state_for,
    ulid,
)
from .mutations import WorldMutations

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
    public_parallelism: int | None = None  # None: max(10, stacks // 20)
    history: bool = True  # seed stacks with past (terminal) runs


class World(WorldMutations):
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
        parallelism = self.config.public_parallelism
        if parallelism is None:
            parallelism = max(10, self.config.stacks // 20)
        self.public_pool = PublicPool(parallelism=parallelism, world=self)
        self.api_keys: dict[str, ApiKey] = {}
        self.roles: dict[str, Any] = {}
        self.users: dict[str, Any] = {}
        self.user_groups: dict[str, Any] = {}
        self.user_bindings: list[dict[str, Any]] = []
        self.group_bindings: list[dict[str, Any]] = []
        self.stack_bindings: list[dict[str, Any]] = []
        self.active: dict[str, Run] = {}  # every non-terminal run
        self.waiting: dict[str, Run] = {}  # QUEUED / READY / CONFIRMED / REPLAN_REQUESTED
        # Indexes that keep each event O(log n) with thousands of queued runs:
        self.on_worker: dict[str, Run] = {}  # runs holding a worker or a public slot
        self.pool_waiting: dict[str | None, dict[str, Run]] = {}  # waiting for a worker, by pool
        self.pool_heap: dict[str | None, list[tuple[int, int, str]]] = {}  # (prio, seq, run id)
        self._dirty_pools: set[str | None] = set()  # pools whose queue may now dispatch
        self._dirty_stacks: set[str] = set()  # stacks whose run lock was released
        self._stack_ids: tuple[int, list[str]] = (-1, [])  # cached list for random picks
        self.private_seconds = 0.0  # worker time, for usage minutes
        self.public_seconds = 0.0
        self.recent_durations: deque[int] = deque(maxlen=500)
        self.stacks_version = 0  # bumped on add/delete (search ordering cache)
        # Called (under self.lock) with each run and its new history entry on every state
        # change: the webhook sender (simulator/webhooks.py) hangs here.
        self.on_transition: Callable[[Run, dict[str, Any]], None] | None = None
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
            if self._stack_ids[0] != self.stacks_version:
                self._stack_ids = (self.stacks_version, list(self.stacks))
            stack = self.stacks[rng.choice(self._stack_ids[1])]
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
        self._flush()
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
            pool_key=stack.worker_pool,
        )
        if run_type == "PROPOSED" and not drift:
            # a newer push supersedes proposed runs that have not started yet
            for old in stack.runs:
                pending = old.state in ("QUEUED", "READY")
                if pending and old.type == "PROPOSED" and not old.driftDetection:
                    self._set_state(old, "STOPPED", note="superseded by a newer push")
        run.updatedAt = int(now)
        self._record(run, "QUEUED")
        stack.runs.insert(0, run)
        self.runs[run.id] = run
        self.active[run.id] = run
        self.waiting[run.id] = run
        self._retain(stack)
        self._on_state(run)
        self._push(run.not_before, "wake", run.id)
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
        if self.on_transition is not None:
            self.on_transition(run, run.history[-1])

    def _set_state(self, run: Run, state: str, note: str | None = None, user: str | None = None):
        """Move a run to `state`, keeping every derived structure consistent."""
        run.token += 1  # any event scheduled for the previous state is now stale
        if run.worker is not None and state not in ON_WORKER:
            self._release(run)
        old = run.state
        self._record(run, state, note, user)
        key = run.pool_key
        if old in WAITING_FOR_WORKER:
            self.pool_waiting.get(key, {}).pop(run.id, None)
        if state in WAITING_FOR_WORKER:
            self.pool_waiting.setdefault(key, {})[run.id] = run
            heapq.heappush(self.pool_heap.setdefault(key, []), (run.priority(), run.seq, run.id))
            self._dirty_pools.add(key)
        if state in ON_WORKER:
            self.on_worker[run.id] = run
        else:
            self.on_worker.pop(run.id, None)
        if state in TERMINAL:
            self.active.pop(run.id, None)
            self.waiting.pop(run.id, None)
            self.recent_durations.append(int(self._now) - run.createdAt)
            stack = self.stacks.get(run.stack_id)
            if stack is not None and stack.lock_holder == run.id:
                stack.lock_holder = None
                self._dirty_stacks.add(stack.id)
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
        self._dirty_pools.add(run.pool_key)
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

    def _ev_wake(self, run_id: Any) -> None:
        run = self.runs.get(run_id) if run_id else None
        if run is not None and run.state == "QUEUED":
            self._try_promote(run)
        self._flush()

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
        self._flush()

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
        self._flush()

    def _goto(self, run: Run, state: str) -> None:
        self._set_state(run, state)
        self._step_later(run, state)

    def _try_promote(self, run: Run) -> None:
        """QUEUED -> READY once the delay passed, approval is given and the lock is free."""
        if run.state != "QUEUED" or run.needsApproval or run.not_before > self._now:
            return
        stack = self.stacks[run.stack_id]
        if run.type in BLOCKING_TYPES:
            if stack.lock_holder is not None and stack.lock_holder != run.id:
                return
            stack.lock_holder = run.id
        self._set_state(run, "READY")

    def _flush(self) -> None:
        """Promote runs on stacks whose lock was released, then dispatch touched pools."""
        while self._dirty_stacks or self._dirty_pools:
            while self._dirty_stacks:
                stack = self.stacks.get(self._dirty_stacks.pop())
                if stack is not None:
                    for run in reversed(stack.runs):  # oldest first (FIFO)
                        if run.state == "QUEUED":
                            self._try_promote(run)
            while self._dirty_pools:
                self._dispatch(self._dirty_pools.pop())

    def _dispatch(self, key: str | None) -> None:
        """Hand free workers (or public slots) of one pool to its waiting runs by priority."""
        heap, waiting = self.pool_heap.get(key), self.pool_waiting.get(key, {})
        while heap:
            run = waiting.get(heap[0][2])
            if run is None:  # stale entry: the run left the queue
                heapq.heappop(heap)
                continue
            slot = self._free_slot(key)
            if slot is None:
                return
            heapq.heappop(heap)
            run.started_at = self._now
            if slot == "public":
                self.public_pool.busy += 1
            else:
                slot.busy, slot.run_id, slot.availableAt = True, run.id, None
            nxt = {"CONFIRMED": "PREPARING_APPLY", "REPLAN_REQUESTED": "PREPARING_REPLAN"}
            run.worker = slot
            self._goto(run, nxt.get(run.state, "PREPARING"))

    def _schedule(self) -> None:
        """Full pass (after test mutations): promote every eligible run, dispatch every pool."""
        for run in sorted(self.waiting.values(), key=lambda r: r.seq):
            if run.state == "QUEUED":
                self._try_promote(run)
        self._dirty_pools.update(self.pool_heap)
        self._dirty_pools.update(self.pools)
        self._dirty_pools.add(None)
        self._flush()

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
        running = [r for r in self.on_worker.values() if r.pool_key == pool_id]
        running.sort(key=lambda r: (r.started_at, r.seq))
        pending = sorted(
            self.pool_waiting.get(pool_id, {}).values(), key=lambda r: (r.priority(), r.seq)
        )
        return running, pending

    # ------------------------------------------------------------------ accounting
    def used_minutes(self) -> tuple[int, int]:
        """(private, public) worker minutes, counting runs still on a worker up to now."""
        priv, pub = self.private_seconds, self.public_seconds
        for r in self.on_worker.values():
            if r.worker is not None:
                spent = self._now - r.started_at
                if r.worker == "public":
                    pub += spent
                else:
                    priv += spent
        return int(priv // 60), int(pub // 60)
