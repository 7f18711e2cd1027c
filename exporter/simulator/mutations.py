"""Mutation helpers for tests and the demo (the API itself never changes state).

Every helper syncs the world to the clock first and keeps derived structures consistent
(worker occupancy, stack lock, stack state, pool queues).
"""

from __future__ import annotations

import random
from typing import Any

from .model import TERMINAL, ApiKey, Run, Space, Stack, Worker, metadata_json, ulid


class WorldMutations:
    """Mixed into World; relies on its state-machine internals."""

    def _begin(self) -> None:
        self.sync()
        self._now = max(self._now, self.clock.now())

    def trigger_run(
        self,
        stack_id: str,
        run_type: str = "TRACKED",
        *,
        drift_detection: bool = False,
        needs_approval: bool = False,
        commit_timestamp: int | None = None,
    ) -> Run:
        with self.lock:
            self._begin()
            run = self._trigger(
                self.stacks[stack_id],
                run_type,
                drift=drift_detection,
                needs_approval=needs_approval,
                push=run_type == "TRACKED",
                triggered_by="tester" if not drift_detection else "drift-detection",
                commit_timestamp=commit_timestamp,
            )
            self.sync()  # QUEUED -> READY happens after a short delay, on the event queue
            return run

    def approve(self, run_id: str) -> None:
        with self.lock:
            self._begin()
            run = self.runs[run_id]
            run.needsApproval = False
            run.history[-1]["note"] = "approved"
            self._try_promote(run)
            self._flush()

    def confirm(self, run_id: str) -> None:
        with self.lock:
            self._begin()
            run = self.runs[run_id]
            if run.state != "UNCONFIRMED":
                raise ValueError(f"run {run_id} is {run.state}, not UNCONFIRMED")
            self._set_state(run, "CONFIRMED", user="tester")
            self._schedule()

    def discard(self, run_id: str) -> None:
        with self.lock:
            self._begin()
            run = self.runs[run_id]
            if run.terminal:
                raise ValueError(f"run {run_id} is already {run.state}")
            self._set_state(run, "DISCARDED", user="tester")
            self._schedule()

    def finish_run(self, run_id: str, state: str = "FINISHED") -> None:
        """Force a run terminal now, releasing its worker and the stack lock."""
        if state not in TERMINAL:
            raise ValueError(f"{state} is not a terminal state")
        with self.lock:
            self._begin()
            run = self.runs[run_id]
            if not run.terminal:
                self._set_state(run, state)
            self._schedule()

    def add_stack(self, stack_id: str | None = None, **fields: Any) -> Stack:
        from .seed import make_stack

        with self.lock:
            self._begin()
            stack = make_stack(self, random.Random(len(self.stacks) + 99), stack_id, **fields)
            self.stacks[stack.id] = stack
            self.stacks_version += 1
            return stack

    def delete_stack(self, stack_id: str) -> None:
        with self.lock:
            self._begin()
            stack = self.stacks[stack_id]
            for run in list(stack.runs):
                if not run.terminal:
                    self._set_state(run, "CANCELED", note="stack deleted")
                self.runs.pop(run.id, None)
            del self.stacks[stack_id]
            self.stacks_version += 1
            self._schedule()

    def add_space(self, name: str, parent: str = "root") -> Space:
        with self.lock:
            self._begin()
            sid = f"{name.lower().replace(' ', '-')}-{ulid(self._now, self.rng)}"
            space = Space(id=sid, name=name, parentSpace=parent)
            self.spaces[sid] = space
            return space

    def lock_stack(self, stack_id: str, by: str | None, note: str | None = None) -> None:
        """Lock (by = user name) or unlock (by = None) a stack for exclusive use."""
        with self.lock:
            self._begin()
            st = self.stacks[stack_id]
            st.lockedBy = by
            st.lockedAt = int(self._now) if by else None
            st.lockNote = note if by else None

    def set_workers(self, pool_id: str, count: int) -> None:
        """Add idle workers or remove workers (idle ones first; busy ones fail their run)."""
        with self.lock:
            self._begin()
            pool = self.pools[pool_id]
            while len(pool.workers) < count:
                n = len(pool.workers)
                pool.workers.append(
                    Worker(
                        id=ulid(self._now, self.rng),
                        pool_id=pool_id,
                        createdAt=int(self._now),
                        availableAt=int(self._now),
                        metadata=metadata_json({"asg_id": f"{pool.name}-asg", "index": str(n)}),
                    )
                )
            while len(pool.workers) > count:
                idle = [w for w in pool.workers if not w.busy]
                victim = idle[-1] if idle else pool.workers[-1]
                if victim.busy and victim.run_id in self.runs:
                    self._set_state(self.runs[victim.run_id], "FAILED", note="worker lost")
                pool.workers.remove(victim)
            pool.updatedAt = int(self._now)
            self._schedule()

    def set_drained(self, pool_id: str, drained: bool) -> None:
        with self.lock:
            self._begin()
            for w in self.pools[pool_id].workers:
                w.drained = drained
            self._schedule()

    def add_api_key(self, name: str, **fields: Any) -> ApiKey:
        with self.lock:
            self._begin()
            kid = fields.pop("id", None) or ulid(self._now, self.rng)
            key = ApiKey(id=kid, name=name, createdAt=fields.pop("createdAt", self.now()), **fields)
            self.api_keys[kid] = key
            return key

    def delete_api_key(self, key_id: str) -> None:
        with self.lock:
            del self.api_keys[key_id]

    def use_api_key(self, key_id: str) -> None:
        with self.lock:
            self._begin()
            self.api_keys[key_id].lastUsedAt = self.now()

    def add_api_key_binding(self, key_id: str, role_slug: str, space_id: str) -> dict[str, Any]:
        with self.lock:
            self._begin()
            role = next(r for r in self.roles.values() if r.slug == role_slug)
            binding = {
                "id": ulid(self._now, self.rng),
                "apiKeyID": key_id,
                "roleID": role.id,
                "spaceID": space_id,
                "role": role,
            }
            self.api_keys[key_id].apiKeyRoleBindings.append(binding)
            return binding
