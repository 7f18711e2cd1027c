"""The Prometheus text format and OpenMetrics, written straight from a ``FamilyBuilder``.

Byte for byte what prometheus_client's ``generate_latest`` writes for the same families, in
both formats (``tests/test_textformat.py`` renders every kind both ways and compares), at a
fraction of its cost: no Metric or Sample objects, label names sorted once per family instead
of once per sample, one format string per family.

The two formats share their sample lines; only a family's HELP and TYPE lines can differ (a
counter is named ``x_total`` in the text format and ``x`` in OpenMetrics, and OpenMetrics also
escapes ``"`` in HELP). So a rendering is the text bytes plus the few header lines OpenMetrics
replaces: the OpenMetrics bytes are built from them only when a scraper asks for them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from prometheus_client import exposition as _text
from prometheus_client.core import Metric
from prometheus_client.openmetrics import exposition as _om
from prometheus_client.registry import Collector

from exporter.families import PAUSE_EVERY, FamilyBuilder, HistogramValue, MetricDef, bucket_bound

Samples = list[tuple[tuple[str, ...], Any]]

# Names the fast path writes as they are; anything else goes through prometheus_client.
_PLAIN_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
SLICE = PAUSE_EVERY  # samples written between two calls of ``pause``
_SMALL_INTS = {i: f"{i}.0" for i in range(1024)}  # go_float(i), for ints only (not -0.0)


@dataclass(frozen=True)
class Rendered:
    """Families in the text format, and the (start, end, replacement) byte spans of the header
    lines that OpenMetrics writes differently."""

    text: bytes
    om_headers: tuple[tuple[int, int, bytes], ...] = ()

    def openmetrics(self) -> bytes:
        """The same families in OpenMetrics, without its ``# EOF`` line."""
        if not self.om_headers:
            return self.text
        view = memoryview(self.text)
        pieces: list[bytes | memoryview] = []
        at = 0
        for start, end, header in self.om_headers:
            pieces += (view[at:start], header)
            at = end
        pieces.append(view[at:])
        return b"".join(pieces)


def render(
    families: Iterable[tuple[MetricDef, Samples]], pause: Callable[[], None] | None = None
) -> Rendered:
    """Write ``FamilyBuilder.grouped()``; ``pause`` is called every ``SLICE`` samples."""
    chunks: list[bytes] = []
    edits: list[tuple[int, int, bytes]] = []
    size = written = 0
    for metric, samples in families:
        if _plain(metric):
            text_head, om_head, lines = _header(metric, "text"), _header(metric, "om"), []
            for i in range(0, len(samples), SLICE):
                lines.append(_lines(metric, samples[i : i + SLICE]))
                written += min(SLICE, len(samples) - i)
                if pause is not None and written >= SLICE:
                    pause()
                    written = 0
            head = text_head.encode()
            body = head + "".join(lines).encode()
            om = om_head.encode()
        else:
            body, om, head = _fallback(metric, samples)
        if om != head:
            edits.append((size, size + len(head), om))
        chunks.append(body)
        size += len(body)
    return Rendered(b"".join(chunks), tuple(edits))


def _plain(metric: MetricDef) -> bool:
    return bool(_PLAIN_NAME.match(metric.name)) and all(
        _PLAIN_NAME.match(label) and label != "le" for label in metric.labels
    )


def _names(metric: MetricDef) -> tuple[str, str]:
    """(family name, sample name): prometheus_client drops a counter's ``_total`` and puts it
    back on its samples."""
    if metric.kind == "counter":
        base = metric.name.removesuffix("_total")
        return base, base + "_total"
    return metric.name, metric.name


def _header(metric: MetricDef, fmt: str) -> str:
    family, sample = _names(metric)
    doc = metric.help.replace("\\", r"\\").replace("\n", r"\n")
    if fmt == "om":
        doc = doc.replace('"', r"\"")
        return f"# HELP {family} {doc}\n# TYPE {family} {metric.kind}\n"
    name = sample if metric.kind == "counter" else family
    return f"# HELP {name} {doc}\n# TYPE {name} {metric.kind}\n"


def _escape(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _value(value: float, small: Callable[[int], str | None] = _SMALL_INTS.get) -> str:
    # Most values are small counts and flags (ints): a table lookup instead of formatting.
    return (small(value) if value.__class__ is int else None) or go_float(value)


def go_float(value: float) -> str:
    """prometheus_client's ``floatToGoString``: Go's formatting of a sample value."""
    d = float(value)
    s = repr(d)
    dot = s.find(".")
    if dot > 6 and d > 0:  # Go switches to exponents sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    if dot < 0:
        return _SPECIAL.get(s, s)
    return s


_SPECIAL = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


def _lines(metric: MetricDef, samples: Samples) -> str:
    _, name = _names(metric)
    labels = metric.labels
    order = sorted(range(len(labels)), key=labels.__getitem__)
    if metric.kind == "histogram":
        return "".join(_histogram_lines(metric, name, [labels[i] for i in order], order, samples))
    value = _value
    if not labels:
        return "".join([f"{name} {value(v)}\n" for _, v in samples])
    template = name + "{" + ",".join(f'{labels[i]}="%s"' for i in order) + "} %s\n"
    pick = itemgetter(*order) if len(order) > 1 else lambda values: (values[0],)
    # Label values rarely hold a quote, a backslash or a newline: write them as they are, and
    # count those characters in the result; only if a value had one, write them escaped.
    lines = "".join([template % (*pick(values), value(v)) for values, v in samples])
    if (
        "\\" in lines
        or lines.count("\n") != len(samples)
        or lines.count('"') != 2 * len(labels) * len(samples)
    ):
        lines = "".join(
            [template % (*map(_escape, pick(values)), value(v)) for values, v in samples]
        )
    return lines


def _histogram_lines(
    metric: MetricDef, name: str, names: list[str], order: list[int], samples: Samples
) -> list[str]:
    bounds = [*(bucket_bound(b) for b in metric.buckets), "+Inf"]
    with_sum = float(bounds[0]) >= 0  # prometheus_client omits _count/_sum after a negative bound
    le_at = sum(1 for n in names if n < "le")  # where "le" sorts among the label names
    out: list[str] = []
    for values, value in samples:
        if not isinstance(value, HistogramValue) or len(value.cumulative) != len(bounds):
            raise ValueError(f"{metric.name}: expected {len(bounds)} cumulative bucket counts")
        pairs = [f'{names[k]}="{_escape(values[i])}"' for k, i in enumerate(order)]
        before = "".join(p + "," for p in pairs[:le_at])
        after = "".join("," + p for p in pairs[le_at:])
        for bound, count in zip(bounds, value.cumulative, strict=True):
            out.append(f'{name}_bucket{{{before}le="{bound}"{after}}} {go_float(count)}\n')
        if with_sum and value.sum is not None:
            labelled = "{" + ",".join(pairs) + "}" if pairs else ""
            out.append(f"{name}_count{labelled} {go_float(value.cumulative[-1])}\n")
            out.append(f"{name}_sum{labelled} {go_float(value.sum)}\n")
    return out


class _One(Collector):
    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> Iterable[Metric]:
        return [self._family]


def _fallback(metric: MetricDef, samples: Samples) -> tuple[bytes, bytes, bytes]:
    """A family with a name the fast path does not write (not one of ours today):
    prometheus_client renders it. Returns (text, OpenMetrics header, text header)."""
    builder = FamilyBuilder()
    builder.declare(metric)
    for values, value in samples:
        builder.add(metric, values, value)
    one = _One(next(builder.families()))
    text: bytes = _text.generate_latest(one)
    om: bytes = _om.generate_latest(one).removesuffix(b"# EOF\n")  # type: ignore[no-untyped-call]
    # The whole family is the "header": OpenMetrics swaps all of it.
    return text, om, text
