"""Spacelift / Overview: the wall dashboard. Is the exporter healthy, is anything on fire."""

from __future__ import annotations

from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from grafana.dashboards_src.common import (
    BAD_IF_ANY,
    WARN_IF_ANY,
    Board,
    bar_gauge,
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
    steps,
)

UID = "spacelift-overview"

FAILURE_RATIO = (
    f"sum({rate('spacelift_runs_finished_total', is_('state', 'FAILED'))})"
    f" / sum({rate('spacelift_runs_finished_total', matches('state', 'FINISHED|FAILED'))})"
)


def build() -> dm.Dashboard:
    b = Board(
        UID,
        "Spacelift / Overview",
        "Exporter health, worker capacity, runs and stacks at a glance, and the numbers the "
        "alert rules watch. Start here; the other Spacelift dashboards are in the links menu.",
    )
    b.row(
        "Alert headline numbers",
        [
            single(
                "Accounts down",
                "Accounts whose Spacelift API did not give the exporter a well-formed, "
                "authenticated answer at the last request (1 - spacelift_up). "
                "Alerts: SpaceliftApiDown, SpaceliftApiTokenExchangeFailing.",
                "short",
                query(f"sum(1 - {sel('spacelift_up')})", instant=True),
                thresholds=BAD_IF_ANY,
            ),
            single(
                "Areas failing",
                "Account areas whose last poll failed, including those refused for lack of "
                "permission (see the exporter health table below). Alerts: "
                "SpaceliftPollFailing, SpaceliftPollPermissionDenied.",
                "short",
                query(f"sum(1 - {sel('spacelift_poll_success')})", instant=True),
                thresholds=WARN_IF_ANY,
            ),
            single(
                "Failed stacks",
                "Stacks in the FAILED state now. Alert: SpaceliftStackFailed.",
                "short",
                query(f"sum({sel('spacelift_stacks', is_('state', 'FAILED'))}) or vector(0)"),
                thresholds=BAD_IF_ANY,
            ),
            single(
                "Unconfirmed runs",
                "Tracked runs waiting for a human to confirm their plan. Alert: "
                "SpaceliftRunUnconfirmed (after a day).",
                "short",
                query(f"sum({sel('spacelift_runs', is_('state', 'UNCONFIRMED'))}) or vector(0)"),
                thresholds=WARN_IF_ANY,
            ),
            single(
                "Longest wait for a worker",
                "How long the oldest run waiting for a worker (READY, CONFIRMED or "
                "REPLAN_REQUESTED) has waited. QUEUED runs wait for a stack lock or an "
                "approval, not a worker. Alert: SpaceliftRunWaitingForWorker.",
                "s",
                query(
                    "max("
                    + sel(
                        "spacelift_runs_oldest_age_seconds",
                        matches("state", "READY|CONFIRMED|REPLAN_REQUESTED"),
                    )
                    + ") or vector(0)"
                ),
                thresholds=steps((None, "green"), (600, "orange"), (1800, "red")),
            ),
            single(
                "Root space-admin API key bindings",
                "API key role bindings granting space-admin on the root space: keys that can "
                "do anything. Alert: SpaceliftApiKeyRootAdminAdded.",
                "short",
                query(
                    "sum("
                    + sel(
                        "spacelift_api_key_role_bindings",
                        is_("role", "space-admin"),
                        is_("space", "root"),
                    )
                    + ") or vector(0)"
                ),
                thresholds=WARN_IF_ANY,
            ),
        ],
    )
    b.row(
        "Exporter health",
        [
            grid(
                "Poll status by account and area",
                "Per account and area: whether the last poll succeeded, whether it was refused "
                "for lack of permission (a gap in the API key's rights, not an outage), how old "
                "the served data is, and how long the last poll took.",
                "short",
                query(sel("spacelift_poll_success"), instant=True, table_format=True),
                query(sel("spacelift_poll_permission_denied"), instant=True, table_format=True),
                query(
                    f"time() - {sel('spacelift_last_successful_poll_timestamp_seconds')}",
                    instant=True,
                    table_format=True,
                ),
                query(sel("spacelift_poll_duration_seconds"), instant=True, table_format=True),
                columns={
                    "account": "Account",
                    "area": "Area",
                    "Value #A": "Last poll ok",
                    "Value #B": "Permission denied",
                    "Value #C": "Data age",
                    "Value #D": "Poll duration",
                },
                column_units={"Data age": "s", "Poll duration": "s"},
                column_mappings={
                    "Last poll ok": {"0": ("FAILED", "red"), "1": ("OK", "green")},
                    "Permission denied": {"0": ("no", "green"), "1": ("DENIED", "orange")},
                },
                w=12,
                h=9,
            ),
            graph(
                "Data age by area",
                "Seconds since each area's last successful poll: the age of the numbers on "
                "these dashboards. A rising line means polls are failing.",
                "s",
                query(
                    f"time() - {sel('spacelift_last_successful_poll_timestamp_seconds')}",
                    "{{account}} {{area}}",
                ),
                w=12,
                h=9,
            ),
            grid(
                "Spacelift fields left out",
                "Fields the exporter's documents are sent without: the Spacelift release lacks "
                "them (missing) or refuses them to this API key (refused). Only the metrics "
                "needing them are absent; each is asked for again about hourly. The landing "
                "page and `spacelift-exporter doctor` name the remedy.",
                "short",
                query(sel("spacelift_api_field_unavailable"), instant=True, table_format=True),
                columns={
                    "account": "Account",
                    "area": "Area",
                    "field": "Field",
                    "reason": "Reason",
                },
                w=24,
                h=5,
            ),
            graph(
                "Poll failures",
                "Failed polls per area in each interval.",
                "short",
                query(
                    f"sum by (account, area) ({increase('spacelift_poll_failures_total')})",
                    "{{account}} {{area}}",
                ),
                w=8,
                bars=True,
            ),
            graph(
                "API requests by outcome",
                "Requests per second the exporter sends to the Spacelift API, by outcome.",
                "reqps",
                query(
                    f"sum by (account, outcome) ({rate('spacelift_api_requests_total')})",
                    "{{account}} {{outcome}}",
                ),
                w=8,
                stacked=True,
            ),
            graph(
                "API request duration",
                "90th percentile of the duration of requests to the Spacelift API, by operation.",
                "s",
                query(
                    quantile(0.9, "spacelift_api_request_duration_seconds", "account, operation"),
                    "p90 {{account}} {{operation}}",
                ),
                w=8,
            ),
            graph(
                "Rate limiting, token exchanges, state file writes",
                "HTTP 429 answers from Spacelift, API key token exchanges (by outcome) and "
                "failed --state.file writes in each interval. Failing exchanges stop all data; "
                "429s slow polls down; failed state writes put restarts at risk of miscounting.",
                "short",
                query(
                    f"sum by (account) ({increase('spacelift_api_rate_limited_total')})",
                    "{{account}} rate limited",
                ),
                query(
                    "sum by (account, outcome) "
                    f"({increase('spacelift_api_token_exchanges_total')})",
                    "{{account}} token exchange {{outcome}}",
                ),
                query(
                    # Process-wide (no account label): one state file per exporter, shown for
                    # the exporters that serve the selected accounts.
                    "sum by (instance) (increase(spacelift_state_file_writes_total"
                    '{job=~"$job", outcome="failure"}[$__rate_interval]))'
                    f" and on (instance) max by (instance) ({sel('spacelift_up')})",
                    "{{instance}} state file write failed",
                ),
                w=12,
                bars=True,
            ),
            single(
                "Exporter version",
                "Version of the running spacelift-exporter, per scrape target.",
                "none",
                query(
                    'spacelift_build_info{job=~"$job"} * on (job, instance) group_left ()'
                    f" max by (job, instance) ({sel('spacelift_up')})",
                    "{{version}} ({{instance}})",
                    instant=True,
                ),
                w=12,
            ).text_mode(cm.BigValueTextMode.NAME),
        ],
    )
    b.row(
        "Worker pools",
        [
            single(
                "Private workers busy",
                "Busy workers of all private worker pools, out of all their workers.",
                "short",
                query(f"sum({sel('spacelift_worker_pool_workers_busy')})", "busy"),
                query(f"sum({sel('spacelift_worker_pool_workers')})", "workers"),
                w=6,
                graph_mode=True,
            ),
            single(
                "Runs pending on private pools",
                "Runs waiting for a worker of a private pool.",
                "short",
                query(f"sum({sel('spacelift_worker_pool_runs_pending')})"),
                w=6,
                graph_mode=True,
                thresholds=steps((None, "green"), (5, "orange")),
            ),
            single(
                "Public pool in use",
                "Busy public workers as a share of the account's public worker parallelism.",
                "percentunit",
                query(
                    f"sum({sel('spacelift_public_worker_pool_workers_busy')})"
                    f" / sum({sel('spacelift_public_worker_pool_parallelism')})"
                ),
                w=6,
                graph_mode=True,
                thresholds=steps((None, "green"), (0.8, "orange"), (1, "red")),
            ),
            single(
                "Runs pending on the public pool",
                "Runs waiting for a public worker.",
                "short",
                query(f"sum({sel('spacelift_public_worker_pool_runs_pending')})"),
                w=6,
                graph_mode=True,
            ),
        ],
    )
    b.row(
        "Runs and stacks",
        [
            bar_gauge(
                "Runs by state now",
                "Runs in each non-terminal state now, all spaces and run types.",
                "short",
                query(f"sum by (state) ({sel('spacelift_runs')})", "{{state}}", instant=True),
            ),
            graph(
                "Finished runs by outcome",
                "Runs that reached a terminal state in each interval, by that state.",
                "short",
                query(f"sum by (state) ({increase('spacelift_runs_finished_total')})", "{{state}}"),
                w=8,
                bars=True,
                stacked=True,
            ),
            bar_gauge(
                "Stacks by state",
                "Stacks in each state now.",
                "short",
                query(f"sum by (state) ({sel('spacelift_stacks')})", "{{state}}", instant=True),
            ),
            single(
                "Run failure ratio",
                "FAILED among runs that FINISHED or FAILED, over the rate interval. Stopped, "
                "canceled, discarded and skipped runs are human choices and not counted.",
                "percentunit",
                query(FAILURE_RATIO),
                w=8,
                graph_mode=True,
                thresholds=steps((None, "green"), (0.2, "orange"), (0.5, "red")),
            ),
            single(
                "Locked stacks",
                "Stacks locked by a person or a run now.",
                "short",
                query(f"sum({sel('spacelift_stacks_locked')}) or vector(0)"),
                w=4,
            ),
            single(
                "Drifted stacks",
                "Stacks whose last drift detection found drift.",
                "short",
                query(f"sum({sel('spacelift_stacks_drifted')}) or vector(0)"),
                w=4,
                thresholds=WARN_IF_ANY,
            ),
            single(
                "Disabled stacks",
                "Stacks that are disabled (no runs are triggered).",
                "short",
                query(f"sum({sel('spacelift_stacks_disabled')}) or vector(0)"),
                w=4,
            ),
            single(
                "Runs needing approval",
                "Queued runs blocked on an approval policy.",
                "short",
                query(f"sum({sel('spacelift_runs_needing_approval')}) or vector(0)"),
                w=4,
                thresholds=WARN_IF_ANY,
            ),
        ],
    )
    b.row(
        "Webhooks",
        [
            graph(
                "Webhook deliveries by outcome",
                "Spacelift webhook deliveries in each interval: accepted (recorded), duplicate "
                "and stale (seen already: retries, late or out-of-order deliveries), and the "
                "refused ones (bad_signature, malformed, too_large, unknown_account). Empty for "
                "accounts that do not receive webhooks. Alert: SpaceliftWebhookSignaturesFailing.",
                "short",
                query(
                    f"sum by (account, outcome) ({increase('spacelift_webhook_deliveries_total')})",
                    "{{account}} {{outcome}}",
                ),
                w=8,
                bars=True,
                stacked=True,
            ),
            single(
                "Since the last webhook delivery",
                "Time since the last correctly signed delivery, per account. Long while runs "
                "finish: the webhook is disabled or no longer routed to. Alert: "
                "SpaceliftWebhookSilent.",
                "s",
                query(
                    f"time() - max by (account) "
                    f"({sel('spacelift_webhook_last_delivery_timestamp_seconds')})",
                    "{{account}}",
                ),
                w=4,
                thresholds=steps((None, "green"), (3600, "orange")),
            ),
            single(
                "Webhook deliveries refused",
                "Deliveries answered with a 4xx in each interval: a wrong secret, a body that "
                "is not a run event, too large, or for an account not configured. Spacelift "
                "disables a webhook after 10 failures in a row.",
                "short",
                query(
                    "sum("
                    + increase(
                        "spacelift_webhook_deliveries_total",
                        matches("outcome", "bad_signature|malformed|too_large|unknown_account"),
                    )
                    + ") or vector(0)"
                ),
                w=4,
                graph_mode=True,
                thresholds=WARN_IF_ANY,
            ),
            graph(
                "Webhook delivery delay",
                "Median and 99th percentile of the time from a run's state change to the "
                "arrival of its delivery: how far behind real time the webhook path is.",
                "s",
                query(
                    quantile(0.5, "spacelift_webhook_delivery_delay_seconds", "account"),
                    "p50 {{account}}",
                ),
                query(
                    quantile(0.99, "spacelift_webhook_delivery_delay_seconds", "account"),
                    "p99 {{account}}",
                ),
                w=8,
            ),
        ],
    )
    b.row(
        "Billing period",
        [
            graph(
                "Worker time used this billing period",
                "Private and public worker time used in the current billing period, as "
                "Spacelift reports it.",
                "s",
                query(
                    sel("spacelift_current_billing_period_used_private_seconds"),
                    "{{account}} private",
                ),
                query(
                    sel("spacelift_current_billing_period_used_public_seconds"),
                    "{{account}} public",
                ),
            ),
            graph(
                "Seats used this billing period",
                "Seats used in the current billing period, as Spacelift reports it.",
                "short",
                query(sel("spacelift_current_billing_period_used_seats"), "{{account}}"),
            ),
        ],
    )
    return b.build()
