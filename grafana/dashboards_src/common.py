"""Pieces every dashboard shares: the variables, the selector, and panel helpers.

Every helper takes a title, a description and a unit, so a panel cannot be built without them
(the dashboard linter in tests/test_dashboards.py checks the JSON as well). Every metric
selector goes through ``sel``, which always filters on the ``job`` and ``account`` variables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAG = "spacelift"

# The two filters every selector carries: the exporter's scrape job(s) and the account(s).
FILTERS = 'job=~"$job", account=~"$account"'

# Pools, stacks and keys are keyed by their id plus the target they came from, so two
# exporters (an HA pair) or two accounts never make a join many-to-many.
ON_STACK = "on (job, instance, account, stack_id)"
ON_KEY = "on (job, instance, account, api_key_id)"


def sel(metric: str, *matchers: str) -> str:
    """``metric{job=~"$job", account=~"$account", <matchers>}``."""
    extra = "".join(", " + m for m in matchers)
    return f"{metric}{{{FILTERS}{extra}}}"


def rate(metric: str, *matchers: str) -> str:
    """``rate(counter{filters}[$__rate_interval])``: counters are only ever read like this."""
    return f"rate({sel(metric, *matchers)}[$__rate_interval])"


def increase(metric: str, *matchers: str) -> str:
    return f"increase({sel(metric, *matchers)}[$__rate_interval])"


def quantile(q: float, histogram: str, by: str = "", *matchers: str) -> str:
    """``histogram_quantile`` over the rate of ``<histogram>_bucket``, grouped by ``le, by``."""
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) ({rate(histogram + '_bucket', *matchers)}))"


def query(
    expr: str, legend: str = "", *, instant: bool = False, table_format: bool = False
) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    q = q.instant() if instant else q.range()
    if table_format:
        q = q.format(pm.PromQueryFormat.TABLE)
    return q


def _common(
    panel: Any, title: str, description: str, unit: str, targets: Sequence[prometheus.Dataquery]
) -> Any:
    if not (title and description and unit and targets):
        raise ValueError(f"panel {title!r}: title, description, unit and a target are required")
    panel = panel.title(title).description(description).unit(unit).datasource(DATASOURCE)
    for i, target in enumerate(targets):
        panel = panel.with_target(target.ref_id(chr(ord("A") + i)))
    return panel


def graph(
    title: str,
    description: str,
    unit: str,
    *targets: prometheus.Dataquery,
    w: int = 12,
    h: int = 8,
    stacked: bool = False,
    bars: bool = False,
    min_zero: bool = True,
    max_value: float | None = None,
) -> timeseries.Panel:
    p: timeseries.Panel = _common(timeseries.Panel(), title, description, unit, targets)
    p = (
        p.span(w)
        .height(h)
        .fill_opacity(20 if stacked or bars else 10)
        .legend(
            cb.VizLegendOptions()
            .show_legend(True)
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.RIGHT if w >= 12 else cm.LegendPlacement.BOTTOM)
            .calcs(["lastNotNull", "max"])
        )
    )
    if min_zero:
        p = p.min(0)
    if max_value is not None:
        p = p.max(max_value)
    if stacked:
        p = p.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    if bars:
        p = p.draw_style(cm.GraphDrawStyle.BARS)
    return p


def steps(*pairs: tuple[float | None, str]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for v, c in pairs])
    )


OK_STEPS = steps((None, "green"))
# Anything above zero is a problem worth colour.
BAD_IF_ANY = steps((None, "green"), (1, "red"))
WARN_IF_ANY = steps((None, "green"), (1, "orange"))


def single(
    title: str,
    description: str,
    unit: str,
    *targets: prometheus.Dataquery,
    w: int = 4,
    h: int = 4,
    thresholds: db.ThresholdsConfig | None = None,
    mappings: Mapping[str, tuple[str, str]] | None = None,
    graph_mode: bool = False,
) -> stat.Panel:
    """A stat panel: the last value of each series, coloured by ``thresholds``."""
    p: stat.Panel = _common(stat.Panel(), title, description, unit, targets)
    p = (
        p.span(w)
        .height(h)
        .thresholds(thresholds or OK_STEPS)
        .color_mode(cm.BigValueColorMode.BACKGROUND if thresholds else cm.BigValueColorMode.VALUE)
        .graph_mode(cm.BigValueGraphMode.AREA if graph_mode else cm.BigValueGraphMode.NONE)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if mappings:
        p = p.mappings(value_text(mappings))
    return p


def value_text(mappings: Mapping[str, tuple[str, str]]) -> list[dm.ValueMapping]:
    """``{"1": ("UP", "green")}`` -> a Grafana value mapping."""
    options = {
        value: dm.ValueMappingResult(text=text, color=color, index=i)
        for i, (value, (text, color)) in enumerate(sorted(mappings.items()))
    }
    return [dm.ValueMap(options=options)]


def bar_gauge(
    title: str,
    description: str,
    unit: str,
    *targets: prometheus.Dataquery,
    w: int = 8,
    h: int = 8,
    thresholds: db.ThresholdsConfig | None = None,
) -> bargauge.Panel:
    p: bargauge.Panel = _common(bargauge.Panel(), title, description, unit, targets)
    return (
        p.span(w)
        .height(h)
        .min(0)
        .thresholds(thresholds or OK_STEPS)
        .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def grid(
    title: str,
    description: str,
    unit: str,
    *targets: prometheus.Dataquery,
    columns: Mapping[str, str],
    sort_by: str | None = None,
    descending: bool = True,
    w: int = 12,
    h: int = 8,
    column_units: Mapping[str, str] | None = None,
    column_mappings: Mapping[str, Mapping[str, tuple[str, str]]] | None = None,
    pivot: tuple[str, str] | None = None,
    thresholds: db.ThresholdsConfig | None = None,
    nan_text: str | None = None,
) -> table.Panel:
    """A table of instant queries.

    ``columns`` maps the frame's field names to the headers shown, in order; every other
    field (Time, job, instance, __name__...) is hidden. Several targets are merged into one
    row per label set (their values are ``Value #A``, ``Value #B``...). ``pivot=(row, col)``
    turns a ``sum by (row, col)`` into a matrix instead. ``thresholds`` colour the cells of
    the column ``sort_by``; ``column_mappings`` show values of a column as coloured words;
    ``nan_text`` is shown instead of NaN (a value the query marks as unknown).
    """
    p: table.Panel = _common(table.Panel(), title, description, unit, targets)
    p = p.span(w).height(h).filterable(True)
    if thresholds is not None:
        if sort_by is None:
            raise ValueError(f"panel {title!r}: thresholds colour the sort_by column")
        p = p.thresholds(thresholds).override_by_name(sort_by, [_CELL_BACKGROUND])
    transformations: list[dm.DataTransformerConfig] = []
    if pivot is not None:
        row, col = pivot
        transformations.append(
            dm.DataTransformerConfig(
                id_val="groupingToMatrix",
                options={"rowField": row, "columnField": col, "valueField": "Value"},
            )
        )
    else:
        if len(targets) > 1:
            transformations.append(dm.DataTransformerConfig(id_val="merge", options={}))
        transformations.append(_organize(columns))
    for t in transformations:
        p = p.with_transformation(t)
    if sort_by is not None:
        p = p.sort_by([cb.TableSortByFieldState().display_name(sort_by).desc(descending)])
    for field, unit_name in sorted((column_units or {}).items()):
        p = p.override_by_name(field, [dm.DynamicConfigValue(id_val="unit", value=unit_name)])
    if nan_text is not None:
        p = p.mappings(
            [
                dm.SpecialValueMap(
                    options=dm.DashboardSpecialValueMapOptions(
                        match=dm.SpecialValueMatch.NA_N,
                        result=dm.ValueMappingResult(text=nan_text, color="text", index=0),
                    )
                )
            ]
        )
    for field, mapping in sorted((column_mappings or {}).items()):
        p = p.override_by_name(
            field,
            [
                dm.DynamicConfigValue(id_val="mappings", value=value_text(mapping)),
                _CELL_BACKGROUND,
            ],
        )
    return p


_CELL_BACKGROUND = dm.DynamicConfigValue(
    id_val="custom.cellOptions", value={"type": "color-background", "mode": "basic"}
)


def _organize(columns: Mapping[str, str]) -> dm.DataTransformerConfig:
    hidden = ["Time", "__name__", "job", "instance"]
    return dm.DataTransformerConfig(
        id_val="organize",
        options={
            "excludeByName": {name: True for name in hidden if name not in columns},
            "indexByName": {name: i for i, name in enumerate(columns)},
            "renameByName": dict(columns),
        },
    )


# A wall dashboard opens on every job and every account.
ALL_SELECTED = dm.VariableOption(selected=True, text=["All"], value=["$__all"])


def variables() -> list[cogbuilder.Builder[dm.VariableModel]]:
    """``datasource``, ``job`` and ``account``, as the dashboard linter wants them."""
    return [
        db.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .description("The Prometheus that scrapes spacelift-exporter."),
        _pick_many(
            "job",
            "Job",
            "The scrape job(s) of spacelift-exporter.",
            "label_values(spacelift_up, job)",
        ),
        _pick_many(
            "account",
            "Account",
            "Spacelift account(s), as named in the exporter's configuration.",
            'label_values(spacelift_up{job=~"$job"}, account)',
        ),
    ]


def _pick_many(name: str, label: str, description: str, values: str) -> db.QueryVariable:
    """A multi-value query variable opening on All (".+", so every target keeps matching)."""
    return (
        db.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .query(values)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".+")
        .current(ALL_SELECTED)
    )


class Board:
    """A dashboard under construction: rows of panels, numbered in order."""

    def __init__(self, uid: str, title: str, description: str) -> None:
        self.uid = uid
        self._next_id = 1
        self.builder = (
            db.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags([TAG])
            .readonly()
            .time("now-6h", "now")
            .refresh("1m")
            .timezone("browser")
            .tooltip(dm.DashboardCursorSync.CROSSHAIR)
            .variables(variables())
            .link(
                db.DashboardLink("Spacelift dashboards")
                .type(dm.DashboardLinkType.DASHBOARDS)
                .tags([TAG])
                .as_dropdown(True)
                .include_vars(True)
                .keep_time(True)
            )
        )

    def _id(self) -> int:
        n = self._next_id
        self._next_id += 1
        return n

    def row(self, title: str, panels: Iterable[Any]) -> Board:
        self.builder = self.builder.with_row(db.Row(title).id(self._id()))
        for panel in panels:
            self.builder = self.builder.with_panel(panel.id(self._id()))
        return self

    def build(self) -> dm.Dashboard:
        return self.builder.build()


def is_(label: str, value: str) -> str:
    """The matcher ``label="value"``."""
    return f'{label}="{value}"'


def matches(label: str, value: str) -> str:
    """The matcher ``label=~"regex"``."""
    return f'{label}=~"{value}"'
