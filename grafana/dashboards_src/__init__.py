"""The dashboards' source: one module per dashboard, each with ``UID`` and ``build()``."""

from __future__ import annotations

from collections.abc import Callable

from grafana_foundation_sdk.models import dashboard as dm

from grafana.dashboards_src import access, overview, runs, stacks, worker_pools

# uid -> builder, in the order of the dashboards' links menu.
DASHBOARDS: dict[str, Callable[[], dm.Dashboard]] = {
    module.UID: module.build for module in (overview, runs, worker_pools, stacks, access)
}
