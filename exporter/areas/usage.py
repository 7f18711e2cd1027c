"""Billing period usage, with the official exporter's metric names (minutes -> seconds)."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.areas import parse as p
from exporter.areas.base import AreaSpec, DocumentPoller, FamilyBuilder, gauge

DOCUMENT = """
query SpaceliftExporterUsage {
  usage { billingPeriodStart billingPeriodEnd usedPrivateMinutes usedPublicMinutes usedSeats }
}
"""

START = gauge(
    "spacelift_current_billing_period_start_timestamp_seconds",
    "Start of the current billing period, at the last poll.",
)
END = gauge(
    "spacelift_current_billing_period_end_timestamp_seconds",
    "End of the current billing period, at the last poll.",
)
PRIVATE = gauge(
    "spacelift_current_billing_period_used_private_seconds",
    "Private worker time used in the current billing period, at the last poll.",
)
PUBLIC = gauge(
    "spacelift_current_billing_period_used_public_seconds",
    "Public worker time used in the current billing period, at the last poll.",
)
SEATS = gauge(
    "spacelift_current_billing_period_used_seats",
    "Seats used in the current billing period, at the last poll.",
)


@dataclass(frozen=True)
class Snapshot:
    start: float
    end: float
    private_seconds: float
    public_seconds: float
    seats: float


def parse(data: object) -> Snapshot:
    o = p.obj(p.obj(data, "data").get("usage"), "usage")
    return Snapshot(
        start=p.number(o, "billingPeriodStart", "usage"),
        end=p.number(o, "billingPeriodEnd", "usage"),
        private_seconds=p.number(o, "usedPrivateMinutes", "usage") * 60,
        public_seconds=p.number(o, "usedPublicMinutes", "usage") * 60,
        seats=p.number(o, "usedSeats", "usage"),
    )


class Poller(DocumentPoller):
    document = DOCUMENT
    root = "usage"
    parse = staticmethod(parse)

    def collect(self, snapshot: Snapshot, out: FamilyBuilder) -> None:
        a = (self.account,)
        out.add(START, a, snapshot.start)
        out.add(END, a, snapshot.end)
        out.add(PRIVATE, a, snapshot.private_seconds)
        out.add(PUBLIC, a, snapshot.public_seconds)
        out.add(SEATS, a, snapshot.seats)


SPEC = AreaSpec(
    name="usage",
    title="Billing usage",
    default_interval=300.0,  # billing figures move slowly; admin-only field
    create=Poller,
    documents={"SpaceliftExporterUsage": DOCUMENT},
    metrics=(START, END, PRIVATE, PUBLIC, SEATS),
    permission="Admin: `space-admin` on `root` (or a legacy admin key).",
)
