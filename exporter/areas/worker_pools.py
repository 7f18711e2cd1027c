"""Private worker pools: workers busy, idle, drained, and the runs waiting for them.

Names and labels of Spacelift's official exporter are kept (plus ``account`` and ``space``),
so dashboards and KEDA scalers written for it keep working.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.areas import parse as p
from exporter.areas.base import AreaSpec, DocumentPoller, FamilyBuilder, gauge

DOCUMENT = """
query SpaceliftExporterWorkerPools {
  workerPools {
    id
    name
    space
    pendingRuns
    busyWorkers
    schedulableRunsCount # optional: only an unmerged official-exporter PR reads it
    workers { id busy drained }
  }
}
"""

_L = ("worker_pool_id", "worker_pool_name", "space")
WORKERS = gauge(
    "spacelift_worker_pool_workers",
    "Workers registered in the pool, drained ones included, at the last poll.",
    *_L,
)
BUSY = gauge(
    "spacelift_worker_pool_workers_busy",
    "Workers of the pool processing a run, at the last poll.",
    *_L,
)
DRAINED = gauge(
    "spacelift_worker_pool_workers_drained",
    "Workers of the pool that are drained (accept no new run), at the last poll.",
    *_L,
)
IDLE = gauge(
    "spacelift_worker_pool_workers_idle",
    "Workers of the pool neither busy nor drained (free to take a run), at the last poll.",
    *_L,
)
PENDING = gauge(
    "spacelift_worker_pool_runs_pending",
    "Runs queued and waiting for a worker of the pool, at the last poll.",
    *_L,
)
SCHEDULABLE = gauge(
    "spacelift_worker_pool_runs_schedulable",
    "Runs in the pool's queue (waiting for a worker or in progress), at the last poll.",
    *_L,
)


@dataclass(frozen=True)
class Pool:
    id: str
    name: str
    space: str
    workers: int
    busy: int
    drained: int
    idle: int
    pending: int
    schedulable: int | None  # None when the server lacks or refuses the field


@dataclass(frozen=True)
class Snapshot:
    pools: tuple[Pool, ...]


def parse(data: object) -> Snapshot:
    pools = []
    for i, raw in enumerate(p.lst(p.obj(data, "data").get("workerPools"), "workerPools")):
        where = f"workerPools[{i}]"
        o = p.obj(raw, where)
        workers = [
            p.obj(w, f"{where}.workers") for w in p.lst(o.get("workers"), where + ".workers")
        ]
        drained = sum(1 for w in workers if p.boolean(w, "drained", where))
        idle = sum(
            1
            for w in workers
            if not p.boolean(w, "busy", where) and not p.boolean(w, "drained", where)
        )
        pools.append(
            Pool(
                id=p.string(o, "id", where),
                name=p.string(o, "name", where),
                space=p.string(o, "space", where),
                workers=len(workers),
                busy=int(p.number(o, "busyWorkers", where)),
                drained=drained,
                idle=idle,
                pending=int(p.number(o, "pendingRuns", where)),
                schedulable=_opt_int(p.opt_number(o, "schedulableRunsCount", where)),
            )
        )
    return Snapshot(tuple(sorted(pools, key=lambda pool: pool.id)))


def _opt_int(value: float | None) -> int | None:
    return None if value is None else int(value)


class Poller(DocumentPoller):
    document = DOCUMENT
    root = "workerPools"
    optional = {"WorkerPool.schedulableRunsCount": (SCHEDULABLE,)}
    parse = staticmethod(parse)

    def collect(self, snapshot: Snapshot, out: FamilyBuilder) -> None:
        for m in SPEC.metrics:
            out.declare(m)
        for pool in snapshot.pools:
            labels = (self.account, pool.id, pool.name, pool.space)
            out.add(WORKERS, labels, pool.workers)
            out.add(BUSY, labels, pool.busy)
            out.add(DRAINED, labels, pool.drained)
            out.add(IDLE, labels, pool.idle)
            out.add(PENDING, labels, pool.pending)
            if pool.schedulable is not None:
                out.add(SCHEDULABLE, labels, pool.schedulable)


SPEC = AreaSpec(
    name="worker_pools",
    title="Worker pools",
    default_interval=30.0,
    create=Poller,
    documents={"SpaceliftExporterWorkerPools": DOCUMENT},
    metrics=(WORKERS, BUSY, DRAINED, IDLE, PENDING, SCHEDULABLE),
    permission="Read on the spaces holding the pools (any key that can list `workerPools`).",
    optional=Poller.optional,
)
