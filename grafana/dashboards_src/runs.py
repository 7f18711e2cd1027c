"""Spacelift / Runs: what is running, what finished how, how long it took and waited."""

from __future__ import annotations

from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.models import dashboard as dm

from grafana.dashboards_src.common import (
    WARN_IF_ANY,
    Board,
    graph,
    grid,
    increase,
    is_,
    matches,
    quantile,
    query,
    rate,
    sel,
    single,
)
from grafana.dashboards_src.overview import FAILURE_RATIO

UID = "spacelift-runs"


def _percentiles(histogram: str, *matchers: str) -> list[prometheus.Dataquery]:
    return [
        query(quantile(q, histogram, "", *matchers), f"p{int(q * 100)}") for q in (0.5, 0.9, 0.99)
    ]


def build() -> dm.Dashboard:
    b = Board(
        UID,
        "Spacelift / Runs",
        "Active runs by state and type, finished runs by outcome, failure ratio, run duration "
        "and queue wait percentiles, the oldest run in each state, runs needing approval.",
    )
    b.row(
        "Now",
        [
            graph(
                "Active runs by state",
                "Runs in each non-terminal state, all spaces and run types.",
                "short",
                query(f"sum by (state) ({sel('spacelift_runs')})", "{{state}}"),
                stacked=True,
            ),
            graph(
                "Active runs by type",
                "Runs in a non-terminal state, by run type (TRACKED, PROPOSED, TASK, "
                "DESTROY...). Drift detection runs are proposed runs.",
                "short",
                query(f"sum by (run_type) ({sel('spacelift_runs')})", "{{run_type}}"),
                stacked=True,
            ),
            graph(
                "Oldest run in each state",
                "How long the oldest run in each non-terminal state has been in it: a run stuck "
                "in the queue, unconfirmed for a day, or planning for two hours shows here.",
                "s",
                query(f"max by (state) ({sel('spacelift_runs_oldest_age_seconds')})", "{{state}}"),
            ),
            grid(
                "Oldest runs by space, type and state",
                "The age of the oldest run in each state, per space and run type, oldest first.",
                "s",
                query(sel("spacelift_runs_oldest_age_seconds"), instant=True, table_format=True),
                columns={
                    "account": "Account",
                    "space": "Space",
                    "run_type": "Run type",
                    "state": "State",
                    "Value": "Oldest for",
                },
                sort_by="Oldest for",
            ),
            single(
                "Runs needing approval",
                "Queued runs blocked on an approval policy, waiting for someone to approve them.",
                "short",
                query(f"sum({sel('spacelift_runs_needing_approval')}) or vector(0)"),
                w=6,
                graph_mode=True,
                thresholds=WARN_IF_ANY,
            ),
            graph(
                "Runs needing approval by space",
                "Queued runs blocked on an approval policy, per space.",
                "short",
                query(f"sum by (space) ({sel('spacelift_runs_needing_approval')})", "{{space}}"),
                w=18,
            ),
        ],
    )
    b.row(
        "Finished runs",
        [
            graph(
                "Finished runs by outcome",
                "Runs that reached a terminal state (FINISHED, FAILED, STOPPED, CANCELED, "
                "DISCARDED, SKIPPED) in each interval. Each run is counted once.",
                "short",
                query(f"sum by (state) ({increase('spacelift_runs_finished_total')})", "{{state}}"),
                bars=True,
                stacked=True,
            ),
            graph(
                "Finished runs by type",
                "Runs that reached a terminal state in each interval, by run type.",
                "short",
                query(
                    f"sum by (run_type) ({increase('spacelift_runs_finished_total')})",
                    "{{run_type}}",
                ),
                bars=True,
                stacked=True,
            ),
            graph(
                "Failure ratio",
                "FAILED among runs that FINISHED or FAILED. Stopped, canceled, discarded and "
                "skipped runs are human choices and not counted. Empty when nothing finished.",
                "percentunit",
                query(FAILURE_RATIO, "all runs"),
                query(
                    "sum("
                    + rate(
                        "spacelift_runs_finished_total",
                        is_("run_type", "TRACKED"),
                        is_("state", "FAILED"),
                    )
                    + ") / sum("
                    + rate(
                        "spacelift_runs_finished_total",
                        is_("run_type", "TRACKED"),
                        matches("state", "FINISHED|FAILED"),
                    )
                    + ")",
                    "tracked runs (change failure rate)",
                ),
                max_value=1,
            ),
            graph(
                "Deployments",
                "Tracked runs that FINISHED per second (deployment frequency), by space.",
                "ops",
                query(
                    "sum by (space) ("
                    + rate(
                        "spacelift_runs_finished_total",
                        is_("run_type", "TRACKED"),
                        is_("state", "FINISHED"),
                    )
                    + ")",
                    "{{space}}",
                ),
            ),
            graph(
                "Failed runs by space",
                "Runs that FAILED in each interval, by space. The Stacks dashboard lists the "
                "stacks now failed.",
                "short",
                query(
                    "sum by (space) ("
                    + increase("spacelift_runs_finished_total", is_("state", "FAILED"))
                    + ")",
                    "{{space}}",
                ),
                bars=True,
                stacked=True,
                w=24,
            ),
        ],
    )
    b.row(
        "Durations",
        [
            graph(
                "Run duration",
                "Percentiles of the time from a run's creation to its terminal state, over runs "
                "that finished in the rate interval.",
                "s",
                *_percentiles("spacelift_run_duration_seconds"),
                w=8,
            ),
            graph(
                "Queue wait",
                "Percentiles of the time runs waited for a worker (READY until PREPARING).",
                "s",
                *_percentiles("spacelift_run_queue_wait_seconds"),
                w=8,
            ),
            graph(
                "Deployment lead time",
                "Percentiles of the time from a commit to the end of the tracked run that "
                "deployed it (FINISHED tracked runs).",
                "s",
                *_percentiles("spacelift_deployment_lead_time_seconds"),
                w=8,
            ),
            graph(
                "Run duration p90 by type",
                "90th percentile of run duration, by run type.",
                "s",
                query(quantile(0.9, "spacelift_run_duration_seconds", "run_type"), "{{run_type}}"),
            ),
            graph(
                "Queue wait p90 by space",
                "90th percentile of the time runs waited for a worker, by space.",
                "s",
                query(quantile(0.9, "spacelift_run_queue_wait_seconds", "space"), "{{space}}"),
            ),
        ],
    )
    return b.build()
