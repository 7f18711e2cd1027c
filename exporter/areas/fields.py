"""Degrade by field, not by area: optional fields a server may lack or refuse.

Each document declares its optional fields (by schema coordinate, ``Query.seats``) and the
metric families that need them. When the server rejects one, both ways arriving as HTTP 200
with ``errors[]``,

- unknown field (an older self-hosted release): ``Cannot query field "seats" on type "Query"``;
- refused field: ``not available for machine sessions`` or ``unauthorized``, with a ``path``,

the ``FieldGate`` sends the document again without it, so the area keeps serving everything
else and only the families needing that field go. The gate remembers the field, logs it once
with the remedy, and asks for it again about hourly: a Spacelift upgrade or a new key heals it
without a restart. ``unavailable()`` feeds ``spacelift_api_field_unavailable`` and the
landing page.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from exporter.graphql_doc import coordinate_at, coordinates, inspect, without_fields

if TYPE_CHECKING:
    from exporter.client import Result, SpaceliftClient
    from exporter.families import MetricDef

log = logging.getLogger(__name__)

REPROBE_SECONDS = 3600.0  # how long a missing or refused field is left out before asking again

REMEDIES: Mapping[tuple[str, str], str] = {
    ("Stack.state", "refused"): "this API key is a machine user, to which Spacelift does not "
    "show stack states: use an API key that is not a machine user (per-state counts come from "
    "the aggregates area meanwhile)",
}
DEFAULT_REMEDY = {
    "missing": "this Spacelift release has no such field; upgrading (self-hosted) brings these "
    "series back",
    "refused": "the API key may not read it (Spacelift refuses some fields to machine "
    "sessions): a key with more permissions, or one that is not a machine user, brings these "
    "series back",
}


def remedy(coordinate: str, reason: str) -> str:
    return REMEDIES.get((coordinate, reason), DEFAULT_REMEDY[reason])


@dataclass(frozen=True)
class Document:
    """A GraphQL document and its optional fields: coordinate -> metric families needing it."""

    text: str
    optional: Mapping[str, Sequence[MetricDef]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return inspect(self.text).name


@dataclass(frozen=True)
class Unavailable:
    field: str  # coordinate, e.g. ``Query.seats``
    reason: str  # ``missing`` (not in the server's schema) or ``refused`` (not for this key)
    message: str  # the server's words


class FieldGate:
    """One area's memory of the optional fields its account's server lacks or refuses."""

    def __init__(
        self,
        account: str,
        area: str,
        clock: Callable[[], float],
        reprobe: float = REPROBE_SECONDS,
    ) -> None:
        self.account, self.area = account, area
        self._clock = clock
        self._reprobe = reprobe
        self._lock = threading.Lock()
        self._state: dict[str, tuple[Unavailable, float]] = {}  # coordinate -> (why, ask again at)

    def lacks(self, coordinate: str) -> bool:
        """True when the last answer came without this field (read it as absent)."""
        with self._lock:
            return coordinate in self._state

    def unavailable(self) -> list[Unavailable]:
        with self._lock:
            return [u for u, _ in sorted(self._state.values(), key=lambda s: s[0].field)]

    def query(
        self,
        client: SpaceliftClient,
        doc: Document,
        variables: Mapping[str, Any] | None = None,
    ) -> Result | None:
        """Send ``doc`` without the fields known to be unavailable (those due are asked for
        again); a rejected optional field is recorded and the document sent again without it.

        None when nothing of the document is left to ask.
        """
        now = self._clock()
        with self._lock:
            drop = {c for c in doc.optional if c in self._state and self._state[c][1] > now}
        while True:
            text = without_fields(doc.text, frozenset(drop))
            if text is None:
                return None
            result = client.query(text, variables)
            rejected = _rejected(doc, text, result, drop)
            healed = [
                c for c in doc.optional if c not in drop and c not in rejected and self.lacks(c)
            ]
            if result.data is not None:
                for c in healed:
                    self._heal(c)
            if not rejected:
                return result
            for c, u in rejected.items():
                self._mark(u, doc.optional[c])
            drop |= set(rejected)

    def _mark(self, u: Unavailable, families: Sequence[MetricDef]) -> None:
        with self._lock:
            first = u.field not in self._state
            self._state[u.field] = (u, self._clock() + self._reprobe)
        if first:  # logged once; the metric and the landing page keep saying it
            log.warning(
                "Spacelift field unavailable, serving the rest without it",
                extra={
                    "account": self.account,
                    "area": self.area,
                    "field": u.field,
                    "reason": u.reason,
                    "error": u.message[:200],
                    "missing_metrics": ",".join(m.exposed_name for m in families) or "none",
                    "remedy": remedy(u.field, u.reason),
                },
            )

    def _heal(self, coordinate: str) -> None:
        with self._lock:
            gone = self._state.pop(coordinate, None)
        if gone is not None:
            log.info(
                "Spacelift field available again",
                extra={"account": self.account, "area": self.area, "field": coordinate},
            )


def _rejected(doc: Document, text: str, result: Result, drop: set[str]) -> dict[str, Unavailable]:
    """The optional fields of ``doc`` the server rejected in ``result``, with why."""
    out: dict[str, Unavailable] = {}
    for e in result.errors:
        coord: str | None = None
        if e.unknown_field is not None:
            reason = "missing"
            coord = e.unknown_field
            if coord not in doc.optional and e.locations:
                # The server may name the type differently: find the field by position.
                coord = coordinate_at(text, *e.locations[0])
        elif e.is_permission and e.path:
            reason = "refused"
            coord = coordinates(text).get(tuple(x for x in e.path if isinstance(x, str)))
        else:
            continue
        if coord is not None and coord in doc.optional and coord not in drop:
            out[coord] = Unavailable(coord, reason, e.message)
    return out
