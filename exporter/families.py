"""Metric definitions and the family builder: what collectors emit, below every area.

``MetricDef`` (with the ``gauge``/``counter``/``histogram`` helpers) names one family; a
collector adds samples to a ``FamilyBuilder``, which groups them by family for rendering.
Areas, health and the exporter's self-metrics all build on this module, and it imports
nothing of the exporter, so the flow reads one way: definitions -> areas -> app.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

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
class HistogramValue:
    """Cumulative bucket counts aligned with ``MetricDef.buckets`` (+Inf last), and the sum."""

    cumulative: tuple[float, ...]
    sum: float


PAUSE_EVERY = 1000  # samples: about a millisecond of collecting or writing


class FamilyBuilder:
    """Collects samples of many areas and accounts into one family per metric name.

    Several accounts emit the same metric; Prometheus wants each family once, so samples are
    grouped here by definition; ``exporter.textformat`` writes them out.
    """

    def __init__(self, pause: Callable[[], None] | None = None) -> None:
        """``pause``: called every ``PAUSE_EVERY`` samples added (the exposition lets
        scrapes take the GIL there)."""
        # Keyed by the definition's identity: hashing a MetricDef (a tuple of every field)
        # for each of 60,000 samples cost more than the rest of add(). Equal definitions
        # added through different objects are merged in grouped().
        self._samples: dict[int, tuple[MetricDef, list[tuple[tuple[str, ...], Any]]]] = {}
        self.pause = pause
        self._countdown = PAUSE_EVERY

    def add(self, metric: MetricDef, labels: Sequence[str], value: float | HistogramValue) -> None:
        if len(labels) != len(metric.labels):
            raise ValueError(f"{metric.name}: expected labels {metric.labels}, got {labels}")
        if self.pause is not None:
            self._countdown -= 1
            if not self._countdown:
                self._countdown = PAUSE_EVERY
                self.pause()
        entry = self._samples.get(id(metric))
        if entry is None:
            entry = self._samples[id(metric)] = (metric, [])
        entry[1].append((tuple(labels), value))

    def declare(self, metric: MetricDef) -> None:
        """Emit the family even with no samples (HELP/TYPE only), so it is discoverable."""
        if id(metric) not in self._samples:
            self._samples[id(metric)] = (metric, [])

    def extend(self, other: FamilyBuilder) -> None:
        for key, (metric, samples) in other._samples.items():
            if key in self._samples:
                self._samples[key][1].extend(samples)
            else:
                self._samples[key] = (metric, list(samples))

    def grouped(self) -> Iterator[tuple[MetricDef, list[tuple[tuple[str, ...], Any]]]]:
        """Each family once: its definition and its (label values, value) samples, in order.

        Definitions sharing a name (an option that adds labels, set differently per account)
        become one family over the union of their labels; a label a sample lacks is empty,
        which Prometheus reads as absent.
        """
        by_def: dict[MetricDef, list[tuple[tuple[str, ...], Any]]] = {}
        for metric, samples in self._samples.values():
            if metric in by_def:
                by_def[metric] = by_def[metric] + samples
            else:
                by_def[metric] = samples
        by_name: dict[str, list[MetricDef]] = {}
        for metric in by_def:
            by_name.setdefault(metric.name, []).append(metric)
        for defs in by_name.values():
            if len(defs) == 1:
                yield defs[0], by_def[defs[0]]
                continue
            labels = tuple(dict.fromkeys(label for d in defs for label in d.labels))
            samples = []
            for d in defs:
                for values, value in by_def[d]:
                    given = dict(zip(d.labels, values, strict=True))
                    samples.append((tuple(given.get(label, "") for label in labels), value))
            yield replace(defs[0], labels=labels), samples

    def families(self) -> Iterator[Metric]:
        """The families as prometheus_client objects (what ``exporter.textformat`` must match)."""
        for metric, samples in self.grouped():
            yield _family(metric, samples)


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
    bounds = [*(bucket_bound(b) for b in metric.buckets), "+Inf"]
    for values, value in samples:
        buckets = list(zip(bounds, value.cumulative, strict=True))
        h.add_metric(list(values), buckets, value.sum)
    return h


def bucket_bound(bound: float) -> str:
    """The ``le`` label of a bucket."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))
