"""Faults in the clustered form of every network backend: a member crashes or freezes
during writes with an open recursive watch (configurations and fixture:
`integration/cluster_faults.py`).

A member SIGKILLed and restarted, or SIGSTOPped past the store's timeout and then
continued: every call ends within timeout + 2 s, reads either succeed (through another
member) or raise NotReachableError, writes either succeed or raise NotReachableError
(certainly not applied) or UnknownOutcomeError; every acknowledged write is there
afterwards, no certainly-failed write is, nothing is invented; the same Store and the
same watch go on (or the watch raises an error the backend documents). Where
replication is asynchronous (Redis), lost acknowledged writes are measured.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import Counter

import pytest

import libkv
from integration.cluster_faults import (
    CALL_BOUND,
    FROZEN_FOR,
    PROGRESS_BOUND,
    THREAD_EXCEPTIONS_FAIL,
    Call,
    Running,
    outcome_of,
    report_figures,
    retrying,
)
from libkv import Action, KVPair, Store
from libkv.testing.conformance.base import EVENT_TIMEOUT, JOIN_MARGIN, close_quietly
from libkv.testing.faults import FAULT_TIMEOUT, NOT_REACHABLE_MARGIN
from libkv.testing.history import WatchRecorder, assert_valid_history, replay
from libkv.testing.polling import wait_until

pytestmark = THREAD_EXCEPTIONS_FAIL


@dataclasses.dataclass
class Traffic:
    """Distinct-key writes and reads running on threads against one store."""

    store: Store
    written: dict[str, KVPair] = dataclasses.field(default_factory=dict)
    writes: dict[str, Call] = dataclasses.field(default_factory=dict)
    reads: list[Call] = dataclasses.field(default_factory=list)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)

    def start(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._write, name="cluster-writer", daemon=True),
            threading.Thread(target=self._read, name="cluster-reader", daemon=True),
        ]
        for thread in threads:
            thread.start()
        return threads

    def _write(self) -> None:
        index = 0
        while not self.stop.is_set():
            key = f"written/{index:06d}"
            index += 1
            started = time.monotonic()
            try:
                self.written[key] = self.store.put(key, key)
            except BaseException as error:
                self.writes[key] = Call(started, time.monotonic(), outcome_of(error), error)
                if outcome_of(error) == "error":
                    return
            else:
                self.writes[key] = Call(started, time.monotonic(), "ok")

    def _read(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.store.list("written")
            except BaseException as error:
                self.reads.append(Call(started, time.monotonic(), outcome_of(error), error))
                if outcome_of(error) == "error":
                    return
            else:
                self.reads.append(Call(started, time.monotonic(), "ok"))

    def acknowledged_after(self, moment: float) -> int:
        """Writes begun after `moment` and acknowledged."""
        calls = list(self.writes.values())
        return sum(1 for call in calls if call.outcome == "ok" and call.started > moment)

    def longest_outage(self, since: float) -> float:
        """The longest time from `since` on during which no call succeeded."""
        successes = sorted(
            call.ended
            for call in [*list(self.writes.values()), *self.reads]
            if call.outcome == "ok" and call.ended > since
        )
        moments = [since, *successes]
        return max((later - earlier for earlier, later in itertools.pairwise(moments)), default=0.0)

    def first_acknowledged_after(self, moment: float) -> float | None:
        ends = [
            call.ended
            for call in list(self.writes.values())
            if call.outcome == "ok" and call.started > moment
        ]
        return min(ends) - moment if ends else None


# -- a member crashes or freezes during writes with an open watch ---------------------


@pytest.mark.parametrize("fault", ["kill-and-restart", "freeze-past-timeout"])
def test_member_fault_during_writes_with_an_open_watch(running: Running, fault: str) -> None:
    """The member in use is SIGKILLed and started again, or SIGSTOPped for longer than
    the store's timeout and then continued, while a thread writes distinct keys, another
    lists them and a recursive watch is open. Every call ends within timeout + 2 s with
    a result or NotReachableError (a write: also UnknownOutcomeError); after a kill,
    writes go on through the other members; every acknowledged write is there
    afterwards and no certainly-failed one is; the same Store works again once the
    member is back, and the same watch converges on list() (or raises an error the
    contract allows: see `_check_watch`). Progress during a freeze is measured."""
    store = running.open()
    try:
        running.assert_talks_to_victim(store)
        with store.watch("", recursive=True) as watch, WatchRecorder(watch) as recorder:
            init = wait_until(lambda: recorder.events, EVENT_TIMEOUT, message="no INIT")[0]
            assert init.action is Action.INIT and init.snapshot == ()
            traffic = Traffic(store)
            threads = traffic.start()
            try:
                wait_until(
                    lambda: len(traffic.written) >= 30,
                    EVENT_TIMEOUT,
                    message="writes did not start",
                )
                faulted = time.monotonic()
                if fault == "kill-and-restart":
                    running.victim.kill()
                    # A dead member is noticed at once: writes go on through the others
                    # (Redis: once Sentinel has promoted the replica).
                    wait_until(
                        lambda: traffic.acknowledged_after(faulted) >= 20,
                        PROGRESS_BOUND,
                        message=lambda: f"no progress after the kill: {_failures(traffic)}",
                    )
                else:
                    running.victim.pause()
                    # Calls must end in time; whether a client leaves a frozen member
                    # (which still accepts connections) is measured, not required.
                    time.sleep(FROZEN_FOR)
                during_fault = traffic.acknowledged_after(faulted)
                recovery = traffic.first_acknowledged_after(faulted)
                healed = time.monotonic()
                running.heal()
                wait_until(
                    lambda: (
                        traffic.acknowledged_after(time.monotonic() - 1.0) >= 10
                        and traffic.acknowledged_after(healed) >= 20
                    ),
                    PROGRESS_BOUND,
                    message=lambda: f"no progress after healing: {_failures(traffic)}",
                )
            finally:
                traffic.stop.set()
                for thread in threads:
                    thread.join(CALL_BOUND + JOIN_MARGIN)
            assert not any(thread.is_alive() for thread in threads), "a call hangs"
            final = {pair.key: pair for pair in retrying(lambda: store.list(), "list")}
            lost = _check_writes(running, traffic, final)
            outage = traffic.longest_outage(faulted)
            vanished = lost
            if not running.backend.durable:
                # A write of unknown outcome may have reached the old master only: the
                # watch saw it, and the failover lost it like an acknowledged one.
                unknown = {k for k, call in traffic.writes.items() if call.outcome == "unknown"}
                vanished = sorted({*lost, *(unknown - set(final))})
            diverged = _check_watch(running, store, init, recorder, final, vanished, outage)
        outcomes = Counter(call.outcome for call in traffic.writes.values())
        read_outcomes = Counter(call.outcome for call in traffic.reads)
        report_figures(
            running,
            fault,
            acknowledged=outcomes["ok"],
            lost=len(lost),
            unknown=outcomes["unknown"],
            not_reachable=outcomes["not-reachable"],
            reads=dict(read_outcomes),
            acknowledged_during_fault=during_fault,
            first_write_after_fault=f"{recovery:.2f}s" if recovery is not None else None,
            longest_outage=f"{outage:.2f}s",
            longest_write=f"{max(call.took for call in traffic.writes.values()):.2f}s",
            watch_error=repr(recorder.error)[:80] if recorder.error else None,
            watch_diverged=diverged,
        )
    finally:
        close_quietly(store)


def _failures(traffic: Traffic) -> list[str]:
    calls = [*list(traffic.writes.values())[-3:], *traffic.reads[-3:]]
    return [repr(call.error) for call in calls if call.error is not None]


def _check_writes(running: Running, traffic: Traffic, final: dict[str, KVPair]) -> list[str]:
    """Assert what every backend promises of the recorded writes and reads; return the
    acknowledged writes lost (asserted none where replication is durable)."""
    unexpected = [
        call.error for call in [*traffic.writes.values(), *traffic.reads] if call.outcome == "error"
    ]
    assert not unexpected, f"errors that are not NotReachableError: {unexpected!r}"
    slow = [
        f"{kind} took {call.took:.1f} s ({call.outcome})"
        for kind, calls in (("write", traffic.writes.values()), ("read", traffic.reads))
        for call in calls
        if call.took > CALL_BOUND
    ]
    assert not slow, f"calls beyond timeout + {NOT_REACHABLE_MARGIN} s: {slow}"
    uncertain = {key for key, call in traffic.writes.items() if call.outcome == "unknown"}
    failed = {key for key, call in traffic.writes.items() if call.outcome == "not-reachable"}
    applied = sorted(failed & set(final))
    assert not applied, f"certainly-failed writes applied: {applied[:10]}"
    invented = set(final) - set(traffic.written) - uncertain
    assert not invented, f"keys nobody wrote: {sorted(invented)[:10]}"
    altered = [key for key, pair in final.items() if pair.value != key.encode()]
    assert not altered, f"values altered: {altered[:10]}"
    changed = [key for key, pair in traffic.written.items() if final.get(key, pair) != pair]
    assert not changed, f"acknowledged pairs changed: {changed[:10]}"
    lost = sorted(set(traffic.written) - set(final))
    if running.backend.durable:
        assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:10]}"
    return lost


def _check_watch(
    running: Running,
    store: Store,
    init: libkv.Event,
    recorder: WatchRecorder,
    final: dict[str, KVPair],
    lost: list[str],
    outage: float,
) -> bool:
    """The same watch converges on `final` with a valid history, or ends with an error
    the contract allows: NotReachableError if the store was unreachable (no call
    succeeded) for longer than its timeout, or one the backend documents. Where
    acknowledged writes were lost (asynchronous replication) and the watch raised
    nothing, it may not have been able to tell (documented): then whether it diverged
    is returned, not asserted. `lost` holds the writes the backend lost: acknowledged
    ones, and where replication is asynchronous also those of unknown outcome."""
    allowed = running.backend.watch_errors
    if outage >= FAULT_TIMEOUT:
        allowed += (libkv.NotReachableError,)

    def settled() -> bool:
        return recorder.error is not None or replay(init, recorder.events[1:]) == final

    if not lost:
        wait_until(
            settled,
            EVENT_TIMEOUT,
            message=lambda: f"the watch did not converge on list(): {recorder.error!r}",
        )
    if recorder.error is not None:
        assert isinstance(recorder.error, allowed), (
            f"the watch raised {recorder.error!r}; the longest outage was {outage:.2f} s"
        )
    elif lost:
        return not settled()
    assert_valid_history(
        init,
        recorder.events[1:],
        watched="",
        recursive=True,
        every_change=store.capabilities.watch_every_change,
    )
    return False
