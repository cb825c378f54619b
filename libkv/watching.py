"""The watch engine: one implementation of the contract's watch semantics.

Drivers feed it through a :class:`Feed`:

* a *change feed* (``capabilities.watch_every_change``) returns batches of UPDATE
  and DELETE events, in revision order, for every change after a revision;
* a *snapshot feed* returns complete snapshots of the prefix whenever it may have
  changed; the engine diffs each against the state it has delivered.

The engine takes the INIT snapshot, filters to the watched key or prefix, drops
duplicates and spurious wake-ups, strips the namespace, reconnects after
NotReachableError (resuming from the last revision, or re-reading a snapshot), and
turns a revision that goes backwards into HistoryLostError.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from libkv.api import in_prefix
from libkv.errors import HistoryLostError, KVError, NotReachableError, StoreClosedError
from libkv.model import Action, Event, KVPair

if TYPE_CHECKING:
    from libkv.api import Store

__all__ = ["Feed", "FeedBatch", "Watch"]

log = logging.getLogger(__name__)

_POLL_SLICE = 0.25  # longest a blocked poll runs before the engine re-checks close()


@dataclass(frozen=True, slots=True)
class FeedBatch:
    """What a feed returns from one poll.

    ``revision``: the store revision the feed is now consistent with (>= every change
    in the batch). ``changes``: UPDATE/DELETE events on full keys, in revision order.
    ``snapshot``: for snapshot feeds, every pair under the prefix at ``revision``.
    ``keys``: when set, ``snapshot`` is partial: it holds the present pairs among
    ``keys`` only (a key of ``keys`` missing from it is deleted) and every other key keeps
    its state, so a feed that knows which keys changed re-reads just those.
    ``epoch``: optional identity of the backend's history; revisions are comparable only
    within one epoch, so a watch that sees it change (a wiped and rewritten database)
    raises HistoryLostError even when the revision did not go backwards.
    """

    revision: int
    changes: Sequence[Event] = ()
    snapshot: Sequence[KVPair] | None = None
    epoch: str | None = None
    keys: Sequence[str] | None = None


class Feed(Protocol):
    """A driver's source of changes under one prefix (full keys)."""

    def poll(self, timeout: float) -> FeedBatch | None:
        """Wait up to ``timeout`` seconds for news; None if there is none.

        Raises HistoryLostError when the changes asked for are gone, and
        NotReachableError when the backend cannot be reached.
        """
        ...

    def close(self) -> None:
        """Stop the feed; a poll blocked in another thread returns promptly."""
        ...


class Watch:
    """An iterator of :class:`~libkv.model.Event` over a key or a prefix.

    Without ``since`` the first event is INIT, a consistent snapshot at revision R;
    then UPDATE and DELETE events with revisions > R follow, with no gap, per key in
    strictly increasing revision and never twice. ``close()`` (from any thread) ends
    iteration within a second. ``revision`` is the latest store revision the watch is
    known to be consistent with.
    """

    def __init__(self, store: Store, key: str, *, recursive: bool, since: int | None) -> None:
        self._store = store
        self._key = key
        self._recursive = recursive
        self._every_change = store.capabilities.watch_every_change
        self._root = store._root
        self._prefix = store._driver_prefix(key) if recursive else store._root + key
        self._pending: collections.deque[Event] = collections.deque()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._feed: Feed | None = None
        self._failure: BaseException | None = None
        self._state: dict[str, KVPair] = {}  # snapshot feeds: what the consumer has seen
        self._versions: dict[str, int] = {}  # change feeds: last revision delivered per key
        self._unreachable_since: float | None = None
        self._epoch: str | None = None
        self.revision = 0
        try:
            if since is None:
                self._start_with_snapshot()
            else:
                self.revision = since
                self._feed = store._call(store._open_feed, self._prefix, since)
        except (HistoryLostError, NotReachableError) as error:
            # Reported from iteration, where the consumer handles watch failures.
            self._failure = error

    # -- public --------------------------------------------------------------------

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        while True:
            event = self.next_event(None)
            if event is not None:
                return event
            if self._closed.is_set():
                raise StopIteration

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "recursive " if self._recursive else ""
        return f"<Watch {kind}{self._key!r} at revision {self.revision}>"

    @property
    def closed(self) -> bool:
        """True once the watch is closed (by close(), its store, or a failure)."""
        return self._closed.is_set()

    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event, or None if ``timeout`` seconds pass or the watch is closed.

        Raises HistoryLostError if the history the watch needs is gone, and
        NotReachableError if the backend stays unreachable past the store's timeout.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._failure is not None:
                failure, self._failure = self._failure, None
                self.close()
                raise failure
            if self._closed.is_set():
                return None
            remaining = _POLL_SLICE if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._poll(min(remaining, _POLL_SLICE))

    def close(self) -> None:
        """End the watch; a blocked iteration in another thread ends within a second."""
        self._closed.set()
        with self._lock:
            feed, self._feed = self._feed, None
        if feed is not None:
            try:
                feed.close()
            except Exception:
                log.debug("error closing a watch feed", exc_info=True)

    # -- engine ----------------------------------------------------------------------

    def _start_with_snapshot(self) -> None:
        store = self._store
        pairs, revision = store._call(store._range, self._prefix, self._recursive)
        pairs = [pair for pair in pairs if self._wanted(pair.key)]
        self.revision = revision
        if self._every_change:
            self._versions = {pair.key: pair.version for pair in pairs}
        else:
            self._state = {pair.key: pair for pair in pairs}
        snapshot = tuple(self._store._relative_pair(pair) for pair in pairs)
        single = snapshot[0] if snapshot and not self._recursive else None
        self._pending.append(Event(Action.INIT, self._key, single, revision, snapshot))
        self._feed = store._call(store._open_feed, self._prefix, revision)

    def _poll(self, timeout: float) -> None:
        feed = self._feed
        if feed is None:
            if self._closed.is_set():
                return
            self._reopen(timeout)
            return
        try:
            batch = feed.poll(timeout)
        except HistoryLostError as error:
            self._failure = error
            return
        except NotReachableError as error:
            self._lost_connection(feed, error)
            return
        except KVError as error:
            self._failure = error
            return
        except Exception as error:
            try:
                self._store._reraise(error)
            except NotReachableError as translated:
                self._lost_connection(feed, translated)
            except BaseException as translated:
                self._failure = translated
            return
        self._unreachable_since = None
        if batch is not None:
            self._accept(batch)

    def _accept(self, batch: FeedBatch) -> None:
        if batch.revision < self.revision:
            self._failure = HistoryLostError(
                f"store revision went back from {self.revision} to {batch.revision}"
            )
            return
        if batch.epoch is not None:
            if self._epoch is not None and batch.epoch != self._epoch:
                self._failure = HistoryLostError(
                    f"the backend's history was reset (epoch {self._epoch} -> {batch.epoch})"
                )
                return
            self._epoch = batch.epoch
        if batch.snapshot is not None and batch.keys is not None:
            self._diff_keys(batch.snapshot, batch.revision, batch.keys)
        elif batch.snapshot is not None:
            self._diff(batch.snapshot, batch.revision)
        else:
            for event in batch.changes:
                self._change(event)
        self.revision = max(self.revision, batch.revision)

    def _change(self, event: Event) -> None:
        key = event.key
        if not self._wanted(key):
            return
        if event.revision <= self._versions.get(key, 0) or event.revision <= 0:
            return  # delivered already (a replay after reconnect)
        self._versions[key] = event.revision
        relative = key[len(self._root) :]
        pair = event.pair if event.pair is None else self._store._relative_pair(event.pair)
        self._pending.append(Event(event.action, relative, pair, event.revision))

    def _diff(self, snapshot: Sequence[KVPair], revision: int) -> None:
        current = {pair.key: pair for pair in snapshot if self._wanted(pair.key)}
        events: list[Event] = []
        for key, pair in current.items():
            previous = self._state.get(key)
            if previous is None or previous.version != pair.version:
                if previous is not None and pair.version < previous.version:
                    self._failure = HistoryLostError(f"version of {key!r} went backwards")
                    return
                events.append(Event(Action.UPDATE, key, pair, pair.version))
        for key in self._state.keys() - current.keys():
            events.append(Event(Action.DELETE, key, None, max(revision, self._state[key].version)))
        self._state = current
        self._emit(events)

    def _diff_keys(self, snapshot: Sequence[KVPair], revision: int, keys: Sequence[str]) -> None:
        """Diff a partial snapshot: only ``keys`` may have changed (cost: len(keys))."""
        present = {pair.key: pair for pair in snapshot}
        events: list[Event] = []
        for key in dict.fromkeys(keys):
            if not self._wanted(key):
                continue
            pair, previous = present.get(key), self._state.get(key)
            if pair is not None:
                if previous is None or previous.version != pair.version:
                    if previous is not None and pair.version < previous.version:
                        self._failure = HistoryLostError(f"version of {key!r} went backwards")
                        return
                    events.append(Event(Action.UPDATE, key, pair, pair.version))
                    self._state[key] = pair
            elif previous is not None:
                events.append(Event(Action.DELETE, key, None, max(revision, previous.version)))
                del self._state[key]
        self._emit(events)

    def _emit(self, events: list[Event]) -> None:
        events.sort(key=lambda event: (event.revision, event.key))
        for event in events:
            relative = event.key[len(self._root) :]
            shown = event.pair if event.pair is None else self._store._relative_pair(event.pair)
            self._pending.append(Event(event.action, relative, shown, event.revision))

    def _lost_connection(self, feed: Feed, error: NotReachableError) -> None:
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
            log.info("watch on %r lost its connection; reconnecting: %s", self._key, error)
        with self._lock:
            if self._feed is feed:
                self._feed = None
        try:
            feed.close()
        except Exception:
            log.debug("error closing a broken watch feed", exc_info=True)
        if now - self._unreachable_since > self._store.timeout:
            self._failure = error

    def _reopen(self, timeout: float) -> None:
        """Open a new feed after a connection loss, from the last consistent revision."""
        store = self._store
        if store.closed:
            self._failure = StoreClosedError(f"store is closed: {store.url}")
            return
        time.sleep(min(timeout, 0.1))  # back off between reconnection attempts
        try:
            feed = store._call(store._open_feed, self._prefix, self.revision)
            if not self._every_change:
                # Re-read and bring the consumer's view up to date by diffing.
                pairs, revision = store._call(store._range, self._prefix, self._recursive)
                self._accept(FeedBatch(revision, snapshot=pairs))
        except NotReachableError as error:
            if self._unreachable_since is None:
                self._unreachable_since = time.monotonic()
            if time.monotonic() - self._unreachable_since > store.timeout:
                self._failure = error
            return
        except KVError as error:
            self._failure = error
            return
        with self._lock:
            if self._closed.is_set():
                feed.close()
                return
            self._feed = feed
        self._unreachable_since = None

    def _wanted(self, key: str) -> bool:
        return in_prefix(key, self._prefix) if self._recursive else key == self._prefix
