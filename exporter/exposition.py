"""Rendered /metrics bytes, and the body of a scrape.

The Spacelift part (every area's snapshot, poll health, the exporter's API traffic) is
rendered when its data changes, part by part, and scrapes serve those bytes: a scrape costs
the same whatever the account's size and never calls Spacelift. Only the small live part
(anything counted outside polls: webhooks, state-file writes) is rendered per scrape, so it is
current; the process's own figures (CPU, memory, from /proc) at most once a second.

Each part is kept as the text format plus what OpenMetrics writes differently
(``exporter.textformat``); the variants scrapers ask for (text or OpenMetrics, plain or
compressed) are built from it once and kept until the part changes. A scrape's body is the
list of its parts' bytes, written one after the other: no copy of the whole body.

Gzip: each part is compressed once, on its own, into deflate blocks ending on a byte
boundary (a sync flush), and such blocks concatenate into one deflate stream. A gzip scrape
writes a header, the parts' blocks, the live part compressed as the final block, and the
trailer (the CRC-32 of everything, carried on from a cached CRC of the pre-rendered parts).
One gzip member rather than a member per part: some clients (httpx among them) read only
the first member of a stream and would silently drop the rest.
"""

from __future__ import annotations

import functools
import struct
import threading
import time
import zlib
from collections.abc import Callable, Mapping

from prometheus_client import exposition as text_format
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.families import FamilyBuilder
from exporter.textformat import Rendered, render

OPENMETRICS_TYPE = openmetrics.CONTENT_TYPE_LATEST
TEXT_TYPE = text_format.CONTENT_TYPE_LATEST
_EOF = b"# EOF\n"
GZIP_LEVEL = 1  # each part is compressed once per change; 1 is ~4x faster than 6, ~15% larger
# Magic, deflate, no flags, mtime 0, "fastest" (level 1), OS unknown: no clock in the output.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"
# A render steps aside (sleeping _STEP at a time) while a scrape began within
# _SCRAPE_GRACE, for at most _MAX_DEFER each time it checks (every thousand samples).
_STEP = 0.0002
_SCRAPE_GRACE = 0.01
_MAX_DEFER = 0.05
# A variant (format, encoding) asked for within this many seconds is built by the refresh
# itself, so the scrape after a re-render finds it ready.
_KEEP_WARM = 600.0
# The process's own figures (CPU, memory, file descriptors, start time, platform) are read
# from /proc and rendered at most once per this many seconds: reading /proc/self/stat and
# rendering them was most of a small scrape's cost. They may be up to this old when served,
# well inside any scrape interval (Prometheus's shortest useful one is about a second).
RECENT_MAX_AGE = 1.0

Variant = tuple[bool, bool]  # (OpenMetrics, gzip)
# A part is collected into a FamilyBuilder, or (the exporter's own prometheus_client
# instruments) read from a registry.
Source = Callable[[FamilyBuilder], None] | CollectorRegistry


class _Part:
    """One rendered part and the variants built from it, each built once."""

    def __init__(self, rendered: Rendered) -> None:
        self._rendered = rendered
        self._variants: dict[Variant, bytes] = {(False, False): rendered.text}
        self._lock = threading.Lock()

    def get(self, variant: Variant) -> bytes:
        ready = self._variants.get(variant)
        if ready is not None:
            return ready
        om, gz = variant
        if om and not self._rendered.om_headers:  # the same bytes as the text format
            return self.get((False, gz))
        with self._lock:  # concurrent scrapes build a variant once
            ready = self._variants.get(variant)
            if ready is None:
                data = self._rendered.openmetrics() if om else self._rendered.text
                if gz and data:  # an empty part adds nothing
                    data = _deflate(data, zlib.Z_SYNC_FLUSH)
                ready = self._variants[variant] = data
            return ready


EMPTY = _Part(Rendered(b""))


class Exposition:
    """The exposition in parts (poll health, one per area, API traffic), each re-rendered only
    when its data changes: a worker-pool poll does not re-render 10,000 stacks.

    Parts never share a metric name (each metric belongs to one part), so concatenating
    their renderings is a valid exposition in either format.
    """

    def __init__(
        self,
        parts: Mapping[str, Source],
        live: Collector,
        recent: CollectorRegistry | None = None,
    ) -> None:
        """``live`` is rendered at every scrape (counters that must be current when served);
        ``recent`` at most every ``RECENT_MAX_AGE`` seconds, served as one more part."""
        self._parts = dict(parts)
        self._live = live
        self._recent = recent
        self._recent_part = (EMPTY, -1e9)  # the part and time.monotonic() when rendered
        self._recent_lock = threading.Lock()
        self._last_scrape = -1e9  # time.monotonic() when the last scrape began
        self._lock = threading.Lock()
        self._rendered: dict[str, _Part] = dict.fromkeys(self._parts, EMPTY)
        self._asked: dict[Variant, float] = {}  # variant -> when a scrape last asked for it
        # OpenMetrics or not -> for each part in order: (part, CRC-32 and size up to its end)
        self._crc: dict[bool, list[tuple[_Part, int, int]]] = {}
        self._crc_lock = threading.Lock()

    def refresh(self, *names: str) -> None:
        """Re-render the named parts (all of them when none is named)."""
        now = time.monotonic()
        warm = [variant for variant, asked in list(self._asked.items()) if now - asked < _KEEP_WARM]
        for name in names or tuple(self._parts):
            self._yield_to_scrapes()  # small parts have no checkpoint of their own
            part = _Part(self._render(self._parts[name]))
            for variant in warm:
                part.get(variant)
            with self._lock:
                self._rendered[name] = part
        with self._lock:
            parts = tuple(self._rendered.values())
        for om in {om for om, gz in warm if gz}:
            self._crc_of(parts, om)

    def _render(self, source: Source) -> Rendered:
        if isinstance(source, CollectorRegistry):
            text = text_format.generate_latest(source)
            om: bytes = openmetrics.generate_latest(source)  # type: ignore[no-untyped-call]
            return Rendered(text, ((0, len(text), om.removesuffix(_EOF)),))
        out = FamilyBuilder(self._yield_to_scrapes)
        source(out)
        return render(out.grouped(), self._yield_to_scrapes)

    def _yield_to_scrapes(self) -> None:
        """Called by a render every thousand samples (about a millisecond of work).

        Scrapes go first. A scrape releases the GIL at each of its system calls (reading
        the request, /proc for the process metrics, writing the body), and the interpreter
        hands it back from a busy thread only every 5 ms: a scrape during a render would
        wait that long a dozen times. Here the render steps aside: a short sleep lets a
        waiting scrape in, then it sleeps on while a scrape began in the last few
        milliseconds (at most ``_MAX_DEFER`` per call, so a render always progresses).
        """
        time.sleep(_STEP)
        deadline = time.monotonic() + _MAX_DEFER
        while (now := time.monotonic()) - self._last_scrape < _SCRAPE_GRACE and now < deadline:
            time.sleep(_STEP)

    def body(self, accept: str | None, gzip: bool) -> tuple[list[bytes], str, str | None]:
        """A scrape's body as chunks to write in order, its Content-Type, and its
        Content-Encoding ("gzip" or None). The pre-rendered parts are referenced, not copied;
        the process part is rendered (and compressed) here."""
        self._last_scrape = started = time.monotonic()
        om = wants_openmetrics(accept or "")
        variant = (om, gzip)
        self._asked[variant] = started
        with self._lock:
            parts = (*self._rendered.values(), self._recent_of(started))
        chunks = [data for data in (part.get(variant) for part in parts) if data]
        if om:
            live: bytes = openmetrics.generate_latest(self._live)  # type: ignore[no-untyped-call]
        else:
            live = text_format.generate_latest(self._live)
        content_type = OPENMETRICS_TYPE if om else TEXT_TYPE
        if not gzip:
            return _coalesce([*chunks, live]), content_type, None
        crc, size = self._crc_of(parts, om)
        trailer = struct.pack("<II", zlib.crc32(live, crc), (size + len(live)) & 0xFFFFFFFF)
        last = _deflate(live, zlib.Z_FINISH) + trailer
        return _coalesce([_GZIP_HEADER, *chunks, last]), content_type, "gzip"

    def _recent_of(self, now: float) -> _Part:
        """The ``recent`` part, rendered again when older than ``RECENT_MAX_AGE`` (once,
        whatever the number of concurrent scrapes). Last in the order of parts: the gzip
        checksum cached over the parts before it stays good when it changes."""
        part, rendered = self._recent_part
        if self._recent is None or now - rendered < RECENT_MAX_AGE:
            return part
        with self._recent_lock:
            part, rendered = self._recent_part
            if now - rendered >= RECENT_MAX_AGE:
                part = _Part(self._render(self._recent))
                self._recent_part = (part, now)
            return part

    def _crc_of(self, parts: tuple[_Part, ...], om: bool) -> tuple[int, int]:
        """CRC-32 and size of the pre-rendered parts in one format. Kept per prefix of the
        parts, so a change to a later part (poll health, after every poll) scans only the
        parts from it on."""
        with self._crc_lock:
            cached = self._crc.get(om, [])
            crc = size = 0
            intact = True  # the parts so far are those the cache was computed for
            prefix: list[tuple[_Part, int, int]] = []
            for i, part in enumerate(parts):
                intact = intact and i < len(cached) and cached[i][0] is part
                if intact:
                    _, crc, size = cached[i]
                else:
                    data = part.get((om, False))
                    crc, size = zlib.crc32(data, crc), size + len(data)
                prefix.append((part, crc, size))
            self._crc[om] = prefix
            return crc, size

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The whole exposition as one uncompressed bytes object (``once``, tests)."""
        chunks, content_type, _ = self.body(accept, gzip=False)
        return b"".join(chunks), content_type


def _coalesce(chunks: list[bytes], small: int = 65536) -> list[bytes]:
    """Small neighbours joined (a copy of a few KB): fewer writes per scrape, each of which
    has to take the GIL back from a render in progress. Large parts stay as they are."""
    out: list[bytes] = []
    pending: list[bytes] = []
    for chunk in chunks:
        if len(chunk) < small:
            pending.append(chunk)
            continue
        if pending:
            out.append(b"".join(pending))
            pending = []
        out.append(chunk)
    if pending:
        out.append(b"".join(pending))
    return out


def _deflate(data: bytes, flush: int) -> bytes:
    """Raw deflate blocks: byte-aligned and not final (sync flush), or the final block."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(flush)


@functools.lru_cache(maxsize=64)  # scrapers send the same header every time
def wants_openmetrics(accept: str) -> bool:
    # prometheus_client's own negotiation: OpenMetrics when the scraper lists it.
    _, content_type = text_format.choose_encoder(accept)
    return content_type.startswith("application/openmetrics-text")
