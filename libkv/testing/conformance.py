"""The libkv conformance suite: the contract (CONTRACT.md) written once as tests.

Every driver, first- or third-party, runs it by subclassing `StoreConformance` and
providing one function-scoped fixture, `url`: a URL such that each test starts with an
empty namespace and every `libkv.open(url)` within that test talks to the same data
(so two `open` calls are two clients of one store)::

    import uuid

    import pytest

    from libkv.testing import StoreConformance

    class TestMemory(StoreConformance):
        @pytest.fixture
        def url(self) -> str:
            return f"memory://conformance-{uuid.uuid4().hex}"

A driver whose URL another process can open subclasses `CrossProcessConformance`
(`libkv.testing.cross_process`) instead: the same suite plus tests that need a second
process (a dead process's keys and locks vanish; locks exclude other processes).

Expectations that differ between drivers are chosen from `store.capabilities`, never
skipped: a driver declares its gaps, and the suite holds it to what it declared.
Timing bounds come from the contract (1 s for closing a watch, for convergence and for
lock hand-over; `ttl + ttl_slack` for expiry). Reads are held to them exactly (the last
poll starts after the deadline); an event or a lock hand-over gets `DELIVERY_MARGIN` more.
Conditions are awaited by bounded polling; the only sleeps let time pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar, cast

import pytest

import libkv
from libkv import Action, Event, KVPair, Store, ops
from libkv.ops import Op
from libkv.testing.conformance_watch_properties import WatchPropertyConformance
from libkv.testing.history import (
    Change,
    WatchRecorder,
    assert_valid_history,
    changes_by_key,
    describe,
    replay,
)
from libkv.testing.polling import assert_holds_until, wait_until

__all__ = ["StoreConformance"]

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


def _close_quietly(store: Store) -> None:
    with contextlib.suppress(libkv.StoreClosedError):
        store.close()


def _keys(pairs: list[KVPair]) -> list[str]:
    return [pair.key for pair in pairs]


def _outcome(call: Callable[[], object], expected: type[BaseException]) -> str | None:
    """None when `call` raised `expected`; otherwise what it did instead."""
    try:
        result = call()
    except expected:
        return None
    except Exception as error:
        return f"raised {type(error).__name__}({error}) instead of {expected.__name__}"
    if isinstance(result, libkv.Watch):
        result.close()
    return f"returned {result!r:.80} instead of raising {expected.__name__}"


def _expect_all_raise(
    calls: Mapping[str, Callable[[], object]], expected: type[BaseException]
) -> None:
    failures = [
        f"{name}: {outcome}"
        for name, call in calls.items()
        if (outcome := _outcome(call, expected)) is not None
    ]
    assert not failures, "\n".join(failures)


def _call_within(call: Callable[[], T], timeout: float, what: str) -> T:
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


def _is_subsequence(observed: list[Change], actual: list[Change]) -> bool:
    remaining = iter(actual)
    return all(change in remaining for change in observed)


class StoreConformance(WatchPropertyConformance):
    """Every contract point as a test. Subclass it and provide a function-scoped `url`."""

    # -- fixtures and helpers -------------------------------------------------------

    @pytest.fixture
    def open_client(self, url: str) -> Iterator[Callable[[], Store]]:
        """Open more clients of the test's store; all are closed after the test."""
        opened: list[Store] = []

        def open_one() -> Store:
            client = libkv.open(url)
            opened.append(client)
            return client

        yield open_one
        for client in opened:
            _close_quietly(client)

    @pytest.fixture
    def store(self, url: str) -> Iterator[Store]:
        """The client most tests act through."""
        client = libkv.open(url)
        yield client
        _close_quietly(client)

    @pytest.fixture
    def other_store(self, url: str) -> Iterator[Store]:
        """A second client of the same data."""
        client = libkv.open(url)
        yield client
        _close_quietly(client)

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

    # -- keys -----------------------------------------------------------------------

    def test_slashes_around_a_key_are_stripped(self, store: Store) -> None:
        """Leading and trailing '/' are stripped: '/a/b/' is 'a/b', in every call."""
        pair = store.put("/a/b/", b"v")
        assert pair.key == "a/b"
        assert store.get("a/b") == pair
        assert store.get("/a/b") == pair
        assert store.get("a/b/") == pair
        assert store.exists("/a/b/")
        assert _keys(store.list("")) == ["a/b"]
        assert _keys(store.list("/a/")) == ["a/b"]
        updated = store.update("a/b/", b"w", version=pair.version)
        assert updated.key == "a/b"
        with pytest.raises(libkv.KeyExistsError):
            store.create("/a/b", b"x")
        store.delete("/a/b/")
        assert not store.exists("a/b")

    @pytest.mark.parametrize("key", INVALID_KEYS)
    def test_invalid_key_is_rejected_by_every_call_and_nothing_is_written(
        self, store: Store, key: str
    ) -> None:
        """Empty keys and segments, '.'/'..' segments, control characters and keys over
        1024 UTF-8 bytes raise InvalidKeyError (a ValueError) before anything is sent."""
        calls: dict[str, Callable[[], object]] = {
            "get": lambda: store.get(key),
            "exists": lambda: store.exists(key),
            "put": lambda: store.put(key, b"v"),
            "create": lambda: store.create(key, b"v"),
            "update": lambda: store.update(key, b"v", version=1),
            "delete": lambda: store.delete(key),
            "get_many": lambda: store.get_many(["valid", key]),
            "put_many mapping": lambda: store.put_many({"valid": b"v", key: b"v"}),
            "put_many pairs": lambda: store.put_many([("valid", b"v"), (key, b"v")]),
            "transaction": lambda: store.transaction([ops.put("valid", b"v"), ops.put(key, b"v")]),
            "wait_for_change": lambda: store.wait_for_change(key, 1, timeout=0.1),
            "lock": lambda: store.lock(key).acquire(blocking=False),
        }
        if key.strip("/"):
            # "" is a valid prefix (the whole namespace); any other invalid key is not.
            calls |= {
                "list": lambda: store.list(key),
                "delete_tree": lambda: store.delete_tree(key),
                "watch": lambda: store.watch(key),
                "recursive watch": lambda: store.watch(key, recursive=True),
            }
        _expect_all_raise(calls, libkv.InvalidKeyError)
        assert issubclass(libkv.InvalidKeyError, ValueError)
        assert store.list("") == [], "a rejected call wrote something"

    @pytest.mark.parametrize("key", NON_STRING_KEYS)
    def test_non_string_key_is_rejected(self, store: Store, key: object) -> None:
        """Keys are str: anything else raises InvalidKeyError and nothing is written."""
        as_key = cast(str, key)
        _expect_all_raise(
            {
                "get": lambda: store.get(as_key),
                "exists": lambda: store.exists(as_key),
                "put": lambda: store.put(as_key, b"v"),
                "create": lambda: store.create(as_key, b"v"),
                "delete": lambda: store.delete(as_key),
                "put_many": lambda: store.put_many([("valid", b"v"), (as_key, b"v")]),
                "transaction": lambda: store.transaction([ops.put(as_key, b"v")]),
                "watch": lambda: store.watch(as_key),
            },
            libkv.InvalidKeyError,
        )
        assert store.list("") == []

    def test_unusual_but_valid_keys_round_trip(self, store: Store) -> None:
        """Only the listed forms are invalid: spaces, non-ASCII, '...', glob and URL
        characters, and exactly 1024 UTF-8 bytes are ordinary keys."""
        for key in UNUSUAL_VALID_KEYS:
            assert store.put(key, key).key == key
        for key in UNUSUAL_VALID_KEYS:
            assert store.get(key).value == key.encode()
        assert _keys(store.list("")) == sorted(UNUSUAL_VALID_KEYS)
        for key in UNUSUAL_VALID_KEYS:
            store.delete(key)
        assert store.list("") == []

    def test_a_key_and_its_children_are_independent(self, store: Store) -> None:
        """'a' and 'a/b' are independent keys; putting 'a/b' does not make 'a' exist."""
        child = store.put("a/b", b"child")
        assert not store.exists("a")
        with pytest.raises(libkv.KeyNotFoundError):
            store.get("a")
        parent = store.put("a", b"parent")
        assert store.get("a/b") == child
        store.delete("a")
        assert store.get("a/b") == child
        store.put("a", b"parent again")
        store.delete("a/b")
        assert store.get("a").value == b"parent again"
        assert parent.version < store.get("a").version

    def test_prefix_option_confines_a_store_to_its_namespace(self, url: str) -> None:
        """Every driver accepts the namespace option prefix=: keys (in pairs, events and
        errors) are relative to it, and a namespace sees nothing outside it, not even a
        sibling whose name merely starts with the same characters."""
        name = f"namespace-{uuid.uuid4().hex}"
        with (
            libkv.open(url, prefix=name) as outer,
            libkv.open(url, prefix=f"{name}/inner") as inner,
            libkv.open(url, prefix=f"{name}x") as sibling,
        ):
            try:
                self._check_namespaces(outer, inner, sibling)
            finally:
                outer.delete_tree("")
                sibling.delete_tree("")

    def test_unknown_option_is_rejected_by_name(self, url: str) -> None:
        """An unknown option, in the query or as a keyword, raises InvalidURLError naming
        it: nothing is silently ignored."""
        separator = "&" if "?" in url else "?"
        with pytest.raises(libkv.InvalidURLError, match="no_such_option"):
            libkv.open(f"{url}{separator}no_such_option=1")
        with pytest.raises(libkv.InvalidURLError, match="no_such_option"):
            libkv.open(url, no_such_option="1")

    def _check_namespaces(self, outer: Store, inner: Store, sibling: Store) -> None:
        written = inner.put("/k/", b"1")
        assert written.key == "k"
        assert inner.get("k") == written
        assert outer.get("inner/k").value == b"1"
        sibling.put("k", b"sibling")
        outer.put("top", b"2")
        assert _keys(inner.list("")) == ["k"]
        assert _keys(outer.list("")) == ["inner/k", "top"]
        assert _keys(sibling.list("")) == ["k"]
        assert list(inner.keys("**")) == ["k"]
        with pytest.raises(libkv.KeyExistsError) as caught:
            inner.create("k", b"again")
        assert caught.value.key == "k"
        with pytest.raises(libkv.KeyNotFoundError) as caught_in_transaction:
            inner.transaction([ops.put("j", b"1"), ops.delete("missing")])
        assert (caught_in_transaction.value.key, caught_in_transaction.value.index) == (
            "missing",
            1,
        )
        (result,) = inner.transaction([ops.put("/j/", b"1")])
        assert result is not None and result.key == "j"
        with inner.watch("", recursive=True) as watch:
            init = self.first_event(watch)
            assert _keys(list(init.snapshot)) == ["j", "k"]
            outer.put("top", b"3")
            sibling.put("j", b"sibling")
            created = outer.put("inner/deep/x", b"1")
            event = self.next_event(watch)
            assert (event.action, event.key) == (Action.UPDATE, "deep/x")
            assert event.pair == KVPair("deep/x", b"1", created.version)
        assert inner.delete_tree("") == 3
        assert _keys(outer.list("")) == ["top"]
        assert _keys(sibling.list("")) == ["j", "k"]

    # -- values ---------------------------------------------------------------------

    @pytest.mark.parametrize(("value", "expected"), VALUES)
    def test_values_are_bytes_like_or_str_and_read_back_as_bytes(
        self, store: Store, value: bytes | bytearray | memoryview | str, expected: bytes
    ) -> None:
        """bytes, bytearray, memoryview and str (as UTF-8) are accepted; reads return bytes."""
        first = store.put("put", value)
        written = [
            first,
            store.create("create", value),
            store.update("put", value, version=first.version),
            *store.put_many({"put_many": value}),
            *cast(list[KVPair], store.transaction([ops.put("transaction", value)])),
        ]
        read = [
            store.get("put"),
            *store.list(""),
            *store.get_many(["create", "put_many"]),
        ]
        for pair in written + read:
            assert type(pair.value) is bytes, f"{pair.key}: {type(pair.value).__name__}"
            assert pair.value == expected, pair.key

    @pytest.mark.parametrize("value", INVALID_VALUES)
    def test_value_of_another_type_is_rejected_and_nothing_is_written(
        self, store: Store, value: object
    ) -> None:
        """A value that is neither bytes-like nor str raises InvalidValueError (a TypeError)."""
        existing = store.put("existing", b"old")
        as_value = cast(bytes, value)
        _expect_all_raise(
            {
                "put": lambda: store.put("new", as_value),
                "create": lambda: store.create("new", as_value),
                "update": lambda: store.update("existing", as_value, version=existing.version),
                "put_many": lambda: store.put_many({"valid": b"v", "new": as_value}),
                "transaction": lambda: store.transaction(
                    [ops.put("valid", b"v"), ops.put("new", as_value)]
                ),
            },
            libkv.InvalidValueError,
        )
        assert issubclass(libkv.InvalidValueError, TypeError)
        assert store.list("") == [existing]

    def test_value_over_max_value_size_is_rejected_and_nothing_is_written(
        self, store: Store
    ) -> None:
        """A value over capabilities.max_value_size (counted in encoded bytes) raises
        ValueTooLargeError, also inside put_many and transactions, with nothing written;
        a value of exactly max_value_size is accepted."""
        limit = store.capabilities.max_value_size
        assert limit <= LARGEST_TESTABLE_VALUE, (
            f"max_value_size {limit} is too large for the suite to exercise; declare the "
            "real limit of the backend"
        )
        too_large = b"x" * (limit + 1)
        wide = "é" * (limit // 2 + 1)  # fewer characters than the limit, more bytes
        existing = store.put("existing", b"old")
        _expect_all_raise(
            {
                "put": lambda: store.put("new", too_large),
                "put bytearray": lambda: store.put("new", bytearray(too_large)),
                "put str": lambda: store.put("new", wide),
                "create": lambda: store.create("new", too_large),
                "update": lambda: store.update("existing", too_large, version=existing.version),
                "put_many mapping": lambda: store.put_many({"valid": b"v", "new": too_large}),
                "put_many pairs": lambda: store.put_many([("valid", b"v"), ("new", too_large)]),
                "transaction": lambda: store.transaction(
                    [ops.put("valid", b"v"), ops.put("new", too_large)]
                ),
            },
            libkv.ValueTooLargeError,
        )
        assert issubclass(libkv.ValueTooLargeError, ValueError)
        assert store.list("") == [existing]
        at_limit = b"y" * limit
        store.put("at-limit", at_limit)
        assert store.get("at-limit").value == at_limit

    # -- single-key operations ------------------------------------------------------

    def test_get_of_a_missing_key_raises_key_not_found(self, store: Store) -> None:
        """get(key) raises KeyNotFoundError (also a KeyError) carrying the relative key."""
        with pytest.raises(libkv.KeyNotFoundError) as caught:
            store.get("/missing/")
        assert isinstance(caught.value, KeyError)
        assert caught.value.key == "missing"
        assert caught.value.index == 0
        assert store.exists("missing") is False

    def test_put_writes_unconditionally_and_get_reads_it(
        self, store: Store, other_store: Store
    ) -> None:
        """put returns the new pair; get (from any client) and exists see it; a second
        put replaces the value with a larger version."""
        first = store.put("k", b"one")
        assert isinstance(first, KVPair)
        assert (first.key, first.value) == ("k", b"one")
        assert isinstance(first.version, int) and first.version > 0
        assert store.get("k") == first
        assert other_store.get("k") == first
        assert store.exists("k") is True
        second = other_store.put("k", b"two")
        assert second.version > first.version
        assert store.get("k") == second

    def test_create_fails_on_an_existing_key(self, store: Store, other_store: Store) -> None:
        """create raises KeyExistsError when the key is present and changes nothing."""
        created = store.create("k", b"one")
        assert store.get("k") == created
        for client in (store, other_store):
            with pytest.raises(libkv.KeyExistsError) as caught:
                client.create("k/", b"two")
            assert (caught.value.key, caught.value.index) == ("k", 0)
        assert store.get("k") == created

    def test_update_requires_the_current_version(self, store: Store) -> None:
        """update raises KeyNotFoundError when absent and KeyModifiedError when the
        version is not the current one; with the current version it writes."""
        with pytest.raises(libkv.KeyNotFoundError) as missing:
            store.update("missing", b"x", version=1)
        assert (missing.value.key, missing.value.index) == ("missing", 0)
        first = store.put("k", b"one")
        second = store.put("k", b"two")
        with pytest.raises(libkv.KeyModifiedError) as modified:
            store.update("k", b"three", version=first.version)
        assert (modified.value.key, modified.value.index) == ("k", 0)
        assert store.get("k") == second
        updated = store.update("k", b"three", version=second.version)
        assert (updated.key, updated.value) == ("k", b"three")
        assert updated.version > second.version
        assert store.get("k") == updated

    def test_delete_is_checked_and_optionally_conditional(
        self, store: Store, other_store: Store
    ) -> None:
        """delete raises KeyNotFoundError when absent (with or without version) and
        KeyModifiedError on a version mismatch; otherwise the key is gone."""
        with pytest.raises(libkv.KeyNotFoundError) as missing:
            store.delete("missing")
        assert (missing.value.key, missing.value.index) == ("missing", 0)
        with pytest.raises(libkv.KeyNotFoundError):
            store.delete("missing", version=1)
        first = store.put("k", b"one")
        second = store.put("k", b"two")
        with pytest.raises(libkv.KeyModifiedError) as modified:
            store.delete("k", version=first.version)
        assert (modified.value.key, modified.value.index) == ("k", 0)
        assert store.get("k") == second
        store.delete("k", version=second.version)
        assert not store.exists("k")
        store.put("k", b"three")
        store.delete("k")
        assert not other_store.exists("k")
        with pytest.raises(libkv.KeyNotFoundError):
            store.delete("k")

    def test_versions_grow_with_every_write_across_keys_and_clients(
        self, store: Store, other_store: Store
    ) -> None:
        """Versions are store-wide revisions: positive, larger for every later write, and
        comparable across keys and clients (a recreated key included)."""
        versions = [store.put("a", b"1").version, other_store.put("b", b"1").version]
        versions.append(store.put("a", b"2").version)
        versions.append(other_store.create("c", b"1").version)
        versions.append(store.update("b", b"2", version=versions[1]).version)
        store.delete("a")
        versions.append(other_store.put("a", b"3").version)
        versions += [pair.version for pair in store.put_many({"d": b"1"})]
        assert versions[0] > 0
        assert versions == sorted(set(versions)), f"versions not strictly increasing: {versions}"

    def test_write_without_ttl_or_lease_detaches_the_key_from_its_lease(self, store: Store) -> None:
        """A write without ttl/lease clears earlier expiry: revoking the old lease spares it."""
        lease = store.lease(self.ttl_for(store))
        store.put("put", b"1", lease=lease)
        store.put("put", b"2")
        leased = store.put("update", b"1", lease=lease)
        store.update("update", b"2", version=leased.version)
        store.put("control", b"1", lease=lease)
        lease.revoke()
        assert store.get("put").value == b"2"
        assert store.get("update").value == b"2"
        assert not store.exists("control")

    # -- ranges ---------------------------------------------------------------------

    def test_list_returns_everything_under_a_prefix_sorted(self, store: Store) -> None:
        """list(P) returns P and every key starting with 'P/', sorted by key; [] if none."""
        keys = ["a", "a/x", "a/x/y", "a-b", "a.b", "ab", "a0", "b", "p/q"]
        for key in reversed(keys):
            store.put(key, key)
        assert _keys(store.list("")) == sorted(keys)
        assert _keys(store.list()) == sorted(keys)
        assert _keys(store.list("a")) == ["a", "a/x", "a/x/y"]
        assert _keys(store.list("a/")) == ["a", "a/x", "a/x/y"]
        assert _keys(store.list("a/x")) == ["a/x", "a/x/y"]
        assert _keys(store.list("a/x/y")) == ["a/x/y"]
        assert _keys(store.list("b")) == ["b"]
        assert _keys(store.list("p")) == ["p/q"]
        assert store.list("missing") == []
        assert store.list("a/z") == []
        assert store.list("a") == [store.get(key) for key in ["a", "a/x", "a/x/y"]]

    def test_keys_match_a_glob_sorted(self, store: Store) -> None:
        """keys(pattern): '*' and '?' stay within a segment, '**' spans segments, '[abc]'
        is a class; the result is sorted and defaults to every key."""
        keys = ["app/x", "app/y/z", "apple", "b1", "b2", "bx", "c/d/e/f"]
        for key in reversed(keys):
            store.put(key, b"")
        expectations = {
            "**": keys,
            "*": ["apple", "b1", "b2", "bx"],
            "app/*": ["app/x"],
            "app/**": ["app/x", "app/y/z"],
            "app*": ["apple"],
            "*/y/*": ["app/y/z"],
            "b?": ["b1", "b2", "bx"],
            "b[12]": ["b1", "b2"],
            "b[x1]": ["b1", "bx"],
            "b[!1]": ["b2", "bx"],
            "c/**/f": ["c/d/e/f"],
            "**/f": ["c/d/e/f"],
            "?/d/*/f": ["c/d/e/f"],
            "c/*/f": [],
            "nothing*": [],
        }
        found = {pattern: list(store.keys(pattern)) for pattern in expectations}
        assert found == expectations
        assert list(store.keys()) == keys

    def test_delete_tree_deletes_under_a_prefix_and_counts(self, store: Store) -> None:
        """delete_tree(P) deletes P and keys under 'P/' (not 'Px'), returning how many;
        '' is the whole namespace."""
        for key in ["t", "t/a", "t/a/b", "t/c", "tx", "t-x", "u"]:
            store.put(key, b"")
        assert store.delete_tree("t/a/") == 2
        assert _keys(store.list("")) == ["t", "t-x", "t/c", "tx", "u"]
        assert store.delete_tree("t") == 2
        assert store.delete_tree("missing") == 0
        assert store.delete_tree("") == 3
        assert store.list("") == []

    def test_get_many_keeps_the_order_asked_and_skips_missing(self, store: Store) -> None:
        """get_many returns the pairs found, in the order asked; missing keys skipped."""
        a, b, c = (store.put(key, key) for key in "abc")
        assert store.get_many(["c", "missing", "a", "/b/"]) == [c, a, b]
        assert store.get_many([]) == []
        assert store.get_many(["missing"]) == []

    def test_put_many_writes_a_mapping_or_pairs(self, store: Store, other_store: Store) -> None:
        """put_many accepts a mapping or an iterable of (key, value) and returns the new
        pairs in the order given."""
        from_mapping = store.put_many({"m/b": b"1", "m/a": "2"})
        assert _keys(from_mapping) == ["m/b", "m/a"]
        from_pairs = store.put_many(iter([("p/a", bytearray(b"3")), ("/p/b/", b"4")]))
        assert _keys(from_pairs) == ["p/a", "p/b"]
        for pair in from_mapping + from_pairs:
            assert other_store.get(pair.key) == pair
        assert other_store.get("m/a").value == b"2"
        again = store.put_many([("m/a", b"5")])
        assert again[0].version > from_pairs[-1].version

    def test_put_many_and_transactions_are_seen_whole_by_snapshots(
        self, store: Store, other_store: Store
    ) -> None:
        """put_many and transactions are atomic: a consistent snapshot (a watch's INIT)
        taken while they run shows every key of a batch at one generation."""
        keys = [f"batch/{index}" for index in range(10)]
        stop = threading.Event()
        errors: list[BaseException] = []

        def write_generations() -> None:
            try:
                generation = 0
                while not stop.is_set() and generation < 2000:
                    generation += 1
                    value = str(generation).encode()
                    if generation % 2:
                        other_store.put_many({key: value for key in keys})
                    else:
                        other_store.transaction([ops.put(key, value) for key in keys])
            except BaseException as error:
                errors.append(error)

        store.put_many({key: b"0" for key in keys})
        writer = threading.Thread(target=write_generations, daemon=True)
        writer.start()
        try:
            for _ in range(10):
                with store.watch("batch", recursive=True) as watch:
                    snapshot = self.first_event(watch).snapshot
                values = {pair.value for pair in snapshot}
                assert _keys(list(snapshot)) == keys
                assert len(values) == 1, f"snapshot mixes generations {sorted(values)}"
        finally:
            stop.set()
            writer.join(EVENT_TIMEOUT)
        assert not errors, errors

    # -- transactions ---------------------------------------------------------------

    def test_transaction_applies_every_op_and_returns_results(self, store: Store) -> None:
        """A transaction applies all ops; results are the new pair for writes and None
        for deletes and checks; check(key, 0) means the key must not exist."""
        to_update = store.put("t/update", b"0")
        store.put("t/delete", b"0")
        to_delete_versioned = store.put("t/delete-versioned", b"0")
        checked = store.put("t/check", b"0")
        results = store.transaction(
            [
                ops.create("t/create", b"1"),
                ops.put("/t/put/", b"2"),
                ops.update("t/update", b"3", to_update.version),
                ops.delete("t/delete"),
                ops.delete("t/delete-versioned", to_delete_versioned.version),
                ops.check("t/check", checked.version),
                ops.check("t/absent", 0),
            ]
        )
        assert len(results) == 7
        writes = cast(list[KVPair], results[:3])
        assert _keys(writes) == ["t/create", "t/put", "t/update"]
        assert [pair.value for pair in writes] == [b"1", b"2", b"3"]
        for pair in writes:
            assert pair.version > checked.version
            assert store.get(pair.key) == pair
        assert results[3:] == [None, None, None, None]
        assert _keys(store.list("t")) == ["t/check", "t/create", "t/put", "t/update"]
        assert store.get("t/check") == checked

    @pytest.mark.parametrize("position", [0, 1, 2])
    @pytest.mark.parametrize("failure", list(TRANSACTION_FAILURES))
    def test_failed_transaction_writes_nothing_and_names_the_op(
        self, store: Store, failure: str, position: int
    ) -> None:
        """On a failed condition nothing is applied, and the error is the one the single op
        would raise, with .index = the op's position and .key = its key."""
        stale = store.put("present", b"1")
        current = store.put("present", b"2")
        build, expected = TRANSACTION_FAILURES[failure]
        failing = build(stale, current)
        transaction = [ops.put("filler/a", b"x"), ops.create("filler/b", b"x")]
        transaction.insert(position, failing)
        before = store.list("")
        with pytest.raises(expected) as caught:
            store.transaction(transaction)
        assert caught.value.index == position
        assert caught.value.key in {"present", "absent"}
        assert store.list("") == before

    def test_transaction_reports_the_first_failing_op(self, store: Store) -> None:
        """With several failing ops, .index is the first one's position."""
        store.put("present", b"1")
        with pytest.raises(libkv.KeyExistsError) as caught:
            store.transaction(
                [ops.put("fresh", b"x"), ops.create("present", b"x"), ops.delete("absent")]
            )
        assert (caught.value.index, caught.value.key) == (1, "present")
        assert not store.exists("fresh")

    @pytest.mark.parametrize(
        "second",
        [
            pytest.param(lambda: ops.delete("a"), id="same-key"),
            pytest.param(lambda: ops.check("/a/", 0), id="same-key-after-normalisation"),
        ],
    )
    def test_transaction_rejects_two_ops_on_one_key(
        self, store: Store, second: Callable[[], Op]
    ) -> None:
        """Two ops on one key raise ValueError and nothing is written."""
        with pytest.raises(ValueError):
            store.transaction([ops.put("other", b"x"), ops.put("a", b"x"), second()])
        assert store.list("") == []

    def test_transaction_over_max_ops_is_rejected(self, store: Store) -> None:
        """More ops than capabilities.max_transaction_ops raise ValueError before anything
        is sent; exactly that many succeed."""
        limit = store.capabilities.max_transaction_ops
        assert limit <= LARGEST_TESTABLE_TRANSACTION, (
            f"max_transaction_ops {limit} is too large for the suite to exercise; declare "
            "the real limit of the backend"
        )
        transaction = [ops.put(f"many/{index}", b"v") for index in range(limit + 1)]
        with pytest.raises(ValueError):
            store.transaction(transaction)
        assert store.list("") == []
        assert len(store.transaction(transaction[:limit])) == limit
        assert len(store.list("many")) == limit

    def test_compare_and_swap_counter_under_contention(
        self, open_client: Callable[[], Store]
    ) -> None:
        """Conditional updates are linearizable: 4 clients x 25 CAS increments end at 100."""
        threads_count, increments = 4, 25
        clients = [open_client() for _ in range(threads_count)]
        clients[0].create("counter", b"0")
        versions: list[int] = []
        errors: list[BaseException] = []
        guard = threading.Lock()

        def increment(client: Store) -> None:
            try:
                for _ in range(increments):
                    for _attempt in range(10_000):
                        pair = client.get("counter")
                        try:
                            updated = client.update(
                                "counter", str(int(pair.value) + 1), version=pair.version
                            )
                        except libkv.KeyModifiedError:
                            continue
                        with guard:
                            versions.append(updated.version)
                        break
                    else:
                        raise AssertionError("no increment succeeded in 10000 attempts")
            except BaseException as error:
                errors.append(error)

        workers = [
            threading.Thread(target=increment, args=(client,), daemon=True) for client in clients
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert not any(worker.is_alive() for worker in workers), "increments still running"
        assert not errors, errors
        assert clients[0].get("counter").value == str(threads_count * increments).encode()
        assert len(set(versions)) == threads_count * increments

    def test_only_one_concurrent_create_wins(self, open_client: Callable[[], Store]) -> None:
        """create is atomic: of several clients creating one key, exactly one succeeds."""
        clients = [open_client() for _ in range(4)]
        outcomes: list[str] = []
        guard = threading.Lock()
        start = threading.Barrier(len(clients))

        def create(client: Store, name: str) -> None:
            start.wait()
            try:
                client.create("contested", name)
                outcome = "won"
            except libkv.KeyExistsError:
                outcome = "lost"
            with guard:
                outcomes.append(outcome)

        workers = [
            threading.Thread(target=create, args=(client, f"client-{index}"), daemon=True)
            for index, client in enumerate(clients)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(EVENT_TIMEOUT)
        assert sorted(outcomes) == ["lost", "lost", "lost", "won"]

    # -- watches --------------------------------------------------------------------

    def test_watch_of_an_existing_key_reports_init_then_changes(
        self, store: Store, other_store: Store
    ) -> None:
        """A single-key watch starts with INIT (the current pair at revision R), then
        UPDATE and DELETE with revisions > R; Watch.revision keeps up."""
        pair = store.put("k", b"1")
        with store.watch("/k/") as watch:
            init = self.first_event(watch)
            assert (init.key, init.pair) == ("k", pair)
            assert init.revision >= pair.version
            assert watch.revision >= init.revision
            updated = other_store.put("k", b"2")
            event = self.next_event(watch)
            assert (event.action, event.key, event.pair) == (Action.UPDATE, "k", updated)
            assert event.revision == updated.version
            other_store.delete("k")
            deleted = self.next_event(watch)
            assert (deleted.action, deleted.key, deleted.pair) == (Action.DELETE, "k", None)
            assert deleted.revision > updated.version
            assert watch.revision >= deleted.revision

    def test_watch_of_a_missing_key_reports_its_creation(
        self, store: Store, other_store: Store
    ) -> None:
        """Watching a key that does not exist is allowed: INIT with pair None, then UPDATE
        when it is created."""
        with store.watch("k") as watch:
            init = _call_within(lambda: next(watch), EVENT_TIMEOUT, "next(watch)")
            assert (init.action, init.key, init.pair) == (Action.INIT, "k", None)
            created = other_store.create("k", b"1")
            event = self.next_event(watch)
            assert (event.action, event.key, event.pair) == (Action.UPDATE, "k", created)
            assert event.revision > init.revision
            assert watch.next_event(timeout=0.1) is None

    def test_recursive_watch_starts_with_a_complete_sorted_snapshot(self, store: Store) -> None:
        """A recursive INIT is a consistent snapshot of every pair under the prefix,
        sorted by key, at a revision no older than any of them; '' is everything."""
        for key in ["d/b/c", "d", "d/a", "d-x", "dx", "e"]:
            store.put(key, key)
        with store.watch("d/", recursive=True) as watch:
            init = self.first_event(watch)
        assert init.key == "d"
        assert list(init.snapshot) == store.list("d")
        assert _keys(list(init.snapshot)) == ["d", "d/a", "d/b/c"]
        assert init.revision >= max(pair.version for pair in init.snapshot)
        with store.watch("", recursive=True) as watch:
            everything = self.first_event(watch)
        assert everything.key == ""
        assert list(everything.snapshot) == store.list("")
        with store.watch("missing", recursive=True) as watch:
            assert self.first_event(watch).snapshot == ()

    def test_recursive_watch_reports_changes_at_any_depth(
        self, store: Store, other_store: Store
    ) -> None:
        """A recursive watch reports every key under the prefix at any depth, deletes
        included, and nothing outside it ('dx', 'd-x')."""
        capabilities = store.capabilities
        store.put("d/a", b"0")
        with store.watch("d", recursive=True) as watch, WatchRecorder(watch) as recorder:
            init = self.recorded_init(recorder)
            expected: dict[str, list[Change]] = {}

            def record(key: str, pair: KVPair | None) -> None:
                change = (Action.UPDATE, pair.version) if pair else (Action.DELETE, None)
                expected.setdefault(key, []).append(change)

            record("d", other_store.put("d", b"1"))
            other_store.put("dx", b"outside")
            record("d/x/y/z", other_store.put("d/x/y/z", b"1"))
            other_store.put("d-x", b"outside")
            other_store.delete("d/a")
            record("d/a", None)
            record("d/x/y/z", other_store.put("d/x/y/z", b"2"))
            record("d/x/y", other_store.put("d/x/y", b"1"))
            assert other_store.delete_tree("d/x") == 2
            record("d/x/y", None)
            record("d/x/y/z", None)
            truth = {pair.key: pair for pair in other_store.list("d")}
            wait_until(
                lambda: replay(init, recorder.events[1:]) == truth,
                CONVERGENCE_BOUND,
                message=lambda: "\n".join(map(describe, recorder.events)),
            )
            assert recorder.error is None
        events = recorder.events[1:]
        assert_valid_history(
            init,
            events,
            watched="d",
            recursive=True,
            every_change=capabilities.watch_every_change,
        )
        if capabilities.watch_every_change:
            assert changes_by_key(events) == expected

    def test_watch_of_a_key_ignores_its_children(self, store: Store, other_store: Store) -> None:
        """A non-recursive watch reports only its key, not keys under it."""
        with store.watch("k") as watch:
            self.first_event(watch)
            other_store.put("k/child", b"1")
            other_store.put("k/child/deep", b"1")
            updated = other_store.put("k", b"1")
            event = self.next_event(watch)
            assert (event.action, event.key, event.pair) == (Action.UPDATE, "k", updated)
            other_store.delete("k/child")
            other_store.delete("k")
            event = self.next_event(watch)
            assert (event.action, event.key) == (Action.DELETE, "k")
            other_store.put("k/child", b"2")
            assert watch.next_event(timeout=0.2) is None

    def test_watch_delivers_every_change_of_a_key_or_converges(
        self, store: Store, other_store: Store
    ) -> None:
        """watch_every_change: every change after R, in revision order. Otherwise
        intermediate states may merge, but the watcher converges within 1 s."""
        capabilities = store.capabilities
        with store.watch("k") as watch, WatchRecorder(watch) as recorder:
            init = self.recorded_init(recorder)
            written = [other_store.put("k", str(index)) for index in range(50)]
            truth = {"k": written[-1]}
            wait_until(
                lambda: replay(init, recorder.events[1:]) == truth,
                CONVERGENCE_BOUND,
                message=lambda: "\n".join(map(describe, recorder.events)),
            )
        events = recorder.events[1:]
        assert_valid_history(
            init,
            events,
            watched="k",
            recursive=False,
            every_change=capabilities.watch_every_change,
        )
        observed = [event.pair for event in events]
        if capabilities.watch_every_change:
            assert observed == written
        else:
            assert all(pair in written for pair in observed)

    def test_watch_converges_under_bursts_from_several_clients(
        self, store: Store, open_client: Callable[[], Store]
    ) -> None:
        """Under bursts of puts, deletes, put_many, transactions and delete_tree from two
        clients, the history keeps every property (ordered per key, unique, no UPDATE
        without a version change, every change when watch_every_change) and INIT + events
        equals list(prefix) within 1 s of the writes stopping."""
        capabilities = store.capabilities
        writers = [open_client(), open_client()]
        expected: list[dict[str, list[Change]]] = [{}, {}]
        errors: list[BaseException] = []

        def burst(client: Store, prefix: str, seed: int, changes: dict[str, list[Change]]) -> None:
            try:
                self._write_burst(client, prefix, random.Random(seed), changes)
            except BaseException as error:
                errors.append(error)

        store.put("burst/w0/0", b"before")
        with store.watch("burst", recursive=True) as watch, WatchRecorder(watch) as recorder:
            init = self.recorded_init(recorder)
            threads = [
                threading.Thread(
                    target=burst, args=(client, f"burst/w{index}", index, changes), daemon=True
                )
                for index, (client, changes) in enumerate(zip(writers, expected, strict=True))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert not any(thread.is_alive() for thread in threads), "writers still running"
            assert not errors, errors
            truth = {pair.key: pair for pair in store.list("burst")}
            wait_until(
                lambda: replay(init, recorder.events[1:]) == truth,
                CONVERGENCE_BOUND,
                message=lambda: f"{len(recorder.events)} events, error {recorder.error!r}",
            )
            time.sleep(0.2)  # let any late, surplus event arrive before judging
            assert recorder.error is None
        events = recorder.events[1:]
        assert_valid_history(
            init,
            events,
            watched="burst",
            recursive=True,
            every_change=capabilities.watch_every_change,
        )
        assert replay(init, events) == truth
        observed = changes_by_key(events)
        actual = expected[0] | expected[1]
        if capabilities.watch_every_change:
            assert observed == actual
        else:
            for key, changes in observed.items():
                assert _is_subsequence(changes, actual.get(key, [])), f"{key}: invented changes"

    @staticmethod
    def _write_burst(
        client: Store, prefix: str, rng: random.Random, changes: dict[str, list[Change]]
    ) -> None:
        """Random writes to keys under `prefix`, recording each key's real changes."""
        keys = [f"{prefix}/{index}" for index in range(6)]
        keys += [f"{prefix}/deep/{index}/leaf" for index in range(3)]
        present = {pair.key for pair in client.list(prefix)}

        def wrote(pair: KVPair) -> None:
            present.add(pair.key)
            changes.setdefault(pair.key, []).append((Action.UPDATE, pair.version))

        def deleted(key: str) -> None:
            present.discard(key)
            changes.setdefault(key, []).append((Action.DELETE, None))

        for step in range(150):
            choice = rng.random()
            key, other = rng.sample(keys, 2)
            if choice < 0.5:
                wrote(client.put(key, f"{step}"))
            elif choice < 0.7:
                if key in present:
                    client.delete(key)
                    deleted(key)
                else:
                    wrote(client.create(key, f"{step}"))
            elif choice < 0.82:
                for pair in client.put_many({key: f"{step}", other: f"{step}"}):
                    wrote(pair)
            elif choice < 0.94:
                second = ops.delete(other) if other in present else ops.put(other, f"{step}")
                results = client.transaction([ops.put(key, f"{step}"), second])
                wrote(cast(KVPair, results[0]))
                if results[1] is None:
                    deleted(other)
                else:
                    wrote(results[1])
            else:
                doomed = sorted(found for found in present if found.startswith(f"{prefix}/deep/"))
                assert client.delete_tree(f"{prefix}/deep") == len(doomed)
                for found in doomed:
                    deleted(found)

    def test_watch_resumes_from_a_revision(self, store: Store, other_store: Store) -> None:
        """With watch_resume, watch(since=REV) sends no INIT and every change with
        revision > REV; without it, since= raises NotSupportedError."""
        capabilities = store.capabilities
        first = store.put("a", b"1")
        since = store.put("b", b"1").version
        if not capabilities.watch_resume:
            with pytest.raises(libkv.NotSupportedError):
                store.watch("", recursive=True, since=since)
            with pytest.raises(libkv.NotSupportedError):
                store.watch("a", since=since)
            return
        state_at_since = {"a": first, "b": store.get("b")}
        updated = other_store.put("a", b"2")
        other_store.delete("b")
        created = other_store.create("c/d", b"1")
        truth = {pair.key: pair for pair in store.list("")}
        with store.watch("", recursive=True, since=since) as watch:
            with WatchRecorder(watch) as recorder:
                wait_until(
                    lambda: replay(state_at_since, recorder.events) == truth,
                    EVENT_TIMEOUT,
                    message=lambda: "\n".join(map(describe, recorder.events)),
                )
            assert recorder.error is None
        events = recorder.events
        assert_valid_history(
            state_at_since,
            events,
            watched="",
            recursive=True,
            every_change=capabilities.watch_every_change,
            since=since,
        )
        if capabilities.watch_every_change:
            assert changes_by_key(events) == {
                "a": [(Action.UPDATE, updated.version)],
                "b": [(Action.DELETE, None)],
                "c/d": [(Action.UPDATE, created.version)],
            }
        with store.watch("a", since=first.version) as single:
            event = self.next_event(single)
        assert (event.action, event.pair) == (Action.UPDATE, updated)

    def test_resuming_from_compacted_history_raises_history_lost(self, store: Store) -> None:
        """since=REV whose history is gone raises HistoryLostError (from watch() or the
        first event) instead of skipping; resuming from the compaction point works.
        Without watch_resume, compact() raises NotSupportedError."""
        early = store.put("a", b"1")
        store.put("b", b"1")
        latest = store.put("a", b"2")
        if not store.capabilities.watch_resume:
            with pytest.raises(libkv.NotSupportedError):
                store.compact(latest.version)
            return
        store.compact(latest.version)
        with pytest.raises(libkv.HistoryLostError):
            watch = store.watch("", recursive=True, since=early.version)
            with watch:
                event = watch.next_event(timeout=EVENT_TIMEOUT)
                raise AssertionError(
                    f"resumed over lost history: {describe(event) if event else 'no event'}"
                )
        with store.watch("", recursive=True, since=latest.version) as watch:
            created = store.put("c", b"1")
            event = self.next_event(watch)
        assert (event.action, event.pair) == (Action.UPDATE, created)

    def test_watch_close_ends_a_blocked_iteration_within_one_second(self, store: Store) -> None:
        """close() from another thread ends iteration (StopIteration) within 1 s and
        unblocks next_event (None); after it, the watch yields nothing."""
        watch = store.watch("k", recursive=True)
        self.first_event(watch)
        ended: list[float] = []
        received: list[Event] = []

        def iterate() -> None:
            received.extend(watch)
            ended.append(time.monotonic())

        waiter_results: list[tuple[Event | None, float]] = []

        def wait_for_event() -> None:
            event = watch.next_event(timeout=30)
            waiter_results.append((event, time.monotonic()))

        threads = [
            threading.Thread(target=iterate, daemon=True),
            threading.Thread(target=wait_for_event, daemon=True),
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.2)  # let both threads block inside the watch
        closed = time.monotonic()
        watch.close()
        for thread in threads:
            thread.join(CLOSE_BOUND + JOIN_MARGIN)
        assert not any(thread.is_alive() for thread in threads), "close() did not unblock"
        assert received == []
        assert ended[0] - closed <= CLOSE_BOUND
        assert waiter_results[0][0] is None
        assert waiter_results[0][1] - closed <= CLOSE_BOUND
        assert watch.next_event(timeout=0.1) is None
        assert list(watch) == []

    def test_store_close_ends_its_watches(self, store: Store) -> None:
        """store.close() ends the store's watches: a blocked iteration stops."""
        watch = store.watch("", recursive=True)
        self.first_event(watch)
        ended: list[float] = []
        failures: list[BaseException] = []

        def iterate() -> None:
            try:
                for _ in watch:
                    pass
            except BaseException as error:
                failures.append(error)
            ended.append(time.monotonic())

        thread = threading.Thread(target=iterate, daemon=True)
        thread.start()
        time.sleep(0.2)  # let the thread block inside the watch
        store.close()
        closed = time.monotonic()
        thread.join(CLOSE_BOUND + JOIN_MARGIN)
        assert not thread.is_alive(), "the watch outlived its store"
        assert not failures, failures
        assert ended[0] - closed <= CLOSE_BOUND

    def test_watch_reports_expiry_and_lease_revocation_as_delete(
        self, store: Store, other_store: Store
    ) -> None:
        """A key that expires or whose lease is revoked is reported as DELETE."""
        ttl = self.ttl_for(store)
        with store.watch("w", recursive=True) as watch:
            self.first_event(watch)
            expiring = other_store.put("w/ttl", b"1", ttl=ttl)
            lease = other_store.lease(ttl * 10)
            leased = other_store.put("w/lease", b"1", lease=lease)
            seen = [self.next_event(watch), self.next_event(watch)]
            assert [event.pair for event in seen] == [expiring, leased]
            lease.revoke()
            event = self.next_event(watch)
            assert (event.action, event.key) == (Action.DELETE, "w/lease")
            expired = self.event_by(
                watch, time.monotonic() + self.expiry_bound(store, ttl), "no DELETE on expiry"
            )
            assert (expired.action, expired.key) == (Action.DELETE, "w/ttl")

    # -- wait_for_change ------------------------------------------------------------

    def test_wait_for_change_returns_the_new_pair(self, store: Store, other_store: Store) -> None:
        """wait_for_change returns once the version differs (at once if it already does)."""
        first = store.put("k", b"1")
        second = store.put("k", b"2")
        assert store.wait_for_change("k", first.version, timeout=EVENT_TIMEOUT) == second
        results: list[KVPair] = []

        def wait() -> None:
            results.append(store.wait_for_change("k", second.version))

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        changed = other_store.put("k", b"3")
        waiter.join(EVENT_TIMEOUT)
        assert not waiter.is_alive(), "wait_for_change missed the change"
        assert results == [changed]

    def test_wait_for_change_raises_key_not_found(self, store: Store, other_store: Store) -> None:
        """wait_for_change raises KeyNotFoundError if the key is absent or deleted meanwhile."""
        with pytest.raises(libkv.KeyNotFoundError):
            store.wait_for_change("missing", 1, timeout=EVENT_TIMEOUT)
        pair = store.put("k", b"1")
        outcome: list[BaseException] = []

        def wait() -> None:
            try:
                store.wait_for_change("k", pair.version, timeout=EVENT_TIMEOUT * 2)
            except BaseException as error:
                outcome.append(error)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        other_store.delete("k")
        waiter.join(EVENT_TIMEOUT)
        assert not waiter.is_alive(), "wait_for_change missed the delete"
        assert len(outcome) == 1 and isinstance(outcome[0], libkv.KeyNotFoundError), outcome

    def test_wait_for_change_times_out(self, store: Store) -> None:
        """Without a change, wait_for_change raises WaitTimeoutError (a TimeoutError) after
        the timeout, not before."""
        pair = store.put("k", b"1")
        started = time.monotonic()
        with pytest.raises(libkv.WaitTimeoutError) as caught:
            store.wait_for_change("k", pair.version, timeout=0.3)
        elapsed = time.monotonic() - started
        assert isinstance(caught.value, TimeoutError)
        assert isinstance(caught.value, libkv.KVError)
        assert 0.3 <= elapsed < 0.3 + EVENT_TIMEOUT

    # -- TTL ------------------------------------------------------------------------

    def test_ttl_key_lives_at_least_ttl_and_is_gone_by_ttl_plus_slack(
        self, open_client: Callable[[], Store], other_store: Store
    ) -> None:
        """put(ttl=S): the key stays for S seconds and is gone (get, exists, a DELETE
        event) by S + ttl_slack, whether or not the writer is still running."""
        ttl = self.ttl_for(other_store)
        writer = open_client()
        with other_store.watch("k") as watch:
            self.first_event(watch)
            started = time.monotonic()
            writer.put("k", b"v", ttl=ttl)
            written = time.monotonic()
            writer.close()
            update = self.next_event(watch)
            assert update.action is Action.UPDATE
            assert_holds_until(
                lambda: other_store.exists("k"), started + ttl, message="expired early"
            )
            deadline = written + self.expiry_bound(other_store, ttl)
            wait_until(
                lambda: not other_store.exists("k"),
                deadline - time.monotonic(),
                message="still there after ttl + ttl_slack",
            )
            delete = self.event_by(
                watch, deadline + DELIVERY_MARGIN, "no DELETE by ttl + ttl_slack"
            )
            assert (delete.action, delete.key) == (Action.DELETE, "k")
        with pytest.raises(libkv.KeyNotFoundError):
            other_store.get("k")
        assert not other_store.exists("k")
        assert other_store.list("") == []

    def test_every_expiry_is_reported_between_ttl_and_ttl_plus_slack(
        self, store: Store, other_store: Store
    ) -> None:
        """Keys with staggered TTLs (so expiry machinery running on a period cannot line up
        with all of them) are each reported as DELETE no sooner than their ttl and no later
        than ttl + ttl_slack after their write."""
        ttl = self.ttl_for(store)
        slack = store.capabilities.ttl_slack
        windows: dict[str, tuple[float, float]] = {}
        with store.watch("expiring", recursive=True) as watch, WatchRecorder(watch) as recorder:
            self.recorded_init(recorder)
            for index, offset in enumerate([0.0, 0.25, 0.5, 0.75]):
                key = f"expiring/{index}"
                started = time.monotonic()
                other_store.put(key, b"v", ttl=ttl + offset)
                written = time.monotonic()
                windows[key] = (started + ttl + offset, written + ttl + offset + slack)
            last = max(latest for _, latest in windows.values())
            wait_until(
                lambda: len(recorder.events) >= 1 + 2 * len(windows),
                last + DELIVERY_MARGIN - time.monotonic(),
                message=lambda: "\n".join(map(describe, recorder.events)),
            )
        for arrived, event in recorder.arrivals:
            if event.action is Action.DELETE:
                earliest, latest = windows[event.key]
                assert earliest <= arrived, f"{event.key} reported expired too soon"
                assert arrived <= latest + DELIVERY_MARGIN, (
                    f"{event.key} reported expired {arrived - latest:.2f} s after ttl + ttl_slack"
                )
        deleted = [event.key for event in recorder.events if event.action is Action.DELETE]
        assert sorted(deleted) == sorted(windows)

    def test_ttl_applies_to_every_write_and_a_plain_write_clears_it(self, store: Store) -> None:
        """ttl works on create, update, put_many and transaction ops too; a later write
        without ttl (put or update) clears the expiry."""
        ttl = self.ttl_for(store)
        started = time.monotonic()
        store.create("create", b"1", ttl=ttl)
        plain = store.put("update", b"1")
        store.update("update", b"2", version=plain.version, ttl=ttl)
        store.put_many({"put_many/a": b"1", "put_many/b": b"1"}, ttl=ttl)
        store.transaction(
            [
                ops.put("transaction/put", b"1", ttl=ttl),
                ops.create("transaction/create", b"1", ttl=ttl),
            ]
        )
        store.put("cleared/put", b"1", ttl=ttl)
        store.put("cleared/put", b"2")
        expiring = store.put("cleared/update", b"1", ttl=ttl)
        store.update("cleared/update", b"2", version=expiring.version)
        written = time.monotonic()
        expiring_keys = [
            "create",
            "put_many/a",
            "put_many/b",
            "transaction/create",
            "transaction/put",
            "update",
        ]
        assert_holds_until(
            lambda: len(store.get_many(expiring_keys)) == len(expiring_keys),
            started + ttl,
            message="expired early",
        )
        wait_until(
            lambda: _keys(store.list("")) == ["cleared/put", "cleared/update"],
            written + self.expiry_bound(store, ttl) - time.monotonic(),
            message=lambda: f"left: {_keys(store.list(''))}",
        )

    def test_ttl_below_ttl_min_is_rejected(self, store: Store) -> None:
        """ttl below capabilities.ttl_min (or negative) raises ValueError; nothing written."""
        existing = store.put("existing", b"1")
        ttl_min = store.capabilities.ttl_min
        for ttl in [-1.0, ttl_min / 2] if ttl_min > 0 else [-1.0]:
            _expect_all_raise(self._writes_with_ttl(store, existing, ttl), ValueError)
        assert store.list("") == [existing]

    @staticmethod
    def _writes_with_ttl(
        store: Store, existing: KVPair, ttl: float
    ) -> dict[str, Callable[[], object]]:
        return {
            "put": lambda: store.put("new", b"v", ttl=ttl),
            "create": lambda: store.create("new", b"v", ttl=ttl),
            "update": lambda: store.update("existing", b"v", version=existing.version, ttl=ttl),
            "put_many": lambda: store.put_many({"new": b"v"}, ttl=ttl),
            "transaction": lambda: store.transaction([ops.put("new", b"v", ttl=ttl)]),
        }

    # -- leases ---------------------------------------------------------------------

    def test_lease_revoke_deletes_its_keys_now(self, store: Store, other_store: Store) -> None:
        """A Lease has an id and a ttl; revoke() deletes every key written with it at once,
        and writing with a revoked lease raises LeaseNotFoundError."""
        ttl = self.ttl_for(store)
        lease = store.lease(ttl)
        assert lease.id is not None
        assert lease.ttl >= ttl
        store.put("svc/put", b"1", lease=lease)
        store.create("svc/create", b"1", lease=lease)
        plain = store.put("svc/update", b"1")
        store.update("svc/update", b"2", version=plain.version, lease=lease)
        store.put_many({"svc/put_many": b"1"}, lease=lease)
        store.transaction([ops.put("svc/transaction", b"1", lease=lease)])
        store.put("svc/plain", b"1")
        lease.revoke()
        assert _keys(store.list("")) == ["svc/plain"]
        assert _keys(other_store.list("")) == ["svc/plain"]
        assert not lease.lost.is_set(), "revoking is not losing"
        with pytest.raises(libkv.LeaseNotFoundError):
            store.put("svc/late", b"1", lease=lease)
        assert issubclass(libkv.LeaseNotFoundError, libkv.KVError)
        assert _keys(store.list("")) == ["svc/plain"]

    def test_lease_context_manager_revokes_on_exit(self, store: Store) -> None:
        """Leaving a Lease's with-block revokes it: its keys are gone."""
        with store.lease(self.ttl_for(store)) as lease:
            store.put("svc", b"1", lease=lease)
            assert store.exists("svc")
        assert not store.exists("svc")

    def test_kept_alive_lease_outlives_its_ttl_and_dies_with_its_holder(
        self, open_client: Callable[[], Store], other_store: Store
    ) -> None:
        """keepalive=True refreshes the lease while the holder runs; once the holder stops
        (store.close() stops keep-alives) its keys vanish within ttl + ttl_slack."""
        holder = open_client()
        ttl = self.ttl_for(holder)
        lease = holder.lease(ttl)
        holder.put("svc", b"up", lease=lease)
        assert_holds_until(
            lambda: other_store.exists("svc") and not lease.lost.is_set(),
            time.monotonic() + ttl + holder.capabilities.ttl_slack + 0.5,
            message="a kept-alive lease expired",
        )
        holder.close()
        wait_until(
            lambda: not other_store.exists("svc"),
            self.expiry_bound(other_store, ttl),
            message="the stopped holder's key is still there after ttl + ttl_slack",
        )

    def test_lease_without_keepalive_expires_and_is_reported_lost(
        self, store: Store, other_store: Store
    ) -> None:
        """lease(ttl, keepalive=False) is not refreshed: after ttl (+ ttl_slack) its keys
        vanish, watchers get DELETE, and lost is set."""
        ttl = self.ttl_for(store)
        with other_store.watch("svc") as watch:
            self.first_event(watch)
            started = time.monotonic()
            lease = store.lease(ttl, keepalive=False)
            granted = time.monotonic()
            store.put("svc", b"up", lease=lease)
            assert self.next_event(watch).action is Action.UPDATE
            assert_holds_until(
                lambda: other_store.exists("svc"), started + ttl, message="expired early"
            )
            deadline = granted + self.expiry_bound(store, ttl)
            wait_until(
                lambda: not other_store.exists("svc"),
                deadline - time.monotonic(),
                message="still there after ttl + ttl_slack",
            )
            delete = self.event_by(
                watch, deadline + DELIVERY_MARGIN, "no DELETE by ttl + ttl_slack"
            )
            assert (delete.action, delete.key) == (Action.DELETE, "svc")
        assert not other_store.exists("svc")
        wait_until(
            lease.lost.is_set,
            granted + ttl + store.capabilities.ttl_slack + LOST_MARGIN - time.monotonic(),
            message="lease.lost not set after expiry",
        )
        with pytest.raises(libkv.LeaseNotFoundError):
            store.put("svc", b"again", lease=lease)

    # -- locks ----------------------------------------------------------------------

    def test_lock_holds_its_value_and_releases(self, store: Store, other_store: Store) -> None:
        """While held, get(key).value is the lock's value and token is an int; after
        release the key is gone and a second release raises LockError."""
        lock = store.lock("locks/a", ttl=self.ttl_for(store), value=b"holder")
        assert not lock.locked()
        token_before = lock.token
        assert token_before is None
        assert _call_within(lock.acquire, EVENT_TIMEOUT, "uncontended acquire()") is True
        assert lock.locked()
        assert isinstance(lock.token, int)
        assert other_store.get("locks/a").value == b"holder"
        lock.release()
        assert not lock.locked()
        assert not other_store.exists("locks/a")
        with pytest.raises(libkv.LockError):
            lock.release()

    def test_release_of_a_lock_never_held_raises_lock_error(self, store: Store) -> None:
        """release() of a lock that is not held raises LockError and deletes nothing."""
        store.put("locks/b", b"someone else's")
        with pytest.raises(libkv.LockError):
            store.lock("locks/b").release()
        assert store.get("locks/b").value == b"someone else's"
        with pytest.raises(libkv.LockError):
            store.lock("locks/never").release()
        assert issubclass(libkv.LockError, libkv.KVError)

    def test_lock_context_manager_holds_and_releases(
        self, store: Store, other_store: Store
    ) -> None:
        """A Lock is a context manager: held inside the block, released after it."""
        lock = store.lock("locks/c", ttl=self.ttl_for(store), value=b"inside")
        with lock as held:
            assert held is lock
            assert lock.locked()
            assert other_store.get("locks/c").value == b"inside"
        assert not lock.locked()
        assert not other_store.exists("locks/c")

    def test_lock_excludes_other_clients(self, store: Store, other_store: Store) -> None:
        """While one client holds a lock, another's non-blocking acquire returns False at
        once and a timed acquire returns False after the timeout; tokens increase."""
        ttl = self.ttl_for(store)
        first = store.lock("locks/x", ttl=ttl, value=b"first")
        second = other_store.lock("locks/x", ttl=ttl, value=b"second")
        assert first.acquire(timeout=EVENT_TIMEOUT)
        assert second.acquire(blocking=False) is False
        assert not second.locked()
        started = time.monotonic()
        assert second.acquire(timeout=0.3) is False
        assert 0.3 <= time.monotonic() - started < 0.3 + EVENT_TIMEOUT
        assert other_store.get("locks/x").value == b"first"
        first_token = cast(int, first.token)
        first.release()
        assert second.acquire(timeout=EVENT_TIMEOUT)
        second_token = cast(int, second.token)
        assert second_token > first_token
        assert store.get("locks/x").value == b"second"
        second.release()
        assert first.acquire(timeout=EVENT_TIMEOUT)
        assert cast(int, first.token) > second_token
        first.release()

    def test_lock_is_mutually_exclusive_under_contention(
        self, open_client: Callable[[], Store]
    ) -> None:
        """Three clients taking one lock in turns never overlap, and every acquisition
        gets a strictly larger fencing token."""
        clients = [open_client() for _ in range(3)]
        ttl = self.ttl_for(clients[0])
        rounds = 4
        holders = 0
        overlaps = 0
        tokens: list[int] = []
        errors: list[BaseException] = []
        guard = threading.Lock()

        def contend(client: Store, name: str) -> None:
            nonlocal holders, overlaps
            lock = client.lock("locks/shared", ttl=ttl, value=name.encode())
            try:
                for _ in range(rounds):
                    assert lock.acquire(timeout=30), f"{name} starved"
                    with guard:
                        holders += 1
                        overlaps += holders > 1
                        tokens.append(cast(int, lock.token))
                    time.sleep(0.01)  # stay inside long enough for an overlap to show
                    with guard:
                        holders -= 1
                    lock.release()
            except BaseException as error:
                errors.append(error)

        workers = [
            threading.Thread(target=contend, args=(client, f"client-{index}"), daemon=True)
            for index, client in enumerate(clients)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert not any(worker.is_alive() for worker in workers), "lock contention hung"
        assert not errors, errors
        assert overlaps == 0
        assert len(tokens) == len(clients) * rounds
        assert tokens == sorted(set(tokens)), f"tokens not strictly increasing: {tokens}"

    def test_lock_waiter_gets_the_lock_within_one_second_of_release(
        self, store: Store, other_store: Store
    ) -> None:
        """A blocked waiter acquires the lock within 1 s of its release."""
        ttl = self.ttl_for(store)
        holder = store.lock("locks/w", ttl=ttl, value=b"holder")
        waiter = other_store.lock("locks/w", ttl=ttl, value=b"waiter")
        assert holder.acquire(timeout=EVENT_TIMEOUT)
        acquired: list[tuple[bool, float]] = []

        def wait() -> None:
            acquired.append((waiter.acquire(timeout=30), time.monotonic()))

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        time.sleep(0.3)  # let the waiter block
        assert acquired == [], "the waiter got a held lock"
        released = time.monotonic()
        holder.release()
        thread.join(HANDOVER_BOUND + EVENT_TIMEOUT)
        assert acquired and acquired[0][0], "the waiter did not get the lock"
        assert acquired[0][1] - released <= HANDOVER_BOUND
        assert store.get("locks/w").value == b"waiter"
        waiter.release()

    def test_held_lock_is_kept_alive_past_its_ttl(self, store: Store, other_store: Store) -> None:
        """A held lock does not expire while its holder runs, however long it holds it."""
        ttl = self.ttl_for(store)
        lock = store.lock("locks/long", ttl=ttl, value=b"holder")
        assert lock.acquire(timeout=EVENT_TIMEOUT)
        contender = other_store.lock("locks/long", ttl=ttl)
        assert_holds_until(
            lambda: other_store.get("locks/long").value == b"holder" and not lock.lost.is_set(),
            time.monotonic() + ttl + store.capabilities.ttl_slack + 0.5,
            message="a held lock expired",
        )
        assert contender.acquire(blocking=False) is False
        lock.release()

    def test_lock_of_a_stopped_holder_is_freed_after_its_ttl(
        self, open_client: Callable[[], Store], other_store: Store
    ) -> None:
        """When the holder stops (its store closes) without releasing, another client gets
        the lock within ttl + ttl_slack."""
        holder = open_client()
        ttl = self.ttl_for(holder)
        assert holder.lock("locks/dead", ttl=ttl, value=b"holder").acquire(timeout=EVENT_TIMEOUT)
        holder.close()
        stopped = time.monotonic()
        contender = other_store.lock("locks/dead", ttl=ttl, value=b"next")
        bound = self.expiry_bound(other_store, ttl) + DELIVERY_MARGIN
        assert contender.acquire(timeout=bound), "the lock was not freed by ttl + ttl_slack"
        assert time.monotonic() - stopped <= bound
        assert other_store.get("locks/dead").value == b"next"
        contender.release()

    @pytest.mark.parametrize("intrusion", ["delete", "overwrite"])
    def test_lock_lost_when_another_client_takes_its_key(
        self, store: Store, other_store: Store, intrusion: str
    ) -> None:
        """Ownership lost while held (another client deletes or overwrites the key) sets
        lost; releasing the lost lock never deletes what the other client wrote."""
        ttl = self.ttl_for(store)
        lock = store.lock("locks/l", ttl=ttl, value=b"mine")
        assert lock.acquire(timeout=EVENT_TIMEOUT)
        if intrusion == "delete":
            other_store.delete("locks/l")
        else:
            other_store.put("locks/l", b"intruder")
        wait_until(
            lock.lost.is_set,
            ttl + store.capabilities.ttl_slack + LOST_MARGIN,
            message=f"lost not set after the lock key was {intrusion}d",
        )
        if intrusion == "delete":
            contender = other_store.lock("locks/l", ttl=ttl, value=b"theirs")
            assert contender.acquire(timeout=ttl + store.capabilities.ttl_slack + LOST_MARGIN)
            expected = b"theirs"
        else:
            expected = b"intruder"
        with contextlib.suppress(libkv.LockError):
            lock.release()
        assert other_store.get("locks/l").value == expected
        if intrusion == "delete":
            assert not contender.lost.is_set()
            contender.release()

    def test_lock_and_lease_bookkeeping_is_hidden(self, store: Store, other_store: Store) -> None:
        """Lock and lease bookkeeping never appears in get/list/keys/watch: only the user's
        keys and the lock key itself (which holds the lock's value) are visible."""
        ttl = self.ttl_for(store)
        visible = {"app/config", "app/lock", "app/service"}
        with store.watch("", recursive=True) as watch, WatchRecorder(watch) as recorder:
            self.recorded_init(recorder)
            store.put("app/config", b"1")
            lease = store.lease(ttl)
            store.lease(ttl)  # a lease with no key at all
            store.put("app/service", b"up", lease=lease)
            lock = store.lock("app/lock", ttl=ttl, value=b"owner")
            assert lock.acquire(timeout=EVENT_TIMEOUT)
            contender = other_store.lock("app/lock", ttl=ttl, value=b"contender")
            assert contender.acquire(blocking=False) is False
            assert contender.acquire(timeout=0.2) is False
            for client in (store, other_store):
                assert set(_keys(client.list(""))) == visible
                assert set(client.keys("**")) == visible
                assert client.get("app/lock").value == b"owner"
            with other_store.watch("", recursive=True) as snapshot_watch:
                snapshot = self.first_event(snapshot_watch).snapshot
            assert set(_keys(list(snapshot))) == visible
            lock.release()
            lease.revoke()
            assert set(_keys(store.list(""))) == {"app/config"}
            wait_until(
                lambda: any(
                    event.action is Action.DELETE and event.key == "app/service"
                    for event in recorder.events
                ),
                EVENT_TIMEOUT,
            )
        seen = {event.key for event in recorder.events[1:]}
        assert seen <= visible, f"bookkeeping leaked into the watch: {sorted(seen - visible)}"

    # -- closing --------------------------------------------------------------------

    def test_closed_store_rejects_every_call(
        self, url: str, store: Store, other_store: Store
    ) -> None:
        """After close(), every call raises StoreClosedError; the data stays for other
        clients, and a store used as a context manager is closed on exit."""
        pair = store.put("k", b"1")
        store.close()
        calls: dict[str, Callable[[], object]] = {}
        if store.capabilities.watch_resume:
            # Without it compact() is NotSupportedError whatever the store's state.
            calls["compact"] = lambda: store.compact(pair.version)
        _expect_all_raise(
            calls
            | {
                "get": lambda: store.get("k"),
                "exists": lambda: store.exists("k"),
                "put": lambda: store.put("k", b"2"),
                "create": lambda: store.create("new", b"2"),
                "update": lambda: store.update("k", b"2", version=pair.version),
                "delete": lambda: store.delete("k"),
                "list": lambda: store.list(""),
                "keys": lambda: list(store.keys()),
                "delete_tree": lambda: store.delete_tree(""),
                "get_many": lambda: store.get_many(["k"]),
                "put_many": lambda: store.put_many({"new": b"2"}),
                "transaction": lambda: store.transaction([ops.put("new", b"2")]),
                "watch": lambda: store.watch("k"),
                "wait_for_change": lambda: store.wait_for_change("k", pair.version, timeout=0.1),
                "lease": lambda: store.lease(self.ttl_for(other_store)),
                "lock": lambda: store.lock("lock"),
            },
            libkv.StoreClosedError,
        )
        assert other_store.get("k") == pair
        with libkv.open(url) as scoped:
            scoped.put("scoped", b"1")
        with pytest.raises(libkv.StoreClosedError):
            scoped.get("scoped")
        assert other_store.get("scoped").value == b"1"

    # -- capabilities and errors ----------------------------------------------------

    def test_capabilities_are_a_frozen_dataclass_with_sane_values(
        self, store: Store, other_store: Store
    ) -> None:
        """capabilities is a frozen Capabilities dataclass with the contract's fields."""
        capabilities = store.capabilities
        assert isinstance(capabilities, libkv.Capabilities)
        assert dataclasses.is_dataclass(capabilities)
        with pytest.raises(dataclasses.FrozenInstanceError):
            capabilities.ttl_min = 1.0  # type: ignore[misc]
        assert isinstance(capabilities.watch_every_change, bool)
        assert isinstance(capabilities.watch_resume, bool)
        assert isinstance(capabilities.ttl_min, (int, float))
        assert isinstance(capabilities.ttl_slack, (int, float))
        assert 0 <= capabilities.ttl_min <= 60
        assert 0 <= capabilities.ttl_slack <= 60
        assert isinstance(capabilities.max_value_size, int)
        assert capabilities.max_value_size >= 1024
        assert isinstance(capabilities.max_transaction_ops, int)
        assert capabilities.max_transaction_ops >= 8
        assert other_store.capabilities == capabilities

    def test_error_hierarchy(self) -> None:
        """Every error derives from KVError, with the builtin bases the contract names."""
        expected_bases: dict[type[BaseException], tuple[type[BaseException], ...]] = {
            libkv.KeyNotFoundError: (KeyError,),
            libkv.KeyExistsError: (),
            libkv.KeyModifiedError: (),
            libkv.InvalidKeyError: (ValueError,),
            libkv.InvalidURLError: (ValueError,),
            libkv.UnknownSchemeError: (libkv.InvalidURLError,),
            libkv.ValueTooLargeError: (ValueError,),
            libkv.InvalidValueError: (TypeError, ValueError),
            libkv.NotReachableError: (ConnectionError,),
            libkv.UnknownOutcomeError: (libkv.NotReachableError,),
            libkv.HistoryLostError: (),
            libkv.NotSupportedError: (),
            libkv.LockError: (),
            libkv.StoreClosedError: (),
            libkv.WaitTimeoutError: (TimeoutError,),
            libkv.LeaseNotFoundError: (),
        }
        for error, bases in expected_bases.items():
            assert issubclass(error, libkv.KVError), error.__name__
            for base in bases:
                assert issubclass(error, base), f"{error.__name__} is not a {base.__name__}"
