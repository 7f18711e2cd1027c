"""The run ledger fed by webhook deliveries and polls together: each run counted once."""

from __future__ import annotations

import json

from exporter.areas.run_ledger import (
    ACCEPTED,
    DUPLICATE,
    MAX_PENDING,
    STALE,
    Ledger,
    ListView,
    RunObs,
    StackMark,
    WebhookObs,
)

T0 = 1_000_000.0
SPACE = "space-a"
PATH = ("QUEUED", "READY", "PREPARING", "PLANNING", "APPLYING", "FINISHED")


def ev(state: str, rid: str = "r1", *, stack: str = "s1", created: float = T0 + 100) -> WebhookObs:
    """The delivery of ``rid`` entering ``state`` (10 s a state along PATH)."""
    i = PATH.index(state) if state in PATH else len(PATH) - 1
    return WebhookObs(rid, stack, "TRACKED", state, i + 1, created + 10 * i, created)


def polled(rid: str = "r1", upto: str = "FINISHED", created: float = T0 + 100) -> RunObs:
    states = PATH[: PATH.index(upto) + 1] if upto in PATH else (*PATH[:-1], upto)
    history = tuple((s, created + 10 * i) for i, s in enumerate(states))
    return RunObs(rid, "s1", "TRACKED", upto, created, history[-1][1], history=history)


LISTING = {"s1": StackMark(SPACE, "FINISHED", T0, False)}


def ledger() -> Ledger:
    led = Ledger(baseline=T0)
    led.apply(LISTING, [], [ListView("s1", "runs", (), True)], T0)
    return led


def finished(led: Ledger) -> int:
    return sum(n for (_, _, _, state), n in led.finished.items() if state == "FINISHED")


def poll(led: Ledger, *runs: RunObs, now: float = T0 + 1000) -> None:
    led.apply(LISTING, [], [ListView("s1", "runs", runs, True)], now)


def test_terminal_delivery_counts_at_once_and_the_poll_after_it_does_not() -> None:
    led = ledger()
    assert led.observe(ev("FINISHED"), T0 + 200) == ACCEPTED
    assert finished(led) == 1
    poll(led, polled())
    poll(led, polled())
    assert finished(led) == 1


def test_a_run_counted_by_a_poll_is_a_duplicate_when_its_delivery_comes() -> None:
    led = ledger()
    poll(led, polled())
    assert finished(led) == 1
    assert led.observe(ev("FINISHED"), T0 + 2000) == DUPLICATE
    assert finished(led) == 1


def test_replayed_and_out_of_order_deliveries_change_nothing() -> None:
    led = ledger()
    assert led.observe(ev("PLANNING"), T0) == ACCEPTED
    assert led.observe(ev("PLANNING"), T0) == DUPLICATE
    assert led.observe(ev("READY"), T0) == STALE  # older stateVersion after a newer one
    assert led.active["r1"].obs.state == "PLANNING"
    assert led.observe(ev("FINISHED"), T0) == ACCEPTED
    assert led.observe(ev("FINISHED"), T0) == DUPLICATE  # Spacelift retries after a 5xx
    assert led.observe(ev("APPLYING"), T0) == STALE  # late, after the end
    assert finished(led) == 1
    assert "r1" not in led.active


def test_delivered_states_give_duration_and_queue_wait() -> None:
    led = ledger()
    for state in PATH:
        led.observe(ev(state), T0)
    ((_, hist),) = led.duration.items()
    assert hist.total == 50  # QUEUED at +0 ... FINISHED at +50
    ((_, wait),) = led.queue_wait.items()
    assert wait.total == 10  # READY -> PREPARING


def test_a_delivery_merges_with_what_a_poll_saw() -> None:
    led = ledger()
    poll(led, polled(upto="PLANNING"))  # the poll read READY and PREPARING from the history
    assert led.observe(ev("PLANNING"), T0) == DUPLICATE
    assert led.observe(ev("FINISHED"), T0) == ACCEPTED
    ((_, wait),) = led.queue_wait.items()
    assert wait.total == 10
    poll(led, polled())
    assert finished(led) == 1


def test_delivery_older_than_what_a_poll_saw_is_stale() -> None:
    led = ledger()
    poll(led, polled(upto="APPLYING"))
    assert led.observe(ev("PREPARING"), T0) in (DUPLICATE, STALE)
    # a state the poll's history does not show, older than the state the poll saw
    assert led.observe(WebhookObs("r1", "s1", "TRACKED", "READY", 2, T0, T0), T0) == STALE
    assert led.active["r1"].obs.state == "APPLYING"


def test_a_run_that_ended_before_the_baseline_is_history() -> None:
    led = ledger()
    old = WebhookObs("r0", "s1", "TRACKED", "FAILED", 5, T0 - 50, T0 - 500)
    assert led.observe(old, T0 + 10) == STALE
    # an older state of it, delivered late, does not make it a run in progress either
    older = WebhookObs("r0", "s1", "TRACKED", "PLANNING", 3, T0 - 100, T0 - 500)
    assert led.observe(older, T0 + 10) == STALE
    assert "r0" not in led.active
    assert not led.finished or all(n == 0 for n in led.finished.values())


def test_unknown_stack_waits_for_the_listing_and_counts_once() -> None:
    led = ledger()
    other = {**LISTING, "s2": StackMark("space-b", "FINISHED", T0, False)}
    assert led.observe(ev("FINISHED", "r2", stack="s2"), T0 + 200) == ACCEPTED
    assert not any(led.finished.values())  # no space known yet: parked
    # the poll that lists s2 reads its runs too and sees r2 finished: counted once
    r2 = RunObs(
        "r2", "s2", "TRACKED", "FINISHED", T0 + 100, T0 + 150, history=(("FINISHED", T0 + 150),)
    )
    led.apply(other, [], [ListView("s2", "runs", (r2,), True)], T0 + 300)
    assert led.finished == {("space-b", "s2", "TRACKED", "FINISHED"): 1}
    assert not led.pending


def test_parked_delivery_is_counted_by_the_listing_alone() -> None:
    led = ledger()
    other = {**LISTING, "s2": StackMark("space-b", "FINISHED", T0, False)}
    led.observe(ev("FAILED", "r2", stack="s2"), T0 + 200)
    led.apply(other, [], [], T0 + 300)  # s2 listed, its runs not read this poll
    assert led.finished == {("space-b", "s2", "TRACKED", "FAILED"): 1}
    led.apply(other, [], [], T0 + 400)
    assert led.finished == {("space-b", "s2", "TRACKED", "FAILED"): 1}


def test_parked_deliveries_are_bounded() -> None:
    led = ledger()
    for i in range(MAX_PENDING + 10):
        led.observe(ev("FINISHED", f"x{i}", stack="nowhere"), T0 + i)
    assert len(led.pending) == MAX_PENDING
    assert "x0" not in led.pending and f"x{MAX_PENDING + 9}" in led.pending


def test_restart_between_the_delivery_and_the_poll() -> None:
    led = ledger()
    led.observe(ev("PLANNING", "r1"), T0)
    led.observe(ev("FINISHED", "r3", created=T0 + 120), T0)
    led.observe(ev("FINISHED", "r4", stack="s9"), T0)  # parked
    back = Ledger.from_json(json.loads(json.dumps(led.to_json())))
    assert back.webhook_versions == {"r1": 4}
    assert set(back.pending) == {"r4"}
    assert back.observe(ev("PLANNING", "r1"), T0) == DUPLICATE
    poll(back, polled("r3", created=T0 + 120), polled("r1"))
    assert finished(back) == 2  # r3 once (by its delivery), r1 once (by the poll)
    assert back.observe(ev("FINISHED", "r1"), T0) == DUPLICATE


def test_a_file_without_webhook_state_still_loads() -> None:
    raw = ledger().to_json()
    del raw["webhook_versions"], raw["webhook_pending"]
    assert Ledger.from_json(raw).pending == {}


def test_a_run_delivered_while_a_poll_reads_is_not_dropped_by_that_poll() -> None:
    led = ledger()
    poll_began = T0 + 500
    # the poll read the stack's list at poll_began; the run was created and delivered after
    led.observe(ev("PLANNING", "r9", created=T0 + 600), T0 + 700)
    led.apply(LISTING, [], [ListView("s1", "runs", (polled("r1"),), True)], poll_began)
    assert "r9" in led.active  # still shown as in progress
    assert led.observe(ev("FINISHED", "r9", created=T0 + 600), T0 + 800) == ACCEPTED
    assert finished(led) == 2
