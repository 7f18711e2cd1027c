"""Spacelift / Worker pools: capacity and demand of every private pool and the public pool."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dm

from grafana.dashboards_src.common import Board, graph, grid, query, sel, single, steps

UID = "spacelift-worker-pools"

BY_POOL = "account, worker_pool_name"
LEGEND = "{{account}} {{worker_pool_name}}"


def _per_pool(metric: str) -> str:
    return f"sum by ({BY_POOL}) ({sel(metric)})"


def build() -> dm.Dashboard:
    b = Board(
        UID,
        "Spacelift / Worker pools",
        "Workers busy, idle and drained and runs pending and schedulable per private worker "
        "pool, their utilisation, and the public pool against its parallelism.",
    )
    b.row(
        "Private worker pools",
        [
            grid(
                "Pools now",
                "Every private worker pool: its workers (busy, idle, drained) and the runs "
                "waiting for it (pending) of which a worker could take now (schedulable).",
                "short",
                *(
                    query(sel(m), instant=True, table_format=True)
                    for m in (
                        "spacelift_worker_pool_workers",
                        "spacelift_worker_pool_workers_busy",
                        "spacelift_worker_pool_workers_idle",
                        "spacelift_worker_pool_workers_drained",
                        "spacelift_worker_pool_runs_pending",
                        "spacelift_worker_pool_runs_schedulable",
                    )
                ),
                columns={
                    "account": "Account",
                    "worker_pool_name": "Pool",
                    "worker_pool_id": "Pool id",
                    "space": "Space",
                    "Value #A": "Workers",
                    "Value #B": "Busy",
                    "Value #C": "Idle",
                    "Value #D": "Drained",
                    "Value #E": "Runs pending",
                    "Value #F": "Runs schedulable",
                },
                sort_by="Runs pending",
                w=24,
                h=7,
            ),
            graph(
                "Utilisation",
                "Busy workers as a share of the pool's usable (not drained) workers. Empty for "
                "a pool with no usable worker; 100% with runs pending means the pool is "
                "saturated.",
                "percentunit",
                query(
                    f"{_per_pool('spacelift_worker_pool_workers_busy')} / "
                    f"({_per_pool('spacelift_worker_pool_workers')}"
                    f" - {_per_pool('spacelift_worker_pool_workers_drained')})",
                    LEGEND,
                ),
                max_value=1,
            ),
            graph(
                "Runs pending",
                "Runs waiting for a worker of each pool.",
                "short",
                query(_per_pool("spacelift_worker_pool_runs_pending"), LEGEND),
            ),
            graph(
                "Workers busy",
                "Workers running a run, per pool.",
                "short",
                query(_per_pool("spacelift_worker_pool_workers_busy"), LEGEND),
                w=8,
            ),
            graph(
                "Workers idle",
                "Workers ready for a run, per pool.",
                "short",
                query(_per_pool("spacelift_worker_pool_workers_idle"), LEGEND),
                w=8,
            ),
            graph(
                "Workers drained",
                "Workers that take no new runs, per pool.",
                "short",
                query(_per_pool("spacelift_worker_pool_workers_drained"), LEGEND),
                w=8,
            ),
            graph(
                "Runs schedulable",
                "Pending runs a worker could take now, per pool. Schedulable runs with idle "
                "workers for long point at a worker problem.",
                "short",
                query(_per_pool("spacelift_worker_pool_runs_schedulable"), LEGEND),
            ),
            graph(
                "Workers per pool",
                "All workers registered in each pool.",
                "short",
                query(_per_pool("spacelift_worker_pool_workers"), LEGEND),
            ),
        ],
    )
    b.row(
        "Public worker pool",
        [
            graph(
                "Public pool against its parallelism",
                "Busy public workers against the account's public worker parallelism (the most "
                "public runs it may have at once), with the runs waiting for a public worker.",
                "short",
                query(
                    f"sum by (account) ({sel('spacelift_public_worker_pool_parallelism')})",
                    "{{account}} parallelism",
                ),
                query(
                    f"sum by (account) ({sel('spacelift_public_worker_pool_workers_busy')})",
                    "{{account}} busy",
                ),
                query(
                    f"sum by (account) ({sel('spacelift_public_worker_pool_runs_pending')})",
                    "{{account}} pending",
                ),
                query(
                    f"sum by (account) ({sel('spacelift_public_worker_pool_runs_schedulable')})",
                    "{{account}} schedulable",
                ),
                w=16,
            ),
            single(
                "Public pool in use",
                "Busy public workers as a share of the public worker parallelism.",
                "percentunit",
                query(
                    f"sum by (account) ({sel('spacelift_public_worker_pool_workers_busy')})"
                    f" / sum by (account) ({sel('spacelift_public_worker_pool_parallelism')})",
                    "{{account}}",
                ),
                w=8,
                h=8,
                graph_mode=True,
                thresholds=steps((None, "green"), (0.8, "orange"), (1, "red")),
            ),
        ],
    )
    return b.build()
