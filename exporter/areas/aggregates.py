"""Account-wide aggregates from Spacelift's ``metrics`` field: one cheap request.

The names, labels and units are those of Spacelift's official exporter
(spacelift-io/prometheus-exporter ``collector/aggregates.go``), so dashboards built on it keep
working here. Its values are served as the API gives them: the two run durations are in
**nanoseconds** (the official fixtures hold ``187000000000`` for about three minutes) and are
computed by Spacelift over a server-side window the caller cannot choose.

A single-valued aggregate comes back as a list; an empty list means the account has no data
yet, and its series is omitted rather than reported as zero (as the official exporter does).
Where ``Stack.state`` is refused to the key, ``spacelift_current_stacks_count_by_state`` is
where per-state stack counts come from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.areas import parse as p
from exporter.areas.base import AreaSpec, DocumentPoller, FamilyBuilder, gauge

# Evidence: the official exporter reads the first five (collector/aggregates.go); the two run
# lists only an unmerged official-exporter PR reads, so they are optional.
DOCUMENT = """
query SpaceliftExporterAggregates {
  metrics {
    stacksCountByState { value labels }
    resourcesCountByDrift { value labels }
    avgStackSizeByResourceCount { value labels }
    averageRunDuration { value labels }
    medianRunDuration { value labels }
    runsRequiringAttention { id }
    needsApprovalRuns { id }
  }
}
"""

STACKS_BY_STATE = gauge(
    "spacelift_current_stacks_count_by_state",
    "Stacks in each state, counted by Spacelift for the whole account, at the last poll.",
    "state",
)
RESOURCES_BY_DRIFT = gauge(
    "spacelift_current_resources_count_by_drift",
    "Managed resources by drift state (DRIFTED or IN_SYNC), counted by Spacelift, at the last "
    "poll.",
    "state",
)
AVG_STACK_SIZE = gauge(
    "spacelift_current_avg_stack_size_by_resource_count",
    "Average number of resources per stack, computed by Spacelift, at the last poll.",
)
AVERAGE_RUN_DURATION = gauge(
    "spacelift_current_average_run_duration",
    "Average run duration in NANOSECONDS over Spacelift's own recent window (the official "
    "exporter's name and unit), at the last poll.",
)
MEDIAN_RUN_DURATION = gauge(
    "spacelift_current_median_run_duration",
    "Median run duration in NANOSECONDS over Spacelift's own recent window (the official "
    "exporter's name and unit), at the last poll.",
)

RUNS_REQUIRING_ATTENTION = gauge(
    "spacelift_current_runs_requiring_attention",
    "Runs Spacelift lists as requiring attention (its dashboard's list), at the last poll.",
)
RUNS_NEEDING_APPROVAL = gauge(
    "spacelift_current_runs_needing_approval",
    "Runs Spacelift lists as needing approval, at the last poll.",
)

LABELLED = (
    ("stacksCountByState", STACKS_BY_STATE),
    ("resourcesCountByDrift", RESOURCES_BY_DRIFT),
)
SCALARS = (
    ("avgStackSizeByResourceCount", AVG_STACK_SIZE),
    ("averageRunDuration", AVERAGE_RUN_DURATION),
    ("medianRunDuration", MEDIAN_RUN_DURATION),
)


METRICS = (
    STACKS_BY_STATE,
    RESOURCES_BY_DRIFT,
    AVG_STACK_SIZE,
    AVERAGE_RUN_DURATION,
    MEDIAN_RUN_DURATION,
    RUNS_REQUIRING_ATTENTION,
    RUNS_NEEDING_APPROVAL,
)
LISTS = (
    ("runsRequiringAttention", RUNS_REQUIRING_ATTENTION),
    ("needsApprovalRuns", RUNS_NEEDING_APPROVAL),
)


@dataclass(frozen=True)
class Snapshot:
    # API field -> ((label or "", value), ...) in the API's order; absent when not read
    points: Mapping[str, tuple[tuple[str, float], ...]]
    lengths: Mapping[str, int] = field(default_factory=dict)  # run lists: how many runs


def _points(raw: Any, where: str) -> tuple[tuple[str, float], ...]:
    out = []
    for i, point in enumerate(p.lst(raw, where)):
        o = p.obj(point, f"{where}[{i}]")
        labels = p.strings(o.get("labels"), f"{where}[{i}].labels")  # bounded: label values
        label = labels[0] if labels else ""
        out.append((label, p.number(o, "value", f"{where}[{i}]")))
    return tuple(out)


def parse(data: object) -> Snapshot:
    d = p.obj(data, "data")
    if "metrics" not in d:  # left out: the server lacks or refuses it (see FieldGate)
        return Snapshot({})
    m = p.obj(d.get("metrics"), "metrics")
    fields = [name for name, _ in (*LABELLED, *SCALARS)]
    return Snapshot(
        {name: _points(m[name], f"metrics.{name}") for name in fields if m.get(name) is not None},
        {name: len(p.lst(m[name], f"metrics.{name}")) for name, _ in LISTS if name in m},
    )


class Poller(DocumentPoller):
    document = DOCUMENT
    root = "metrics"
    # Older self-hosted releases lack ``metrics`` or refuse it to API keys: the area then
    # serves nothing and reports the field, which is not an outage.
    optional = {
        "Query.metrics": METRICS,
        "Metrics.runsRequiringAttention": (RUNS_REQUIRING_ATTENTION,),
        "Metrics.needsApprovalRuns": (RUNS_NEEDING_APPROVAL,),
    }
    parse = staticmethod(parse)

    def collect(self, snapshot: Snapshot, out: FamilyBuilder) -> None:
        a = self.account
        for m in SPEC.metrics:
            out.declare(m)
        for name, metric in LABELLED:
            seen: dict[str, float] = {}
            for label, value in snapshot.points.get(name, ()):
                if label:  # a point without its label names nothing (as upstream skips it)
                    seen[label] = seen.get(label, 0.0) + value
            for label, value in sorted(seen.items()):
                out.add(metric, (a, label), value)
        for name, metric in SCALARS:
            points = snapshot.points.get(name, ())
            if points:
                out.add(metric, (a,), points[0][1])
        for name, metric in LISTS:
            if name in snapshot.lengths:
                out.add(metric, (a,), snapshot.lengths[name])


SPEC = AreaSpec(
    name="aggregates",
    title="Account aggregates (Spacelift's `metrics`)",
    default_interval=60.0,
    create=Poller,
    documents={"SpaceliftExporterAggregates": DOCUMENT},
    metrics=METRICS,
    optional=Poller.optional,
    permission="Any key on current SaaS; older self-hosted releases lack `metrics` or refuse "
    "it to API keys (`not available for machine sessions`), reported as "
    '`spacelift_api_field_unavailable{field="Query.metrics"}`.',
)
