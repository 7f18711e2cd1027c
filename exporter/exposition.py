"""Rendered /metrics bytes.

The Spacelift part (every area's snapshot plus poll health) is rendered once per change, in
both formats, and scrapes serve those bytes: a scrape costs the same whatever the account's
size and never calls Spacelift. The small process part (the exporter's own API counters,
CPU, memory) is rendered per scrape so it is current.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_format
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from exporter.areas.base import FamilyBuilder

OPENMETRICS_TYPE = openmetrics.CONTENT_TYPE_LATEST
TEXT_TYPE = text_format.CONTENT_TYPE_LATEST
_EOF = b"# EOF\n"


class _Families(Collector):
    def __init__(self, families: Iterable[object]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[object]:  # type: ignore[override]
        return self._families


class Exposition:
    def __init__(self, build: Callable[[FamilyBuilder], None], live: CollectorRegistry) -> None:
        self._build = build
        self._live = live
        self._lock = threading.Lock()
        self._text = b""
        self._openmetrics = b""

    def refresh(self) -> None:
        """Re-render the Spacelift part; called after every poll."""
        out = FamilyBuilder()
        self._build(out)
        fams = _Families(out.families())
        text = text_format.generate_latest(fams)
        om: bytes = openmetrics.generate_latest(fams)  # type: ignore[no-untyped-call]
        if om.endswith(_EOF):
            om = om[: -len(_EOF)]
        with self._lock:  # swap both together
            self._text, self._openmetrics = text, om

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition for a scrape, in the format its Accept header prefers."""
        with self._lock:
            text, om = self._text, self._openmetrics
        if _wants_openmetrics(accept):
            live: bytes = openmetrics.generate_latest(self._live)  # type: ignore[no-untyped-call]
            return om + live, OPENMETRICS_TYPE
        return text + text_format.generate_latest(self._live), TEXT_TYPE


def _wants_openmetrics(accept: str | None) -> bool:
    # prometheus_client's own negotiation: OpenMetrics when the scraper lists it.
    _, content_type = text_format.choose_encoder(accept or "")
    return content_type.startswith("application/openmetrics-text")
