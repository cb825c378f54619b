"""The fault layer of the conformance kit: the contract while the server crashes,
freezes and comes back.

A driver whose test can kill, freeze and restart a real server switches it on by
subclassing `FaultConformance` and providing a function-scoped fixture `fault_server`:
an object satisfying `FaultServer`, started, with data no other test shares (each test
kills or freezes it)::

    class TestRedisFaults(FaultConformance):
        @pytest.fixture
        def fault_server(self) -> Iterator[FaultServer]:
            with MyRedisServer() as server:  # has url, persistent, kill, start, ...
                yield server

Every store is opened with `timeout=FaultConformance.fault_timeout` (3 s unless a
subclass says otherwise). What is checked (docs/contract.md: watches, errors):

- with the server killed, a watch being iterated, a blocked `wait_for_change()` and a
  blocked `lock.acquire()` all raise `NotReachableError` within timeout + 2 s (never a
  hang), and so does the next write;
- with the server frozen (SIGSTOP), `watch.close()` returns and ends the iteration
  within 1 s, and reads and writes raise `NotReachableError` within timeout + 2 s;
- after a crash and restart, the same `Store` object works again without reopening;
- fencing tokens and versions never go backwards across the restart, whether or not the
  server kept its data;
- where the server persists (`FaultServer.persistent`), no acknowledged write is lost;
  where it does not, nothing is invented or altered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import ClassVar, Generic, Protocol, TypeVar, runtime_checkable

import pytest

import libkv
from libkv import Action, Event, KVPair, Store, ops
from libkv.testing.conformance.base import (
    CLOSE_BOUND,
    EVENT_TIMEOUT,
    JOIN_MARGIN,
    ConformanceBase,
    call_within,
    close_quietly,
    keys_of,
)
from libkv.testing.history import replay
from libkv.testing.polling import wait_until

__all__ = [
    "FAULT_TIMEOUT",
    "NOT_REACHABLE_MARGIN",
    "RECOVERY_BOUND",
    "BackgroundCall",
    "FaultConformance",
    "FaultServer",
]

T = TypeVar("T")

FAULT_TIMEOUT = 3.0
"""The store timeout the fault tests open their stores with (seconds)."""
NOT_REACHABLE_MARGIN = 2.0
"""Contract: NotReachableError comes at most this long after the store timeout."""
RECOVERY_BOUND = 10.0
"""Bound for the same Store to work again once a restarted server is healthy."""
FROZEN_SETTLE = 1.0
"""How long a frozen server is left frozen before close(): long enough for every client
thread to be blocked on it, well short of FAULT_TIMEOUT."""
LOCK_TTL = 10.0
"""A lock ttl that outlives every test here, so only the fault frees a held lock."""


@runtime_checkable
class FaultServer(Protocol):
    """A real server that a fault test may kill, freeze and start again.

    The harness's `ServerProcess` (integration/servers.py) has every member but
    `persistent`, which a thin subclass or adapter states.
    """

    @property
    def url(self) -> str:
        """A libkv URL of the server; every `libkv.open` of it reaches the same data."""

    @property
    def persistent(self) -> bool:
        """Whether acknowledged writes survive kill() followed by start()."""

    def kill(self) -> None:
        """SIGKILL the server (a crash) and return once the process is gone."""

    def start(self) -> object:
        """Start the killed server again on the same address with the same data
        directory, returning once it serves requests."""

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""

    def resume(self) -> None:
        """Continue a frozen server (SIGCONT)."""


class BackgroundCall(Generic[T]):
    """A call running on a daemon thread, with its result or error and when it ended."""

    def __init__(self, name: str, call: Callable[[], T]) -> None:
        self.name = name
        self.result: T | None = None
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self._call = call
        self._thread = threading.Thread(target=self._run, name=f"fault-{name}", daemon=True)

    def start(self) -> BackgroundCall[T]:
        self._thread.start()
        return self

    def join(self, deadline: float) -> None:
        """Wait until the call ends or `deadline` (a time.monotonic() value) passes."""
        self._thread.join(max(deadline - time.monotonic(), 0.0))

    def _run(self) -> None:
        try:
            self.result = self._call()
        except BaseException as error:
            self.error = error
        finally:
            self.ended_at = time.monotonic()

    def not_reachable_failure(self, since: float, bound: float) -> str:
        """'' if the call raised NotReachableError at most `bound` seconds after `since`;
        otherwise what it did."""
        if self.ended_at is None:
            return f"{self.name}: still blocked {time.monotonic() - since:.1f} s after the fault"
        took = self.ended_at - since
        if not isinstance(self.error, libkv.NotReachableError):
            outcome = f"raised {self.error!r}" if self.error else f"returned {self.result!r:.80}"
            return f"{self.name}: {outcome} after {took:.1f} s instead of NotReachableError"
        if took > bound:
            return f"{self.name}: NotReachableError came {took:.1f} s after the fault (> {bound} s)"
        return ""


def _iterate(watch: libkv.Watch, received: list[Event]) -> None:
    for event in watch:
        received.append(event)


def _write_until_failure(
    store: Store, acknowledged: dict[str, KVPair], uncertain: set[str]
) -> None:
    """Write distinct keys until a write fails; the failed one's outcome is unknown."""
    index = 0
    while True:
        key = f"written/{index:06d}"
        index += 1
        try:
            acknowledged[key] = store.put(key, key)
        except libkv.NotReachableError:  # UnknownOutcomeError included
            uncertain.add(key)
            raise


class FaultConformance:
    """The contract under crashes, freezes and restarts of the server.

    Subclass it and provide a function-scoped `fault_server` fixture (a `FaultServer`).
    """

    fault_timeout: float = FAULT_TIMEOUT
    """The store timeout (seconds); NotReachableError is due within it + 2 s."""

    # A fault must never kill a libkv thread (a lease keep-alive, a watch feed) with an
    # exception: every failure reaches the caller as a typed error, or is logged.
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [
        pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
    ]

    # -- fixtures and helpers -------------------------------------------------------

    # Every fault test runs in both flavours, as the conformance suite does.
    flavour = ConformanceBase.flavour
    open_url = ConformanceBase.open_url

    @pytest.fixture
    def fault_client(
        self, fault_server: FaultServer, open_url: Callable[..., Store]
    ) -> Iterator[Callable[[], Store]]:
        """Open clients of the fault server with the fault timeout, in the test's
        flavour; closed after the test."""
        assert isinstance(fault_server, FaultServer), f"{fault_server!r} is not a FaultServer"

        opened: list[Store] = []

        def open_one() -> Store:
            client = open_url(fault_server.url, timeout=self.fault_timeout)
            opened.append(client)
            return client

        threads_before = set(threading.enumerate())
        yield open_one
        for client in opened:  # here, so the wait below sees their threads end
            close_quietly(client)
        # Let the clients' own threads (keep-alives, feeds) end inside this test, so an
        # exception one of them dies with is reported here rather than in a later test.
        deadline = time.monotonic() + self.not_reachable_bound
        for thread in set(threading.enumerate()) - threads_before:
            if thread.name.startswith("libkv"):
                thread.join(max(deadline - time.monotonic(), 0.0))

    @pytest.fixture
    def fault_store(self, fault_client: Callable[[], Store]) -> Store:
        """The client most fault tests act through."""
        return fault_client()

    @property
    def not_reachable_bound(self) -> float:
        """How long after a fault an operation may take to raise NotReachableError."""
        return self.fault_timeout + NOT_REACHABLE_MARGIN

    @staticmethod
    def lock_ttl(store: Store) -> float:
        """A lock or lease ttl that outlives the test, so only a fault frees a lock."""
        return max(store.capabilities.ttl_min, LOCK_TTL)

    @staticmethod
    def restart(server: FaultServer) -> None:
        """Crash the server (SIGKILL) and start it again."""
        server.kill()
        server.start()

    @staticmethod
    def recover(store: Store, key: str = "recovered") -> KVPair:
        """Poll (bounded) until a put through `store` succeeds again; return its pair."""
        written: list[KVPair] = []
        failures: list[str] = []

        def put() -> bool:
            try:
                written.append(store.put(key, b"after the restart"))
            except libkv.NotReachableError as error:
                failures[:] = [repr(error)]
                return False
            return True

        wait_until(
            put,
            RECOVERY_BOUND,
            interval=0.1,
            message=lambda: f"the same Store did not recover: {failures}",
        )
        return written[-1]

    # -- a killed server --------------------------------------------------------------

    def test_killed_server_ends_every_blocked_call_with_not_reachable(
        self, fault_server: FaultServer, fault_client: Callable[[], Store]
    ) -> None:
        """SIGKILL during writes: a watch being iterated, a blocked wait_for_change, a
        blocked lock.acquire and the writer each raise NotReachableError within
        timeout + 2 s of the kill; none hangs."""
        store, holder = fault_client(), fault_client()
        watched = store.put("watched", b"0")
        ttl = self.lock_ttl(store)
        assert holder.lock("lock", ttl=ttl).acquire(timeout=EVENT_TIMEOUT)
        waiting_lock = store.lock("lock", ttl=ttl)
        acknowledged: dict[str, KVPair] = {}
        uncertain: set[str] = set()
        received: list[Event] = []
        with store.watch("", recursive=True) as watch:
            calls: list[BackgroundCall[object]] = [
                BackgroundCall("watch iteration", lambda: _iterate(watch, received)),
                BackgroundCall(
                    "wait_for_change", lambda: store.wait_for_change("watched", watched.version)
                ),
                BackgroundCall("lock.acquire", waiting_lock.acquire),
                BackgroundCall(
                    "writer", lambda: _write_until_failure(store, acknowledged, uncertain)
                ),
            ]
            for call in calls:
                call.start()
            wait_until(
                lambda: len(acknowledged) >= 20 and len(received) >= 10,
                EVENT_TIMEOUT,
                message=lambda: (
                    f"{len(acknowledged)} writes, {len(received)} events before the kill"
                ),
            )
            assert all(call.ended_at is None for call in calls[:3]), [
                (call.name, call.error) for call in calls if call.ended_at is not None
            ]
            fault_server.kill()
            self.assert_not_reachable_in_time(calls, time.monotonic())

    def test_calls_on_a_killed_server_raise_not_reachable(
        self, fault_server: FaultServer, fault_store: Store
    ) -> None:
        """With the server dead, every call raises NotReachableError within timeout + 2 s."""
        pair = fault_store.put("k", b"1")
        fault_server.kill()
        self._assert_all_not_reachable(self._every_kind_of_call(fault_store, pair))

    # -- a frozen server --------------------------------------------------------------

    def test_close_ends_a_watch_on_a_frozen_server_within_one_second(
        self, fault_server: FaultServer, fault_store: Store
    ) -> None:
        """With the server frozen, watch.close() returns within 1 s and ends a blocked
        iteration (StopIteration) and a blocked next_event (None) within 1 s."""
        watch = fault_store.watch("", recursive=True)
        received: list[Event] = []
        iteration = BackgroundCall("watch iteration", lambda: _iterate(watch, received)).start()
        written = fault_store.put("k", b"1")
        wait_until(
            lambda: (
                any(event.pair == written for event in received) or iteration.ended_at is not None
            ),
            EVENT_TIMEOUT,
            message="the watch did not deliver a write before the freeze",
        )
        # Started only now, so that the write above went to the iteration.
        waiter = BackgroundCall("next_event", lambda: watch.next_event(timeout=30)).start()
        fault_server.pause()
        try:
            time.sleep(FROZEN_SETTLE)  # let every client thread block on the frozen server
            closed = time.monotonic()
            call_within(watch.close, CLOSE_BOUND + JOIN_MARGIN, "watch.close()")
            close_took = time.monotonic() - closed
            for call in (iteration, waiter):
                call.join(closed + CLOSE_BOUND + JOIN_MARGIN)
        finally:
            fault_server.resume()
        assert close_took <= CLOSE_BOUND, f"watch.close() took {close_took:.2f} s"
        for call in (iteration, waiter):
            assert call.ended_at is not None, f"{call.name} still blocked after close()"
            assert call.error is None, f"{call.name} raised {call.error!r}"
            assert call.ended_at - closed <= CLOSE_BOUND, (
                f"{call.name} ended {call.ended_at - closed:.2f} s after close()"
            )
        assert waiter.result is None

    def test_calls_on_a_frozen_server_raise_not_reachable_and_then_recover(
        self, fault_server: FaultServer, fault_store: Store
    ) -> None:
        """With the server frozen, reads and writes raise NotReachableError (a write may
        say UnknownOutcomeError) within timeout + 2 s; once it continues, the same Store
        works again."""
        pair = fault_store.put("k", b"1")
        fault_server.pause()
        try:
            self._assert_all_not_reachable(self._every_kind_of_call(fault_store, pair))
        finally:
            fault_server.resume()
        self.recover(fault_store)
        assert fault_store.get("k").value in {b"1", b"2"}  # the frozen put's outcome is unknown

    # -- restarts -------------------------------------------------------------------

    def test_operations_recover_after_a_restart_on_the_same_store(
        self, fault_server: FaultServer, fault_store: Store
    ) -> None:
        """After a crash and restart, the same Store object writes, reads and watches
        again without being reopened."""
        fault_store.put("before", b"1")
        self.restart(fault_server)
        recovered = self.recover(fault_store)
        assert fault_store.get("recovered") == recovered
        with fault_store.watch("", recursive=True) as watch:
            init = watch.next_event(timeout=EVENT_TIMEOUT)
            assert init is not None and init.action is Action.INIT, init
            written = fault_store.put("after", b"1")
            event = watch.next_event(timeout=EVENT_TIMEOUT)
        assert event is not None and event.pair == written, event

    def test_a_watch_across_a_restart_never_silently_diverges(
        self, fault_server: FaultServer, fault_store: Store
    ) -> None:
        """A watch open while the server crashes and restarts (with or without its data)
        either raises HistoryLostError or converges: once writes stop, the state rebuilt
        from its events equals list(). It never keeps showing keys the store lost."""
        for index in range(5):
            fault_store.put(f"w/{index}", b"before")
        with fault_store.watch("w", recursive=True) as watch:
            received: list[Event] = []
            first = watch.next_event(timeout=EVENT_TIMEOUT)
            assert first is not None and first.action is Action.INIT, first
            received.append(first)
            self.restart(fault_server)
            # Wait by reading: a write anywhere could show the watch the loss in passing.
            wait_until(
                lambda: _readable(fault_store),
                self.not_reachable_bound + EVENT_TIMEOUT,
                message="the store did not answer a read after the restart",
            )
            deadline = time.monotonic() + self.not_reachable_bound + EVENT_TIMEOUT
            try:
                while time.monotonic() < deadline:
                    event = watch.next_event(timeout=0.1)
                    if event is not None:
                        received.append(event)
                    elif replay(received[0], received[1:]) == _state(fault_store.list("w")):
                        return  # converged
            except libkv.HistoryLostError:
                return  # reported, as the contract asks
        state = sorted(replay(received[0], received[1:]))
        actual = [pair.key for pair in fault_store.list("w")]
        raise AssertionError(f"the watch shows {state} while the store holds {actual}")

    def test_tokens_and_versions_never_go_backwards_across_a_restart(
        self, fault_server: FaultServer, fault_store: Store
    ) -> None:
        """Fencing tokens and versions only grow for the life of a key space: after a crash
        and restart (with or without the data), a new lock token and every new version are
        larger than any issued before, so a stale compare-and-swap can never succeed."""
        ttl = self.lock_ttl(fault_store)
        tokens_before = []
        for _ in range(3):
            lock = fault_store.lock("lock", ttl=ttl)
            assert lock.acquire(timeout=EVENT_TIMEOUT)
            tokens_before.append(lock.token)
            lock.release()
        token_before = tokens_before[-1]
        assert token_before is not None
        written = [fault_store.put("k", str(index)) for index in range(20)]
        self.restart(fault_server)
        recovered = self.recover(fault_store)
        after = fault_store.put("k", b"after")
        relock = fault_store.lock("lock", ttl=ttl)
        assert relock.acquire(timeout=EVENT_TIMEOUT)
        token_after = relock.token
        relock.release()
        assert recovered.version > written[-1].version, (
            f"version {recovered.version} after the restart, {written[-1].version} before"
        )
        assert after.version > recovered.version
        assert token_after is not None and token_after > token_before, (
            f"lock token {token_after} after the restart, {token_before} before"
        )
        for stale in written:
            with pytest.raises(libkv.KeyModifiedError):
                fault_store.update("k", b"stale", version=stale.version)
        assert fault_store.get("k") == after

    def test_acknowledged_writes_survive_a_restart_of_a_persistent_server(
        self, fault_server: FaultServer, fault_store: Store
    ) -> None:
        """Writes are killed mid-stream. Where the server persists, every acknowledged
        write is there after the restart, unchanged; anywhere, whatever is there was
        written (acknowledged, or the one write whose outcome is unknown) and unaltered."""
        acknowledged: dict[str, KVPair] = {}
        uncertain: set[str] = set()
        writer = BackgroundCall(
            "writer", lambda: _write_until_failure(fault_store, acknowledged, uncertain)
        ).start()
        wait_until(
            lambda: len(acknowledged) >= 50 or writer.ended_at is not None,
            EVENT_TIMEOUT,
            message=lambda: f"only {len(acknowledged)} writes acknowledged before the kill",
        )
        fault_server.kill()
        killed = time.monotonic()
        writer.join(killed + self.not_reachable_bound + JOIN_MARGIN)
        assert writer.not_reachable_failure(killed, self.not_reachable_bound) == ""
        fault_server.start()
        self.recover(fault_store)
        found = {pair.key: pair for pair in fault_store.list("written")}
        invented = sorted(set(found) - set(acknowledged) - uncertain)
        assert not invented, f"keys nobody wrote: {invented[:10]}"
        altered = [
            key
            for key, pair in found.items()
            if pair != acknowledged.get(key, pair) or pair.value != key.encode()
        ]
        assert not altered, f"altered by the restart: {altered[:10]}"
        if fault_server.persistent:
            lost = sorted(set(acknowledged) - set(found))
            assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:10]}"

    # -- helpers --------------------------------------------------------------------

    @staticmethod
    def _every_kind_of_call(store: Store, pair: KVPair) -> Mapping[str, Callable[[], object]]:
        return {
            "get": lambda: store.get("k"),
            "list": lambda: store.list(""),
            "keys": lambda: list(store.keys()),
            "put": lambda: store.put("k", b"2"),
            "update": lambda: store.update("k", b"2", version=pair.version),
            "transaction": lambda: store.transaction([ops.put("t", b"1")]),
            "watch": lambda: keys_of(list(_first_event_snapshot(store))),
            "lease": lambda: store.lease(FaultConformance.lock_ttl(store)),
        }

    def _assert_all_not_reachable(self, calls: Mapping[str, Callable[[], object]]) -> None:
        """Run the calls at once; each must raise NotReachableError within the bound."""
        started = time.monotonic()
        running = [BackgroundCall(name, call).start() for name, call in calls.items()]
        self.assert_not_reachable_in_time(running, started)

    def assert_not_reachable_in_time(
        self, calls: Sequence[BackgroundCall[object]], since: float
    ) -> None:
        """Each running call raises NotReachableError within timeout + 2 s of `since`."""
        for call in calls:
            call.join(since + self.not_reachable_bound + JOIN_MARGIN)
        failures = [call.not_reachable_failure(since, self.not_reachable_bound) for call in calls]
        assert not any(failures), "\n".join(failure for failure in failures if failure)


def _readable(store: Store) -> bool:
    try:
        store.exists("probe")
    except libkv.NotReachableError:
        return False
    return True


def _state(pairs: Sequence[KVPair]) -> dict[str, KVPair]:
    return {pair.key: pair for pair in pairs}


def _first_event_snapshot(store: Store) -> tuple[KVPair, ...]:
    """Open a recursive watch and return its INIT snapshot (or raise what it raises)."""
    with store.watch("", recursive=True) as watch:
        for event in watch:
            return event.snapshot
    raise AssertionError("the watch ended without an event")
