"""Runs: every active run by state, and each finished run counted exactly once.

Spacelift has no account-wide run search, so reading every stack's runs each poll costs one
request per stack. This area reads runs only where something happened, with a small, bounded
number of requests per poll:

1. ``searchStacks`` pages (50 stacks a page), the listing shared with the stacks area
   (``stack_listing``): a tracked run moving changes its stack's state or ``stateSetAt``.
2. One request for the queues of every worker pool (``workerPools { searchSchedulableRuns }``
   plus ``publicWorkerPool``): the runs waiting for or holding a worker, with their current
   state and history, so proposed runs and tasks (which never change a stack's state) are seen
   too, and a run that leaves a queue marks its stack for a look.
3. The run lists of the stacks that changed, ``BATCH`` stacks per request through GraphQL
   aliases (``s0: stack(id: $s0) { runs ... }``), spare slots of the last batch spent on a
   sweep that visits every stack in turn; active runs no queue shows are asked for by id in
   the same slots (``run(id: $q0)``). ``runs``, ``proposedRuns`` and ``tasks`` are paged
   with ``before:`` until an empty page (the server's page size is not public), as spacectl
   does; a run seen in two lists is counted once.

Optional fields (``fields``): ``Run.commit { timestamp }`` (only lead time needs it) and
``WorkerPool.schedulableRunsCount`` (without it a long queue is read in full each poll).

So a poll of S stacks of which A changed costs about ``S/50 + 1 + A/20`` requests, never more
than the naive ``S/50 + S``; accounts of up to ``BATCH`` stacks simply read every stack's runs
in one request. The counting rules live in ``run_ledger``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from exporter.areas import parse as p
from exporter.areas.base import (
    AreaContext,
    AreaSpec,
    FamilyBuilder,
    HistogramValue,
    OptionSpec,
    counter,
    gauge,
    histogram,
)
from exporter.areas.fields import Document, FieldGate
from exporter.areas.run_ledger import (
    DURATION_BUCKETS,
    LEAD_TIME_BUCKETS,
    PROPOSED,
    QUEUE_WAIT_BUCKETS,
    RUNS,
    TASKS,
    Hist,
    Ledger,
    ListView,
    Lookup,
    RunObs,
    StackMark,
    Want,
    WebhookObs,
)
from exporter.areas.stack_listing import DOCUMENT as STACKS_DOCUMENT
from exporter.areas.stack_listing import StackListing
from exporter.client import classify
from exporter.errors import (
    MalformedResponseError,
    PartialFailure,
    PermissionDeniedError,
    SpaceliftError,
)

if TYPE_CHECKING:
    from exporter.client import Result, SpaceliftClient

log = logging.getLogger(__name__)

STACK_PAGE = 50  # searchStacks page size (what Spacelift's own clients use)
QUEUE_PAGE = 100  # searchSchedulableRuns page size (what spacectl uses)
# The queue's order as spacectl asks for it (internal/cmd/draw/data/workerpools.go).
QUEUE_ORDER = {"field": "position", "direction": "ASC"}
BATCH = 20  # stacks per aliased run-list request
MAX_RUN_PAGES = 5  # older pages read per stack list in one poll, at most

RUN_FIELDS = """
fragment SpaceliftExporterRunFields on Run {
  id
  type
  state
  createdAt
  updatedAt
  driftDetection
  needsApproval
  commit { timestamp }
  history { state timestamp }
}
"""

# Selected inline (no fragment): no public client names the type searchSchedulableRuns
# returns. Evidence for the fields: spacectl internal/cmd/draw/data/workerpools.go.
QUEUE_SELECTION = """{
    edges { node { stackId run { ...SpaceliftExporterRunFields } } }
    pageInfo { endCursor hasNextPage }
  }"""

QUEUES_DOCUMENT = (
    """
query SpaceliftExporterRunQueues($input: SearchInput!) {
  workerPools {
    id schedulableRunsCount searchSchedulableRuns(input: $input) __QUEUE__
  }
  publicWorkerPool {
    schedulableRunsCount searchSchedulableRuns(input: $input) __QUEUE__
  }
}
"""
    + RUN_FIELDS
).replace("__QUEUE__", QUEUE_SELECTION)

# Without the public pool, for releases that refuse ``publicWorkerPool`` to API keys.
PRIVATE_QUEUES_DOCUMENT = (
    """
query SpaceliftExporterRunQueuesPrivate($input: SearchInput!) {
  workerPools {
    id schedulableRunsCount searchSchedulableRuns(input: $input) __QUEUE__
  }
}
"""
    + RUN_FIELDS
).replace("__QUEUE__", QUEUE_SELECTION)

POOL_QUEUE_PAGE_DOCUMENT = (
    """
query SpaceliftExporterRunQueuePage($id: ID!, $input: SearchInput!) {
  workerPool(id: $id) { searchSchedulableRuns(input: $input) __QUEUE__ }
}
"""
    + RUN_FIELDS
).replace("__QUEUE__", QUEUE_SELECTION)

PUBLIC_QUEUE_PAGE_DOCUMENT = (
    """
query SpaceliftExporterPublicRunQueuePage($input: SearchInput!) {
  publicWorkerPool { searchSchedulableRuns(input: $input) __QUEUE__ }
}
"""
    + RUN_FIELDS
).replace("__QUEUE__", QUEUE_SELECTION)

BATCH_OPERATION = "SpaceliftExporterStackRuns"
LISTS = ((RUNS, "runs"), (PROPOSED, "proposedRuns"), (TASKS, "tasks"))  # (ledger kind, field)


@lru_cache(maxsize=128)
def batch_document(n: int) -> str:
    """The aliased run-list document for ``n`` stacks (one fixed template per batch size).

    Slot i takes ``$s<i>`` (stack id), ``$r<i>``/``$p<i>``/``$t<i>`` (read ``runs``/
    ``proposedRuns``/``tasks``), ``$rb<i>``/``$pb<i>``/``$tb<i>`` (``before`` cursors, null for
    the newest page) and ``$l<i>``/``$q<i>`` (ask for one run by id: an active run beyond the
    pages read).
    """
    if not 1 <= n <= 100:
        raise ValueError("batch size must be 1..100")
    params = ", ".join(
        f"$s{i}: ID!, $r{i}: Boolean!, $rb{i}: ID, $p{i}: Boolean!, $pb{i}: ID,"
        f" $t{i}: Boolean!, $tb{i}: ID, $l{i}: Boolean!, $q{i}: ID!"
        for i in range(n)
    )
    slots = "\n".join(
        f"  s{i}: stack(id: $s{i}) {{ id"
        f" runs(before: $rb{i}) @include(if: $r{i}) {{ ...SpaceliftExporterRunFields }}"
        f" proposedRuns(before: $pb{i}) @include(if: $p{i}) {{ ...SpaceliftExporterRunFields }}"
        f" tasks(before: $tb{i}) @include(if: $t{i}) {{ ...SpaceliftExporterRunFields }}"
        f" run(id: $q{i}) @include(if: $l{i}) {{ ...SpaceliftExporterRunFields }}"
        " }"
        for i in range(n)
    )
    return f"query {BATCH_OPERATION}({params}) {{\n{slots}\n}}\n{RUN_FIELDS}"


# -- metrics -----------------------------------------------------------------------------------

RUNS_NOW = gauge(
    "spacelift_runs",
    "Runs in each non-terminal state, at the last poll.",
    "space",
    "run_type",
    "state",
)
OLDEST_AGE = gauge(
    "spacelift_runs_oldest_age_seconds",
    "How long the oldest run in this state has been in it (from its history), at the last poll.",
    "space",
    "run_type",
    "state",
)
NEEDING_APPROVAL = gauge(
    "spacelift_runs_needing_approval",
    "Queued runs blocked on an approval policy, at the last poll.",
    "space",
)
FINISHED = counter(
    "spacelift_runs_finished_total",
    "Runs that reached a terminal state, each counted once (stack_id is empty when the "
    "area's stack_id_label option is off; a deleted stack's series then stay in the total).",
    "space",
    "stack_id",
    "run_type",
    "state",
)
DURATION = histogram(
    "spacelift_run_duration_seconds",
    "Time from a run's creation to its terminal state, for runs counted as finished.",
    DURATION_BUCKETS,
    "space",
    "run_type",
    "state",
)
QUEUE_WAIT = histogram(
    "spacelift_run_queue_wait_seconds",
    "Time a finished run waited for a worker (READY until PREPARING).",
    QUEUE_WAIT_BUCKETS,
    "space",
    "run_type",
)
LEAD_TIME = histogram(
    "spacelift_deployment_lead_time_seconds",
    "Time from the commit's timestamp to the end of a tracked run that FINISHED.",
    LEAD_TIME_BUCKETS,
    "space",
)

# Fields a server may lack or refuse; the documents are sent without them (see FieldGate).
OPTIONAL = {
    # Only selected under a stack's ``trackedCommit`` in public clients, never a run's commit.
    "Commit.timestamp": (LEAD_TIME,),
    # Only an unmerged official-exporter PR reads it on private pools (deep queue caching).
    "WorkerPool.schedulableRunsCount": (),
}


# -- parsing -----------------------------------------------------------------------------------


def parse_run(raw: Any, stack_id: str, where: str) -> RunObs:
    o = p.obj(raw, where)
    commit = o.get("commit")  # absent when the server lacks Commit.timestamp (optional)
    commit_ts = None
    if commit is not None:
        commit_ts = p.opt_number(p.obj(commit, where + ".commit"), "timestamp", where + ".commit")
    history = []
    for i, h in enumerate(p.lst(o.get("history"), where + ".history")):
        ho = p.obj(h, f"{where}.history[{i}]")
        history.append(
            (p.string(ho, "state", f"{where}.history[{i}]"), p.number(ho, "timestamp", where))
        )
    state = p.string(o, "state", where)
    return RunObs(
        id=p.string(o, "id", where),
        stack_id=stack_id,
        type=p.string(o, "type", where),
        state=state,
        created_at=p.number(o, "createdAt", where),
        updated_at=p.number(o, "updatedAt", where),
        drift=p.boolean(o, "driftDetection", where),
        needs_approval=p.boolean(o, "needsApproval", where),
        commit_ts=commit_ts,
        history=tuple(oldest_first(history, state)),
    )


def oldest_first(history: list[tuple[str, float]], state: str) -> list[tuple[str, float]]:
    """The API gives ``Run.history`` newest first (spacectl iterates it backwards); never rely
    on it: the newest entry is the one in the run's current state, or the latest timestamp.
    (Entries within the same second keep their relative order: READY before PREPARING.)"""
    if len(history) < 2:
        return history
    first, last = history[0], history[-1]
    if (first[0] == state and last[0] != state) or first[1] > last[1]:
        return history[::-1]
    return history


def parse_queue(raw: Any, where: str) -> tuple[list[RunObs], str | None]:
    conn = p.obj(raw, where)
    runs = []
    for i, edge in enumerate(p.lst(conn.get("edges"), where + ".edges")):
        w = f"{where}.edges[{i}].node"
        node = p.obj(p.obj(edge, w).get("node"), w)
        runs.append(parse_run(node.get("run"), p.string(node, "stackId", w), w + ".run"))
    return runs, _next_cursor(conn, where)


def _next_cursor(conn: Mapping[str, Any], where: str) -> str | None:
    info = p.obj(conn.get("pageInfo"), where + ".pageInfo")
    if not p.boolean(info, "hasNextPage", where + ".pageInfo"):
        return None
    cursor = p.opt_string(info, "endCursor", where + ".pageInfo")
    return cursor or None


# -- snapshot ----------------------------------------------------------------------------------


@dataclass
class DeepQueue:
    """A pool's queue beyond its first page, as last read: reused while the pool's count and
    first page stay the same (waiting runs there do not move until a worker takes one). When
    they change, the pages are read again a few per poll (``refresh`` holds the pages read so
    far and ``resume`` the cursor to go on from), older pages' runs served meanwhile."""

    count: int
    first_page: frozenset[str]
    runs: list[RunObs]
    refresh: list[RunObs] | None = None
    resume: str | None = None


@dataclass(frozen=True)
class Snapshot:
    runs: tuple[tuple[str, str, str, int, float], ...]  # space, type, state, count, oldest age
    needing_approval: tuple[tuple[str, int], ...]  # space, count
    finished: tuple[tuple[str, str, str, str, int], ...]  # space, stack, type, state, count
    duration: tuple[tuple[tuple[str, ...], HistogramValue], ...]
    queue_wait: tuple[tuple[tuple[str, ...], HistogramValue], ...]
    lead_time: tuple[tuple[tuple[str, ...], HistogramValue], ...]
    requests: int  # requests this poll made (for the budget bench and tests)


def _hv(h: Hist) -> HistogramValue:
    return HistogramValue(h.cumulative(), h.total)


def build_snapshot(
    ledger: Ledger,
    listing: Mapping[str, StackMark],
    now: float,
    *,
    stack_id_label: bool,
    requests: int,
) -> Snapshot:
    groups: dict[tuple[str, str, str], list[float]] = {}
    approval: dict[str, int] = {}
    for a in ledger.active.values():
        mark = listing.get(a.obs.stack_id)
        if mark is None:
            continue
        o = a.obs
        groups.setdefault((mark.space, o.type, o.state), []).append(o.entered_at)
        if o.needs_approval and o.state == "QUEUED":
            approval[mark.space] = approval.get(mark.space, 0) + 1
    runs = tuple(
        (space, rtype, state, len(ts), max(0.0, now - min(ts)))
        for (space, rtype, state), ts in sorted(groups.items())
    )
    finished: dict[tuple[str, str, str, str], int] = {}
    for (space, sid, rtype, state), n in ledger.finished.items():
        if stack_id_label:
            if sid not in listing:
                continue  # deleted (or missing this poll): its series disappears, nothing moves
            key = (space, sid, rtype, state)
        else:
            key = (space, "", rtype, state)
        finished[key] = finished.get(key, 0) + n
    return Snapshot(
        runs=runs,
        needing_approval=tuple(sorted(approval.items())),
        finished=tuple((*k, v) for k, v in sorted(finished.items())),
        duration=tuple((k, _hv(h)) for k, h in sorted(ledger.duration.items())),
        queue_wait=tuple((k, _hv(h)) for k, h in sorted(ledger.queue_wait.items())),
        lead_time=tuple(((k,), _hv(h)) for k, h in sorted(ledger.lead_time.items())),
        requests=requests,
    )


# -- poller ------------------------------------------------------------------------------------


class Poller:
    def __init__(self, ctx: AreaContext) -> None:
        self.account = ctx.account
        self.clock = ctx.clock
        self.stack_id_label = bool(ctx.options.get("stack_id_label", True))
        self.batch = BATCH
        self.ledger: Ledger | None = None
        self._restored = ctx.state
        self._public_refused = False
        self._requests = 0
        self._deep: dict[str, DeepQueue] = {}  # pool id ("" for the public pool)
        self._queue_pages_left = 0
        self.area = ctx.area or "runs"
        self.fields = FieldGate(ctx.account, self.area, ctx.clock)
        self.listing = StackListing.of(ctx.shared, ctx.account, ctx.clock)
        self.listing.register(ctx.interval, {})
        self.gates = (self.fields, self.listing.gate)
        # Webhook deliveries (observe_webhook) change the ledger between polls: the poll
        # holds this while it plans and applies, not while it waits for Spacelift.
        self.lock = threading.Lock()

    # -- persistence hook (the app saves this to --state.file after a good poll) -----------

    def export_state(self) -> Any:
        with self.lock:
            if self.ledger is None or not self.ledger.changed:
                return None
            self.ledger.changed = False
            return self.ledger.to_json()

    def _ledger(self, now: float) -> Ledger:
        if self.ledger is None:
            if self._restored is not None:
                try:
                    self.ledger = Ledger.from_json(self._restored)
                    log.info(
                        "run ledger restored from the state file",
                        extra={"account": self.account, "baseline": self.ledger.baseline},
                    )
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    log.warning(
                        "run ledger in the state file is unusable, starting from a clean "
                        "baseline (runs finished before now are not counted)",
                        extra={"account": self.account, "error": repr(exc)[:200]},
                    )
            if self.ledger is None:
                self.ledger = Ledger(baseline=now)
            self._restored = None
        return self.ledger

    # -- polling -----------------------------------------------------------------------------

    def poll(self, client: SpaceliftClient) -> Snapshot:
        now = self.clock()
        self._requests = 0
        queue_failure: SpaceliftError | None = None
        listing = self._list_stacks(client)
        with self.lock:  # webhook deliveries (observe_webhook) change the ledger too
            ledger = self._ledger(now)
        if len(listing) <= self.batch:
            # Small account: reading every stack's runs costs one request; no queue needed.
            queue: list[RunObs] = []
            wants = {sid: Want(runs=True, proposed=True, tasks=True) for sid in listing}
            with self.lock:
                ledger.add_lookups(wants, listing, set(), 0)
        else:
            try:
                queue = self._queues(client)
            except PermissionDeniedError:
                raise
            except SpaceliftError as exc:
                # The queues failed, the rest of the poll need not: the last known queue
                # stands in (no run is taken for gone from it), the run lists are read as
                # planned, and the poll is reported failed with what it could read.
                queue_failure = exc
                with self.lock:
                    queue = [a.obs for a in ledger.active.values() if a.in_queue]
            with self.lock:
                wants = ledger.plan(listing, queue, self.batch, now, sweep_slots=self.batch)
        views, lookups = self._read_lists(
            client, ledger, [*sorted(wants.items()), *ledger.gap_reads(listing, wants)]
        )
        with self.lock:
            ledger.apply(listing, queue, views, now, lookups)
            for deep in self._deep.values():  # keep only what is still waiting, as far as known
                deep.runs = [r for r in deep.runs if r.id in ledger.active]
                if deep.refresh is not None:
                    deep.refresh = [r for r in deep.refresh if r.id in ledger.active]
            snapshot = build_snapshot(
                ledger, listing, now, stack_id_label=self.stack_id_label, requests=self._requests
            )
        if queue_failure is not None:
            raise PartialFailure(
                f"worker pool queues: {queue_failure}", snapshot, queue_failure.kind
            )
        return snapshot

    # -- webhook deliveries (exporter.webhooks) ------------------------------------------

    def observe_webhook(self, event: WebhookObs, wait: float = -1) -> str | None:
        """Fold one delivery into this account's ledger (the one polls feed): accepted,
        duplicate or stale; None when a poll held the ledger for longer than ``wait``
        seconds (-1: as long as it takes)."""
        if not self.lock.acquire(timeout=wait):
            return None
        try:
            now = self.clock()
            return self._ledger(now).observe(event, now)
        finally:
            self.lock.release()

    def webhook_snapshot(self) -> Snapshot | None:
        """The snapshot as of now (deliveries included), over the last poll's listing; None
        before the first poll."""
        with self.lock:
            ledger = self.ledger
            if ledger is None or not ledger.stacks:
                return None
            listing = {s: m for s, m in ledger.stacks.items() if s not in ledger.missing}
            return build_snapshot(
                ledger,
                listing,
                self.clock(),
                stack_id_label=self.stack_id_label,
                requests=self._requests,
            )

    def _query(
        self, client: SpaceliftClient, document: str, variables: Mapping[str, Any]
    ) -> Result:
        self._requests += 1
        result = self.fields.query(client, Document(document, OPTIONAL), variables)
        if result is None:
            raise MalformedResponseError("a runs document with nothing left to ask")
        return result

    def _list_stacks(self, client: SpaceliftClient) -> dict[str, StackMark]:
        listing, swept = self.listing.get(client, self.area)
        if swept:
            self._requests += listing.requests
        return {
            st.id: StackMark(
                space=st.space,
                state=st.state,
                state_set_at=st.state_set_at,
                needs_approval=st.needs_approval,
                tracked_commit=st.tracked_commit,
            )
            for st in listing.stacks
        }

    def _queues(self, client: SpaceliftClient) -> list[RunObs]:
        variables = {"input": _queue_input(None)}
        data: Mapping[str, Any] | None = None
        if not self._public_refused:
            try:
                data = self._query(client, QUEUES_DOCUMENT, variables).require(
                    "workerPools", "publicWorkerPool"
                )
            except PermissionDeniedError:
                log.info(
                    "publicWorkerPool refused; reading private pool queues only",
                    extra={"account": self.account},
                )
                self._public_refused = True
        if data is None:
            data = self._query(client, PRIVATE_QUEUES_DOCUMENT, variables).require("workerPools")
        runs: list[RunObs] = []
        pools = p.lst(data.get("workerPools"), "workerPools")
        # Pages after the first: at most pools - 1 a poll (the budget's share of the queues).
        self._queue_pages_left = max(1, len(pools) - 1)
        for i, raw in enumerate(pools):
            where = f"workerPools[{i}]"
            pool = p.obj(raw, where)
            pool_id = p.string(pool, "id", where)

            def more_private(after: str, pool_id: str = pool_id, where: str = where) -> Any:
                more = self._query(
                    client,
                    POOL_QUEUE_PAGE_DOCUMENT,
                    {
                        "id": pool_id,
                        "input": _queue_input(after),
                    },
                ).require("workerPool")
                return p.obj(more.get("workerPool"), "workerPool").get("searchSchedulableRuns")

            runs += self._pool_queue(pool_id, pool, where, more_private)
        if not self._public_refused:
            public = p.obj(data.get("publicWorkerPool"), "publicWorkerPool")

            def more_public(after: str) -> Any:
                more = self._query(
                    client,
                    PUBLIC_QUEUE_PAGE_DOCUMENT,
                    {"input": _queue_input(after)},
                ).require("publicWorkerPool")
                return p.obj(more.get("publicWorkerPool"), "publicWorkerPool").get(
                    "searchSchedulableRuns"
                )

            runs += self._pool_queue("", public, "publicWorkerPool", more_public)
        return runs

    def _pool_queue(
        self, key: str, pool: Mapping[str, Any], where: str, more: Callable[[str], Any]
    ) -> list[RunObs]:
        """A pool's queue: its first page (running runs come first, so whatever moves is
        there), and the pages after it only when the pool's count or first page changed."""
        raw_count = p.opt_number(pool, "schedulableRunsCount", where)  # optional field
        count = -1 if raw_count is None else int(raw_count)
        page, after = parse_queue(pool.get("searchSchedulableRuns"), where)
        if after is None:
            self._deep.pop(key, None)
            return page
        first = frozenset(r.id for r in page)
        cached = self._deep.get(key)
        if cached is None:  # first sight of a long queue: read it all once
            deep: list[RunObs] = []
            pages = p.Pages(where)
            while after is not None:
                more_page, after = parse_queue(more(after), where)
                after = pages.next(after, len(more_page))
                deep += more_page
            self._deep[key] = DeepQueue(count, first, deep)
            return page + deep
        if cached.refresh is None:
            # Without the count (field unavailable) only an unchanged first page says so.
            if cached.count == count and cached.first_page == first:
                return page + cached.runs
            cached.refresh, cached.resume = [], after  # changed: read the pages again
        cursor = cached.resume
        while cursor is not None and self._queue_pages_left > 0:
            self._queue_pages_left -= 1
            more_page, cursor = parse_queue(more(cursor), where)
            cached.refresh += more_page
        fresh = cached.refresh
        if cursor is None:  # done: the queue as read over the last polls
            cached.runs, cached.refresh, cached.resume = fresh, None, None
            cached.count, cached.first_page = count, first
            return page + fresh
        cached.resume = cursor
        known = first | {r.id for r in fresh}
        return page + fresh + [r for r in cached.runs if r.id not in known]

    def _read_lists(
        self, client: SpaceliftClient, ledger: Ledger, wants: Sequence[tuple[str, Want]]
    ) -> tuple[list[ListView], list[Lookup]]:
        # (stack, kind, where the part read started: None for the newest runs, or a gap)
        Part = tuple[str, str, str | None]
        read: dict[Part, list[RunObs]] = {}
        pages: dict[Part, int] = {}
        complete: dict[Part, bool] = {}
        lookups: list[Lookup] = []
        pending = list(wants)
        while pending:
            follow: list[tuple[str, Want]] = []
            for start in range(0, len(pending), self.batch):
                chunk = pending[start : start + self.batch]
                variables: dict[str, Any] = {}
                for i, (sid, w) in enumerate(chunk):
                    variables.update(
                        {
                            f"s{i}": sid,
                            f"r{i}": w.runs,
                            f"rb{i}": w.runs_before,
                            f"p{i}": w.proposed,
                            f"pb{i}": w.proposed_before,
                            f"t{i}": w.tasks,
                            f"tb{i}": w.tasks_before,
                            f"l{i}": w.lookup is not None,
                            f"q{i}": w.lookup or "",
                        }
                    )
                result = self._query(client, batch_document(len(chunk)), variables)
                data = result.require()
                if result.errors:  # a stack we could not read: try again next poll
                    raise classify(result.operation, list(result.errors))
                for i, (sid, w) in enumerate(chunk):
                    node = data.get(f"s{i}")
                    if node is None:  # deleted since the listing
                        continue
                    stack = p.obj(node, f"s{i}")
                    if w.lookup is not None:
                        raw_run = stack.get("run")
                        found = None
                        if raw_run is not None:
                            found = parse_run(raw_run, sid, f"stack({sid}).run({w.lookup})")
                        lookups.append(Lookup(sid, w.lookup, found))
                    nxt = Want()
                    for kind, field in LISTS:
                        if not w.reads(kind):
                            continue
                        origin = w.origin(kind)
                        where = f"stack({sid}).{field}"
                        page = [
                            parse_run(r, sid, f"{where}[{j}]")
                            for j, r in enumerate(p.lst(stack.get(field), where))
                        ]
                        key = (sid, kind, origin)
                        acc = read.setdefault(key, [])
                        acc += page
                        pages[key] = pages.get(key, 0) + 1
                        # Only an empty page ends a list: the server's page size is not public.
                        more = bool(page) and ledger.needs_older_page(acc, sid, kind)
                        if more and pages[key] <= MAX_RUN_PAGES:
                            complete[key] = False
                            nxt = nxt.reading(kind, page[-1].id, origin)
                        else:
                            complete[key] = not more
                            if more:
                                log.info(
                                    "more new runs than pages read in one poll; the next "
                                    "polls read on from there",
                                    extra={"account": self.account, "stack": sid},
                                )
                    if any(nxt.reads(kind) for kind, _ in LISTS):
                        follow.append((sid, nxt))
            pending = follow
        views = [
            ListView(sid, kind, tuple(runs), complete[part], origin)
            for part, runs in read.items()
            for sid, kind, origin in (part,)
        ]
        return views, lookups

    def collect(self, snapshot: Snapshot, out: FamilyBuilder) -> None:
        for m in SPEC.metrics:
            out.declare(m)
        a = self.account
        for space, rtype, state, count, age in snapshot.runs:
            out.add(RUNS_NOW, (a, space, rtype, state), count)
            out.add(OLDEST_AGE, (a, space, rtype, state), age)
        for space, count in snapshot.needing_approval:
            out.add(NEEDING_APPROVAL, (a, space), count)
        for space, sid, rtype, state, n in snapshot.finished:
            out.add(FINISHED, (a, space, sid, rtype, state), n)
        for labels, hv in snapshot.duration:
            out.add(DURATION, (a, *labels), hv)
        for labels, hv in snapshot.queue_wait:
            out.add(QUEUE_WAIT, (a, *labels), hv)
        for labels, hv in snapshot.lead_time:
            out.add(LEAD_TIME, (a, *labels), hv)


def _queue_input(after: str | None) -> dict[str, Any]:
    return {"first": QUEUE_PAGE, "after": after, "orderBy": QUEUE_ORDER}


def naive_requests(stacks: int) -> int:
    """What reading every stack's runs costs: the listing plus one request per stack."""
    return math.ceil(stacks / STACK_PAGE) + stacks if stacks else 1


def budget(stacks: int, changed: int, pools: int) -> float:
    """The issue's target for one steady-state poll: S/50 + A/20 + pools + 2."""
    return stacks / STACK_PAGE + changed / BATCH + pools + 2


SPEC = AreaSpec(
    name="runs",
    title="Runs",
    default_interval=30.0,
    create=Poller,
    documents={
        "SpaceliftExporterStacks": STACKS_DOCUMENT,
        "SpaceliftExporterRunQueues": QUEUES_DOCUMENT,
        "SpaceliftExporterRunQueuesPrivate": PRIVATE_QUEUES_DOCUMENT,
        "SpaceliftExporterRunQueuePage": POOL_QUEUE_PAGE_DOCUMENT,
        "SpaceliftExporterPublicRunQueuePage": PUBLIC_QUEUE_PAGE_DOCUMENT,
        BATCH_OPERATION: batch_document(BATCH),
    },
    metrics=(RUNS_NOW, OLDEST_AGE, NEEDING_APPROVAL, FINISHED, DURATION, QUEUE_WAIT, LEAD_TIME),
    optional=OPTIONAL,
    permission="Read on the spaces of the stacks (`searchStacks`, `stack.runs`, "
    "`stack.proposedRuns`, `stack.tasks`) and of the worker pools (`searchSchedulableRuns`); "
    "runs in spaces the key cannot read are not seen.",
    options={
        "stack_id_label": OptionSpec(
            bool,
            True,
            "true or false: keep the stack_id label on spacelift_runs_finished_total "
            "(false: one series per space, run type and state)",
        ),
    },
)
