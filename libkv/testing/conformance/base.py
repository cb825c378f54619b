"""What every topic of the conformance suite shares: bounds, parameter tables, helpers,
the fixtures (`store`, `other_store`, `open_client`) and the one expiry scenario.

`ConformanceBase` is the root of every topic mixin; a driver never subclasses it
directly (it subclasses `StoreConformance`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar, cast

import pytest

import libkv
from libkv import Action, Event, KVPair, Store, ops
from libkv.ops import Op
from libkv.testing.flavours import Portal, open_blocking, portal_checks
from libkv.testing.history import WatchRecorder, describe
from libkv.testing.polling import assert_holds_until, wait_until

__all__ = [
    "CLOSE_BOUND",
    "CONVERGENCE_BOUND",
    "DELIVERY_MARGIN",
    "EVENT_TIMEOUT",
    "HANDOVER_BOUND",
    "INVALID_KEYS",
    "INVALID_VALUES",
    "JOIN_MARGIN",
    "LARGEST_TESTABLE_TRANSACTION",
    "LARGEST_TESTABLE_VALUE",
    "LOST_MARGIN",
    "NON_STRING_KEYS",
    "TRANSACTION_FAILURES",
    "UNUSUAL_VALID_KEYS",
    "VALUES",
    "ConformanceBase",
    "ExpiryWindow",
    "call_within",
    "close_quietly",
    "expect_all_raise",
    "keys_of",
    "outcome_of",
    "run_concurrently",
]

T = TypeVar("T")

EVENT_TIMEOUT = 5.0
"""Bound for something that should happen promptly but has no contract figure."""
CLOSE_BOUND = 1.0
"""Contract: iteration of a watch ends at most 1 s after close()."""
CONVERGENCE_BOUND = 1.0
"""Contract: once writes stop, a watcher's view equals list(prefix) within 1 s."""
HANDOVER_BOUND = 1.0
"""Contract: a lock waiter gets the lock within 1 s of its release."""
LOST_MARGIN = 2.0
"""Bound on top of ttl + ttl_slack for a lease or lock to notice it was lost."""
DELIVERY_MARGIN = 0.1
"""Delivery of an event (or a lock hand-over) after a deadline that reads meet exactly."""
JOIN_MARGIN = 1.0
"""Extra time to join a thread whose end time is then checked against a contract bound."""
LARGEST_TESTABLE_VALUE = 64 * 1024 * 1024
LARGEST_TESTABLE_TRANSACTION = 100_000

INVALID_KEYS = [
    pytest.param("", id="empty"),
    pytest.param("/", id="slash"),
    pytest.param("//", id="slashes"),
    pytest.param("a//b", id="empty-segment"),
    pytest.param(".", id="dot"),
    pytest.param("..", id="dot-dot"),
    pytest.param("a/./b", id="dot-segment"),
    pytest.param("a/../b", id="dot-dot-segment"),
    pytest.param("./a", id="leading-dot-segment"),
    pytest.param("a/..", id="trailing-dot-dot-segment"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("a\nb", id="newline"),
    pytest.param("a\tb", id="tab"),
    pytest.param("a\rb", id="carriage-return"),
    pytest.param("a\x1fb", id="unit-separator"),
    pytest.param("a\x7fb", id="delete"),
    pytest.param("a\x85b", id="c1-next-line"),
    pytest.param("a" * 1025, id="1025-bytes-ascii"),
    pytest.param("é" * 513, id="1026-bytes-in-513-characters"),
    pytest.param("😀" * 257, id="1028-bytes-in-257-characters"),
]

NON_STRING_KEYS = [
    pytest.param(1, id="int"),
    pytest.param(None, id="none"),
    pytest.param(b"a", id="bytes"),
    pytest.param(("a",), id="tuple"),
]

UNUSUAL_VALID_KEYS = [
    "a b",
    "ü/ß/日本語",
    "...",
    "a.b",
    ".hidden",
    "a..b",
    "-",
    "_",
    "~x",
    "a:b",
    "a@b",
    "a%2Fb",
    "a+b",
    "a?b",
    "a*b",
    "a[b]",
    "a#b",
    "a'b",
    'a"b',
    "a\\b",
    "emoji😀",
    "x" * 1024,
    "é" * 512,
]

VALUES = [
    pytest.param(b"bytes", b"bytes", id="bytes"),
    pytest.param(bytearray(b"bytearray"), b"bytearray", id="bytearray"),
    pytest.param(memoryview(b"memoryview"), b"memoryview", id="memoryview"),
    pytest.param("héllo wörld", "héllo wörld".encode(), id="str-as-utf8"),
    pytest.param(b"", b"", id="empty"),
    pytest.param(bytes(range(256)), bytes(range(256)), id="every-byte"),
]

INVALID_VALUES = [
    pytest.param(1, id="int"),
    pytest.param(1.5, id="float"),
    pytest.param(None, id="none"),
    pytest.param(["a"], id="list"),
    pytest.param(object(), id="object"),
]

ConditionError = (
    type[libkv.KeyExistsError] | type[libkv.KeyNotFoundError] | type[libkv.KeyModifiedError]
)
# name -> (failing op built from the present key's (stale, current) pairs, error it raises)
TRANSACTION_FAILURES: dict[str, tuple[Callable[[KVPair, KVPair], Op], ConditionError]] = {
    "create-existing": (lambda stale, current: ops.create(current.key, b"x"), libkv.KeyExistsError),
    "update-absent": (
        lambda stale, current: ops.update("absent", b"x", current.version),
        libkv.KeyNotFoundError,
    ),
    "update-stale": (
        lambda stale, current: ops.update(current.key, b"x", stale.version),
        libkv.KeyModifiedError,
    ),
    "delete-absent": (lambda stale, current: ops.delete("absent"), libkv.KeyNotFoundError),
    "delete-absent-versioned": (
        lambda stale, current: ops.delete("absent", current.version),
        libkv.KeyNotFoundError,
    ),
    "delete-stale": (
        lambda stale, current: ops.delete(current.key, stale.version),
        libkv.KeyModifiedError,
    ),
    "check-stale": (
        lambda stale, current: ops.check(current.key, stale.version),
        libkv.KeyModifiedError,
    ),
    "check-absent": (
        lambda stale, current: ops.check("absent", current.version),
        libkv.KeyNotFoundError,
    ),
    "check-must-not-exist": (
        lambda stale, current: ops.check(current.key, 0),
        libkv.KeyExistsError,
    ),
}


def close_quietly(store: Store) -> None:
    """Close `store`, which a test may already have closed."""
    with contextlib.suppress(libkv.StoreClosedError):
        store.close()


def keys_of(pairs: Sequence[KVPair]) -> list[str]:
    """The keys of `pairs`, in order."""
    return [pair.key for pair in pairs]


def outcome_of(
    call: Callable[[], object], accepts: Callable[[BaseException], bool], wanted: str
) -> str | None:
    """None when `call` raised an exception that `accepts`; otherwise what it did instead
    of raising `wanted` (a watch it returned is closed)."""
    try:
        result = call()
    except Exception as error:
        if accepts(error):
            return None
        kind = type(error)
        return f"raised {kind.__module__}.{kind.__qualname__}({error}) instead of {wanted}"
    if isinstance(result, libkv.Watch):
        result.close()
    return f"returned {result!r:.80} instead of raising {wanted}"


def expect_all_raise(
    calls: Mapping[str, Callable[[], object]], expected: type[BaseException]
) -> None:
    """Every call raises `expected`; fails naming each call that did something else."""

    def accepts(error: BaseException) -> bool:
        return isinstance(error, expected)

    failures = [
        f"{name}: {outcome}"
        for name, call in calls.items()
        if (
            outcome := outcome_of(
                call, lambda error: isinstance(error, expected), expected.__name__
            )
        )
        is not None
    ]
    assert not failures, "\n".join(failures)


def call_within(call: Callable[[], T], timeout: float, what: str) -> T:
    """Run a call that may block on a helper thread; fail if it does not return in time."""
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(call())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, name=f"conformance-{what}", daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{what} did not return within {timeout} s"
    if errors:
        raise errors[0]
    return results[0]


def run_concurrently(calls: Sequence[Callable[[], object]], timeout: float, what: str) -> None:
    """Run each call on its own thread at once and wait for all of them; fail naming
    `what` if any is still running `timeout` seconds after they started."""
    threads = [
        threading.Thread(target=call, name=f"conformance-{what}", daemon=True) for call in calls
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
    assert not any(thread.is_alive() for thread in threads), f"{what} still running"


@dataclasses.dataclass(frozen=True)
class ExpiryWindow:
    """When the contract lets keys written with a ttl (or a lease of that ttl) vanish.

    Each key stays readable until `earliest` and is gone by `latest` (both
    `time.monotonic()` values); a watcher reports its DELETE no sooner than `earliest`
    and no later than `latest + DELIVERY_MARGIN`.
    """

    keys: tuple[str, ...]
    earliest: float
    latest: float


def _present(reader: Store, keys: Sequence[str]) -> Callable[[], bool]:
    return lambda: len(reader.get_many(keys)) == len(keys)


def _gone(reader: Store, keys: Sequence[str]) -> Callable[[], bool]:
    return lambda: reader.get_many(keys) == []


def _describe_missing(reader: Store, keys: Sequence[str]) -> Callable[[], str]:
    return lambda: f"expired early: {sorted(set(keys) - set(keys_of(reader.get_many(keys))))}"


def _describe_left(reader: Store, keys: Sequence[str]) -> Callable[[], str]:
    return lambda: f"still there after ttl + ttl_slack: {keys_of(reader.get_many(keys))}"


class ConformanceBase:
    """Fixtures and helpers every topic mixin uses; a driver provides the `url` fixture.

    Every test runs in both flavours (the `flavour` fixture): "sync" on
    :func:`libkv.open`, "async" on :func:`libkv.aio.open` behind a blocking facade
    whose event loop runs in debug mode (:mod:`libkv.testing.flavours`); there the
    test also fails if any callback held the loop longer than 50 ms, or if a task of
    libkv is still pending once its stores are closed.
    """

    @pytest.fixture(params=["sync", "async"])
    def flavour(self, request: pytest.FixtureRequest) -> str:
        """Which implementation the test's clients use."""
        return str(request.param)

    @pytest.fixture
    def open_url(self, flavour: str) -> Iterator[Callable[..., Store]]:
        """Open a client of the test's flavour (``open_url(url, **options)``, as
        :func:`libkv.open`); all are closed after the test."""
        opened: list[Store] = []
        portal = Portal() if flavour == "async" else None

        def open_one(url: str, **options: object) -> Store:
            # The facade answers every call of Store's, in the async flavour.
            client = (
                libkv.open(url, **options)
                if portal is None
                else cast(Store, open_blocking(url, portal, **options))
            )
            opened.append(client)
            return client

        if portal is None:
            yield open_one
            for client in opened:
                close_quietly(client)
        else:
            try:
                with portal_checks(portal):
                    yield open_one
                    for client in opened:
                        close_quietly(client)
                    pending = [name for name in portal.pending_tasks() if name.startswith("libkv")]
                    assert not pending, f"tasks of libkv left after close(): {pending}"
            finally:
                portal.close()

    @pytest.fixture
    def open_client(self, url: str, open_url: Callable[..., Store]) -> Callable[[], Store]:
        """Open more clients of the test's store; all are closed after the test."""
        return lambda: open_url(url)

    @pytest.fixture
    def store(self, url: str, open_url: Callable[..., Store]) -> Store:
        """The client most tests act through."""
        return open_url(url)

    @pytest.fixture
    def other_store(self, url: str, open_url: Callable[..., Store]) -> Store:
        """A second client of the same data."""
        return open_url(url)

    @staticmethod
    def ttl_for(store: Store) -> float:
        """A short TTL every driver accepts."""
        return max(store.capabilities.ttl_min, 1.0)

    @staticmethod
    def expiry_bound(store: Store, ttl: float) -> float:
        """How long after a write with `ttl` the key must be gone (see Capabilities)."""
        return store.capabilities.latest_expiry(ttl)

    @staticmethod
    def first_event(watch: libkv.Watch) -> Event:
        """The watch's first event, which must be INIT and arrive promptly."""
        event = watch.next_event(timeout=EVENT_TIMEOUT)
        assert event is not None, f"no INIT event within {EVENT_TIMEOUT} s"
        assert event.action is Action.INIT, f"first event is {describe(event)}, not INIT"
        return event

    @staticmethod
    def next_event(watch: libkv.Watch) -> Event:
        """The watch's next event, which must arrive promptly."""
        event = watch.next_event(timeout=EVENT_TIMEOUT)
        assert event is not None, f"no event within {EVENT_TIMEOUT} s"
        return event

    @staticmethod
    def event_by(watch: libkv.Watch, deadline: float, failure: str) -> Event:
        """The next event, which must arrive by `deadline` (a time.monotonic() value)."""
        event = watch.next_event(timeout=max(deadline - time.monotonic(), 0.0))
        assert event is not None, failure
        return event

    @staticmethod
    def recorded_init(recorder: WatchRecorder) -> Event:
        """The first event a recorder received, which must be INIT."""
        events = wait_until(lambda: recorder.events, EVENT_TIMEOUT, message="no INIT event")
        assert events[0].action is Action.INIT, f"first event is {describe(events[0])}"
        return events[0]

    # -- the expiry scenario --------------------------------------------------------

    def expiry_window(
        self, store: Store, ttl: float, keys: Iterable[str], started: float, written: float
    ) -> ExpiryWindow:
        """The window for `keys` given expiry `ttl` by a write that started at `started`
        and returned (or granted its lease) at `written` (time.monotonic() values)."""
        return ExpiryWindow(tuple(keys), started + ttl, written + self.expiry_bound(store, ttl))

    def write_expiring(
        self, store: Store, ttl: float, keys: Iterable[str], write: Callable[[], object]
    ) -> ExpiryWindow:
        """Run `write`, which gives each of `keys` expiry `ttl`, and return its window."""
        started = time.monotonic()
        write()
        return self.expiry_window(store, ttl, keys, started, time.monotonic())

    def assert_expiry(
        self,
        reader: Store,
        windows: Sequence[ExpiryWindow],
        recorder: WatchRecorder | None = None,
    ) -> None:
        """The contract's expiry scenario, checked for every window at once.

        Through `reader`, each window's keys stay readable until its `earliest` and are
        gone by its `latest`. Given the recorder of a watch that covers the keys and was
        open before they were written, each key is reported as UPDATE and then DELETE,
        the DELETE arriving inside its window (plus DELIVERY_MARGIN).
        """
        by_opening = sorted(windows, key=lambda window: window.earliest)
        for index, window in enumerate(by_opening):
            alive = [key for later in by_opening[index:] for key in later.keys]
            assert_holds_until(
                _present(reader, alive),
                window.earliest,
                message=_describe_missing(reader, alive),
            )
        for window in sorted(windows, key=lambda window: window.latest):
            keys = list(window.keys)
            wait_until(
                _gone(reader, keys),
                window.latest - time.monotonic(),
                message=_describe_left(reader, keys),
            )
        if recorder is None:
            return
        expected = {key: window for window in windows for key in window.keys}
        last = max(window.latest for window in windows)

        def deleted() -> set[str]:
            return {event.key for event in recorder.events if event.action is Action.DELETE}

        wait_until(
            lambda: expected.keys() <= deleted(),
            last + DELIVERY_MARGIN - time.monotonic(),
            message=lambda: (
                "no DELETE by ttl + ttl_slack:\n" + "\n".join(map(describe, recorder.events))
            ),
        )
        seen: set[str] = set()
        for arrived, event in recorder.arrivals:
            expiring = expected.get(event.key)
            if expiring is None or event.action is Action.INIT:
                continue
            if event.action is Action.UPDATE:
                seen.add(event.key)
                continue
            assert event.key in seen, f"{event.key} reported deleted before its write"
            assert expiring.earliest <= arrived, f"{event.key} reported expired too soon"
            assert arrived <= expiring.latest + DELIVERY_MARGIN, (
                f"{event.key} reported expired {arrived - expiring.latest:.2f} s after "
                "ttl + ttl_slack"
            )
