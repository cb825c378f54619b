"""Arguments out of range: refused with a typed error, nothing written, no watch harmed.

A ttl, a version, a glob pattern or a compaction revision that a backend cannot
represent must be refused by libkv before anything is sent: the error is a `KVError`
that is also a `ValueError` (so `except KVError` and `except ValueError` both catch
it), the store's data and revision are unchanged, and a watch open meanwhile still
delivers the next real write (no HistoryLostError, no event from the refused call).
The values come from real defects: a ttl of 1e15 s half-applied on Redis, a version
of 2**70 overflowing etcd's protobuf, `[]` and `[z-a]` escaping as `re.error`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import cast

import pytest

import libkv
from libkv import Action, Store, ops
from libkv.testing.conformance.base import (
    EVENT_TIMEOUT,
    ConformanceBase,
    keys_of,
    outcome_of,
)
from libkv.testing.history import WatchRecorder, describe
from libkv.testing.polling import wait_until

__all__ = ["BoundsConformance", "is_argument_error"]

OUT_OF_RANGE_TTLS = [
    pytest.param(1e15, id="1e15"),
    pytest.param(1e300, id="1e300"),
    pytest.param(math.inf, id="inf"),
    pytest.param(-math.inf, id="minus-inf"),
    pytest.param(math.nan, id="nan"),
    pytest.param(-1.0, id="minus-1"),
    pytest.param(0.0, id="zero"),
    pytest.param("just-above-ttl-max", id="just-above-ttl-max"),
    pytest.param("twice-ttl-max", id="twice-ttl-max"),
]
"""A float, or the name of a value computed from the store's `capabilities.ttl_max`."""

LARGEST_VERSION = 2**63 - 1
"""Versions are signed 64-bit on every backend; anything larger is refused up front."""

OUT_OF_RANGE_VERSIONS = [
    pytest.param(2**63, id="2**63"),
    pytest.param(2**64, id="2**64"),
    pytest.param(2**70, id="2**70"),
    pytest.param(-1, id="minus-1"),
]

BAD_GLOBS = [
    pytest.param("[]", id="empty-class"),
    pytest.param("[]]", id="empty-class-then-bracket"),
    pytest.param("[z-a]", id="reversed-range"),
    pytest.param("[!z-a]", id="negated-reversed-range"),
    pytest.param("[a-\\]", id="reversed-range-to-backslash"),
    pytest.param("[", id="lone-bracket"),
    pytest.param("a[", id="unterminated-class"),
    pytest.param("[!", id="unterminated-negated-class"),
    pytest.param("x/**/[ab", id="unterminated-class-after-double-star"),
]

BACKSLASH_KEYS = ["\\", "\\Z", "\\d", "a\\b", "ab", "d", "5", "Z"]
"""Keys a glob with a backslash could wrongly match if it leaked into a regular expression."""

BACKSLASH_GLOBS = [
    pytest.param("\\d", ["\\d"], id="backslash-d"),
    pytest.param("\\Z", ["\\Z"], id="backslash-Z"),
    pytest.param("a\\b", ["a\\b"], id="backslash-b"),
    pytest.param("\\", ["\\"], id="lone-backslash"),
    pytest.param("[\\d]", ["\\", "d"], id="class-with-backslash-d"),
    pytest.param("[\\]", ["\\"], id="class-of-backslash"),
]
"""Patterns whose backslash has no glob meaning, and the keys they match read literally."""

BAD_COMPACT_REVISIONS: list[object] = [
    pytest.param("x", id="str"),
    pytest.param("5", id="numeric-str"),
    pytest.param(1.5, id="float"),
    pytest.param(None, id="none"),
    pytest.param(True, id="bool"),
    pytest.param(-5, id="minus-5"),
    pytest.param(2**63, id="2**63"),
    pytest.param(2**70, id="2**70"),
]


def is_argument_error(error: BaseException) -> bool:
    """Whether `error` is how libkv refuses a bad argument: a KVError and a ValueError."""
    return isinstance(error, libkv.KVError) and isinstance(error, ValueError)


class BoundsConformance(ConformanceBase):
    """Arguments out of range: refused with a typed error, nothing written, no watch harmed."""

    def assert_refused_harmlessly(
        self,
        store: Store,
        watcher: Store,
        calls: Mapping[str, Callable[[], object]],
        *,
        also: tuple[type[BaseException], ...] = (),
    ) -> None:
        """Every call raises a KVError that is also a ValueError (or one of `also`) and
        writes nothing: list("") is unchanged, and a recursive watch of everything, opened
        through `watcher` before the calls, reports no change from them, raises nothing,
        and still delivers the next real write as its very next event."""
        wanted = " or ".join(
            ["a KVError that is also a ValueError", *(kind.__name__ for kind in also)]
        )

        def accepts(error: BaseException) -> bool:
            return is_argument_error(error) or isinstance(error, also)

        with watcher.watch("", recursive=True) as watch, WatchRecorder(watch) as recorder:
            self.recorded_init(recorder)
            before = store.list("")
            failures = [
                f"{name}: {failure}"
                for name, call in calls.items()
                if (failure := outcome_of(call, accepts, wanted))
            ]
            after = store.list("")
            next_write = store.put("after-the-refusals", b"next")
            wait_until(
                lambda: (
                    any(event.pair == next_write for event in recorder.events)
                    or recorder.error is not None
                ),
                EVENT_TIMEOUT,
                message=lambda: (
                    "the watch did not deliver the next write:\n"
                    + "\n".join(map(describe, recorder.events))
                ),
            )
        assert not failures, "\n".join(failures)
        assert after == before, f"a refused call wrote: {keys_of(before)} -> {keys_of(after)}"
        assert recorder.error is None, f"a refused call broke the watch: {recorder.error!r}"
        changes = [(event.action, event.pair) for event in recorder.events[1:]]
        assert changes == [(Action.UPDATE, next_write)], (
            "the watch saw changes from refused calls:\n"
            + "\n".join(map(describe, recorder.events[1:]))
        )

    # -- ttls -----------------------------------------------------------------------

    @pytest.mark.parametrize("ttl", OUT_OF_RANGE_TTLS)
    def test_out_of_range_ttl_is_refused_and_writes_nothing(
        self, store: Store, other_store: Store, ttl: float | str
    ) -> None:
        """A ttl that is not a positive finite number of seconds within
        capabilities.ttl_max is refused by every call that takes one (writes, transaction
        ops, leases, locks) before anything is sent."""
        ttl_max = store.capabilities.ttl_max
        seconds = {
            "just-above-ttl-max": math.nextafter(ttl_max, math.inf),
            "twice-ttl-max": ttl_max * 2,
        }.get(str(ttl), ttl)
        assert isinstance(seconds, float)
        existing = store.put("existing", b"1")
        self.assert_refused_harmlessly(
            store,
            other_store,
            {
                "put": lambda: store.put("new", b"v", ttl=seconds),
                "put over existing": lambda: store.put("existing", b"v", ttl=seconds),
                "create": lambda: store.create("new", b"v", ttl=seconds),
                "update": lambda: store.update(
                    "existing", b"v", version=existing.version, ttl=seconds
                ),
                "put_many": lambda: store.put_many({"a": b"v", "b": b"v"}, ttl=seconds),
                "transaction put": lambda: store.transaction(
                    [ops.put("a", b"v"), ops.put("new", b"v", ttl=seconds)]
                ),
                "transaction create": lambda: store.transaction(
                    [ops.put("a", b"v"), ops.create("new", b"v", ttl=seconds)]
                ),
                "transaction update": lambda: store.transaction(
                    [
                        ops.put("a", b"v"),
                        ops.update("existing", b"v", existing.version, ttl=seconds),
                    ]
                ),
                "lease": lambda: store.lease(seconds),
                "lease without keepalive": lambda: store.lease(seconds, keepalive=False),
                "lock": lambda: store.lock("lock", ttl=seconds).acquire(blocking=False),
            },
        )

    def test_ttl_max_itself_is_accepted(self, store: Store, other_store: Store) -> None:
        """capabilities.ttl_max is a ttl the backend really accepts: a write, a lease and a
        lock with it succeed, and the key is there."""
        ttl_max = store.capabilities.ttl_max
        assert math.isfinite(ttl_max) and ttl_max >= self.ttl_for(store), ttl_max
        written = store.put("longest", b"v", ttl=ttl_max)
        assert other_store.get("longest") == written
        lease = store.lease(ttl_max, keepalive=False)
        leased = store.put("leased", b"v", lease=lease)
        assert other_store.get("leased") == leased
        lock = store.lock("lock", ttl=ttl_max, value=b"holder")
        assert lock.acquire(timeout=EVENT_TIMEOUT)
        assert other_store.get("lock").value == b"holder"
        lock.release()
        lease.revoke()
        assert keys_of(other_store.list("")) == ["longest"]

    # -- versions -------------------------------------------------------------------

    @pytest.mark.parametrize("version", OUT_OF_RANGE_VERSIONS)
    def test_out_of_range_version_is_refused_and_writes_nothing(
        self, store: Store, other_store: Store, version: int
    ) -> None:
        """A version below 0 or above 2**63 - 1 is refused by update, delete, transaction
        ops (update, delete, check) and watch(since=) before anything is sent; without
        watch_resume, since= is NotSupportedError whatever its value."""
        store.put("existing", b"1")
        calls: dict[str, Callable[[], object]] = {
            "update": lambda: store.update("existing", b"v", version=version),
            "update absent": lambda: store.update("absent", b"v", version=version),
            "delete": lambda: store.delete("existing", version=version),
            "delete absent": lambda: store.delete("absent", version=version),
            "transaction update": lambda: store.transaction(
                [ops.put("a", b"v"), ops.update("existing", b"v", version)]
            ),
            "transaction delete": lambda: store.transaction(
                [ops.put("a", b"v"), ops.delete("existing", version)]
            ),
            "transaction check": lambda: store.transaction(
                [ops.put("a", b"v"), ops.check("existing", version)]
            ),
            "transaction check absent": lambda: store.transaction(
                [ops.put("a", b"v"), ops.check("absent", version)]
            ),
        }
        self.assert_refused_harmlessly(store, other_store, calls)
        since: dict[str, Callable[[], object]] = {
            "watch since": lambda: store.watch("", recursive=True, since=version),
            "watch of a key since": lambda: store.watch("existing", since=version),
        }
        if store.capabilities.watch_resume:
            self.assert_refused_harmlessly(store, other_store, since)
        else:
            self.assert_refused_harmlessly(
                store, other_store, since, also=(libkv.NotSupportedError,)
            )

    def test_largest_version_is_an_ordinary_mismatch(self, store: Store) -> None:
        """2**63 - 1 is in range: a condition on it fails like any other wrong version
        (KeyModifiedError, or KeyNotFoundError for an absent key), with nothing written."""
        existing = store.put("existing", b"1")
        with pytest.raises(libkv.KeyModifiedError):
            store.update("existing", b"v", version=LARGEST_VERSION)
        with pytest.raises(libkv.KeyModifiedError):
            store.delete("existing", version=LARGEST_VERSION)
        with pytest.raises(libkv.KeyModifiedError) as caught:
            store.transaction([ops.put("a", b"v"), ops.check("existing", LARGEST_VERSION)])
        assert caught.value.index == 1
        with pytest.raises(libkv.KeyNotFoundError):
            store.update("absent", b"v", version=LARGEST_VERSION)
        assert store.list("") == [existing]

    # -- globs ----------------------------------------------------------------------

    @pytest.mark.parametrize("pattern", BAD_GLOBS)
    def test_bad_glob_is_refused(self, store: Store, other_store: Store, pattern: str) -> None:
        """An empty or reversed character class, or one left open, is refused as an
        argument error (never a raw re.error)."""
        store.put("a", b"1")
        store.put("x/y/a", b"1")
        self.assert_refused_harmlessly(
            store, other_store, {"keys": lambda: list(store.keys(pattern))}
        )

    @pytest.mark.parametrize(("pattern", "literal"), BACKSLASH_GLOBS)
    def test_backslash_in_a_glob_is_a_literal_character(
        self, store: Store, pattern: str, literal: list[str]
    ) -> None:
        """A backslash has no meaning in a glob (keys may contain it): it matches itself,
        never a regular-expression escape such as \\d or \\Z. A driver refusing such a
        pattern must do so with an argument error."""
        for key in BACKSLASH_KEYS:
            store.put(key, b"1")
        try:
            found = list(store.keys(pattern))
        except Exception as error:
            assert is_argument_error(error), f"raised {type(error).__name__}({error})"
            return
        assert found == sorted(literal)

    # -- compaction -----------------------------------------------------------------

    @pytest.mark.parametrize("revision", BAD_COMPACT_REVISIONS)
    def test_bad_compact_revision_is_refused(
        self, store: Store, other_store: Store, revision: object
    ) -> None:
        """compact() takes a revision (an int from 0 to 2**63 - 1, not a bool): anything
        else is refused and no history is discarded; without watch_resume, compact() is
        NotSupportedError whatever its argument."""
        first = store.put("k", b"1")
        store.put("k", b"2")
        as_revision = cast(int, revision)  # deliberately not always an int
        also: tuple[type[BaseException], ...] = ()
        if not store.capabilities.watch_resume:
            also = (libkv.NotSupportedError,)
        self.assert_refused_harmlessly(
            store,
            other_store,
            {"compact": lambda: store.compact(as_revision)},
            also=also,
        )
        if store.capabilities.watch_resume:
            with store.watch("k", since=first.version) as watch:
                event = self.next_event(watch)
            assert (event.action, event.pair) == (Action.UPDATE, store.get("k"))
