"""The pipeline: per (account, area) poll -> snapshot store -> rendered exposition.

``App`` wires the parts for one process; the scheduler (``exporter.scheduler``) only calls
``App.poll``. Tests build an ``App`` directly and call ``poll_all`` to drive it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from exporter import health
from exporter.areas import AREAS
from exporter.areas.base import AreaContext, Poller
from exporter.areas.run_ledger import ACCEPTED, QUEUED, WebhookObs
from exporter.client import SpaceliftClient
from exporter.config import Config
from exporter.errors import PartialFailure, PartialPermissionDenied, SpaceliftError
from exporter.exposition import Exposition, Source
from exporter.families import FamilyBuilder
from exporter.selfmetrics import SelfMetrics
from exporter.statefile import StateFile, section_key
from exporter.store import Key, Store

log = logging.getLogger(__name__)

# A delivery waits this long for a poll to release the run ledger, then is queued; at most
# this many wait in the queue (more: 503, Spacelift retries later).
WEBHOOK_WAIT = 0.05
MAX_WEBHOOK_INBOX = 50_000
OVERLOADED = "overloaded"
API_PART = "api traffic"  # the exposition part of the exporter's own Spacelift requests


class App:
    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        # Rendered per scrape: anything counted outside polls (webhooks, state-file writes).
        self.registry = CollectorRegistry()
        # The process's CPU and memory: at most once a second (exposition.RECENT_MAX_AGE).
        self.process_registry = CollectorRegistry()
        ProcessCollector(registry=self.process_registry)
        PlatformCollector(registry=self.process_registry)
        # The API traffic changes only while a poll runs: it is rendered with the poll.
        self.api_registry = CollectorRegistry()
        self.self_metrics = SelfMetrics(self.registry, api=self.api_registry)
        self.clients: dict[str, SpaceliftClient] = {}
        self.pollers: dict[Key, Poller] = {}
        # --state.file: area state (the run ledger) restored here, saved after good polls.
        self.state_file = StateFile(config.state_file) if config.state_file else None
        saved = self.state_file.load() if self.state_file else {}
        if self.state_file:
            self.self_metrics.init_state_file()
        for account in config.accounts:
            self.self_metrics.init_account(account.name)
            shared: dict[str, Any] = {}  # what this account's areas share (the stack listing)
            self.clients[account.name] = SpaceliftClient(
                account, config.http, self.self_metrics, clock=clock, transport=transport
            )
            for area in account.enabled_areas():
                ctx = AreaContext(
                    account.name,
                    account.areas[area].options,
                    state=saved.get(section_key(account.name, area)),
                    clock=clock,
                    area=area,
                    interval=account.areas[area].interval,
                    shared=shared,
                    http=config.http,
                )
                self.pollers[(account.name, area)] = AREAS[area].create(ctx)
        self.store = Store(list(self.pollers))
        # The parts that change at every poll come last: a gzip scrape's checksum is carried
        # over the parts in order, and only what follows a changed part is read again.
        parts: dict[str, Source] = {}
        for area in dict.fromkeys(area for _, area in self.pollers):
            parts[area] = partial(self._collect_area, area)
        parts["health"] = self._collect_health
        parts[API_PART] = self.api_registry
        self.exposition = Exposition(parts, self.registry, self.process_registry)
        self._render_lock = threading.Lock()
        self._served: set[Key] = set()  # areas whose settled state /metrics serves
        self.exposition.refresh()
        # Webhook deliveries (exporter.webhooks) record into the runs pollers' ledgers; the
        # snapshots they change are rebuilt by a flusher thread woken through this event.
        self.webhook_wake = threading.Event()
        self._webhook_dirty: set[Key] = set()
        self._webhook_unsaved: set[Key] = set()
        self._webhook_lock = threading.Lock()
        # Deliveries that arrived while a poll held their ledger: recorded by the flusher
        # (which may wait), so a delivery is answered at once whatever the poll is doing.
        self._webhook_inbox: collections.deque[tuple[str, WebhookObs]] = collections.deque()
        # Building a runs snapshot from the ledger and storing it happen together, so a poll's
        # snapshot never replaces a newer one that holds a delivery recorded meanwhile.
        self._snapshot_lock = threading.Lock()

    def interval(self, key: Key) -> float:
        account = next(a for a in self.config.accounts if a.name == key[0])
        return account.areas[key[1]].interval

    def poll(self, key: Key) -> bool:
        """Poll one area of one account; keep the last good snapshot on failure."""
        account, area = key
        client = self.clients[account]
        started = time.perf_counter()
        try:
            with client.budget(self.config.http.poll_timeout):
                snapshot = self.pollers[key].poll(client)
        except (PartialPermissionDenied, PartialFailure) as exc:
            duration = time.perf_counter() - started
            self.store.partial(key, exc.snapshot, str(exc), self.clock(), duration, exc.kind)
            self._save_state(key)  # what was read was folded in (the run ledger)
            log.info(
                "poll partly refused, serving what the API key may read",
                extra={"account": account, "area": area, "kind": exc.kind, "error": str(exc)},
            )
            ok = False
        except SpaceliftError as exc:
            duration = time.perf_counter() - started
            self.store.failure(key, str(exc), exc.kind, duration)
            level = logging.INFO if exc.kind == "permission" else logging.WARNING
            if exc.kind == "shutdown":  # a poll cut short because the process is stopping
                level = logging.DEBUG
            log.log(
                level,
                "poll failed, serving the last good data",
                extra={"account": account, "area": area, "kind": exc.kind, "error": str(exc)},
            )
            ok = False
        except Exception as exc:  # a bug in a parser must not kill the scheduler thread
            duration = time.perf_counter() - started
            self.store.failure(key, f"internal error: {type(exc).__name__}", "internal", duration)
            log.exception("poll crashed", extra={"account": account, "area": area})
            ok = False
        else:
            duration = time.perf_counter() - started
            with self._snapshot_lock:
                snapshot = self._with_deliveries(key, snapshot)
                self.store.success(key, snapshot, self.clock(), duration)
            self._save_state(key)
            log.debug("poll ok", extra={"account": account, "area": area, "seconds": duration})
            ok = True
        with self._render_lock:
            # A failed poll left the area's snapshot as it was: only the health part changed.
            st = self.store.get(key)
            fresh = st.snapshot is not None and (ok or st.partial)
            self.exposition.refresh("health", API_PART, *((area,) if fresh else ()))
            if st.settled:
                self._served.add(key)  # ready means rendered: /metrics has this poll's data
        return ok

    def _save_state(self, key: Key) -> None:
        """Persist an area's state (pollers with ``export_state``) to --state.file."""
        export = getattr(self.pollers[key], "export_state", None)
        if self.state_file is None or export is None:
            return
        data = export()  # None: nothing changed since the last save
        if data is not None:
            ok = self.state_file.save(section_key(*key), data)
            self.self_metrics.state_file_write(ok)

    def poll_all(self) -> bool:
        """Poll every area once, accounts in parallel; True if all succeeded."""
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(self.pollers)))) as pool:
            results = list(pool.map(self.poll, list(self.pollers)))  # every poll runs
        return all(results)

    def pending(self) -> list[Key]:
        """Areas /metrics does not serve an answer for yet (not polled successfully, or
        polled but not rendered yet)."""
        return [k for k, st in self.store.items() if not (st.settled and k in self._served)]

    def ready(self) -> bool:
        return not self.pending()

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    # -- webhook deliveries --------------------------------------------------------------

    def observe_webhook(self, account: str, event: WebhookObs) -> str | None:
        """Record a verified delivery in the account's run ledger; its outcome (QUEUED when
        a poll holds the ledger: the flusher records and counts it), None when the account
        has no runs area, OVERLOADED when too many wait already."""
        key = (account, "runs")
        observe = getattr(self.pollers.get(key), "observe_webhook", None)
        if observe is None:
            return None
        outcome: str | None = observe(event, wait=WEBHOOK_WAIT)
        if outcome is None:
            with self._webhook_lock:
                if len(self._webhook_inbox) >= MAX_WEBHOOK_INBOX:
                    return OVERLOADED
                self._webhook_inbox.append((account, event))
            self.webhook_wake.set()
            return QUEUED
        if outcome == ACCEPTED:
            self._webhook_changed(key)
        return outcome

    def _webhook_changed(self, key: Key) -> None:
        with self._webhook_lock:
            self._webhook_dirty.add(key)
            self._webhook_unsaved.add(key)
        self.webhook_wake.set()

    def _record_queued_webhooks(self) -> None:
        """Deliveries queued behind a poll: recorded now (waiting for the poll) and counted."""
        while True:
            with self._webhook_lock:
                if not self._webhook_inbox:
                    return
                account, event = self._webhook_inbox.popleft()
            key = (account, "runs")
            outcome = self.pollers[key].observe_webhook(event)  # type: ignore[attr-defined]
            self.self_metrics.webhook_delivery(account, outcome)
            if outcome == ACCEPTED:
                self._webhook_changed(key)

    def flush_webhooks(self, save: bool = True) -> None:
        """Serve what deliveries changed since the last flush; ``save``: write the state."""
        self._record_queued_webhooks()
        with self._webhook_lock:
            dirty, self._webhook_dirty = self._webhook_dirty, set()
            unsaved = self._webhook_unsaved if save else set()
            if save:
                self._webhook_unsaved = set()
        fresh = []
        for key in sorted(dirty):
            with self._snapshot_lock:
                if self.store.get(key).snapshot is None:
                    continue  # before the first poll: that poll serves them
                snapshot = self._with_deliveries(key, None)
                if snapshot is not None:
                    self.store.replace_snapshot(key, snapshot)
                    fresh.append(key[1])
        if fresh:
            with self._render_lock:
                self.exposition.refresh(*dict.fromkeys(fresh))
        for key in sorted(unsaved):
            self._save_state(key)

    def _with_deliveries(self, key: Key, snapshot: object) -> object:
        """With webhooks on, the area's snapshot as of now (deliveries included)."""
        if not self.config.webhooks_enabled():
            return snapshot
        build = getattr(self.pollers[key], "webhook_snapshot", None)
        fresh = build() if build is not None else None
        return snapshot if fresh is None else fresh

    def _collect_health(self, out: FamilyBuilder) -> None:
        health.collect(self.store.items(), out, self.unavailable_fields())

    def unavailable_fields(self) -> list[tuple[str, str, str, str]]:
        """(account, area, field, reason) of every field an area's documents go without."""
        out: set[tuple[str, str, str, str]] = set()
        for (account, _), poller in self.pollers.items():
            # ``gates``: a poller using several (the shared stack listing has its own)
            gates = getattr(poller, "gates", None) or (getattr(poller, "fields", None),)
            for gate in gates:
                if gate is not None:
                    out.update((account, gate.area, u.field, u.reason) for u in gate.unavailable())
        return sorted(out)

    def _collect_area(self, area: str, out: FamilyBuilder) -> None:
        """Every account's series of one area."""
        for key, st in self.store.items():
            if key[1] != area or st.snapshot is None:
                continue
            # Each account renders into its own builder: a bug in the collector drops that
            # account's series of the area (and says so in the log), nothing else.
            scratch = FamilyBuilder(out.pause)
            try:
                self.pollers[key].collect(st.snapshot, scratch)
            except Exception:
                log.exception("rendering failed", extra={"account": key[0], "area": area})
                continue
            out.extend(scratch)
