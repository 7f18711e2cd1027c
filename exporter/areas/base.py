"""What every Spacelift area provides, and the pieces they share.

An area (worker pools, usage, stacks, runs, access) owns its GraphQL documents, its parser and
its metric definitions. The pipeline only knows this interface:

- ``AreaSpec`` describes the area: name, default interval, options, documents, metrics and the
  Spacelift permission it needs (the README's permission table is read from here).
- ``spec.create(ctx)`` builds one poller per account. ``poller.poll(client)`` does the I/O and
  returns an immutable snapshot (or raises a ``SpaceliftError``); ``poller.collect(snapshot,
  out)`` turns a snapshot into samples and does no I/O.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

if TYPE_CHECKING:
    from exporter.client import SpaceliftClient
    from exporter.config import HttpConfig

MetricKind = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True)
class MetricDef:
    """One metric family the exporter emits. ``name`` excludes ``_total`` for counters."""

    name: str
    kind: MetricKind
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()

    @property
    def exposed_name(self) -> str:
        """The name as users see it in PromQL (counters gain ``_total``)."""
        return self.name + "_total" if self.kind == "counter" else self.name


def gauge(name: str, help: str, *labels: str) -> MetricDef:
    return MetricDef(name, "gauge", help, ("account", *labels))


def counter(name: str, help: str, *labels: str) -> MetricDef:
    if name.endswith("_total"):
        name = name[: -len("_total")]
    return MetricDef(name, "counter", help, ("account", *labels))


def histogram(name: str, help: str, buckets: Sequence[float], *labels: str) -> MetricDef:
    return MetricDef(name, "histogram", help, ("account", *labels), tuple(buckets))


@dataclass(frozen=True)
class OptionSpec:
    """An area option accepted in the config file under ``areas.<area>.<name>``."""

    type: type | tuple[type, ...]
    default: Any
    help: str


@dataclass(frozen=True)
class HistogramValue:
    """Cumulative bucket counts aligned with ``MetricDef.buckets`` (+Inf last), and the sum."""

    cumulative: tuple[float, ...]
    sum: float


class FamilyBuilder:
    """Collects samples of many areas and accounts into one family per metric name.

    Several accounts emit the same metric; Prometheus wants each family once, so samples are
    grouped here by definition and turned into prometheus_client families at the end.
    """

    def __init__(self) -> None:
        self._samples: dict[MetricDef, list[tuple[tuple[str, ...], Any]]] = {}

    def add(self, metric: MetricDef, labels: Sequence[str], value: float | HistogramValue) -> None:
        if len(labels) != len(metric.labels):
            raise ValueError(f"{metric.name}: expected labels {metric.labels}, got {labels}")
        self._samples.setdefault(metric, []).append((tuple(labels), value))

    def declare(self, metric: MetricDef) -> None:
        """Emit the family even with no samples (HELP/TYPE only), so it is discoverable."""
        self._samples.setdefault(metric, [])

    def extend(self, other: FamilyBuilder) -> None:
        for metric, samples in other._samples.items():
            self._samples.setdefault(metric, []).extend(samples)

    def families(self) -> Iterator[Metric]:
        # Definitions sharing a name (an option that adds labels, set differently per
        # account) become one family over the union of their labels; a label a sample
        # lacks is empty, which Prometheus reads as absent.
        by_name: dict[str, list[MetricDef]] = {}
        for metric in self._samples:
            by_name.setdefault(metric.name, []).append(metric)
        for defs in by_name.values():
            if len(defs) == 1:
                yield _family(defs[0], self._samples[defs[0]])
                continue
            labels = tuple(dict.fromkeys(label for d in defs for label in d.labels))
            merged = replace(defs[0], labels=labels)
            samples = []
            for d in defs:
                for values, value in self._samples[d]:
                    given = dict(zip(d.labels, values, strict=True))
                    samples.append((tuple(given.get(label, "") for label in labels), value))
            yield _family(merged, samples)


def _family(metric: MetricDef, samples: Iterable[tuple[tuple[str, ...], Any]]) -> Metric:
    labels = list(metric.labels)
    if metric.kind == "gauge":
        g = GaugeMetricFamily(metric.name, metric.help, labels=labels)
        for values, value in samples:
            g.add_metric(list(values), float(value))
        return g
    if metric.kind == "counter":
        c = CounterMetricFamily(metric.name, metric.help, labels=labels)
        for values, value in samples:
            c.add_metric(list(values), float(value))
        return c
    h = HistogramMetricFamily(metric.name, metric.help, labels=labels)
    bounds = [*(_fmt_bound(b) for b in metric.buckets), "+Inf"]
    for values, value in samples:
        buckets = list(zip(bounds, value.cumulative, strict=True))
        h.add_metric(list(values), buckets, value.sum)
    return h


def _fmt_bound(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class Snapshot(Protocol):
    """Marker for area snapshots: frozen dataclasses, replaced whole on every good poll."""


class Poller(Protocol):
    def poll(self, client: SpaceliftClient) -> Any: ...

    def collect(self, snapshot: Any, out: FamilyBuilder) -> None: ...


@dataclass(frozen=True)
class AreaContext:
    """What an area's poller is built from: its account and its validated options."""

    account: str
    options: Mapping[str, Any]
    state: Any = None  # area-owned persistent state (the run ledger), restored by the app
    clock: Callable[[], float] = time.time  # "now" for ages and baselines (tests inject one)
    # Timeouts, retries and the poll budget, for areas whose I/O is not the Spacelift client
    # (ec2_ownership reads S3): they apply the same limits to it.
    http: HttpConfig | None = None


class DocumentPoller:
    """Poller of an area answered by one query document under one root field.

    Subclasses set ``document`` and ``root`` and provide ``parse(data)`` and ``collect``.
    """

    document: ClassVar[str]
    root: ClassVar[str]

    def __init__(self, ctx: AreaContext) -> None:
        self.account = ctx.account
        self.options = ctx.options

    def poll(self, client: SpaceliftClient) -> Any:
        return self.parse(client.query(self.document).require(self.root))

    def parse(self, data: Mapping[str, Any]) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class AreaSpec:
    name: str
    title: str
    default_interval: float
    create: Callable[[AreaContext], Poller]
    documents: Mapping[str, str]
    metrics: tuple[MetricDef, ...]
    permission: str
    options: Mapping[str, OptionSpec] = field(default_factory=dict)
    enabled_by_default: bool = True
    # Checked when the area is enabled: (option, problem) for a config error naming
    # ``areas.<area>.<option>``, or None. For what types alone cannot say.
    check: Callable[[Mapping[str, Any]], tuple[str, str] | None] | None = None
