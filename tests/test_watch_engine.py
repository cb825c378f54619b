"""The watch engine in isolation, fed by a scripted driver.

Real backends run the conformance suite; this checks the engine's own duties that a
well-behaved backend rarely triggers: reconnection, replay de-duplication, snapshot
diffing, and a revision going backwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from libkv import Action, HistoryLostError, KVPair, NotReachableError, Store, StoreURL
from libkv.model import Capabilities, Event
from libkv.ops import Op
from libkv.watching import FeedBatch


class ScriptedFeed:
    def __init__(self, script: list[FeedBatch | Exception]) -> None:
        self.script = script
        self.closed = threading.Event()

    def poll(self, timeout: float) -> FeedBatch | None:
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            return step
        self.closed.wait(timeout)
        return None

    def close(self) -> None:
        self.closed.set()


class ScriptedStore(Store):
    """Serves a fixed snapshot and hands out scripted feeds, recording each open."""

    def __init__(self, *, every_change: bool, snapshot: list[KVPair], revision: int) -> None:
        self.capabilities = Capabilities(every_change, every_change, 1.0, 60.0, 1.0, 1024, 8)
        super().__init__(StoreURL.parse("scripted://"), namespace="ns", timeout=0.5)
        self.snapshot, self.revision = snapshot, revision
        self.feeds: list[list[FeedBatch | Exception]] = []
        self.opened: list[int | None] = []

    def _range(self, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
        return list(self.snapshot), self.revision

    def _open_feed(self, prefix: str, after: int | None) -> ScriptedFeed:
        self.opened.append(after)
        if not self.feeds:
            raise NotReachableError("no more feeds")
        return ScriptedFeed(self.feeds.pop(0))

    # The watch engine needs only _range and _open_feed; the other primitives are unused.
    def _get(self, key: str) -> KVPair | None:
        raise NotImplementedError

    def _commit(self, ops: Sequence[Op]) -> list[KVPair | None]:
        raise NotImplementedError

    def _delete_range(self, prefix: str) -> int:
        raise NotImplementedError

    def _grant_lease(self, ttl: float) -> int:
        raise NotImplementedError

    def _keepalive_lease(self, lease_id: int) -> bool:
        raise NotImplementedError

    def _lease_ttl(self, lease_id: int) -> float | None:
        raise NotImplementedError

    def _revoke_lease(self, lease_id: int) -> None:
        raise NotImplementedError

    def _translate_error(self, error: Exception) -> None:
        return None


def pair(key: str, version: int, value: bytes = b"v") -> KVPair:
    return KVPair(f"ns/{key}", value, version)


def drain(events: Sequence[Event | None]) -> list[tuple[Action, str, int]]:
    return [(event.action, event.key, event.revision) for event in events if event is not None]


def test_change_feed_resumes_after_connection_loss_without_duplicates() -> None:
    store = ScriptedStore(every_change=True, snapshot=[pair("a", 3)], revision=5)
    update = Event(Action.UPDATE, "ns/a", pair("a", 6), 6)
    store.feeds = [
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
    assert store.opened == [5, 6]  # resumed from the last revision it had delivered
    assert watch.revision == 7


def test_snapshot_feed_is_diffed_and_spurious_wakeups_dropped() -> None:
    store = ScriptedStore(every_change=False, snapshot=[pair("a", 3), pair("b", 4)], revision=4)
    store.feeds = [
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
    store = ScriptedStore(every_change=True, snapshot=[], revision=10)
    store.feeds = [[FeedBatch(3, [])]]
    watch = store.watch("x")
    assert watch.next_event(1) is not None  # INIT
    with pytest.raises(HistoryLostError, match="went back"):
        watch.next_event(1)
    assert watch.closed


def test_a_new_epoch_is_history_lost_even_when_revisions_move_on() -> None:
    store = ScriptedStore(every_change=True, snapshot=[], revision=10)
    store.feeds = [
        [FeedBatch(10, epoch="first"), NotReachableError("restarted")],
        [FeedBatch(50, epoch="second")],
    ]
    watch = store.watch("x")
    assert watch.next_event(1) is not None  # INIT
    with pytest.raises(HistoryLostError, match="reset"):
        watch.next_event(2)


def test_unreachable_past_the_store_timeout_raises() -> None:
    store = ScriptedStore(every_change=True, snapshot=[], revision=1)
    store.feeds = [[NotReachableError("down")]]  # and every reopen fails
    watch = store.watch("x")
    watch.next_event(1)
    started = time.monotonic()
    with pytest.raises(NotReachableError):
        while True:
            watch.next_event(0.2)
    assert time.monotonic() - started < store.timeout + 2


def test_close_from_another_thread_ends_iteration_promptly() -> None:
    store = ScriptedStore(every_change=True, snapshot=[], revision=1)
    store.feeds = [[]]
    watch = store.watch("x")
    next(watch)
    threading.Timer(0.2, watch.close).start()
    started = time.monotonic()
    assert list(watch) == []
    assert time.monotonic() - started < 1.0
