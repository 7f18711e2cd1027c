"""Spacelift GraphQL API simulator: a seeded account model served over HTTP.

Public API: SimClock, World, WorldConfig, Simulator; `demo.start_demo_simulator()`.

Semantics the exporter can rely on (the real API leaves them undocumented):

* Stack state = state of the stack's most recent TRACKED or DESTROY run, NONE without one.
  Run states missing from StackState map to the nearest value (model.STACK_STATE_MAP):
  QUEUED/PENDING -> READY, PENDING_REVIEW -> UNCONFIRMED, CANCELED/SKIPPED -> DISCARDED,
  PERFORMING -> APPLYING.
* pendingRuns = runs of the pool's stacks in READY, CONFIRMED or REPLAN_REQUESTED, i.e.
  eligible and waiting for a worker (QUEUED runs blocked by the stack lock or by approval
  do not count). schedulableRunsCount = pendingRuns + runs currently on a worker of the pool.
  searchSchedulableRuns lists exactly those: in-progress runs first (by start time), then
  waiting runs by priority (tracked/destroy/task, proposed, drift detection) and FIFO;
  position is 1-based over that whole list. The public pool works the same for stacks
  without a private pool, with `parallelism` slots instead of workers.
"""

from .clock import SimClock
from .server import Simulator
from .world import World, WorldConfig

__all__ = ["SimClock", "Simulator", "World", "WorldConfig"]
