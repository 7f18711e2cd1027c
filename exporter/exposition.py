"""Rendered /metrics bytes.

The Spacelift part (every area's snapshot plus poll health) is rendered once per change, in
both formats and part by part, and scrapes serve those bytes: a scrape costs the same
whatever the account's size and never calls Spacelift. The small process part (the
exporter's own API counters, CPU, memory) is rendered per scrape so it is current.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_format
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from exporter.families import FamilyBuilder

OPENMETRICS_TYPE = openmetrics.CONTENT_TYPE_LATEST
TEXT_TYPE = text_format.CONTENT_TYPE_LATEST
_EOF = b"# EOF\n"


class _Families(Collector):
    def __init__(self, families: Iterable[object]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[object]:  # type: ignore[override]
        return self._families


class Exposition:
    """The exposition in parts (poll health, then one part per area), each re-rendered only
    when its data changes: a worker-pool poll does not re-render 10,000 stacks.

    Parts never share a metric name (each metric belongs to one area), so concatenating
    their renderings is a valid exposition in either format.
    """

    def __init__(
        self, parts: dict[str, Callable[[FamilyBuilder], None]], live: CollectorRegistry
    ) -> None:
        self._parts = parts
        self._live = live
        self._lock = threading.Lock()
        self._rendered: dict[str, tuple[bytes, bytes]] = dict.fromkeys(parts, (b"", b""))

    def refresh(self, *names: str) -> None:
        """Re-render the named parts (all of them when none is named)."""
        for name in names or tuple(self._parts):
            out = FamilyBuilder()
            self._parts[name](out)
            fams = _Families(out.families())
            text = text_format.generate_latest(fams)
            om: bytes = openmetrics.generate_latest(fams)  # type: ignore[no-untyped-call]
            with self._lock:  # both formats swap together
                self._rendered[name] = (text, om.removesuffix(_EOF))

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition for a scrape, in the format its Accept header prefers."""
        with self._lock:
            rendered = list(self._rendered.values())
        if _wants_openmetrics(accept):
            live: bytes = openmetrics.generate_latest(self._live)  # type: ignore[no-untyped-call]
            return b"".join(om for _, om in rendered) + live, OPENMETRICS_TYPE
        body = b"".join(text for text, _ in rendered)
        return body + text_format.generate_latest(self._live), TEXT_TYPE


def _wants_openmetrics(accept: str | None) -> bool:
    # prometheus_client's own negotiation: OpenMetrics when the scraper lists it.
    _, content_type = text_format.choose_encoder(accept or "")
    return content_type.startswith("application/openmetrics-text")
