"""The dashboard rules of conventions.md section 4 (grafana/dashboard-linter's), as a function.

``lint(dashboard, metrics)`` returns a list of findings, empty when the dashboard is clean.
``metrics`` maps every metric name a query may use (as written in PromQL: ``_total``,
``_bucket``...) to its kind and labels; it comes from the exporter's own metric definitions
(plus, in tests/test_dashboards.py, the not-yet-merged areas' metrics), never a hand list here.

PromQL is read with regular expressions. That is enough because every metric this project
emits starts with ``spacelift_`` and no label name or value in our queries does; whether each
expression really parses is proven against a real Prometheus in tests/test_dashboards_e2e.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from exporter.areas.base import MetricDef

JOB = 'job=~"$job"'
ACCOUNT = 'account=~"$account"'
DATASOURCE_UID = "${datasource}"
JOB_QUERY = "label_values(spacelift_up, job)"
ACCOUNT_QUERY = 'label_values(spacelift_up{job=~"$job"}, account)'
RATE_INTERVAL = "$__rate_interval"
# Labels Prometheus adds at scrape time, and the bucket label of histograms.
TARGET_LABELS = frozenset({"job", "instance"})

SELECTOR = re.compile(r"\b(spacelift_[A-Za-z0-9_:]*)\s*(\{[^}]*\})?")
MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
RANGE = re.compile(r"\[([^\]]*)\]")
FUNCTION = re.compile(r"\b([a-z_]+)\s*\(")
LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# A counter read the only way allowed: directly inside rate()/increase() over $__rate_interval.
COUNTER_READ = re.compile(
    r"\b(?:rate|increase)\(\s*(spacelift_[A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*"
    r"\[\s*\$__rate_interval\s*\]\s*\)"
)
# Range-vector functions other than rate/increase hide counter resets or fix the window.
FORBIDDEN_FUNCTIONS = frozenset({"irate", "delta", "idelta", "deriv", "resets", "changes"})


@dataclass(frozen=True)
class Series:
    """A name usable in PromQL: its kind as Prometheus reads it, and its labels."""

    name: str
    counter: bool  # a counter, or a histogram's _bucket/_sum/_count
    labels: frozenset[str]


def series_from(defs: Iterable[MetricDef]) -> dict[str, Series]:
    """Every PromQL name the metric definitions expose."""
    out: dict[str, Series] = {}
    for d in defs:
        labels = frozenset(d.labels)
        if d.kind == "gauge":
            out[d.name] = Series(d.name, False, labels)
        elif d.kind == "counter":
            out[d.exposed_name] = Series(d.exposed_name, True, labels)
        else:
            out[d.name + "_bucket"] = Series(d.name + "_bucket", True, labels | {"le"})
            for suffix in ("_sum", "_count"):
                out[d.name + suffix] = Series(d.name + suffix, True, labels)
    return out


@dataclass(frozen=True)
class Target:
    dashboard: str
    panel: str
    ref_id: str
    expr: str
    legend: str


def panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every panel that shows data (rows are containers, and their nested panels count)."""
    for p in dashboard.get("panels", []):
        if p.get("type") == "row":
            yield from p.get("panels", [])
        else:
            yield p


def targets(dashboard: Mapping[str, Any]) -> Iterator[Target]:
    for p in panels(dashboard):
        for t in p.get("targets", []):
            yield Target(
                dashboard["uid"],
                p.get("title", ""),
                t.get("refId", ""),
                t.get("expr", ""),
                t.get("legendFormat", ""),
            )


def variables(dashboard: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def selectors(expr: str) -> list[tuple[str, dict[str, str], int, int]]:
    """(metric, {label: op+value}, start, end) of every ``spacelift_*`` selector."""
    found = []
    for m in SELECTOR.finditer(expr):
        matchers = {k: op + v for k, op, v in MATCHER.findall(m.group(2) or "")}
        found.append((m.group(1), matchers, m.start(), m.end()))
    return found


def lint_expr(expr: str, metrics: Mapping[str, Series], legend: str = "") -> list[str]:
    problems: list[str] = []
    used = selectors(expr)
    if not used:
        problems.append("no spacelift_ metric in the expression")
    if JOB not in expr or ACCOUNT not in expr:
        problems.append(f"does not filter on {JOB} and {ACCOUNT}")
    allowed_counter_spans = {(m.start(1), m.group(1)) for m in COUNTER_READ.finditer(expr)}
    known_labels: set[str] = set(TARGET_LABELS)
    for name, matchers, start, _end in used:
        series = metrics.get(name)
        if series is None:
            problems.append(f"{name} is not a metric the exporter emits")
            continue
        known_labels |= series.labels
        if matchers.get("job") != "=~$job":
            problems.append(f"{name}: selector does not filter on {JOB}")
        if "account" in series.labels and matchers.get("account") != "=~$account":
            problems.append(f"{name}: selector does not filter on {ACCOUNT}")
        for label in matchers:
            if label not in series.labels | TARGET_LABELS:
                problems.append(f"{name}: has no label {label!r}")
        if series.counter and (start, name) not in allowed_counter_spans:
            problems.append(
                f"{name} is a counter: it must sit directly inside rate() or increase() "
                f"over [{RATE_INTERVAL}]"
            )
    for window in RANGE.findall(expr):
        if window.strip() != RATE_INTERVAL:
            problems.append(f"range [{window}] must be [{RATE_INTERVAL}]")
    for func in FUNCTION.findall(expr):
        if func in FORBIDDEN_FUNCTIONS:
            problems.append(f"{func}() is not allowed: use rate() or increase()")
    for keyword, labels in LABEL_LIST.findall(expr):
        for label in (x.strip() for x in labels.split(",")):
            if label and label not in known_labels:
                problems.append(f"{keyword} ({label}): no metric in the expression has it")
    for label in LEGEND_LABEL.findall(legend):
        if label not in known_labels:
            problems.append(f"legend {{{{{label}}}}}: no metric in the expression has it")
    return problems


def lint(dashboard: Mapping[str, Any], metrics: Mapping[str, Series]) -> list[str]:
    """Every rule broken by ``dashboard``, as readable findings."""
    uid = dashboard.get("uid") or "<no uid>"
    problems: list[str] = []

    def bad(where: str, what: str) -> None:
        problems.append(f"{uid}: {where}: {what}")

    if not dashboard.get("uid"):
        bad("dashboard", "no fixed uid")
    if dashboard.get("editable") is not False:
        bad("dashboard", "editable must be false")
    if not dashboard.get("title"):
        bad("dashboard", "no title")

    v = variables(dashboard)
    ds = v.get("datasource")
    if ds is None or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        bad("variables", "needs a 'datasource' variable of type prometheus")
    for name, query in (("job", JOB_QUERY), ("account", ACCOUNT_QUERY)):
        var = v.get(name)
        if var is None:
            bad("variables", f"no '{name}' variable")
            continue
        if var.get("type") != "query" or var.get("query") != query:
            bad(f"variable {name}", f"query must be {query!r}")
        if not (var.get("multi") and var.get("includeAll")):
            bad(f"variable {name}", "must be multi-value and include All")
        if (var.get("datasource") or {}).get("uid") != DATASOURCE_UID:
            bad(f"variable {name}", f"must use the {DATASOURCE_UID} data source")
        if var.get("refresh") != 2:
            bad(f"variable {name}", "must refresh on time range change (refresh: 2)")

    ids: set[Any] = set()
    every = [*dashboard.get("panels", [])]
    every += [q for p in every if p.get("type") == "row" for q in p.get("panels", [])]
    for p in every:
        if not isinstance(p.get("id"), int) or p["id"] in ids:
            bad(f"panel {p.get('title')!r}", f"missing or duplicate id {p.get('id')}")
        ids.add(p.get("id"))
    titles: set[str] = set()
    for p in panels(dashboard):
        title = p.get("title") or ""
        where = f"panel {title!r}"
        if not title:
            bad(where, "no title")
        if title in titles:
            bad(where, "duplicate title")
        titles.add(title)
        if not (p.get("description") or "").strip():
            bad(where, "no description")
        if not ((p.get("fieldConfig") or {}).get("defaults") or {}).get("unit"):
            bad(where, "no unit")
        if (p.get("datasource") or {}).get("uid") != DATASOURCE_UID:
            bad(where, f"panel data source must be {DATASOURCE_UID}")
        ts = p.get("targets") or []
        if not ts:
            bad(where, "no targets")
        ref_ids = [t.get("refId") for t in ts]
        if len(set(ref_ids)) != len(ref_ids) or not all(ref_ids):
            bad(where, f"refIds must be set and unique, got {ref_ids}")
        for t in ts:
            tw = f"{where} target {t.get('refId')}"
            if (t.get("datasource") or {}).get("uid") != DATASOURCE_UID:
                bad(tw, f"target data source must be {DATASOURCE_UID}")
            for finding in lint_expr(t.get("expr", ""), metrics, t.get("legendFormat", "")):
                bad(tw, finding)
    return problems
