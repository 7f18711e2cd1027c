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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.areas import parse as p
from exporter.areas.base import AreaSpec, DocumentPoller, FamilyBuilder, gauge

# Evidence: every field here is read by the official exporter (collector/aggregates.go).
DOCUMENT = """
query SpaceliftExporterAggregates {
  metrics {
    stacksCountByState { value labels }
    resourcesCountByDrift { value labels }
    avgStackSizeByResourceCount { value labels }
    averageRunDuration { value labels }
    medianRunDuration { value labels }
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

LABELLED = (
    ("stacksCountByState", STACKS_BY_STATE),
    ("resourcesCountByDrift", RESOURCES_BY_DRIFT),
)
SCALARS = (
    ("avgStackSizeByResourceCount", AVG_STACK_SIZE),
    ("averageRunDuration", AVERAGE_RUN_DURATION),
    ("medianRunDuration", MEDIAN_RUN_DURATION),
)


@dataclass(frozen=True)
class Snapshot:
    # API field -> ((label or "", value), ...) in the API's order; absent when not read
    points: Mapping[str, tuple[tuple[str, float], ...]]


def _points(raw: Any, where: str) -> tuple[tuple[str, float], ...]:
    out = []
    for i, point in enumerate(p.lst(raw, where)):
        o = p.obj(point, f"{where}[{i}]")
        labels: Sequence[Any] = p.lst(o.get("labels"), f"{where}[{i}].labels")
        label = str(labels[0]) if labels else ""
        out.append((label, p.number(o, "value", f"{where}[{i}]")))
    return tuple(out)


def parse(data: object) -> Snapshot:
    m = p.obj(p.obj(data, "data").get("metrics"), "metrics")
    fields = [name for name, _ in (*LABELLED, *SCALARS)]
    return Snapshot(
        {name: _points(m[name], f"metrics.{name}") for name in fields if m.get(name) is not None}
    )


class Poller(DocumentPoller):
    document = DOCUMENT
    root = "metrics"
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


SPEC = AreaSpec(
    name="aggregates",
    title="Account aggregates (Spacelift's `metrics`)",
    default_interval=60.0,
    create=Poller,
    documents={"SpaceliftExporterAggregates": DOCUMENT},
    metrics=(
        STACKS_BY_STATE,
        RESOURCES_BY_DRIFT,
        AVG_STACK_SIZE,
        AVERAGE_RUN_DURATION,
        MEDIAN_RUN_DURATION,
    ),
    permission="Any key on current SaaS; older self-hosted releases refuse `metrics` to API "
    "keys (`not available for machine sessions`), reported as a permission gap.",
)
