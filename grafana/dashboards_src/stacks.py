"""Spacelift / Stacks: stacks by state and space, and the stacks that need someone, for how long."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import table
from grafana_foundation_sdk.models import dashboard as dm

from grafana.dashboards_src.common import (
    ON_STACK,
    WARN_IF_ANY,
    Board,
    graph,
    grid,
    increase,
    is_,
    query,
    rate,
    sel,
    single,
    steps,
)

UID = "spacelift-stacks"

# Every stack (value 1) with its space, state and name as labels.
STACKS = f"{sel('spacelift_stack_state')} * {ON_STACK} group_left (stack_name) " + sel(
    "spacelift_stack_info"
)
# Seconds each stack has been in its current state, with the same labels. A stack that never
# changed state (NONE, never run) has no state-since timestamp: it is listed with NaN, shown
# as "unknown", rather than left out of the tables.
IN_STATE_FOR = (
    f"((time() - {sel('spacelift_stack_state_since_timestamp_seconds')})"
    f" * {ON_STACK} group_left (space, state, stack_name) ({STACKS})"
    f" or {ON_STACK} ({STACKS} * NaN))"
)
UNKNOWN = "unknown"

COLUMNS = {
    "account": "Account",
    "stack_name": "Stack",
    "stack_id": "Stack id",
    "space": "Space",
    "state": "State",
    "Value": "In this state for",
}

# Colours for "how long": a day is worth a look, a week is neglect.
AGE_STEPS = steps((None, "green"), (86400, "orange"), (7 * 86400, "red"))


def _stacks_where(flag: str) -> str:
    return f"{IN_STATE_FOR} and {ON_STACK} ({sel(flag)} == 1)"


def _stacks_table(
    title: str, description: str, flag: str, thresholds: db.ThresholdsConfig | None = AGE_STEPS
) -> table.Panel:
    """The stacks whose per-stack ``flag`` is 1, with how long they have been in their state."""
    return grid(
        title,
        description,
        "s",
        query(_stacks_where(flag), instant=True, table_format=True),
        columns=COLUMNS,
        sort_by="In this state for",
        nan_text=UNKNOWN,
        thresholds=thresholds,
    )


def build() -> dm.Dashboard:
    b = Board(
        UID,
        "Spacelift / Stacks",
        "Stacks by state and space, and tables of the stacks that are failed, locked, drifted "
        "or disabled, with how long they have been in their current state.",
    )
    b.row(
        "Stacks",
        [
            single(
                "Stacks",
                "All stacks.",
                "short",
                query(f"sum({sel('spacelift_stacks')})"),
                w=4,
            ),
            single(
                "Failed",
                "Stacks in the FAILED state.",
                "short",
                query(f"sum({sel('spacelift_stacks', is_('state', 'FAILED'))}) or vector(0)"),
                w=4,
                thresholds=steps((None, "green"), (1, "red")),
            ),
            single(
                "Locked",
                "Stacks locked by a person or a run.",
                "short",
                query(f"sum({sel('spacelift_stacks_locked')}) or vector(0)"),
                w=4,
            ),
            single(
                "Drifted",
                "Stacks whose last drift detection found drift.",
                "short",
                query(f"sum({sel('spacelift_stacks_drifted')}) or vector(0)"),
                w=4,
                thresholds=WARN_IF_ANY,
            ),
            single(
                "Disabled",
                "Disabled stacks.",
                "short",
                query(f"sum({sel('spacelift_stacks_disabled')}) or vector(0)"),
                w=4,
            ),
            single(
                "Spaces",
                "Spaces in the account.",
                "short",
                query(f"sum({sel('spacelift_spaces')})"),
                w=4,
            ),
            graph(
                "Stacks by state",
                "Stacks in each state over time.",
                "short",
                query(f"sum by (state) ({sel('spacelift_stacks')})", "{{state}}"),
                stacked=True,
            ),
            grid(
                "Stacks by space and state",
                "Stacks per space (rows) and state (columns) now.",
                "short",
                query(
                    f"sum by (space, state) ({sel('spacelift_stacks')})",
                    instant=True,
                    table_format=True,
                ),
                columns={},
                pivot=("space", "state"),
            ),
            graph(
                "Locked, drifted and disabled stacks by space",
                "Locked, drifted and disabled stacks per space over time.",
                "short",
                query(f"sum by (space) ({sel('spacelift_stacks_locked')})", "locked {{space}}"),
                query(f"sum by (space) ({sel('spacelift_stacks_drifted')})", "drifted {{space}}"),
                query(f"sum by (space) ({sel('spacelift_stacks_disabled')})", "disabled {{space}}"),
                w=24,
            ),
        ],
    )
    b.row(
        "Stacks that need someone",
        [
            grid(
                "Failed stacks",
                "Stacks in the FAILED state and how long they have been failed, longest first.",
                "s",
                query(
                    f"{IN_STATE_FOR} and {ON_STACK} "
                    + sel("spacelift_stack_state", is_("state", "FAILED")),
                    instant=True,
                    table_format=True,
                ),
                columns=COLUMNS,
                sort_by="In this state for",
                nan_text=UNKNOWN,
                thresholds=AGE_STEPS,
            ),
            _stacks_table(
                "Locked stacks",
                "Locked stacks and how long they have been in their current state (Spacelift "
                "does not give the time of the lock itself), longest first.",
                "spacelift_stack_locked",
            ),
            _stacks_table(
                "Drifted stacks",
                "Stacks whose last drift detection found drift, and how long they have been in "
                "their current state, longest first.",
                "spacelift_stack_drifted",
            ),
            _stacks_table(
                "Disabled stacks",
                "Disabled stacks and how long they have been in their current state, longest "
                "first.",
                "spacelift_stack_disabled",
                thresholds=None,  # being disabled is a choice, not a problem that ages
            ),
            grid(
                "All stacks by time in state",
                "Every stack with its state and how long it has been in it, longest first. "
                "Empty when per-stack series are switched off in the exporter.",
                "s",
                query(IN_STATE_FOR, instant=True, table_format=True),
                columns=COLUMNS,
                sort_by="In this state for",
                nan_text=UNKNOWN,
                w=24,
                h=10,
            ),
        ],
    )
    # The ec2_ownership area (off unless configured): empty panels without it.
    ec2_by = "sum by (account, stack_id, aws_account, aws_region)"
    b.row(
        "EC2 instances (CloudTrail exports)",
        [
            grid(
                "EC2 instances launched and not terminated",
                "Per stack, AWS account and region: instances the stack's runs launched that no "
                "termination in the CloudTrail exports has ended, and how long ago the oldest "
                "was launched, most first. Needs the ec2_ownership area.",
                "short",
                query(
                    f"{ec2_by} ({sel('spacelift_ec2_instances_launched_not_terminated')})",
                    instant=True,
                    table_format=True,
                ),
                query(
                    "time() - min by (account, stack_id, aws_account, aws_region) "
                    f"({sel('spacelift_ec2_instances_oldest_launch_timestamp_seconds')})",
                    instant=True,
                    table_format=True,
                ),
                columns={
                    "account": "Account",
                    "stack_id": "Stack id",
                    "aws_account": "AWS account",
                    "aws_region": "Region",
                    "Value #A": "Instances",
                    "Value #B": "Oldest launched",
                },
                column_units={"Oldest launched": "s"},
                sort_by="Instances",
            ),
            graph(
                "EC2 instance events by stack",
                "Instances named in EC2 events made by each stack's runs (RunInstances, "
                "TerminateInstances...), per read of the CloudTrail exports. Needs the "
                "ec2_ownership area.",
                "short",
                query(
                    f"sum by (stack_id, event) ({increase('spacelift_ec2_instance_events_total')})",
                    "{{stack_id}} {{event}}",
                ),
                stacked=True,
            ),
            graph(
                "CloudTrail export records read",
                "Records read from the exports per second, by outcome (counted; a Spacelift "
                "run naming no instance; another identity; another Spacelift account; already "
                "read in a rewritten export; skipped as malformed, too large or too deep), "
                "files given up as unreadable, and launches not tracked for lack of room.",
                "ops",
                query(
                    f"sum by (outcome) ({rate('spacelift_ec2_export_records_total')})",
                    "{{outcome}}",
                ),
                query(
                    f"sum by (outcome) ({rate('spacelift_ec2_export_files_total')})",
                    "files {{outcome}}",
                ),
                query(
                    f"sum({rate('spacelift_ec2_instances_untracked_total')})",
                    "launches not tracked",
                ),
            ),
            single(
                "CloudTrail export lag",
                "How old the newest event counted from the exports is: the delay of "
                "CloudTrail, the export schedule and this area's polls together.",
                "s",
                query(
                    f"time() - max({sel('spacelift_ec2_export_newest_event_timestamp_seconds')})"
                ),
                thresholds=steps((None, "green"), (2 * 86400, "orange")),
            ),
        ],
    )
    return b.build()
