"""The run ledger: every run the exporter knows, so each finished run is counted exactly once.

There is no account-wide run search in Spacelift, so the runs area sees runs in pieces: the
worker pools' queues (runs waiting for or holding a worker), and the run lists of the stacks it
decides to look at (``stack.runs`` / ``stack.proposedRuns``, newest first). The ledger folds
those pieces into one consistent picture and owns the counting rules:

- A run is counted when it is first seen in a terminal state, once: its id moves from
  ``active`` (or from nowhere) into ``done``. Seeing it again in a later poll changes nothing.
- The **baseline**: a run whose terminal transition happened before ``baseline`` (the first
  poll of an exporter without a state file) is history, never counted.
- The **floor** of a (stack, list) pair: every run of that list created before it has been
  examined already (counted, baseline, or still ``active``), so ``done`` only needs the ids at
  or above the floor. The floor rises to the oldest still-active run (or the newest run seen),
  which keeps the ledger small: a few ids per busy stack, not its whole history.
- The floor never rises over runs not read yet: a read that stops at MAX_RUN_PAGES leaves a
  **gap** (a ``before`` cursor) that later polls read on. An active run older than everything
  read is asked for by id (a ``Lookup``), not by paging down to it.
- A stack gone from the listing keeps a **tombstone** (floor, ``done``, counts) for
  TOMBSTONE_RETENTION, so one that comes back is not counted again.
- Runs never seen before but created after the floor are examined in full, whatever happened
  between polls: a run that started and finished between two polls, or while the API was
  down, or while the exporter was stopped (with a state file), is counted when its stack's
  list is next read.

Everything here is pure: the poller gathers observations (I/O), then calls ``apply`` once
with all of them; a poll that fails half-way leaves the ledger untouched.

Webhook deliveries (``exporter.webhooks``) feed the same ledger through ``observe``, one run
state change at a time, so a run is counted once whichever source sees it end first: a
terminal delivery counts the run and records it in ``done`` (where polls find it handled); a
later poll, or a replayed or older delivery, changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

TERMINAL = frozenset({"FINISHED", "FAILED", "STOPPED", "CANCELED", "DISCARDED", "SKIPPED"})
# Stack states meaning "no tracked run is in progress" (NONE: the stack never ran).
STACK_AT_REST = frozenset({"NONE", *TERMINAL})

RUNS = "runs"  # stack.runs: tracked runs, destroys
PROPOSED = "proposed"  # stack.proposedRuns: proposed runs, drift detection included
TASKS = "tasks"  # stack.tasks (spacectl reads tasks there; whether runs holds them too is
# unconfirmed: a run is filed under its type's list, so one seen in two lists counts once)
KINDS = (RUNS, PROPOSED, TASKS)

DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)
QUEUE_WAIT_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
LEAD_TIME_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800)

STATE_VERSION = 1
# Polls a stack may be missing from the listing before its ledger entries are dropped (a stack
# can slip between two pages when others are added or deleted during the listing).
MISSING_GRACE = 2
# How long the floor and counts of a stack gone from the listing are kept (its "tombstone"), so
# a stack that comes back (a permission change, a listing glitch, a restored stack) is not
# counted again from the baseline. After this (a guess at Spacelift's run retention, which the
# API notes do not state) the tombstone is pruned; (stack_id label off) its counts stay in the
# space total.
TOMBSTONE_RETENTION = 30 * 86400.0


def kind_of(run_type: str) -> str:
    return {"PROPOSED": PROPOSED, "TASK": TASKS}.get(run_type, RUNS)


@dataclass(frozen=True)
class RunObs:
    """One run as read from the API (a queue node or an entry of a stack's run list)."""

    id: str
    stack_id: str
    type: str
    state: str
    created_at: float
    updated_at: float
    drift: bool = False
    needs_approval: bool = False
    commit_ts: float | None = None
    history: tuple[tuple[str, float], ...] = ()  # (state, timestamp), sorted oldest first

    def __post_init__(self) -> None:
        # The API's order is not guaranteed: sort by timestamp (stable, so ties keep theirs).
        ordered = tuple(sorted(self.history, key=lambda h: h[1]))
        if ordered != self.history:
            object.__setattr__(self, "history", ordered)

    @property
    def kind(self) -> str:
        return kind_of(self.type)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def entered_at(self) -> float:
        """When the run entered its current state (the last history entry for it)."""
        for state, ts in reversed(self.history):
            if state == self.state:
                return ts
        return self.updated_at

    def queue_wait(self) -> float | None:
        """Seconds from READY to the first PREPARING (waiting for a worker), if both happened."""
        ready: float | None = None
        for state, ts in self.history:
            if state == "READY":
                ready = ts
            elif state == "PREPARING":
                return max(0.0, ts - ready) if ready is not None else None
        return None

    def to_json(self) -> list[Any]:
        return [
            self.id,
            self.stack_id,
            self.type,
            self.state,
            self.created_at,
            self.updated_at,
            self.drift,
            self.needs_approval,
            self.commit_ts,
            [list(h) for h in self.history],
        ]

    @staticmethod
    def from_json(raw: Any) -> RunObs:
        rid, sid, rtype, state, created, updated, drift, approval, commit, hist = raw
        return RunObs(
            str(rid),
            str(sid),
            str(rtype),
            str(state),
            float(created),
            float(updated),
            bool(drift),
            bool(approval),
            None if commit is None else float(commit),
            tuple((str(s), float(t)) for s, t in hist),
        )


@dataclass(frozen=True)
class StackMark:
    """What the runs area last saw of a stack in the listing."""

    space: str
    state: str
    state_set_at: float | None
    needs_approval: bool
    tracked_commit: str = ""  # a push to the tracked branch changes it (and queues a run)


@dataclass
class ActiveRun:
    obs: RunObs
    space: str
    in_queue: bool = False
    seen_at: float = 0.0  # last poll that observed it (queue or run list)


@dataclass
class Hist:
    """Non-cumulative bucket counts (+Inf last) and the sum of observations."""

    counts: list[int]
    total: float = 0.0

    @staticmethod
    def empty(buckets: Sequence[float]) -> Hist:
        return Hist([0] * (len(buckets) + 1))

    def observe(self, buckets: Sequence[float], value: float) -> None:
        for i, bound in enumerate(buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value

    def cumulative(self) -> tuple[float, ...]:
        out, acc = [], 0
        for c in self.counts:
            acc += c
            out.append(float(acc))
        return tuple(out)


@dataclass(frozen=True)
class ListView:
    """The runs read from one stack's list (all pages read this poll, newest first)."""

    stack_id: str
    kind: str
    runs: tuple[RunObs, ...]
    # True when the list was read to its end or down to runs already handled, so an active
    # run of this list created after the oldest run read and missing from ``runs`` no longer
    # exists. False: more unhandled runs lie below (a gap, continued in later polls).
    complete: bool
    before: str | None = None  # where the read started (a gap's cursor), None: the newest


@dataclass(frozen=True)
class Lookup:
    """An active run asked for by id (``stack(id:) { run(id:) }``); ``run`` None: it is gone."""

    stack_id: str
    run_id: str
    run: RunObs | None


@dataclass(frozen=True)
class Want:
    """Which lists of a stack to read this poll (and from which run on, for older pages)."""

    runs: bool = False
    proposed: bool = False
    runs_before: str | None = None
    proposed_before: str | None = None
    lookup: str | None = None  # an active run of this stack to ask for by id
    # Where the part of the list being read started: None for the newest runs, else the
    # cursor of a gap (kept on the follow-up pages of that part).
    runs_from: str | None = None
    proposed_from: str | None = None
    tasks: bool = False  # read with ``runs`` (tasks hold the stack's lock as tracked runs do)
    tasks_before: str | None = None
    tasks_from: str | None = None

    def reads(self, kind: str) -> bool:
        return bool(getattr(self, WANT_FIELD[kind]))

    def origin(self, kind: str) -> str | None:
        return getattr(self, WANT_FIELD[kind] + "_from")  # type: ignore[no-any-return]

    def reading(self, kind: str, before: str | None, origin: str | None) -> Want:
        """This want, also reading ``kind`` from ``before`` (a part that started at ``origin``)."""
        f = WANT_FIELD[kind]
        changes: dict[str, Any] = {f: True, f + "_before": before, f + "_from": origin}
        return replace(self, **changes)


WANT_FIELD = {RUNS: "runs", PROPOSED: "proposed", TASKS: "tasks"}


@dataclass(frozen=True)
class WebhookObs:
    """One run state change as a Spacelift webhook delivers it (``exporter.webhooks`` parses
    the payload). ``state_version`` is the state's ordinal in the run's life (Spacelift's docs:
    "can be used to ensure that notifications that may be sent or received out-of-order are
    correctly processed"); ``timestamp`` is when the run entered ``state``."""

    run_id: str
    stack_id: str
    run_type: str
    state: str
    state_version: int
    timestamp: float
    created_at: float
    commit_ts: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def run(self, history: tuple[tuple[str, float], ...] = ()) -> RunObs:
        """The run as a poll would have read it (with whatever history is known)."""
        hist = (
            history
            if (self.state, self.timestamp) in history
            else (*history, (self.state, self.timestamp))
        )
        return RunObs(
            id=self.run_id,
            stack_id=self.stack_id,
            type=self.run_type,
            state=self.state,
            created_at=self.created_at,
            updated_at=self.timestamp,
            commit_ts=self.commit_ts,
            history=hist,
        )

    def to_json(self) -> list[Any]:
        return [
            self.run_id, self.stack_id, self.run_type, self.state, self.state_version,
            self.timestamp, self.created_at, self.commit_ts,
        ]  # fmt: skip

    @staticmethod
    def from_json(raw: Any) -> WebhookObs:
        rid, sid, rtype, state, version, ts, created, commit = raw
        return WebhookObs(
            str(rid), str(sid), str(rtype), str(state), int(version), float(ts), float(created),
            None if commit is None else float(commit),
        )  # fmt: skip


# What a delivery did to the ledger (the ``outcome`` of spacelift_webhook_deliveries_total).
ACCEPTED, DUPLICATE, STALE = "accepted", "duplicate", "stale"
# Not recorded yet: a poll holds the ledger; recorded (and counted) right after it.
QUEUED = "queued"
# Deliveries for stacks the ledger does not know yet (a stack created since the last listing,
# or one the API key cannot read) wait here for a poll to list their stack: the space label
# comes from the listing. Bounded: the oldest goes first (polling still counts those runs).
MAX_PENDING = 5000
PENDING_TTL = 86400.0

LIKELY_OUTCOMES = ("FINISHED", "FAILED")
# Only runs that change infrastructure get those 0-valued series ahead of their first finish
# (the alerts on failed runs watch them); proposed runs and tasks would double the series.
PLACEHOLDER_TYPES = frozenset({"TRACKED", "DESTROY"})


@dataclass
class Ledger:
    baseline: float
    stacks: dict[str, StackMark] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    active: dict[str, ActiveRun] = field(default_factory=dict)
    done: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    floor: dict[tuple[str, str], float] = field(default_factory=dict)
    # (stack, list) -> cursors of gaps: runs older than the cursor (and above the floor or
    # ``done``) not read yet, because a poll hit MAX_RUN_PAGES. The floor waits for them.
    gaps: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    # stack gone from the listing -> when it was forgotten (its floor, done and counts stay)
    forgotten: dict[str, float] = field(default_factory=dict)
    # (space, stack_id, run_type, state) -> runs counted (stack_id "": pruned tombstones)
    finished: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    duration: dict[tuple[str, str, str], Hist] = field(default_factory=dict)
    queue_wait: dict[tuple[str, str], Hist] = field(default_factory=dict)
    lead_time: dict[str, Hist] = field(default_factory=dict)
    sweep_cursor: str = ""
    # Webhooks: the highest stateVersion delivered per active run, and deliveries parked
    # until a poll lists their stack ((delivery, arrival time) by run id).
    webhook_versions: dict[str, int] = field(default_factory=dict)
    pending: dict[str, tuple[WebhookObs, float]] = field(default_factory=dict)
    changed: bool = True  # something worth persisting happened since the last export
    # The sweep cursor ``plan`` would move to; committed by ``apply`` (a failed poll skips none).
    planned_cursor: str | None = field(default=None, repr=False, compare=False)

    # -- questions the poller asks before reading run lists ---------------------------------

    def handled(self, run: RunObs) -> bool:
        """True if this run needs no attention (counted, baseline, or under the floor)."""
        key = (run.stack_id, run.kind)
        if run.id in self.active:
            return False
        if run.id in self.done.get(key, {}):
            return True
        if run.created_at < self.floor.get(key, -math.inf):
            return True
        return run.terminal and run_ended(run) < self.baseline

    def needs_older_page(self, view_runs: Sequence[RunObs], stack_id: str, kind: str) -> bool:
        """After reading a page: must the next (older) page be read too?

        Yes when the oldest run read still needs attention (so older ones might too). An active
        run older than everything read is not a reason: it is asked for by id instead.
        """
        return bool(view_runs) and not self.handled(view_runs[-1])

    def gap_reads(
        self, listing: Mapping[str, StackMark], wants: Mapping[str, Want]
    ) -> list[tuple[str, Want]]:
        """Extra slots for gaps of lists whose newest runs ``wants`` reads already (a stack
        read at every poll must not leave its gap unread for ever)."""
        extra = []
        for (sid, kind), cursors in sorted(self.gaps.items()):
            w = wants.get(sid)
            if sid not in listing or not cursors or w is None:
                continue
            if w.reads(kind) and w.origin(kind) != cursors[0]:
                extra.append((sid, Want().reading(kind, cursors[0], cursors[0])))
        return extra

    def add_lookups(
        self,
        wants: dict[str, Want],
        listing: Mapping[str, StackMark],
        in_queue: set[str],
        new_slots: int,
    ) -> int:
        """Ask for active runs no queue shows by id, least recently seen first: in the slots
        of stacks already read (free), and in up to ``new_slots`` slots of their own. A run
        beyond the pages read (hundreds of newer runs on its stack) is answered this way.
        Returns the new slots used."""
        used = 0
        stale = sorted(
            (a.seen_at, rid, a.obs.stack_id)
            for rid, a in self.active.items()
            if rid not in in_queue and a.obs.stack_id in listing
        )
        for _, rid, sid in stale:
            w = wants.get(sid)
            if w is not None:
                if w.lookup is None:
                    wants[sid] = replace(w, lookup=rid)
            elif used < new_slots:
                wants[sid] = Want(lookup=rid)
                used += 1
        return used

    def plan(
        self,
        listing: Mapping[str, StackMark],
        queue: Iterable[RunObs],
        batch: int,
        now: float,
        sweep_slots: int,
    ) -> dict[str, Want]:
        """Which stacks' run lists to read this poll.

        Changed stacks (state, ``stateSetAt`` or ``needsApproval``), stacks whose runs left a
        worker pool's queue, and, in otherwise spare slots of the last batch, a few stacks for
        a sweep: first those with active runs seen neither in a queue nor lately, then every
        stack in turn, which catches runs no other signal reveals.
        """
        wants: dict[str, Want] = {}
        self.planned_cursor = None

        def want(sid: str, runs: bool = False, proposed: bool = False, tasks: bool = False) -> None:
            old = wants.get(sid, Want())
            wants[sid] = replace(
                old,
                runs=old.runs or runs,
                proposed=old.proposed or proposed,
                tasks=old.tasks or tasks or runs,
            )

        for sid, mark in listing.items():
            old = self.stacks.get(sid)
            if old is None:
                if sid in self.forgotten:  # back after a gap: read what it ran meanwhile
                    want(sid, runs=True, proposed=True, tasks=True)
                # (state "": Stack.state refused to the key; the sweep and queues find its runs)
                elif (mark.state and mark.state not in STACK_AT_REST) or mark.needs_approval:
                    want(sid, runs=True, proposed=mark.needs_approval)
                continue
            if (old.state, old.state_set_at, old.tracked_commit) != (
                mark.state,
                mark.state_set_at,
                mark.tracked_commit,
            ):
                want(sid, runs=True)
            if old.needs_approval != mark.needs_approval:
                want(sid, runs=True, proposed=True)
        in_queue = {r.id for r in queue}
        for rid, a in self.active.items():
            if a.obs.stack_id not in listing:
                continue
            if a.in_queue and rid not in in_queue:  # left the queue: finished, or waiting
                k = a.obs.kind
                want(a.obs.stack_id, runs=k == RUNS, proposed=k == PROPOSED, tasks=k == TASKS)
        # Gaps left by a read that hit MAX_RUN_PAGES: read on from their cursor (in a slot of
        # their own when the list's newest runs are read too: see ``gap_reads``).
        for (sid, kind), cursors in sorted(self.gaps.items()):
            if sid not in listing or not cursors:
                continue
            w = wants.get(sid, Want())
            if not w.reads(kind):
                wants[sid] = w.reading(kind, cursors[0], cursors[0])
        if sweep_slots <= 0:
            return wants
        # The last batch's free slots, or a batch of its own when the last one is full.
        spare = (-len(wants)) % batch or batch
        spare = min(spare, sweep_slots)
        if spare <= 0:
            return wants
        # Active runs that no queue shows, asked for by id; at most half the spare slots for
        # those of stacks not read anyway, so the round-robin keeps moving.
        spare -= self.add_lookups(wants, listing, in_queue, max(1, spare // 2))
        if spare > 0 and listing:
            order = sorted(listing)
            start = _bisect_after(order, self.sweep_cursor)
            picked = 0
            for i in range(len(order)):
                sid = order[(start + i) % len(order)]
                if sid in wants:
                    continue
                want(sid, runs=True, proposed=True, tasks=True)
                picked += 1
                self.planned_cursor = sid  # committed by apply, after a successful poll
                if picked >= spare:
                    break
        return wants

    # -- folding a poll's observations in ----------------------------------------------------

    def apply(
        self,
        listing: Mapping[str, StackMark],
        queue: Sequence[RunObs],
        views: Sequence[ListView],
        now: float,
        lookups: Sequence[Lookup] = (),
    ) -> None:
        """Fold one successful poll into the ledger."""
        if self.planned_cursor is not None:
            self.sweep_cursor = self.planned_cursor  # not worth a state file write by itself
            self.planned_cursor = None
        for sid in list(self.stacks):
            if sid in listing:
                if self.missing.pop(sid, None) is not None:
                    self.changed = True
                continue
            self.missing[sid] = self.missing.get(sid, 0) + 1
            self.changed = True
            if self.missing[sid] >= MISSING_GRACE:
                self._forget_stack(sid, now)
        for sid, mark in listing.items():
            if self.stacks.get(sid) != mark:
                self.stacks[sid] = mark
                self.changed = True
            if self.forgotten.pop(sid, None) is not None:  # back: its tombstone applies again
                self.changed = True
        for sid, at in list(self.forgotten.items()):
            if now - at > TOMBSTONE_RETENTION:
                self._prune_tombstone(sid)

        in_queue = {r.id for r in queue}
        for a in self.active.values():
            a.in_queue = a.obs.id in in_queue
        for run in queue:
            qmark = listing.get(run.stack_id)
            if qmark is None or run.terminal or self.handled(run):
                continue  # (handled: counted already; a queue page reused from an earlier poll)
            self._see_active(run, qmark.space, now, in_queue=True)

        for found in lookups:
            if found.run_id not in self.active or found.stack_id not in listing:
                continue  # counted already, or its stack is gone
            space = listing[found.stack_id].space
            looked = found.run
            if looked is None:  # gone (deleted, past retention): its outcome is unknowable
                del self.active[found.run_id]
                self.changed = True
            elif looked.terminal:
                self._count(looked, space)
                del self.active[looked.id]
                key = (looked.stack_id, looked.kind)
                if looked.created_at >= self.floor.get(key, -math.inf):
                    self.done.setdefault(key, {})[looked.id] = looked.created_at
            else:
                self._see_active(looked, space, now, in_queue=looked.id in in_queue)
        for view in views:
            vmark = listing.get(view.stack_id)
            if vmark is None:
                continue
            self._apply_view(view, vmark.space, now, in_queue)
        self._after_poll_webhooks(now)

    def _apply_view(self, view: ListView, space: str, now: float, in_queue: set[str]) -> None:
        key = (view.stack_id, view.kind)
        done = self.done.setdefault(key, {})
        seen = set()
        for run in view.runs:
            seen.add(run.id)
            if run.kind != view.kind:
                continue  # filed under its own type's list, which counts it
            if run.id in self.active:
                if run.terminal:
                    self._count(run, space)
                    del self.active[run.id]
                    done[run.id] = run.created_at
                else:
                    self._see_active(run, space, now, in_queue=run.id in in_queue)
                continue
            if self.handled(run):
                continue
            if run.terminal:
                self._count(run, space)
                done[run.id] = run.created_at
            else:
                self._see_active(run, space, now, in_queue=run.id in in_queue)
        if view.complete and (view.runs or view.before is None):
            # An active run missing from the part of the list read no longer exists (older
            # ones are asked for by id).
            oldest = view.runs[-1].created_at if view.runs else -math.inf
            newest = math.inf if view.before is None else view.runs[0].created_at
            for rid, a in list(self.active.items()):
                o = a.obs
                if (
                    o.stack_id == view.stack_id
                    and o.kind == view.kind
                    and oldest <= o.created_at <= newest
                    and rid not in seen
                    and rid not in in_queue
                    and a.seen_at <= now  # not a delivery since the poll began (a newer run)
                ):
                    del self.active[rid]
                    self.changed = True
        gaps = self.gaps.get(key, [])
        if view.before is not None and view.before in gaps:  # a gap read on
            gaps.remove(view.before)
            self.changed = True
        if not view.complete and view.runs:  # runs below the oldest read are not read yet
            gaps.append(view.runs[-1].id)
            self.changed = True
        if gaps:
            self.gaps[key] = gaps
        else:
            self.gaps.pop(key, None)
        # Raise the floor: to the oldest run still active in this list, else the newest run
        # read; never over a gap (runs not read yet).
        if view.runs and not gaps:
            actives = [
                a.obs.created_at
                for a in self.active.values()
                if a.obs.stack_id == view.stack_id and a.obs.kind == view.kind
            ]
            new_floor = min(actives) if actives else view.runs[0].created_at
            new_floor = max(new_floor, self.floor.get(key, -math.inf))
            # A raised floor alone is not worth a write: the file's older floor, with its
            # older ``done``, is just as right (every run between the two was counted there).
            self.floor[key] = new_floor
            for rid, created in list(done.items()):
                if created < new_floor:
                    del done[rid]
        if not done:
            self.done.pop(key, None)

    def _see_active(self, run: RunObs, space: str, now: float, *, in_queue: bool) -> None:
        a = self.active.get(run.id)
        if a is None:
            self.active[run.id] = ActiveRun(run, space, in_queue, now)
            self.changed = True
            self._placeholders(run, space)
            return
        if len(run.history) >= len(a.obs.history) and run != a.obs:
            a.obs = run
            self.changed = True
        if a.space != space:
            a.space = space
            self.changed = True
        a.in_queue = a.in_queue or in_queue
        a.seen_at = now

    def _placeholders(self, run: RunObs, space: str) -> None:
        """Expose the counters an infrastructure run will most likely move, at 0, while it is
        still running: increase() cannot see the first increment of a series born at 1. Kept
        in memory only (rebuilt from ``active`` after a restore)."""
        if run.type in PLACEHOLDER_TYPES:
            for outcome in LIKELY_OUTCOMES:
                self.finished.setdefault((space, run.stack_id, run.type, outcome), 0)

    def _count(self, run: RunObs, space: str) -> None:
        self.changed = True
        state = run.state
        key = (space, run.stack_id, run.type, state)
        self.finished[key] = self.finished.get(key, 0) + 1
        ended = run_ended(run)
        self.duration.setdefault((space, run.type, state), Hist.empty(DURATION_BUCKETS)).observe(
            DURATION_BUCKETS, max(0.0, ended - run.created_at)
        )
        wait = run.queue_wait()
        if wait is not None:
            self.queue_wait.setdefault((space, run.type), Hist.empty(QUEUE_WAIT_BUCKETS)).observe(
                QUEUE_WAIT_BUCKETS, wait
            )
        if run.type == "TRACKED" and state == "FINISHED" and run.commit_ts is not None:
            self.lead_time.setdefault(space, Hist.empty(LEAD_TIME_BUCKETS)).observe(
                LEAD_TIME_BUCKETS, max(0.0, ended - run.commit_ts)
            )

    def _forget_stack(self, sid: str, now: float) -> None:
        """A stack gone from the listing past the grace: drop its mark and active runs, keep a
        tombstone (its floor, ``done`` and counts) so it is not counted again if it comes back.
        """
        self.changed = True
        self.stacks.pop(sid, None)
        self.missing.pop(sid, None)
        for rid in [rid for rid, a in self.active.items() if a.obs.stack_id == sid]:
            del self.active[rid]
        for key in [k for k, v in self.finished.items() if k[1] == sid and not v]:
            del self.finished[key]
        self.forgotten[sid] = now

    def _prune_tombstone(self, sid: str) -> None:
        """A stack gone for longer than TOMBSTONE_RETENTION: its runs are past Spacelift's
        retention, drop its floor; its counts fold into the space's stack_id="" entries
        (exposed only with the stack_id label off, where they keep the space total)."""
        self.changed = True
        self.forgotten.pop(sid, None)
        for kind in KINDS:
            self.done.pop((sid, kind), None)
            self.floor.pop((sid, kind), None)
            self.gaps.pop((sid, kind), None)
        for key in [k for k in self.finished if k[1] == sid]:
            retired = (key[0], "", key[2], key[3])
            self.finished[retired] = self.finished.get(retired, 0) + self.finished.pop(key)

    # -- webhook deliveries --------------------------------------------------------------

    def observe(self, ev: WebhookObs, now: float) -> str:
        """Fold one webhook delivery in; returns ACCEPTED, DUPLICATE or STALE.

        Idempotent and order-proof: the same (run, stateVersion) twice, an older stateVersion
        after a newer one, or anything about a run already counted (by a delivery or a poll)
        changes nothing.
        """
        a = self.active.get(ev.run_id)
        if a is not None:
            return self._observe_active(ev, a, now)
        mark = self.stacks.get(ev.stack_id)
        if mark is None:
            return self._park(ev, now)
        probe = ev.run()
        if self.handled(probe):
            counted = probe.id in self.done.get((probe.stack_id, probe.kind), {}) or (
                probe.created_at < self.floor.get((probe.stack_id, probe.kind), -math.inf)
            )
            return DUPLICATE if ev.terminal and counted else STALE
        if ev.terminal:
            self._count(probe, mark.space)
            self._mark_done(probe)
        elif ev.timestamp < self.baseline:
            # A state change from before the baseline (a late retry, a replayed capture): the
            # run may have ended before it too, and a poll's lookup would then count it.
            return STALE
        else:
            self._see_active(probe, mark.space, now, in_queue=False)
            self.webhook_versions[ev.run_id] = ev.state_version
        return ACCEPTED

    def _observe_active(self, ev: WebhookObs, a: ActiveRun, now: float) -> str:
        known = self.webhook_versions.get(ev.run_id)
        if known is not None and ev.state_version <= known:
            return DUPLICATE if ev.state_version == known else STALE
        old = a.obs
        if (ev.state, ev.timestamp) in old.history and not ev.terminal:
            self.webhook_versions[ev.run_id] = ev.state_version
            return DUPLICATE  # a poll saw this state already
        if not ev.terminal and ev.timestamp < old.entered_at:
            return STALE  # a poll saw a later state already
        run = ev.run(old.history)
        run = replace(run, drift=old.drift, commit_ts=ev.commit_ts or old.commit_ts)
        if ev.terminal:
            self._count(run, a.space)
            del self.active[ev.run_id]
            self.webhook_versions.pop(ev.run_id, None)
            self._mark_done(run)
        else:
            self._see_active(run, a.space, now, in_queue=a.in_queue)
            self.webhook_versions[ev.run_id] = ev.state_version
        return ACCEPTED

    def _mark_done(self, run: RunObs) -> None:
        key = (run.stack_id, run.kind)
        if run.created_at >= self.floor.get(key, -math.inf):
            self.done.setdefault(key, {})[run.id] = run.created_at

    def _park(self, ev: WebhookObs, now: float) -> str:
        old = self.pending.get(ev.run_id)
        if old is not None and ev.state_version <= old[0].state_version:
            return DUPLICATE if ev.state_version == old[0].state_version else STALE
        self.pending.pop(ev.run_id, None)  # re-inserted last: the dict is oldest first
        self.pending[ev.run_id] = (ev, now)
        while len(self.pending) > MAX_PENDING:
            del self.pending[next(iter(self.pending))]
        self.changed = True
        return ACCEPTED

    def _after_poll_webhooks(self, now: float) -> None:
        """After a poll: deliveries parked for stacks now listed are folded in (a run the poll
        counted meanwhile is a duplicate), stale ones dropped; versions of runs no longer
        active forgotten."""
        for rid, (ev, arrived) in list(self.pending.items()):
            if ev.stack_id in self.stacks:
                del self.pending[rid]
                self.observe(ev, now)
                self.changed = True
            elif now - arrived > PENDING_TTL:
                del self.pending[rid]
                self.changed = True
        for rid in [rid for rid in self.webhook_versions if rid not in self.active]:
            del self.webhook_versions[rid]

    # -- persistence -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        def hists(d: Mapping[Any, Hist]) -> list[Any]:
            return [
                [list(k) if isinstance(k, tuple) else [k], h.counts, h.total] for k, h in d.items()
            ]

        return {
            "version": STATE_VERSION,
            "kinds": list(KINDS),  # the run lists it keeps (tasks came later: see from_json)
            "baseline": self.baseline,
            "buckets": {
                "duration": list(DURATION_BUCKETS),
                "queue_wait": list(QUEUE_WAIT_BUCKETS),
                "lead_time": list(LEAD_TIME_BUCKETS),
            },
            "stacks": {
                sid: [m.space, m.state, m.state_set_at, m.needs_approval, m.tracked_commit]
                for sid, m in self.stacks.items()
            },
            "missing": dict(self.missing),
            "active": [
                [a.obs.to_json(), a.space, a.in_queue, a.seen_at] for a in self.active.values()
            ],
            "done": [[sid, kind, ids] for (sid, kind), ids in self.done.items()],
            "floor": [[sid, kind, f] for (sid, kind), f in self.floor.items()],
            "gaps": [[sid, kind, cursors] for (sid, kind), cursors in self.gaps.items()],
            "forgotten": dict(self.forgotten),
            # 0-valued placeholders are not state: rebuilt from ``active`` on restore
            "finished": [[*k, v] for k, v in self.finished.items() if v],
            "duration": hists(self.duration),
            "queue_wait": hists(self.queue_wait),
            "lead_time": hists(self.lead_time),
            "sweep_cursor": self.sweep_cursor,
            "webhook_versions": dict(self.webhook_versions),
            "webhook_pending": [[ev.to_json(), at] for ev, at in self.pending.values()],
        }

    @staticmethod
    def from_json(raw: Any) -> Ledger:
        """Rebuild a ledger; raises ValueError (or KeyError/TypeError) on anything unexpected."""
        if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
            raise ValueError("not a run ledger of a known version")
        led = Ledger(baseline=float(raw["baseline"]))
        for sid, (space, state, set_at, approval, commit) in raw["stacks"].items():
            led.stacks[str(sid)] = StackMark(
                str(space),
                str(state),
                None if set_at is None else float(set_at),
                bool(approval),
                str(commit),
            )
        led.missing = {str(k): int(v) for k, v in raw["missing"].items()}
        for obs, space, in_queue, seen in raw["active"]:
            run = RunObs.from_json(obs)
            led.active[run.id] = ActiveRun(run, str(space), bool(in_queue), float(seen))
        for sid, kind, ids in raw["done"]:
            led.done[(str(sid), str(kind))] = {str(r): float(c) for r, c in ids.items()}
        for sid, kind, f in raw["floor"]:
            led.floor[(str(sid), str(kind))] = float(f)
        for sid, kind, cursors in raw.get("gaps", []):
            led.gaps[(str(sid), str(kind))] = [str(c) for c in cursors]
        if TASKS not in raw.get("kinds", ()):
            # Written before tasks had a list of their own (they were under ``runs``): tasks
            # below the runs floor, and those in its ``done``, were examined already.
            for (sid, kind), f in list(led.floor.items()):
                if kind == RUNS:
                    led.floor[(sid, TASKS)] = f
            for (sid, kind), ids in list(led.done.items()):
                if kind == RUNS:
                    led.done[(sid, TASKS)] = dict(ids)
        for space, sid, rtype, state, value in raw["finished"]:
            count = int(value)
            if not 0 <= count <= 10**15:  # a counter restored as is: never negative or absurd
                raise ValueError(f"finished count out of range: {count}")
            if count:
                led.finished[(str(space), str(sid), str(rtype), str(state))] = count
        led.forgotten = {str(k): float(v) for k, v in raw.get("forgotten", {}).items()}
        for a in led.active.values():
            led._placeholders(a.obs, a.space)
        buckets = raw["buckets"]
        if buckets.get("duration") == list(DURATION_BUCKETS):
            for k, counts, total in raw["duration"]:
                led.duration[(str(k[0]), str(k[1]), str(k[2]))] = _hist(counts, total, 13)
        if buckets.get("queue_wait") == list(QUEUE_WAIT_BUCKETS):
            for k, counts, total in raw["queue_wait"]:
                led.queue_wait[(str(k[0]), str(k[1]))] = _hist(counts, total, 11)
        if buckets.get("lead_time") == list(LEAD_TIME_BUCKETS):
            for k, counts, total in raw["lead_time"]:
                led.lead_time[str(k[0])] = _hist(counts, total, 11)
        led.sweep_cursor = str(raw.get("sweep_cursor", ""))
        versions = raw.get("webhook_versions", {})
        led.webhook_versions = {str(k): int(v) for k, v in versions.items() if str(k) in led.active}
        for ev_raw, at in raw.get("webhook_pending", [])[:MAX_PENDING]:
            ev = WebhookObs.from_json(ev_raw)
            led.pending[ev.run_id] = (ev, float(at))
        led.changed = False  # what the file holds already
        return led


def _hist(counts: Any, total: Any, n_buckets: int) -> Hist:
    values = [int(c) for c in counts]
    if len(values) != n_buckets + 1 or any(v < 0 for v in values):
        raise ValueError("histogram of the wrong shape")
    return Hist(values, float(total))


def run_ended(run: RunObs) -> float:
    """When a terminal run reached its terminal state."""
    return run.entered_at


def _bisect_after(order: Sequence[str], cursor: str) -> int:
    lo, hi = 0, len(order)
    while lo < hi:
        mid = (lo + hi) // 2
        if order[mid] <= cursor:
            lo = mid + 1
        else:
            hi = mid
    return lo % len(order) if order else 0
