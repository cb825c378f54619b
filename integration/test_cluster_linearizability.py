"""Linearizability and fencing in the clustered form of every network backend,
through a member kill (configurations and fixture: `integration/cluster_faults.py`).

- a compare-and-swap counter incremented by 2 processes x 4 threads through a member
  kill ends at the number of acknowledged increments plus at most the unknown ones;
  no acknowledged increment vanishes, and no read returns less than an increment
  acknowledged before it began;
- a lock contended through a member kill, guarding a resource that refuses a fencing
  token lower than one it has seen: never two holders with one token, tokens grow;
- a lease holder process SIGKILLed: its keys go within `latest_expiry(ttl)` and a
  watcher sees each DELETE.

Where replication is asynchronous (Redis), what it no longer promises is measured.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import threading
import time
from collections import Counter

import libkv
from integration.cluster_faults import (
    CALL_BOUND,
    LOCK_TTL,
    PROGRESS_BOUND,
    THREAD_EXCEPTIONS_FAIL,
    Call,
    Running,
    outcome_of,
    report_figures,
    retrying,
)
from libkv import Action, Store
from libkv.testing.conformance.base import (
    EVENT_TIMEOUT,
    JOIN_MARGIN,
    LOST_MARGIN,
    ConformanceBase,
    ExpiryWindow,
    close_quietly,
)
from libkv.testing.cross_process import CHILD_TIMEOUT, read_line, spawn_child
from libkv.testing.faults import FAULT_TIMEOUT, NOT_REACHABLE_MARGIN
from libkv.testing.history import WatchRecorder, replay
from libkv.testing.polling import wait_until

pytestmark = THREAD_EXCEPTIONS_FAIL


# -- a compare-and-swap counter through a member kill ----------------------------------

COUNTING_CHILD = """
import json, sys, threading, time
import libkv
store = libkv.open(sys.argv[1])
stop = threading.Event()
histories = [[] for _ in range(int(sys.argv[2]))]

def outcome(error):
    if isinstance(error, libkv.UnknownOutcomeError):
        return "unknown"
    if isinstance(error, libkv.NotReachableError):
        return "not-reachable"
    if isinstance(error, libkv.KeyModifiedError):
        return "conflict"
    if isinstance(error, libkv.KeyNotFoundError):
        return "missing"  # the counter itself was lost (asynchronous replication)
    return "error: " + repr(error)

def count(history):
    while not stop.is_set():
        started = time.monotonic()
        try:
            pair = store.get("counter")
        except Exception as error:
            history.append(["read", outcome(error), started, time.monotonic(), None])
            continue
        value = int(pair.value)
        history.append(["read", "ok", started, time.monotonic(), value])
        started = time.monotonic()
        try:
            store.update("counter", str(value + 1), version=pair.version)
        except Exception as error:
            history.append(["write", outcome(error), started, time.monotonic(), value + 1])
        else:
            history.append(["write", "ok", started, time.monotonic(), value + 1])

threads = [threading.Thread(target=count, args=(history,), daemon=True) for history in histories]
for thread in threads:
    thread.start()
print("ready", flush=True)
sys.stdin.readline()
stop.set()
for thread in threads:
    thread.join(30)
hung = sum(thread.is_alive() for thread in threads)
print(json.dumps({"hung": hung, "history": [op for h in histories for op in h]}), flush=True)
store.close()
"""
PROCESSES = 2
THREADS = 4


@dataclasses.dataclass(frozen=True)
class Operation:
    """One operation of the counter history (times are CLOCK_MONOTONIC, shared by the
    processes of this machine)."""

    kind: str  # "read" or "write"
    outcome: str  # "ok", "conflict", "unknown", "not-reachable", or "error: ..."
    started: float
    ended: float
    value: int | None  # read: the value seen; write: the value written


def test_compare_and_swap_counter_through_a_member_kill(running: Running) -> None:
    """2 processes x 4 threads increment one counter by compare-and-swap while the
    member in use is killed and restarted. The final value is at least the number of
    acknowledged increments and at most that plus the unknown ones; each acknowledged
    value is unique and at most the final value (none vanished); no read returns less
    than an increment acknowledged before the read began. Where replication is
    asynchronous, only what it still promises is asserted (no value appears that no
    increment wrote) and the rest is measured."""
    store = running.open()
    children = []
    try:
        store.put("counter", b"0")
        for _ in range(PROCESSES):
            children.append(spawn_child(COUNTING_CHILD, running.url, str(THREADS)))
        for child in children:
            assert read_line(child, CHILD_TIMEOUT) == "ready"
        seen: set[int] = set()
        counter_lost: list[float] = []

        def counter_moves(at_least: int) -> bool:
            try:
                seen.add(int(store.get("counter").value))
            except libkv.NotReachableError:
                pass
            except libkv.KeyNotFoundError:
                if running.backend.durable:
                    raise
                # Asynchronous replication lost the key itself: measured, and the
                # counter starts again so that the increments can go on.
                counter_lost.append(time.monotonic())
                with contextlib.suppress(libkv.KeyExistsError, libkv.NotReachableError):
                    store.create("counter", b"0")
            return len(seen) >= at_least

        wait_until(lambda: counter_moves(20), PROGRESS_BOUND, message="no increments")
        killed = time.monotonic()
        running.victim.kill()
        seen.clear()
        wait_until(lambda: counter_moves(10), PROGRESS_BOUND, message="no increments after kill")
        running.heal()
        seen.clear()
        wait_until(lambda: counter_moves(10), PROGRESS_BOUND, message="no increments after heal")
        history: list[Operation] = []
        for child in children:
            assert child.stdin is not None
            child.stdin.write("stop\n")
            child.stdin.flush()
        for child in children:
            report = json.loads(read_line(child, CHILD_TIMEOUT + 30))
            assert report["hung"] == 0, "an increment thread hangs"
            history += [Operation(*operation) for operation in report["history"]]
        final = int(retrying(lambda: store.get("counter"), "get").value)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.communicate(timeout=CHILD_TIMEOUT)
        close_quietly(store)
    figures = _check_counter(running, history, final)
    report_figures(
        running,
        "cas-counter",
        **figures,
        kill_at_ops=sum(op.started < killed for op in history),
        counter_key_lost=bool(counter_lost),
    )


def _check_counter(running: Running, history: list[Operation], final: int) -> dict[str, object]:
    errors = [op.outcome for op in history if op.outcome.startswith("error")]
    assert not errors, f"errors that are not libkv's documented ones: {errors[:5]}"
    slow = [op for op in history if op.ended - op.started > CALL_BOUND]
    assert not slow, f"operations beyond timeout + {NOT_REACHABLE_MARGIN} s: {slow[:5]}"
    acknowledged = sorted(
        (op for op in history if op.kind == "write" and op.outcome == "ok"),
        key=lambda op: op.ended,
    )
    unknown = [op for op in history if op.kind == "write" and op.outcome == "unknown"]
    values = [op.value for op in acknowledged if op.value is not None]
    written = {op.value for op in [*acknowledged, *unknown]}
    # Anywhere: every value the counter passed through was written by some increment.
    invented = sorted(set(range(1, final + 1)) - written)
    assert not invented, f"counter values no increment wrote: {invented[:10]}"
    duplicated = sorted(value for value, times in Counter(values).items() if times > 1)
    vanished = sorted(value for value in values if value > final)
    stale = _stale_reads(history, acknowledged)
    figures: dict[str, object] = {
        "acknowledged": len(acknowledged),
        "unknown": len(unknown),
        "final": final,
        "lost": len(vanished),
        "duplicated": len(duplicated),
        "stale_reads": len(stale),
        "conflicts": sum(op.outcome == "conflict" for op in history),
    }
    if running.backend.durable:
        assert not duplicated, f"two increments acknowledged with one value: {duplicated[:10]}"
        assert not vanished, f"acknowledged increments vanished: {vanished[:10]} > {final}"
        assert not stale, f"reads older than an acknowledged increment: {stale[:5]}"
        assert len(acknowledged) <= final <= len(acknowledged) + len(unknown), figures
    return figures


def _stale_reads(history: list[Operation], acknowledged: list[Operation]) -> list[str]:
    """Reads that returned less than an increment acknowledged before they began."""
    stale = []
    reads = sorted(
        (op for op in history if op.kind == "read" and op.outcome == "ok"),
        key=lambda op: op.started,
    )
    highest, index = 0, 0
    for read in reads:
        while index < len(acknowledged) and acknowledged[index].ended < read.started:
            highest = max(highest, acknowledged[index].value or 0)
            index += 1
        if read.value is not None and read.value < highest:
            stale.append(f"read {read.value} after {highest} was acknowledged")
    return stale


# -- locks and a fenced resource through a member kill ---------------------------------


class FencedResource:
    """A tiny storage that remembers the highest fencing token it has seen and refuses
    a write carrying a lower one."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self.highest = 0
        self.accepted: list[tuple[int, str]] = []
        self.rejected: list[tuple[int, str, int]] = []

    def write(self, token: int, holder: str) -> bool:
        with self._guard:
            if token < self.highest:
                self.rejected.append((token, holder, self.highest))
                return False
            self.highest = token
            self.accepted.append((token, holder))
            return True


@dataclasses.dataclass(frozen=True)
class Holding:
    holder: str
    token: int
    acquired: float
    lock: libkv.Lock


@dataclasses.dataclass
class Contention:
    """Workers taking one lock in turn, each writing to a fenced resource while it holds
    the lock."""

    resource: FencedResource = dataclasses.field(default_factory=FencedResource)
    holdings: list[Holding] = dataclasses.field(default_factory=list)
    calls: list[Call] = dataclasses.field(default_factory=list)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)

    def work(self, store: Store, name: str) -> None:
        number = 0
        while not self.stop.is_set():
            number += 1
            holder = f"{name}#{number}"
            lock = store.lock("lock", ttl=LOCK_TTL, value=holder.encode())
            started = time.monotonic()
            try:
                if not lock.acquire(timeout=FAULT_TIMEOUT):
                    self.calls.append(Call(started, time.monotonic(), "timeout"))
                    continue
            except BaseException as error:
                self.calls.append(Call(started, time.monotonic(), outcome_of(error), error))
                if outcome_of(error) == "error":
                    return
                continue
            self.calls.append(Call(started, time.monotonic(), "ok"))
            assert lock.token is not None
            self.holdings.append(Holding(holder, lock.token, time.monotonic(), lock))
            with contextlib.suppress(libkv.NotReachableError):  # the work stops there
                for step in range(3):
                    self.resource.write(lock.token, holder)
                    store.put(f"work/{name}", f"{holder} step {step}")
            # Released whatever happened: a release that fails (unreachable, or the lock
            # was lost) has still stopped the lease's keep-alives, so the lock frees
            # itself within its ttl.
            with contextlib.suppress(libkv.NotReachableError, libkv.LockError):
                lock.release()

    def acquired_after(self, moment: float) -> int:
        return sum(1 for holding in list(self.holdings) if holding.acquired > moment)


def test_lock_contention_through_a_member_kill(running: Running) -> None:
    """Four workers (two clients, two threads each) take one lock in turn and write
    to a resource that refuses a fencing token lower than one it has seen, while the
    member in use is killed and restarted. No two holders ever get one token, a later
    acquisition always has a larger token, the resource never takes two holders'
    writes out of order, a holder refused by the resource had lost its lock, and the
    lock keeps being taken after the kill and after the restart."""
    stores = [running.open(), running.open()]
    contention = Contention()
    workers = [
        threading.Thread(target=contention.work, args=(store, f"c{index}t{thread}"), daemon=True)
        for index, store in enumerate(stores)
        for thread in range(2)
    ]
    try:
        for worker in workers:
            worker.start()
        wait_until(lambda: contention.acquired_after(0) >= 5, PROGRESS_BOUND, message="no lock")
        killed = time.monotonic()
        running.victim.kill()
        wait_until(
            lambda: contention.acquired_after(killed) >= 5,
            PROGRESS_BOUND,
            message=lambda: f"the lock is stuck after the kill: {contention.calls[-4:]}",
        )
        running.heal()
        healed = time.monotonic()
        wait_until(
            lambda: contention.acquired_after(healed) >= 3,
            PROGRESS_BOUND,
            message=lambda: f"the lock is stuck after healing: {contention.calls[-4:]}",
        )
    finally:
        contention.stop.set()
        for worker in workers:
            worker.join(FAULT_TIMEOUT + CALL_BOUND + JOIN_MARGIN)
        hung = [worker.name for worker in workers if worker.is_alive()]
        for store in stores:
            close_quietly(store)
    assert not hung, "a lock worker hangs"
    figures = _check_fencing(running, contention)
    report_figures(running, "lock-fencing", **figures)


def _check_fencing(running: Running, contention: Contention) -> dict[str, object]:
    unexpected = [call.error for call in contention.calls if call.outcome == "error"]
    assert not unexpected, f"errors that are not NotReachableError: {unexpected!r}"
    slow = [call for call in contention.calls if call.took > FAULT_TIMEOUT + CALL_BOUND]
    assert not slow, f"acquire(timeout={FAULT_TIMEOUT}) ran past the timeout + bound: {slow}"
    # The resource's guarantee, which needs tokens unique per holder: a token is one
    # holder's, so writes of different holders are in strictly growing token order.
    owners: dict[int, set[str]] = {}
    for token, holder in contention.resource.accepted:
        owners.setdefault(token, set()).add(holder)
    shared = {token: holders for token, holders in owners.items() if len(holders) > 1}
    holdings = sorted(contention.holdings, key=lambda holding: holding.acquired)
    reused = Counter(holding.token for holding in holdings)
    duplicated = sorted(token for token, times in reused.items() if times > 1)
    backwards = [
        (earlier.token, later.token)
        for earlier, later in itertools.pairwise(holdings)
        if later.token <= earlier.token
    ]
    rejected = {holder for _, holder, _ in contention.resource.rejected}
    by_holder = {holding.holder: holding for holding in holdings}
    figures: dict[str, object] = {
        "acquisitions": len(holdings),
        "accepted_writes": len(contention.resource.accepted),
        "rejected_writes": len(contention.resource.rejected),
        "tokens_reissued": len(duplicated),
        "tokens_shared_in_accepted_writes": len(shared),
        "tokens_backwards": len(backwards),
        "failed_acquires": sum(call.outcome not in ("ok", "timeout") for call in contention.calls),
    }
    if running.backend.durable:
        assert not shared, f"holders sharing a token had writes accepted: {shared}"
        assert not duplicated, f"tokens handed out twice: {duplicated}"
        assert not backwards, f"tokens that did not grow: {backwards}"
        # A holder refused by the resource had been overtaken: it must learn it lost
        # the lock (its lease ran out) within ttl + the margin for noticing.
        wait_until(
            lambda: all(by_holder[holder].lock.lost.is_set() for holder in rejected),
            LOCK_TTL + LOST_MARGIN,
            message=lambda: f"refused by the resource while holding the lock: {rejected}",
        )
    return figures


# -- a lease holder process killed ------------------------------------------------------

HOLDING_CHILD = """
import sys
import libkv
store = libkv.open(sys.argv[1])
ttl = float(sys.argv[2])
store.put("held/ttl", b"1", ttl=ttl)
store.put("held/lease", b"1", lease=store.lease(ttl))
assert store.lock("held/lock", ttl=ttl, value=b"child").acquire(timeout=10)
print("ready", flush=True)
sys.stdin.readline()  # held until SIGKILL
"""


def test_a_killed_lease_holder_leaves_nothing_behind(running: Running) -> None:
    """A process holding a ttl key, a leased key and a lock is SIGKILLed: its keys go
    within latest_expiry(ttl) of the kill, a watcher sees each DELETE in time, and the
    lock can be taken again."""
    store = running.open()
    keys = ["held/lease", "held/lock", "held/ttl"]
    ttl = max(store.capabilities.ttl_min, 1.0)
    try:
        with store.watch("held", recursive=True) as watch, WatchRecorder(watch) as recorder:
            init = wait_until(lambda: recorder.events, EVENT_TIMEOUT, message="no INIT")[0]
            spawned = time.monotonic()
            child = spawn_child(HOLDING_CHILD, running.url, str(ttl))
            try:
                assert read_line(child, CHILD_TIMEOUT) == "ready"
                wait_until(
                    lambda: {event.key for event in recorder.events[1:]} == set(keys),
                    EVENT_TIMEOUT,
                    message="the child's writes did not reach the watch",
                )
            finally:
                child.kill()  # SIGKILL: nothing is revoked, released or deleted
                child.communicate(timeout=CHILD_TIMEOUT)
            died = time.monotonic()
            window = ExpiryWindow(
                tuple(keys), spawned + ttl, died + store.capabilities.latest_expiry(ttl)
            )
            ConformanceBase().assert_expiry(store, [window], recorder)
            gone = max(
                arrived for arrived, event in recorder.arrivals if event.action is Action.DELETE
            )
        assert replay(init, recorder.events[1:]) == {}
        lock = store.lock("held/lock", ttl=ttl)
        assert lock.acquire(blocking=False)
        lock.release()
    finally:
        close_quietly(store)
    report_figures(
        running,
        "lease-holder-killed",
        ttl=ttl,
        last_delete_after_kill=f"{gone - died:.2f}s",
        bound=f"{store.capabilities.latest_expiry(ttl):.2f}s",
    )
