"""The direct writer of both exposition formats is byte-identical to prometheus_client's."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pytest
from prometheus_client import exposition as text_format
from prometheus_client.core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from exporter.families import FamilyBuilder, HistogramValue, MetricDef, counter, gauge, histogram
from exporter.textformat import render


class _Families(Collector):
    def __init__(self, builder: FamilyBuilder) -> None:
        self._families = list(builder.families())

    def collect(self) -> Iterable[Metric]:
        return self._families


def assert_identical(builder: FamilyBuilder) -> None:
    ours = render(builder.grouped())
    theirs = _Families(builder)
    assert ours.text.decode() == text_format.generate_latest(theirs).decode()
    om: bytes = openmetrics.generate_latest(theirs)  # type: ignore[no-untyped-call]
    assert (ours.openmetrics() + b"# EOF\n").decode() == om.decode()


def every_kind() -> FamilyBuilder:
    out = FamilyBuilder()
    g = gauge("spacelift_test_gauge", 'Help with "quotes", a \\ backslash\nand a newline.', "zeta")
    out.add(g, ("acc", "z1"), 1)
    out.add(g, ("a\\b", 'quote "here"'), 0.5)
    out.add(g, ("new\nline", "ünïcödé ✓"), -3)
    for v in (math.nan, math.inf, -math.inf, -0.0, 1e-07, 123456789.0, 1733000000.25, 2**70):
        out.add(g, ("acc", repr(v)), v)
    out.add(g, ("acc", "bool"), True)
    c = counter("spacelift_test_events_total", 'Events (help has a " quote).', "kind")
    out.add(c, ("acc", "a"), 3)
    out.add(c, ("acc", "b"), 0)
    out.add(MetricDef("spacelift_raw_count", "counter", "No labels at all.", ()), (), 7)
    out.add(MetricDef("spacelift_raw_gauge", "gauge", "Unlabelled.", ()), (), math.nan)
    out.declare(gauge("spacelift_test_empty", "Declared, no samples."))
    out.declare(counter("spacelift_test_empty_events", "Declared counter."))
    out.declare(histogram("spacelift_test_empty_seconds", "Declared histogram.", (1.0,)))
    h = histogram("spacelift_test_seconds", "A histogram.", (0.05, 1.0, 2.5e6), "op", "alpha")
    out.add(h, ("acc", "query", "x"), HistogramValue((1, 2, 3, 4), 10.5))
    out.add(h, ('a"cc', "q\\", "y\n"), HistogramValue((0, 0, 0, 0), 0))
    out.add(h, ("acc", "nan", "z"), HistogramValue((0, math.nan, math.inf, 5), math.nan))
    bare = MetricDef("spacelift_bare_seconds", "histogram", "No labels.", (), (0.1, math.inf))
    out.add(bare, (), HistogramValue((1, 2, 2), 0.3))
    neg = MetricDef("spacelift_neg_delta", "histogram", "Negative bound.", ("account",), (-1.0,))
    out.add(neg, ("acc",), HistogramValue((1, 2), -4.0))  # no _count/_sum, as upstream
    # Merged label sets: one name, two definitions (an option set differently per account).
    narrow = gauge("spacelift_test_info", "Merged.", "stack_id")
    wide = gauge("spacelift_test_info", "Merged.", "stack_id", "label_team", "label_env")
    out.add(narrow, ("one", "s1"), 1)
    out.add(wide, ("two", "s2", "core", "prod"), 1)
    out.add(narrow, ("three", "s3"), 1)
    # Names outside the plain set take prometheus_client's own path.
    out.add(MetricDef("spacelift:odd", "gauge", "Colon.", ("le",)), ("1",), 2)
    return out


def test_every_kind_is_byte_identical_in_both_formats() -> None:
    assert_identical(every_kind())


def test_an_empty_builder_renders_nothing() -> None:
    assert_identical(FamilyBuilder())
    assert render(FamilyBuilder().grouped()).text == b""


def test_a_histogram_with_the_wrong_bucket_count_is_refused() -> None:
    out = FamilyBuilder()
    out.add(histogram("spacelift_x_seconds", "x", (1.0,)), ("acc",), HistogramValue((1,), 1.0))
    with pytest.raises(ValueError, match="bucket"):
        render(out.grouped())


def test_equal_definitions_from_different_objects_are_one_family() -> None:
    """Two collectors (or accounts) building the same definition separately share a family."""
    out, other = FamilyBuilder(), FamilyBuilder()
    out.add(gauge("spacelift_test_pools", "Pools.", "pool"), ("a", "p1"), 1)
    other.add(gauge("spacelift_test_pools", "Pools.", "pool"), ("b", "p2"), 2)
    out.extend(other)
    text = render(out.grouped()).text.decode()
    assert text.count("# TYPE spacelift_test_pools gauge") == 1
    assert 'account="a",pool="p1"} 1.0' in text and 'account="b",pool="p2"} 2.0' in text
    assert_identical(out)
