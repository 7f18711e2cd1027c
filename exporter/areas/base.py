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

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from exporter.areas.fields import Document, FieldGate

# Definitions and the builder live below the areas; re-exported here for area modules.
from exporter.families import (
    FamilyBuilder,
    HistogramValue,
    MetricDef,
    MetricKind,
    counter,
    gauge,
    histogram,
)

if TYPE_CHECKING:
    from exporter.client import SpaceliftClient
    from exporter.config import HttpConfig

__all__ = [
    "AreaContext",
    "AreaSpec",
    "DocumentPoller",
    "FamilyBuilder",
    "HistogramValue",
    "MetricDef",
    "MetricKind",
    "OptionSpec",
    "Poller",
    "Snapshot",
    "counter",
    "gauge",
    "histogram",
]


@dataclass(frozen=True)
class OptionSpec:
    """An area option accepted in the config file under ``areas.<area>.<name>``."""

    type: type | tuple[type, ...]
    default: Any
    help: str


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
    area: str = ""  # the area's name, for what the poller logs and reports
    interval: float = 0.0  # the area's poll interval (seconds)
    # Per-account objects the account's areas share (the stack listing), keyed by name.
    shared: dict[str, Any] = field(default_factory=dict)
    # Timeouts, retries and the poll budget, for areas whose I/O is not the Spacelift client
    # (ec2_ownership reads S3): they apply the same limits to it.
    http: HttpConfig | None = None


class DocumentPoller:
    """Poller of an area answered by one query document under one root field.

    Subclasses set ``document`` and ``root`` and provide ``parse(data)`` and ``collect``;
    ``optional`` names the fields a server may lack or refuse (coordinate -> the metric
    families needing them): the document is then sent without them and ``parse`` finds them
    absent.
    """

    document: ClassVar[str]
    root: ClassVar[str]
    optional: ClassVar[Mapping[str, tuple[MetricDef, ...]]] = {}

    def __init__(self, ctx: AreaContext) -> None:
        self.account = ctx.account
        self.options = ctx.options
        self.fields = FieldGate(ctx.account, ctx.area, ctx.clock)

    def poll(self, client: SpaceliftClient) -> Any:
        result = self.fields.query(client, Document(self.document, self.optional))
        if result is None:  # the root itself is optional and unavailable: nothing to read
            return self.parse({})
        return self.parse(result.require(self.root))

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
    # Fields a server may lack or refuse (coordinate -> the metrics that need them): the
    # documents are sent without them and only those metrics go (README table from here).
    optional: Mapping[str, tuple[MetricDef, ...]] = field(default_factory=dict)
    # Checked when the area is enabled: (option, problem) for a config error naming
    # ``areas.<area>.<option>``, or None. For what types alone cannot say.
    check: Callable[[Mapping[str, Any]], tuple[str, str] | None] | None = None
