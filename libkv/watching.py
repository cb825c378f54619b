# Generated from libkv/_async/watching.py by scripts/unasync.py: edit that file, then run
# `python scripts/unasync.py`. CI fails if this file is not current.
"""The watch engine: one implementation of the contract's watch semantics.

Drivers feed it through a :class:`Feed`:

* a *change feed* (``capabilities.watch_every_change``) returns batches of UPDATE
  and DELETE events, in revision order, for every change after a revision;
* a *snapshot feed* returns complete snapshots of the prefix whenever it may have
  changed; the engine diffs each against the state it has delivered.

The engine is the :class:`Watch` iterator plus a reconnect loop. It takes the INIT
snapshot, filters to the watched key or prefix, strips the namespace, reconnects after
NotReachableError (resuming from the last revision, or re-reading a snapshot), and
turns a revision that goes backwards into HistoryLostError. Each feed mode keeps its
own bookkeeping in a small class: :class:`ChangeDedup` drops changes delivered
already (a replay after a reconnect), :class:`SnapshotDiff` turns snapshots into
events and drops spurious wake-ups. Both hold memory bounded by the live keys watched
plus a constant, however many keys have come and gone.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Protocol

from libkv import concurrency
from libkv.changes import ChangeDedup, FeedBatch, SnapshotDiff
from libkv.errors import HistoryLostError, KVError, NotReachableError, StoreClosedError
from libkv.keys import in_prefix
from libkv.model import Action, Event
from libkv.sharing import Overflowed, Subscription

if TYPE_CHECKING:
    from libkv.api import Store

__all__ = ["Feed", "Watch", "FeedBatch"]

log = logging.getLogger(__name__)

_POLL_SLICE = 0.25  # longest a blocked poll runs before the engine re-checks close()
_RECONNECT_INTERVAL = 0.1  # least time between two attempts to open a feed


class Feed(Protocol):
    """A driver's source of changes under one prefix (full keys).

    Opening a feed (``Backend.open_feed``) need not contact the backend; the engine
    treats only :meth:`poll` (and a successful re-read) as proof of contact, and
    measures the store's timeout for an unreachable backend from the first failed poll,
    or from the backend's latest answer to the store if that came later
    (``Backend.last_contact``), until a poll succeeds.
    """

    def poll(self, timeout: float) -> FeedBatch | None:
        """Wait up to ``timeout`` seconds for news; None if there is none.

        ``timeout`` may be 0: then look for news that is ready (already received, or
        answered by the backend at once) without waiting for more.

        A batch (with or without changes) asserts that the feed heard from the
        backend: a feed returns one as soon as it first hears from the server after
        opening, and whenever a poll is answered. Once a feed has returned a batch,
        None asserts its connection is still healthy (it heard from the server within
        the store's timeout: a reply, a progress notification, an answered
        keep-alive); before its first batch, None proves nothing. A feed that has lost
        contact (the server is down or stopped, the connection broken) raises
        NotReachableError, so that a watch on a dead backend fails once the store's
        timeout has passed rather than waiting forever. Raises HistoryLostError when
        the changes asked for are gone.
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
    iteration within a second. A watch left unclosed stays open, with what its
    driver holds for it, until the store closes.

    ``revision`` is a safe resume point: every change under the watch up to it has
    been returned to the consumer (by INIT, or as an event), so
    ``watch(since=revision)`` never skips an event this watch had not yet returned
    (it may repeat the part of a transaction already returned). It starts at INIT's
    snapshot revision (or ``since``) and advances as events are returned, to a
    batch's revision once nothing from that batch or before it is pending; it never
    runs ahead of an event still pending.
    """

    def __init__(self, store: Store, key: str, *, recursive: bool, since: int | None) -> None:
        self._store = store
        self._key = key
        self._recursive = recursive
        self._root = store._root
        self._prefix = store._driver_prefix(key) if recursive else store._root + key
        # Events not yet returned, each with the revision that is safe once it is, from
        # _pending[_head] on: a list and an index, not a deque, which holds 760 bytes
        # even empty (an idle watch should hold little; 1,000 of them, 1,000 times that).
        self._pending: list[tuple[Event, int]] = []
        self._head = 0
        self._closed = False
        self._closing: concurrency.Event | None = None  # made for a backoff wait
        self._lock = threading.Lock()
        self._feed: Feed | None = None
        self._since = since
        self._started = False
        self._failure: BaseException | None = None
        self._bookkeeping: ChangeDedup | SnapshotDiff = SnapshotDiff(())
        self._feed_revision = 0  # the revision the engine has read up to (pending included)
        self._epoch: str | None = None
        self._unreachable_since: float | None = None  # start of the first failed poll
        self._next_attempt = 0.0  # when a feed may be opened again after a failure
        self._feed_answered = False  # whether the current feed has returned a batch
        self._alone = False  # read a feed of its own, not the store's shared one
        self.revision = 0 if since is None else since

    def _start(self) -> None:
        """Take the INIT snapshot (or open the feed at ``since``); once.

        The sync flavour starts in ``Store.watch()``; the async one at the first await
        on the watch (``with``, ``next_event``), since creating it is a plain call.
        """
        if self._started:
            return
        try:
            if self._since is None:
                self._start_with_snapshot()
            else:
                feed = self._open_feed(self._since)
                self._bookkeeping = ChangeDedup(self._since)
                self._feed_revision = self._since
                self._adopt(feed)
        except (HistoryLostError, NotReachableError) as error:
            # Reported from iteration, where the consumer handles watch failures.
            self._failure = error
        # Not before: a start cancelled half-way (async) is redone whole.
        self._started = True

    # -- public --------------------------------------------------------------------

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> Event:
        while True:
            event = self.next_event(None)
            if event is not None:
                return event
            if self._closed:
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
        return self._closed

    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event, or None if ``timeout`` seconds pass or the watch is closed.

        ``timeout=0`` returns an event that is pending, or that the feed has ready,
        without waiting. Raises HistoryLostError if the history the watch needs is
        gone, and NotReachableError if the backend stays unreachable past the store's
        timeout.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        polled = False
        while True:
            if self._head < len(self._pending):
                event, resume = self._pending[self._head]
                self._head += 1
                if self._head == len(self._pending):
                    self._pending.clear()
                    self._head = 0
                self.revision = max(self.revision, resume)
                return event
            if self._failure is not None:
                failure, self._failure = self._failure, None
                self.close()
                raise failure
            if self._closed:
                return None
            remaining = _POLL_SLICE if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                if polled:
                    return None
                # Look once for what the feed has ready. A feed read by a thread of
                # its own (a gRPC stream) may hold a response that thread cannot queue
                # while this one keeps the GIL; yielding once lets it.
                remaining = 0.0
                concurrency.checkpoint()
            polled = True
            self._step(min(remaining, _POLL_SLICE))

    def close(self) -> None:
        """End the watch; a blocked iteration (in another task or thread) ends promptly.

        Completes at once; in the async flavour it may also be awaited.
        """
        with self._lock:
            self._closed = True
            closing = self._closing
            feed, self._feed = self._feed, None
        if closing is not None:
            closing.set()
        self._store._watches.discard(self)
        if feed is not None:
            _close_feed(feed)

    # -- engine ----------------------------------------------------------------------

    def _start_with_snapshot(self) -> None:
        store = self._store
        pairs, revision = store._call(store._backend.range, self._prefix, self._recursive)
        feed: Feed | None = None
        try:
            feed = self._open_feed(revision)
        except (HistoryLostError, NotReachableError) as error:
            self._failure = error  # reported after INIT
        # No state changes before here: a start cancelled half-way (async) is redone whole.
        pairs = [pair for pair in pairs if self._wanted(pair.key)]
        self.revision = self._feed_revision = revision
        if store.capabilities.watch_every_change:
            self._bookkeeping = ChangeDedup(revision)
        else:
            self._bookkeeping = SnapshotDiff(pairs)
        snapshot = tuple(store._relative_pair(pair) for pair in pairs)
        single = snapshot[0] if snapshot and not self._recursive else None
        self._pending.append((Event(Action.INIT, self._key, single, revision, snapshot), revision))
        if feed is not None:
            self._adopt(feed)

    def _open_feed(self, after: int, *, reread: bool = False) -> Feed:
        """A feed from ``after``: the store's shared one for the prefix, or (once this
        watch fell behind it) one of its own."""
        store = self._store
        if self._alone:
            return store._call(store._backend.open_feed, self._prefix, after)
        return store._shared_feeds.open(self._prefix, after, reread=reread)

    def _adopt(self, feed: Feed) -> None:
        """Keep ``feed``, or close it if the watch was closed while it was opened."""
        with self._lock:
            if not self._closed:
                self._feed = feed
                return
        _close_feed(feed)

    def _step(self, timeout: float) -> None:
        """One poll of the feed (or one attempt to reopen it), for up to ``timeout``."""
        feed = self._feed
        if feed is None:
            if not self._closed:
                self._reconnect(timeout)
            return
        started = time.monotonic()
        try:
            batch = feed.poll(timeout)
        except Overflowed:
            # This consumer fell too far behind the shared feed: read alone from here,
            # from the revision read up to (every change, or HistoryLostError).
            log.info("watch on %r fell behind its shared feed; reading on its own", self._key)
            self._alone = True
            with self._lock:
                if self._feed is feed:
                    self._feed = None
            _close_feed(feed)
            return
        except Exception as error:
            self._poll_failed(feed, error, started)
            return
        if batch is not None:
            self._feed_answered = True
            self._accept(batch)
        if self._feed_answered:
            self._unreachable_since = None  # the feed has proved contact with the backend

    def _poll_failed(self, feed: Feed, error: Exception, started: float) -> None:
        try:
            if isinstance(error, KVError):
                raise error
            self._store._reraise(error)
        except NotReachableError as unreachable:
            with self._lock:
                if self._feed is feed:
                    self._feed = None
            _close_feed(feed)
            self._unreachable(unreachable, started)
        except BaseException as failure:  # HistoryLostError, or any other failure
            self._failure = failure

    def _unreachable(self, error: NotReachableError, started: float) -> None:
        """Count a failed attempt; fail once the store's timeout has passed without contact.

        Contact is the watch's own (the clock starts at the first failed poll) or any
        answer the backend gave the store since (another call, another watch, a
        keep-alive): while the store's other requests are answered the backend is
        reachable, and this watch's reconnection merely had bad luck (a read held by a
        server that had no leader when it arrived) and is tried again.
        """
        if self._unreachable_since is None:
            self._unreachable_since = started
            log.info("watch on %r lost its connection; reconnecting: %s", self._key, error)
        now = time.monotonic()
        self._next_attempt = now + _RECONNECT_INTERVAL
        contact = max(self._unreachable_since, self._store._backend.last_contact() or 0.0)
        if now - contact > self._store.timeout:
            self._failure = error

    def _reconnect(self, timeout: float) -> None:
        """Open a new feed after a connection loss, from the revision read up to.

        Opening proves nothing about the backend (a driver may open without a network
        call), so it leaves the unreachable clock running until the new feed returns
        its first batch, or a snapshot watch's re-read succeeds (that read reached the
        backend). A feed opened by a failed attempt is closed.
        """
        store = self._store
        if store.closed:
            self._failure = StoreClosedError(f"store is closed: {store.url}")
            return
        wait = self._next_attempt - time.monotonic()
        # Back off between attempts; close() interrupts the wait.
        if wait > 0:
            with self._lock:
                if self._closed:
                    return
                if self._closing is None:
                    self._closing = concurrency.Event()
                closing = self._closing
            if concurrency.wait(closing, min(wait, timeout)) or wait > timeout:
                return
        started = time.monotonic()
        feed: Feed | None = None
        reread = False
        try:
            snapshots = isinstance(self._bookkeeping, SnapshotDiff)
            feed = self._open_feed(self._feed_revision, reread=snapshots)
            if snapshots:
                # Re-read and bring the consumer's view up to date by diffing.
                pairs, revision = store._call(store._backend.range, self._prefix, self._recursive)
                reread = True
                self._accept(FeedBatch(revision, snapshot=pairs))
                if isinstance(feed, Subscription):
                    feed.skip_to(revision)
        except KVError as error:
            if feed is not None:
                _close_feed(feed)
            if isinstance(error, NotReachableError):
                self._unreachable(error, started)
            else:
                self._failure = error
            return
        with self._lock:
            if self._closed:
                _close_feed(feed)
                return
            self._feed = feed
            self._feed_answered = False
        if reread:
            self._unreachable_since = None

    def _accept(self, batch: FeedBatch) -> None:
        """Check a batch's revision and epoch, and queue its new events."""
        if batch.revision < self._feed_revision:
            self._failure = HistoryLostError(
                f"store revision went back from {self._feed_revision} to {batch.revision}"
            )
            return
        if batch.epoch is not None:
            if self._epoch is not None and batch.epoch != self._epoch:
                self._failure = HistoryLostError(
                    f"the backend's history was reset (epoch {self._epoch} -> {batch.epoch})"
                )
                return
            self._epoch = batch.epoch
        bookkeeping, store = self._bookkeeping, self._store
        if isinstance(bookkeeping, SnapshotDiff):
            snapshot = [pair for pair in batch.snapshot or () if self._wanted(pair.key)]
            keys = None if batch.keys is None else [k for k in batch.keys if self._wanted(k)]
            try:
                found = bookkeeping.diff(snapshot, batch.revision, keys)
            except HistoryLostError as error:
                self._failure = error
                return
            events = [store._relative_event(event) for event in found]
        else:
            changes = batch.changes
            fresh = bookkeeping.fresh([e for e in changes if self._wanted(e.key)])
            if len(fresh) == len(changes):  # every one: the store makes them once for all
                events = store._relative_events(batch)
            else:
                events = [store._relative_event(event) for event in fresh]
        self._feed_revision = max(self._feed_revision, batch.revision)
        self._enqueue(events, self._feed_revision)

    def _enqueue(self, events: list[Event], revision: int) -> None:
        """Queue events (relative keys, in revision order) from a batch consistent to
        ``revision``.

        Each carries the resume point that is safe once it is returned: just below the
        next event's revision (a transaction's events share one), and ``revision``
        after the batch's last.
        """
        if not events:
            if self._head < len(self._pending):
                last, resume = self._pending[-1]
                self._pending[-1] = (last, max(resume, revision))
            else:
                self.revision = max(self.revision, revision)
            return
        pending = self._pending
        for index, event in enumerate(events):
            resume = events[index + 1].revision - 1 if index + 1 < len(events) else revision
            pending.append((event, resume))

    def _wanted(self, key: str) -> bool:
        return in_prefix(key, self._prefix) if self._recursive else key == self._prefix


def _close_feed(feed: Feed) -> None:
    try:
        feed.close()
    except Exception:
        log.debug("error closing a watch feed", exc_info=True)
