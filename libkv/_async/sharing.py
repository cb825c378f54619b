"""One backend feed per watched prefix of a store, shared by every watch on it.

A thousand watches on one prefix then cost the backend one watch (one etcd watch, one
XREAD, one ZooKeeper persistent watch), and one change is read once, not a thousand
times. There is no thread or task of its own: whichever watch polls while nobody else
does reads the feed for all (:meth:`AsyncSubscription.poll`), and hands each batch to
every subscriber's buffer.

Guarantees, with the engine's bookkeeping (``ChangeDedup``/``SnapshotDiff``):

* a watch joins only a feed that has handed out nothing it needs: none beyond its
  revision, or (a change feed) only batches the feed still keeps (``HISTORY``), which
  are copied into the new subscriber's buffer, or anything when the watch re-reads its
  snapshot after joining (``reread``; :meth:`AsyncSubscription.skip_to` then drops the
  batches the re-read made stale); otherwise it opens a feed of its own. A subscriber
  never gets a batch older than its revision, unless the shared feed's revision went
  backwards (a reset backend), which every subscriber must see;
* each subscriber has its own bounded buffer (``BUFFER_LIMIT`` changes). A consumer
  too slow to keep it under the bound is cut off (:class:`Overflowed`): the engine then
  reopens a feed of its own from the revision it has read, so it gets every change
  (or HistoryLostError, or a snapshot re-read), never a silent gap, and the other
  watches never wait for it;
* an error of the shared feed (NotReachableError, HistoryLostError...) reaches every
  subscriber, after the batches already in its buffer; the feed is then dropped, and
  each watch reconnects as it would alone.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import TYPE_CHECKING

from libkv import concurrency
from libkv.changes import FeedBatch

if TYPE_CHECKING:
    from libkv._async.api import AsyncStore
    from libkv._async.watching import AsyncFeed

__all__ = ["AsyncSharedFeeds", "AsyncSubscription", "Overflowed"]

BUFFER_LIMIT = 10_000  # changes (or snapshot pairs) a subscriber may have waiting
HISTORY = 64  # batches a change feed keeps for watches that join after them


class Overflowed(Exception):
    """A subscriber's buffer passed ``BUFFER_LIMIT``: its watch must read on its own."""


class AsyncSharedFeeds:
    """A store's shared feeds, by prefix."""

    def __init__(self, store: AsyncStore) -> None:
        self._store = store
        self._feeds: dict[str, AsyncSharedFeed] = {}
        self._lock = threading.Lock()

    async def open(self, prefix: str, after: int, *, reread: bool = False) -> AsyncSubscription:
        """A feed of the changes under ``prefix`` after ``after``: a subscription to the
        prefix's shared feed, opened by this call if there is none it may join.
        ``reread``: the caller re-reads its snapshot next (and then calls ``skip_to``)."""
        with self._lock:
            shared = self._feeds.get(prefix)
            subscription = None if shared is None else shared.join(after, reread=reread)
        if subscription is not None:
            return subscription
        store = self._store
        feed = await store._call(store._backend.open_feed, prefix, after)
        shared = AsyncSharedFeed(self, prefix, feed, after, store.capabilities.watch_every_change)
        with self._lock:
            self._feeds[prefix] = shared  # one that raced this one serves its own subscribers
            subscription = shared.join(after, reread=reread)
        assert subscription is not None  # a new feed has handed out nothing
        return subscription

    def _drop(self, shared: AsyncSharedFeed) -> None:
        with self._lock:
            if self._feeds.get(shared.prefix) is shared:
                del self._feeds[shared.prefix]


class AsyncSharedFeed:
    """One backend feed and its subscribers; read by whichever subscriber polls first."""

    def __init__(
        self, owner: AsyncSharedFeeds, prefix: str, feed: AsyncFeed, after: int, changes: bool
    ) -> None:
        self.prefix = prefix
        self._owner = owner
        self._feed = feed
        self._lock = threading.Lock()
        self._subscribers: list[AsyncSubscription] = []
        # A change feed keeps its latest batches for watches that join behind it; a
        # snapshot feed keeps none (an older snapshot would undo a newer re-read).
        self._history: collections.deque[FeedBatch] | None = (
            collections.deque() if changes else None
        )
        self._floor = after  # every batch handed out after this revision is in _history
        self._position = after  # the revision of the latest batch handed out
        self._reading = False
        self._read_until = 0.0  # when the current read's poll returns at the latest
        self._round = concurrency.AsyncEvent()  # set (and replaced) after every read
        self._ended = False

    def join(self, after: int, *, reread: bool) -> AsyncSubscription | None:
        """A subscription from ``after``, or None if this feed cannot serve it (call
        with the owner's lock held)."""
        with self._lock:
            if self._ended:
                return None
            if after >= self._position or reread:
                missed: list[FeedBatch] = []
            elif self._history is not None and after >= self._floor:
                missed = [batch for batch in self._history if batch.revision > after]
            else:
                return None
            subscription = AsyncSubscription(self, after, missed)
            self._subscribers.append(subscription)
            return subscription

    async def read(self, timeout: float) -> None:
        """Poll the backend feed once for every subscriber (the caller has set
        ``_reading``); hand out what it returns, or its error. The batch is in every
        buffer before the next reader may start, so no subscriber that could use it
        is left waiting in a poll of its own."""
        batch: FeedBatch | None = None
        try:
            batch = await self._feed.poll(timeout)
        except Exception as error:
            self._end(error)
        finally:
            with self._lock:
                if batch is not None:
                    self._hand_out(batch)
                self._reading = False
            self._next_round()

    def _hand_out(self, batch: FeedBatch) -> None:
        """Buffer ``batch`` for every subscriber (under the lock)."""
        size = _size(batch)
        backwards = batch.revision < self._position
        for subscriber in self._subscribers:
            subscriber._receive(batch, size, backwards)
        self._position = max(self._position, batch.revision)
        if self._history is not None:
            self._history.append(batch)
            if len(self._history) > HISTORY:
                self._floor = self._history.popleft().revision

    def _end(self, error: BaseException | None) -> None:
        """Stop serving: each subscriber gets ``error`` after its buffer (None: the last
        one left); the backend feed is closed."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            subscribers, self._subscribers = self._subscribers, []
        for subscriber in subscribers:
            subscriber._error = error
        self._owner._drop(self)
        try:
            self._feed.close()
        finally:
            self._next_round()

    def _leave(self, subscription: AsyncSubscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)
            last = not self._subscribers
        if last:
            self._end(None)
        else:
            self._next_round()  # its waiters re-check: it may have been the reader

    def _next_round(self) -> None:
        """Wake every subscriber waiting for a batch or for the reader's turn."""
        with self._lock:
            ended, self._round = self._round, concurrency.AsyncEvent()
        ended.set()


class AsyncSubscription:
    """One watch's view of a shared feed: an :class:`AsyncFeed` with its own buffer."""

    __slots__ = ("_after", "_buffer", "_closed", "_error", "_overflowed", "_shared", "_waiting")

    def __init__(self, shared: AsyncSharedFeed, after: int, missed: list[FeedBatch]) -> None:
        self._shared = shared
        self._after = after  # batches older than this are stale for the watch
        self._buffer = missed
        self._waiting = sum(_size(batch) for batch in missed)
        self._error: BaseException | None = None
        self._overflowed = False
        self._closed = False

    @property
    def source(self) -> AsyncFeed:
        """The backend feed this subscription shares (for a driver's own tests)."""
        return self._shared._feed

    def _receive(self, batch: FeedBatch, size: int, backwards: bool) -> None:
        """Buffer ``batch`` (under the shared feed's lock); ``backwards``: its revision is
        below one handed out before (kept whatever its age, so the watch sees it)."""
        if self._overflowed or (batch.revision < self._after and not backwards):
            return
        if self._waiting + size > BUFFER_LIMIT:
            self._overflowed = True
            self._buffer.clear()
            return
        self._buffer.append(batch)
        self._waiting += size

    def skip_to(self, revision: int) -> None:
        """Drop the batches older than ``revision`` (a snapshot re-read at it made them
        stale), now and from now on."""
        with self._shared._lock:
            self._after = max(self._after, revision)
            kept = [batch for batch in self._buffer if batch.revision >= self._after]
            self._waiting = sum(_size(batch) for batch in kept)
            self._buffer = kept

    async def poll(self, timeout: float) -> FeedBatch | None:
        """The next batch for this watch; see :class:`libkv.watching.Feed`. Raises
        :class:`Overflowed` once the buffer has passed its bound."""
        shared = self._shared
        deadline = time.monotonic() + timeout
        tried = False
        while True:
            remaining = deadline - time.monotonic()
            with shared._lock:
                if self._overflowed:
                    raise Overflowed(f"more than {BUFFER_LIMIT} changes waited for this watch")
                if self._buffer:
                    batch = self._buffer.pop(0)
                    self._waiting -= _size(batch)
                    return batch
                if self._error is not None:
                    raise self._error
                if self._closed or shared._ended or (tried and remaining <= 0):
                    return None
                next_round = shared._round
                read = not shared._reading
                if read:
                    shared._reading = True
                    shared._read_until = deadline
                # The reader's poll ends by _read_until, and with it the round: a wait
                # that would outlast it needs no timer of its own (asyncio's timer per
                # waiter was most of the cost of waking 1,000 watches).
                bounded = shared._read_until <= deadline
            tried = True
            if read:
                await shared.read(max(0.0, remaining))
            elif remaining <= 0:
                return None
            elif bounded:
                await concurrency.async_wait(next_round, None)
            elif not await concurrency.async_wait(next_round, remaining):
                return None

    def close(self) -> None:
        """Leave the shared feed (the last subscriber to leave closes it)."""
        self._closed = True
        self._shared._leave(self)


def _size(batch: FeedBatch) -> int:
    """What a batch counts against a subscriber's buffer: its changes or pairs, or 1."""
    return max(1, len(batch.changes) + len(batch.snapshot or ()))
