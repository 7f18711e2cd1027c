"""The public (Spacelift-managed) worker pool as this account sees it.

A document of its own: `publicWorkerPool` was closed to machine sessions on older
self-hosted releases, and one refused field must not blank the private pools' answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.areas import parse as p
from exporter.areas.base import AreaSpec, DocumentPoller, FamilyBuilder, gauge

DOCUMENT = """
query SpaceliftExporterPublicWorkerPool {
  publicWorkerPool { parallelism busyWorkers pendingRuns schedulableRunsCount }
}
"""

PARALLELISM = gauge(
    "spacelift_public_worker_pool_parallelism",
    "Most runs the account may have on the public pool at once, at the last poll.",
)
BUSY = gauge(
    "spacelift_public_worker_pool_workers_busy",
    "Public workers processing the account's runs, at the last poll.",
)
PENDING = gauge(
    "spacelift_public_worker_pool_runs_pending",
    "Runs queued and waiting for a public worker, at the last poll.",
)
SCHEDULABLE = gauge(
    "spacelift_public_worker_pool_runs_schedulable",
    "Runs in the public pool's queue (waiting or in progress), at the last poll.",
)


@dataclass(frozen=True)
class Snapshot:
    parallelism: int
    busy: int
    pending: int
    schedulable: int


def parse(data: object) -> Snapshot:
    o = p.obj(p.obj(data, "data").get("publicWorkerPool"), "publicWorkerPool")
    w = "publicWorkerPool"
    return Snapshot(
        parallelism=int(p.number(o, "parallelism", w)),
        busy=int(p.number(o, "busyWorkers", w)),
        pending=int(p.number(o, "pendingRuns", w)),
        schedulable=int(p.number(o, "schedulableRunsCount", w)),
    )


class Poller(DocumentPoller):
    document = DOCUMENT
    root = "publicWorkerPool"
    parse = staticmethod(parse)

    def collect(self, snapshot: Snapshot, out: FamilyBuilder) -> None:
        out.add(PARALLELISM, (self.account,), snapshot.parallelism)
        out.add(BUSY, (self.account,), snapshot.busy)
        out.add(PENDING, (self.account,), snapshot.pending)
        out.add(SCHEDULABLE, (self.account,), snapshot.schedulable)


SPEC = AreaSpec(
    name="public_worker_pool",
    title="Public worker pool",
    default_interval=30.0,
    create=Poller,
    documents={"SpaceliftExporterPublicWorkerPool": DOCUMENT},
    metrics=(PARALLELISM, BUSY, PENDING, SCHEDULABLE),
    permission="Any key; older self-hosted releases refuse it to API keys "
    "(`not available for machine sessions`), reported as a permission gap.",
)
