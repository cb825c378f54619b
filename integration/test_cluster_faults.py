"""Faults in the clustered form of every network backend: a member crashes or freezes.

`CLUSTERED` is the table of configurations, one entry each: a 3-member etcd cluster, a
3-server Consul cluster and a Redis master with a replica and a Sentinel. Adding a
backend (the ZooKeeper ensemble) is one entry. The member faulted is the one the
client talks to: the Raft leader, put first in the URL, or the Redis master.

Every scenario records each operation's outcome and checks properties of that record
afterwards (in the manner of etcd's robustness tests and Jepsen's register checks):

- a member SIGKILLed and restarted, or SIGSTOPped past the store's timeout and then
  continued, during writes with an open recursive watch: every call ends within
  timeout + 2 s, reads either succeed (through another member) or raise
  NotReachableError, writes either succeed or raise NotReachableError (certainly not
  applied) or UnknownOutcomeError; every acknowledged write is there afterwards, no
  certainly-failed write is, nothing is invented; the same Store and the same watch go
  on (or the watch raises an error the backend documents);
- a compare-and-swap counter incremented by 2 processes x 4 threads through a member
  kill ends at the number of acknowledged increments plus at most the unknown ones;
  no acknowledged increment vanishes, and no read returns less than an increment
  acknowledged before it began;
- a lock contended through a member kill, guarding a resource that refuses a fencing
  token lower than one it has seen: never two holders with one token, tokens grow;
- a lease holder process SIGKILLed: its keys go within `latest_expiry(ttl)` and a
  watcher sees each DELETE.

Redis replicates asynchronously: a failover may lose acknowledged writes, which its
README documents. There those losses are measured and printed, not asserted away;
everything else is asserted on every backend. Each test prints one line of figures
(run with ``-s`` to see them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import libkv
from integration.servers import (
    ConsulCluster,
    EtcdCluster,
    RedisSentinelGroup,
    ServerCluster,
    ServerProcess,
    ZooKeeperEnsemble,
)
from libkv import Action, KVPair, Store
from libkv.testing.conformance.base import (
    EVENT_TIMEOUT,
    JOIN_MARGIN,
    LOST_MARGIN,
    ConformanceBase,
    ExpiryWindow,
    close_quietly,
)
from libkv.testing.cross_process import CHILD_TIMEOUT, read_line, spawn_child
from libkv.testing.faults import FAULT_TIMEOUT, NOT_REACHABLE_MARGIN, RECOVERY_BOUND
from libkv.testing.history import WatchRecorder, assert_valid_history, replay
from libkv.testing.polling import wait_until

# A fault must never kill a libkv thread (a keep-alive, a watch feed) with an exception.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

CALL_BOUND = FAULT_TIMEOUT + NOT_REACHABLE_MARGIN
"""Contract: a call ends (with a result or NotReachableError) this long after it began."""
FROZEN_FOR = FAULT_TIMEOUT + NOT_REACHABLE_MARGIN
"""How long a member stays frozen: past the store's timeout, and then some."""
REJOIN_BOUND = 60.0
"""Bound for a restarted or continued member to be part of a healthy cluster again."""
PROGRESS_BOUND = 30.0
"""Bound for the clients to make progress (writes, increments, locks) after a fault."""
LOCK_TTL = 5.0
"""Lock ttl: outlives a failover, short enough that a lock stranded by a failed release
frees itself within the test."""


# -- the clustered configurations -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Clustered:
    """One backend in its clustered form, and what its replication promises."""

    name: str
    make: Callable[[], ServerCluster[Any]]
    victim: Callable[[ServerCluster[Any]], ServerProcess | None]
    """The member the client talks to: the one a fault hits."""
    url: Callable[[ServerCluster[Any], ServerProcess], str]
    """The URL (no options), reaching `victim` first."""
    options: str = ""
    durable: bool = True
    """Whether an acknowledged write survives the loss of any one member (quorum
    replication). False: asynchronous replication, losses are measured."""
    watch_errors: tuple[type[libkv.KVError], ...] = ()
    """Errors a watch may end with across a failover, as the backend documents."""


def _leader(cluster: ServerCluster[Any]) -> ServerProcess | None:
    return cluster.leader()


def _leader_first(cluster: ServerCluster[Any], victim: ServerProcess) -> str:
    """All members, the victim first, so the client starts with it."""
    others = [member.endpoint for member in cluster.members if member is not victim]
    return f"{cluster.scheme}://" + ",".join([victim.endpoint, *others])


def _master(cluster: ServerCluster[Any]) -> ServerProcess | None:
    assert isinstance(cluster, RedisSentinelGroup)
    return cluster.master()


def _through_sentinel(cluster: ServerCluster[Any], victim: ServerProcess) -> str:
    return cluster.url


CLUSTERED = [
    Clustered("etcd-cluster", EtcdCluster, _leader, _leader_first),
    Clustered("consul-cluster", ConsulCluster, _leader, _leader_first, "session_ttl_min=1"),
    Clustered(
        "redis-sentinel",
        RedisSentinelGroup,
        _master,
        _through_sentinel,
        durable=False,
        watch_errors=(libkv.HistoryLostError,),  # plugins/redis/README.md, Sentinel
    ),
    Clustered("zookeeper-ensemble", ZooKeeperEnsemble, _leader, _leader_first),
]


@dataclasses.dataclass
class Running:
    """A started cluster of one configuration, with the member a fault will hit."""

    backend: Clustered
    cluster: ServerCluster[Any]
    victim: ServerProcess
    url: str
    """The URL of a fresh namespace, with the fault timeout."""

    def open(self) -> Store:
        return libkv.open(self.url)

    def assert_talks_to_victim(self, store: Store) -> None:
        """Where the driver says which member it talks to, it is the victim."""
        endpoint = getattr(store, "endpoint", None)
        assert endpoint in (None, self.victim.endpoint), (
            f"the store talks to {endpoint}, not to {self.victim.endpoint}"
        )

    def heal(self) -> None:
        """Bring every member back and wait until the cluster is healthy again."""
        for member in self.cluster.members:
            if member.paused:
                member.resume()
            elif not member.running:
                member.start(wait=False)
        self.cluster.wait_healthy(REJOIN_BOUND)


@pytest.fixture(params=CLUSTERED, ids=[backend.name for backend in CLUSTERED])
def running(request: pytest.FixtureRequest) -> Iterator[Running]:
    """A fresh cluster of one configuration for one test (tests kill its members)."""
    backend: Clustered = request.param
    cluster = backend.make()
    try:
        cluster.start()
        victim = wait_until(lambda: backend.victim(cluster), EVENT_TIMEOUT, message="no leader")
        assert victim is not None
        options = f"prefix=t{uuid.uuid4().hex}&timeout={FAULT_TIMEOUT}"
        if backend.options:
            options += "&" + backend.options
        base = backend.url(cluster, victim)
        url = base + ("&" if "?" in base else "?") + options
        yield Running(backend, cluster, victim, url)
    finally:
        cluster.close()


def _report(running: Running, scenario: str, **figures: object) -> None:
    listing = " ".join(f"{name}={value}" for name, value in figures.items())
    print(f"\nFIGURES {running.backend.name} {scenario}: {listing}")


# -- recorded operations ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Call:
    """One operation: when it began and ended and what came of it."""

    started: float
    ended: float
    outcome: str
    """"ok", "not-reachable" (certainly not applied), "unknown" or "error"."""
    error: BaseException | None = None

    @property
    def took(self) -> float:
        return self.ended - self.started


def _outcome(error: BaseException) -> str:
    if isinstance(error, libkv.UnknownOutcomeError):
        return "unknown"
    if isinstance(error, libkv.NotReachableError):
        return "not-reachable"
    return "error"


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
                self.writes[key] = Call(started, time.monotonic(), _outcome(error), error)
                if _outcome(error) == "error":
                    return
            else:
                self.writes[key] = Call(started, time.monotonic(), "ok")

    def _read(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.store.list("written")
            except BaseException as error:
                self.reads.append(Call(started, time.monotonic(), _outcome(error), error))
                if _outcome(error) == "error":
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


def _retrying(call: Callable[[], Any], what: str) -> Any:
    """`call`'s result once it stops raising NotReachableError (bounded)."""
    results: list[Any] = []
    failures: list[str] = []

    def attempt() -> bool:
        try:
            results.append(call())
        except libkv.NotReachableError as error:
            failures[:] = [repr(error)]
            return False
        return True

    wait_until(attempt, RECOVERY_BOUND, 0.1, message=lambda: f"{what}: {failures}")
    return results[-1]


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
            final = {pair.key: pair for pair in _retrying(lambda: store.list(), "list")}
            lost = _check_writes(running, traffic, final)
            outage = traffic.longest_outage(faulted)
            diverged = _check_watch(running, store, init, recorder, final, lost, outage)
        outcomes = Counter(call.outcome for call in traffic.writes.values())
        read_outcomes = Counter(call.outcome for call in traffic.reads)
        _report(
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
    is returned, not asserted."""
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
        final = int(_retrying(lambda: store.get("counter"), "get").value)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.communicate(timeout=CHILD_TIMEOUT)
        close_quietly(store)
    figures = _check_counter(running, history, final)
    _report(
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
                self.calls.append(Call(started, time.monotonic(), _outcome(error), error))
                if _outcome(error) == "error":
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
    _report(running, "lock-fencing", **figures)


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
    _report(
        running,
        "lease-holder-killed",
        ttl=ttl,
        last_delete_after_kill=f"{gone - died:.2f}s",
        bound=f"{store.capabilities.latest_expiry(ttl):.2f}s",
    )
