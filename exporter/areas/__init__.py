"""The registry of Spacelift areas. Adding an area: write its module, list it here."""

from __future__ import annotations

from exporter.areas import (
    access,
    aggregates,
    ec2_ownership,
    public_worker_pool,
    runs,
    stacks,
    usage,
    worker_pools,
)
from exporter.areas.base import AreaSpec, MetricDef

AREAS: dict[str, AreaSpec] = {
    spec.name: spec
    for spec in (
        worker_pools.SPEC,
        public_worker_pool.SPEC,
        usage.SPEC,
        access.SPEC,
        stacks.SPEC,
        runs.SPEC,
        aggregates.SPEC,
        ec2_ownership.SPEC,
    )
}


def area_metrics() -> list[MetricDef]:
    return [m for spec in AREAS.values() for m in spec.metrics]
