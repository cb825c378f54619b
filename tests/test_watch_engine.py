"""The watch engine in isolation, fed by a scripted driver.

Real backends run the conformance suite; this checks the engine's own duties that a
well-behaved backend rarely triggers: reconnection, replay de-duplication, snapshot
diffing, a revision going backwards, the resume point, a zero timeout, bounded
bookkeeping, and the unreachable clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import pytest

import libkv
from libkv import Action, HistoryLostError, KVPair, NotReachableError, Store, StoreURL
from libkv.backend import Backend
from libkv.model import Capabilities, Event
from libkv.ops import Op
from libkv.testing.conformance.watch_properties import watch_footprint
from libkv.watching import FeedBatch


class ScriptedFeed:
    """Plays a script: a batch is returned, an exception raised, None waits out the poll
    and returns None (as does the end of the script)."""

    def __init__(self, script: list[FeedBatch | Exception | None]) -> None:
        self.script = script
        self.closed = threading.Event()

    def poll(self, timeout: float) -> FeedBatch | None:
        step = self.script.pop(0) if self.script else None
        if isinstance(step, Exception):
            raise step
        if step is None:
            self.closed.wait(timeout)
        return step

    def close(self) -> None:
        self.closed.set()


class ScriptedBackend(Backend):
    """Serves a fixed snapshot and hands out scripted feeds, recording each open."""

    def __init__(
        self, *, every_change: bool, snapshot: list[KVPair], revision: int, timeout: float = 0.5
    ) -> None:
        self.capabilities = Capabilities(every_change, every_change, 1.0, 60.0, 1.0, 1024, 8)
        super().__init__(StoreURL.parse("scripted://"), namespace="ns", timeout=timeout)
        self.snapshot, self.revision = snapshot, revision
        self.feeds: list[list[FeedBatch | Exception | None]] = []
        self.opened: list[int | None] = []
        self.handed_out: list[ScriptedFeed] = []
        self.range_failures: list[Exception] = []  # raised by the next reads, in order

    def range(self, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
        if self.range_failures:
            raise self.range_failures.pop(0)
        return list(self.snapshot), self.revision

    def open_feed(self, prefix: str, after: int | None) -> ScriptedFeed:
        self.opened.append(after)
        if not self.feeds:
            raise NotReachableError("no more feeds")
        feed = ScriptedFeed(self.feeds.pop(0))
        self.handed_out.append(feed)
        return feed

    # The watch engine needs only range and open_feed; the other primitives are unused.
    def get(self, key: str) -> KVPair | None:
        raise NotImplementedError

    def commit(self, ops: Sequence[Op]) -> list[KVPair | None]:
        raise NotImplementedError

    def delete_range(self, prefix: str) -> int:
        raise NotImplementedError

    def grant_lease(self, ttl: float) -> int:
        raise NotImplementedError

    def keepalive_lease(self, lease_id: int) -> bool:
        raise NotImplementedError

    def lease_ttl(self, lease_id: int) -> float | None:
        raise NotImplementedError

    def revoke_lease(self, lease_id: int) -> None:
        raise NotImplementedError

    def translate_error(self, error: Exception) -> None:
        return None


def pair(key: str, version: int, value: bytes = b"v") -> KVPair:
    return KVPair(f"ns/{key}", value, version)


def drain(events: Sequence[Event | None]) -> list[tuple[Action, str, int]]:
    return [(event.action, event.key, event.revision) for event in events if event is not None]


def test_change_feed_resumes_after_connection_loss_without_duplicates() -> None:
    backend = ScriptedBackend(every_change=True, snapshot=[pair("a", 3)], revision=5)
    store = Store(backend)
    update = Event(Action.UPDATE, "ns/a", pair("a", 6), 6)
    backend.feeds = [
        [FeedBatch(6, [update]), NotReachableError("connection reset")],
        [FeedBatch(7, [update, Event(Action.DELETE, "ns/a", None, 7)])],  # replays revision 6
    ]
    watch = store.watch("", recursive=True)
    events = [watch.next_event(2) for _ in range(3)]
    assert drain(events) == [
        (Action.INIT, "", 5),
        (Action.UPDATE, "a", 6),
        (Action.DELETE, "a", 7),
    ]
    assert events[0] is not None and events[0].snapshot == (KVPair("a", b"v", 3),)
    assert backend.opened == [5, 6]  # resumed from the last revision it had delivered
    assert watch.revision == 7


def test_snapshot_feed_is_diffed_and_spurious_wakeups_dropped() -> None:
    backend = ScriptedBackend(every_change=False, snapshot=[pair("a", 3), pair("b", 4)], revision=4)
    store = Store(backend)
    backend.feeds = [
        [
            FeedBatch(4, snapshot=[pair("a", 3), pair("b", 4)]),  # nothing changed
            FeedBatch(9, snapshot=[pair("a", 8, b"new"), pair("c", 9)]),
        ]
    ]
    watch = store.watch("", recursive=True)
    events = [watch.next_event(2) for _ in range(4)]
    assert drain(events) == [
        (Action.INIT, "", 4),
        (Action.UPDATE, "a", 8),
        (Action.DELETE, "b", 9),  # same revision: ordered by key
        (Action.UPDATE, "c", 9),
    ]
    assert watch.next_event(0.3) is None


def test_revision_going_backwards_is_history_lost() -> None:
    backend = ScriptedBackend(every_change=True, snapshot=[], revision=10)
    store = Store(backend)
    backend.feeds = [[FeedBatch(3, [])]]
    watch = store.watch("x")
    assert watch.next_event(1) is not None  # INIT
    with pytest.raises(HistoryLostError, match="went back"):
        watch.next_event(1)
    assert watch.closed


def test_a_new_epoch_is_history_lost_even_when_revisions_move_on() -> None:
    backend = ScriptedBackend(every_change=True, snapshot=[], revision=10)
    store = Store(backend)
    backend.feeds = [
        [FeedBatch(10, epoch="first"), NotReachableError("restarted")],
        [FeedBatch(50, epoch="second")],
    ]
    watch = store.watch("x")
    assert watch.next_event(1) is not None  # INIT
    with pytest.raises(HistoryLostError, match="reset"):
        watch.next_event(2)


def test_unreachable_past_the_store_timeout_raises() -> None:
    backend = ScriptedBackend(every_change=True, snapshot=[], revision=1)
    store = Store(backend)
    backend.feeds = [[NotReachableError("down")]]  # and every reopen fails
    watch = store.watch("x")
    watch.next_event(1)
    started = time.monotonic()
    with pytest.raises(NotReachableError):
        while True:
            watch.next_event(0.2)
    assert time.monotonic() - started < store.timeout + 2


def test_close_from_another_thread_ends_iteration_promptly() -> None:
    backend = ScriptedBackend(every_change=True, snapshot=[], revision=1)
    store = Store(backend)
    backend.feeds = [[]]
    watch = store.watch("x")
    next(watch)
    threading.Timer(0.2, watch.close).start()
    started = time.monotonic()
    assert list(watch) == []
    assert time.monotonic() - started < 1.0


def test_revision_is_a_safe_resume_point_after_partial_consumption() -> None:
    """Watch.revision stays below every event not yet returned (issue 8, item 3)."""
    backend = ScriptedBackend(every_change=True, snapshot=[], revision=5)
    store = Store(backend)
    changes = [("a", 6), ("b", 7), ("t1", 8), ("t2", 8), ("c", 9)]  # t1, t2: one transaction
    batch = FeedBatch(20, [Event(Action.UPDATE, f"ns/{k}", pair(k, r), r) for k, r in changes])
    backend.feeds = [[batch]]
    watch = store.watch("", recursive=True)
    assert watch.revision == 5
    revisions = []
    for _ in range(1 + len(changes)):
        assert watch.next_event(2) is not None
        revisions.append(watch.revision)
    # After INIT: its snapshot revision; after a: below b; after t1: below t2 (same
    # revision, so resuming from 8 would skip t2); after the last: the batch's revision.
    assert revisions == [5, 6, 7, 7, 8, 20]
    assert backend.opened == [5]


def test_zero_timeout_returns_what_the_feed_has_ready() -> None:
    """next_event(0) polls the feed once without waiting (issue 8, item 4)."""
    backend = ScriptedBackend(every_change=True, snapshot=[], revision=5)
    store = Store(backend)
    backend.feeds = [[FeedBatch(6, [Event(Action.UPDATE, "ns/x", pair("x", 6), 6)])]]
    watch = store.watch("x")
    assert watch.next_event(0) is not None  # INIT, pending since the watch opened
    event = watch.next_event(0)
    assert event is not None and (event.action, event.key) == (Action.UPDATE, "x")
    started = time.monotonic()
    assert watch.next_event(0) is None  # nothing ready: None at once
    assert time.monotonic() - started < 0.1


class GeneratedFeed:
    """A change feed of `cycles` keys, each created and deleted, `per_batch` to a batch."""

    def __init__(self, cycles: int, per_batch: int, after: int) -> None:
        self.batches = self._generate(cycles, per_batch, after)

    @staticmethod
    def _generate(cycles: int, per_batch: int, revision: int) -> Iterator[FeedBatch]:
        for start in range(0, cycles, per_batch):
            changes = []
            for index in range(start, start + per_batch):
                key = f"ns/short/{index:06}"
                changes.append(
                    Event(Action.UPDATE, key, KVPair(key, b"v", revision + 1), revision + 1)
                )
                changes.append(Event(Action.DELETE, key, None, revision + 2))
                revision += 2
            yield FeedBatch(revision, changes)

    def poll(self, timeout: float) -> FeedBatch | None:
        return next(self.batches, None)

    def close(self) -> None:
        pass


class SnapshotChurnFeed:
    """A snapshot feed in which one new key appears and the previous one vanishes each poll."""

    def __init__(self, cycles: int, after: int) -> None:
        self.cycles, self.revision = cycles, after

    def poll(self, timeout: float) -> FeedBatch | None:
        if self.cycles == 0:
            return None
        self.cycles -= 1
        self.revision += 2
        return FeedBatch(self.revision, snapshot=[pair(f"short/{self.revision:06}", self.revision)])

    def close(self) -> None:
        pass


class FeedBackend(ScriptedBackend):
    """Hands every watch the one feed it is given."""

    feed: GeneratedFeed | SnapshotChurnFeed

    def open_feed(self, prefix: str, after: int | None) -> GeneratedFeed | SnapshotChurnFeed:  # type: ignore[override]
        return self.feed


def drain_all(watch: libkv.Watch) -> int:
    count = 0
    while watch.next_event(0) is not None:
        count += 1
    return count


@pytest.mark.parametrize("every_change", [True, False], ids=["change-feed", "snapshot-feed"])
def test_bookkeeping_is_bounded_by_the_live_keys(every_change: bool) -> None:
    """50,000 keys created and deleted leave no state behind (issue 8, item 10)."""
    backend = FeedBackend(every_change=every_change, snapshot=[], revision=1)
    store = Store(backend)
    backend.feed = GeneratedFeed(50_000, 100, 1) if every_change else SnapshotChurnFeed(50_000, 1)
    watch = store.watch("", recursive=True)
    assert watch.next_event(0) is not None  # INIT
    baseline = watch_footprint(watch, store)
    # Every key's UPDATE and DELETE (the snapshot feed's last key is still live).
    assert drain_all(watch) == 100_000 - (0 if every_change else 1)
    grown = watch_footprint(watch, store) - baseline
    assert grown < 16 * 1024, f"{grown} bytes kept after 50,000 keys came and went"


class UnreachableFeed:
    """A feed that opens without contacting anything and then never reaches the server."""

    def __init__(self) -> None:
        self.polls = 0

    def poll(self, timeout: float) -> FeedBatch | None:
        self.polls += 1
        raise NotReachableError("connection refused")

    def close(self) -> None:
        pass


class UnreachableBackend(ScriptedBackend):
    def open_feed(self, prefix: str, after: int | None) -> UnreachableFeed:  # type: ignore[override]
        self.opened.append(after)
        return UnreachableFeed()


def test_opening_a_feed_does_not_restart_the_unreachable_clock() -> None:
    """A feed that opens (no network call) but cannot poll fails the watch once the
    store's timeout has passed (issue 8, item 5), rather than retrying forever."""
    backend = UnreachableBackend(every_change=True, snapshot=[], revision=1, timeout=0.5)
    store = Store(backend)
    watch = store.watch("x")
    assert watch.next_event(0) is not None  # INIT
    started = time.monotonic()
    with pytest.raises(NotReachableError):
        while time.monotonic() - started < store.timeout + 2:
            watch.next_event(0.1)
    elapsed = time.monotonic() - started
    assert store.timeout <= elapsed < store.timeout + 1
    assert len(backend.opened) > 2  # it did try to reconnect meanwhile
    assert watch.closed


def test_a_batch_from_a_reopened_feed_stops_the_unreachable_clock() -> None:
    """After a lost connection, the new feed's first batch proves contact and resets the
    clock: a later outage is timed from its own start, not from the first one."""
    backend = ScriptedBackend(every_change=True, snapshot=[], revision=1, timeout=0.5)
    store = Store(backend)
    idle: list[FeedBatch | Exception | None] = [None] * 10  # about 1 s of quiet polls
    backend.feeds = [[NotReachableError("reset")], [FeedBatch(1), *idle, NotReachableError("2")]]
    watch = store.watch("x")
    assert watch.next_event(0) is not None  # INIT
    started = time.monotonic()
    with pytest.raises(NotReachableError):  # no third feed: the second outage lasts
        while watch.next_event(0.1) is None:
            assert time.monotonic() - started < 10, "the watch never failed"
    # The second outage began after the idle polls (about 1 s in) and was given the
    # whole timeout: timing it from the first outage would have failed at once.
    assert time.monotonic() - started >= 1.0 + store.timeout - 0.2
    assert backend.opened[:2] == [1, 1]  # then failed attempts to reopen


def test_a_reopened_feed_that_never_answers_does_not_stop_the_clock() -> None:
    """A reopened feed that returns None without ever returning a batch (a stream opened
    without a network call, to a frozen server, which then reports the stall) proves
    nothing: the watch raises NotReachableError once the store's timeout has passed."""
    backend = ScriptedBackend(every_change=True, snapshot=[], revision=1, timeout=0.5)
    store = Store(backend)
    stalled: list[FeedBatch | Exception | None] = [None, None, NotReachableError("stall")]
    backend.feeds = [[NotReachableError("frozen")]] + [list(stalled) for _ in range(100)]
    watch = store.watch("x")
    assert watch.next_event(0) is not None  # INIT
    started = time.monotonic()
    with pytest.raises(NotReachableError):
        while watch.next_event(0.1) is None:
            assert time.monotonic() - started < 8 * store.timeout, "the watch never failed"


class AnsweringBackend(UnreachableBackend):
    """A backend whose watch feeds never reach the server while its other requests are
    answered until ``answered_until`` (a ``time.monotonic()`` value)."""

    answered_until = 0.0

    def last_contact(self) -> float | None:
        now = time.monotonic()
        return now if now < self.answered_until else self.answered_until


def test_a_watch_does_not_fail_while_its_store_is_in_contact() -> None:
    """The unreachable clock runs from the store's latest answer from the backend (issue
    20: other calls of the store were answered, the watch's reconnection was held by a
    leaderless server and the watch failed): a watch whose reconnections fail for longer
    than the timeout, while the store's other requests are answered, goes on trying; it
    fails once the store's timeout has passed since the last answer."""
    backend = AnsweringBackend(every_change=True, snapshot=[], revision=1, timeout=0.5)
    store = Store(backend)
    watch = store.watch("x")
    assert watch.next_event(0) is not None  # INIT
    started = time.monotonic()
    backend.answered_until = started + 4 * store.timeout
    with pytest.raises(NotReachableError):
        while watch.next_event(0.1) is None:
            assert time.monotonic() - started < 10 * store.timeout, "the watch never failed"
    elapsed = time.monotonic() - started
    assert elapsed >= 5 * store.timeout, f"failed {elapsed:.2f} s in, while in contact"
    assert elapsed < 5 * store.timeout + 1
    assert len(backend.opened) > 10  # it kept reconnecting meanwhile


def test_close_ends_iteration_promptly_while_the_backend_is_unreachable() -> None:
    backend = UnreachableBackend(every_change=True, snapshot=[], revision=1, timeout=30)
    store = Store(backend)
    watch = store.watch("x")
    next(watch)
    threading.Timer(0.3, watch.close).start()
    started = time.monotonic()
    assert list(watch) == []
    assert time.monotonic() - started < 0.3 + 1.0


def test_partial_snapshots_compare_only_their_keys() -> None:
    """A snapshot with ``keys`` (a feed that knows which keys changed) is diffed on those
    keys only: a listed key that is present with a new version is an UPDATE, a listed key
    missing from it a DELETE at the batch's revision, a listed key unchanged nothing, and
    every key not listed keeps its state (it is neither deleted nor re-reported)."""
    backend = ScriptedBackend(
        every_change=False, snapshot=[pair("a", 3), pair("b", 4), pair("c", 5)], revision=5
    )
    store = Store(backend)
    backend.feeds = [
        [
            FeedBatch(8, snapshot=[pair("a", 8, b"new")], keys=["ns/a"]),  # b, c not listed
            FeedBatch(9, snapshot=[pair("c", 5)], keys=["ns/b", "ns/c"]),  # b gone, c spurious
            FeedBatch(10, snapshot=[pair("a", 8, b"new")], keys=["ns/a", "ns/zz"]),  # spurious
            FeedBatch(12, snapshot=[pair("d", 11), pair("c", 12)], keys=["ns/c", "ns/d"]),
            FeedBatch(13, snapshot=[], keys=["ns/a", "ns/b"]),  # a deleted; b deleted already
        ]
    ]
    watch = store.watch("", recursive=True)
    events = [watch.next_event(2) for _ in range(6)]
    assert drain(events) == [
        (Action.INIT, "", 5),
        (Action.UPDATE, "a", 8),
        (Action.DELETE, "b", 9),
        (Action.UPDATE, "d", 11),
        (Action.UPDATE, "c", 12),
        (Action.DELETE, "a", 13),
    ]
    assert events[1] is not None and events[1].pair == KVPair("a", b"new", 8)
    assert watch.next_event(0.3) is None  # nothing else: b is not deleted twice
    assert watch.revision == 13
    assert backend.opened == [5]


def test_partial_snapshot_with_a_version_going_backwards_is_history_lost() -> None:
    backend = ScriptedBackend(every_change=False, snapshot=[pair("a", 7), pair("b", 4)], revision=7)
    store = Store(backend)
    backend.feeds = [[FeedBatch(9, snapshot=[pair("a", 6)], keys=["ns/a"])]]
    watch = store.watch("", recursive=True)
    assert watch.next_event(1) is not None  # INIT
    with pytest.raises(HistoryLostError, match="'ns/a'"):
        watch.next_event(2)
    assert watch.closed


def test_a_full_snapshot_after_partial_ones_deletes_what_is_gone() -> None:
    """After partial snapshots, a full one (a reconnect's re-read) still compares every
    key the watch has shown, including those only partial snapshots reported."""
    backend = ScriptedBackend(every_change=False, snapshot=[pair("a", 3)], revision=3)
    store = Store(backend)
    backend.feeds = [
        [FeedBatch(5, snapshot=[pair("b", 5)], keys=["ns/b"]), NotReachableError("reset")],
        [],
    ]
    watch = store.watch("", recursive=True)
    assert watch.next_event(1) is not None  # INIT
    event = watch.next_event(2)
    assert event is not None and (event.action, event.key) == (Action.UPDATE, "b")
    backend.snapshot, backend.revision = [pair("b", 5)], 6  # a deleted while disconnected
    event = watch.next_event(2)
    assert event is not None and (event.action, event.key, event.revision) == (
        Action.DELETE,
        "a",
        6,
    )
    assert watch.next_event(0.3) is None


def test_a_feed_opened_by_a_failed_reconnection_is_closed() -> None:
    """A snapshot watch reopens its feed, then re-reads; when the re-read fails, the
    feed it just opened is closed rather than left running."""
    backend = ScriptedBackend(every_change=False, snapshot=[], revision=1, timeout=5)
    store = Store(backend)
    backend.feeds = [[NotReachableError("lost")], [], [FeedBatch(1, snapshot=[])]]
    watch = store.watch("x", recursive=True)
    assert watch.next_event(0) is not None  # INIT
    backend.range_failures = [NotReachableError("the re-read failed")]
    wait = time.monotonic() + 3
    while len(backend.handed_out) < 3 and time.monotonic() < wait:
        assert watch.next_event(0.1) is None
    first_reopened = backend.handed_out[1]
    assert first_reopened.closed.is_set(), "the feed of the failed attempt was left open"
    assert not backend.handed_out[2].closed.is_set()  # the attempt that worked keeps its feed
    watch.close()


# -- watches of one prefix share one feed (libkv.sharing) --------------------------------


def update(key: str, revision: int) -> Event:
    return Event(Action.UPDATE, f"ns/{key}", pair(key, revision), revision)


def test_watches_of_one_prefix_share_one_feed_and_each_gets_every_change() -> None:
    backend = ScriptedBackend(every_change=True, snapshot=[], revision=5)
    store = Store(backend)
    backend.feeds = [[FeedBatch(6, [update("a", 6)]), FeedBatch(7, [update("b", 7)])]]
    watches = [store.watch("", recursive=True) for _ in range(3)]
    for watch in watches:
        assert drain([watch.next_event(2), watch.next_event(2), watch.next_event(2)]) == [
            (Action.INIT, "", 5),
            (Action.UPDATE, "a", 6),
            (Action.UPDATE, "b", 7),
        ]
    assert backend.opened == [5]  # one backend feed for the three watches
    assert store.watch("other", recursive=True).next_event(2) is not None
    assert len(backend.opened) == 2  # another prefix: a feed of its own


def test_the_last_watch_to_leave_closes_the_shared_feed() -> None:
    backend = ScriptedBackend(every_change=True, snapshot=[], revision=5)
    store = Store(backend)
    backend.feeds = [[], []]
    first, second = store.watch("p"), store.watch("p")
    feed = backend.handed_out[0]
    first.close()
    assert not feed.closed.is_set()
    second.close()
    assert feed.closed.is_set()
    assert store.watch("p").next_event(1) is not None
    assert backend.opened == [5, 5]  # the next watch opens a new one


@pytest.mark.parametrize("history", [64, 1])
def test_a_watch_joining_behind_the_shared_feed_gets_what_it_missed(
    history: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the batches the shared feed keeps, or (behind them) from a feed of its own."""
    monkeypatch.setattr(libkv.sharing, "HISTORY", history)
    backend = ScriptedBackend(every_change=True, snapshot=[], revision=5)
    store = Store(backend)
    backend.feeds = [
        [FeedBatch(6, [update("a", 6)]), FeedBatch(7, [update("b", 7)])],
        [FeedBatch(7, [update("a", 6), update("b", 7)])],
    ]
    ahead = store.watch("", recursive=True)
    assert drain([ahead.next_event(2) for _ in range(3)])[1:] == [
        (Action.UPDATE, "a", 6),
        (Action.UPDATE, "b", 7),
    ]
    behind = store.watch("", recursive=True, since=5)  # the shared feed is at 7
    assert drain([behind.next_event(2), behind.next_event(2)]) == [
        (Action.UPDATE, "a", 6),
        (Action.UPDATE, "b", 7),
    ]
    assert backend.opened == ([5] if history > 1 else [5, 5])


def test_a_slow_watch_does_not_hold_up_the_others_and_later_reads_on_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(libkv.sharing, "BUFFER_LIMIT", 2)
    backend = ScriptedBackend(every_change=True, snapshot=[], revision=5)
    store = Store(backend)
    changes = [FeedBatch(revision, [update("k", revision)]) for revision in range(6, 10)]
    backend.feeds = [list(changes), list(changes)]
    slow, fast = store.watch("k"), store.watch("k")
    assert slow.next_event(2) is not None and fast.next_event(2) is not None  # INIT
    assert [revision for _, _, revision in drain([fast.next_event(2) for _ in range(4)])] == [
        6,
        7,
        8,
        9,
    ]
    # Three changes waited for the slow watch: it overflowed, and reads its own feed
    # from the revision it had read up to, so it still gets every change.
    assert drain([slow.next_event(2) for _ in range(4)]) == [
        (Action.UPDATE, "k", revision) for revision in range(6, 10)
    ]
    assert backend.opened == [5, 5]


def test_an_error_of_the_shared_feed_reaches_every_watch_after_its_batches() -> None:
    backend = ScriptedBackend(every_change=True, snapshot=[], revision=5)
    store = Store(backend)
    backend.feeds = [
        [FeedBatch(6, [update("k", 6)]), HistoryLostError("compacted")],
    ]
    first, second = store.watch("k"), store.watch("k")
    for watch in (first, second):
        assert watch.next_event(2) is not None  # INIT
    assert drain([first.next_event(2)]) == [(Action.UPDATE, "k", 6)]
    with pytest.raises(HistoryLostError):
        first.next_event(2)
    assert drain([second.next_event(2)]) == [(Action.UPDATE, "k", 6)]
    with pytest.raises(HistoryLostError):
        second.next_event(2)
    assert backend.handed_out[0].closed.is_set()


def test_a_snapshot_watch_rejoining_drops_what_its_reread_made_stale() -> None:
    backend = ScriptedBackend(every_change=False, snapshot=[pair("a", 3)], revision=4)
    store = Store(backend)
    backend.feeds = [
        [NotReachableError("reset")],
        [FeedBatch(4, snapshot=[pair("a", 3)]), FeedBatch(9, snapshot=[pair("a", 9)])],
    ]
    watch = store.watch("", recursive=True)
    assert watch.next_event(2) is not None  # INIT at 4
    backend.snapshot, backend.revision = [pair("a", 8)], 8  # what the re-read will see
    events = [watch.next_event(2), watch.next_event(2)]
    # The re-read at 8 reports a's version 8; the batch at 4 is stale and dropped (not
    # a revision going backwards); the one at 9 is new.
    assert drain(events) == [(Action.UPDATE, "a", 8), (Action.UPDATE, "a", 9)]
