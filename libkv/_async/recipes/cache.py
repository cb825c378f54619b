"""A local mirror of a prefix, kept current by a watch: reads never touch the backend.

``Cache(store, prefix)`` lists ``prefix`` through a recursive watch's INIT snapshot and
then applies the watch's UPDATE and DELETE events in the background (a thread; in
:mod:`libkv.aio.recipes` a task of the running loop). Reads (``get``, ``[key]``,
``in``, ``len``, iteration, ``items()``, ``list()``) are served from memory, and are
plain calls in both flavours. What it guarantees:

- **Consistent.** The mirror is always the state of the store at one revision,
  ``cache.revision``: the events a watch delivers together (a transaction, a
  ``put_many``) are applied together, so ``items()`` and ``list()`` never show part of
  one. (A single-key ``get`` is one dictionary read and never blocks.)
- **Never stale without saying so.** ``synced`` is set once the first snapshot is in
  (``wait_synced(timeout)`` waits for it) and cleared whenever the cache falls behind
  for good: when its watch raises ``HistoryLostError`` (history compacted or reset) or
  ``NotReachableError`` (the backend stayed unreachable past the store's ``timeout``).
  The cache then re-lists by itself (retrying every second at most while the backend
  is down), sets ``synced`` again and reports the resync to its listeners as a fresh
  INIT event. Shorter outages are the watch's own business: it reconnects and resumes
  without losing a change, so the mirror only lags meanwhile.
- **Converges everywhere.** On a backend whose watches merge changes
  (``capabilities.watch_every_change`` False) intermediate states of a key may be
  skipped, but once writes stop the mirror equals ``store.list(prefix)`` (within the
  contract's 1 s).

Listeners (``subscribe(callback)``) are called in the cache's thread (task), after the
event is applied, with every :class:`~libkv.Event`: INIT for the first snapshot and for
each resync (``event.snapshot`` is then the whole new state), then UPDATE and DELETE.
In the async flavour a listener may also be a coroutine function; it is awaited. A
listener that raises is logged and kept. Keys are the store's keys (relative to its
namespace), exactly as ``store.get`` and ``store.list`` name them.

Closing: ``close()`` stops the background work and waits for it (async: the task is
cancelled and awaited, so none is left pending); closing the store stops it too.
"""

from __future__ import annotations

import builtins
import collections.abc
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from libkv import concurrency
from libkv.errors import (
    HistoryLostError,
    InvalidKeyError,
    KeyNotFoundError,
    KVError,
    NotReachableError,
    NotSupportedError,
    StoreClosedError,
)
from libkv.keys import in_prefix, normalize_key, normalize_prefix
from libkv.model import Action, Event, KVPair

if TYPE_CHECKING:
    from libkv._async.api import AsyncStore
    from libkv._async.watching import AsyncWatch

__all__ = ["AsyncCache", "AsyncCacheView", "AsyncListener"]

log = logging.getLogger(__name__)

AsyncListener = Callable[[Event], Awaitable[None] | None]  # async-only
# sync-only: Listener = Callable[[Event], None]
T = TypeVar("T")

_RETRY_FIRST = 0.1
_RETRY_MAX = 1.0  # a cache that lost its watch re-lists at least this often
_JOIN_TIMEOUT = 2.0  # how long the sync close() waits for the follower thread
_WAIT_SLICE = 0.1  # how often wait_synced() checks that the cache still runs


class AsyncCache:
    """A watch-fed, read-only mirror of every key under ``prefix``; see the module docstring.

    It starts following at once (``listener``, if given, is subscribed first, so it
    gets the first INIT too); ``close()`` (or leaving the ``with`` block) stops it,
    and so does closing its store. In the async flavour, create it inside the running
    loop (its task runs there).
    """

    def __init__(
        self, store: AsyncStore, prefix: str = "", *, listener: AsyncListener | None = None
    ) -> None:
        self.store = store
        self.prefix = normalize_prefix(prefix)
        self._pairs: dict[str, KVPair] = {}
        self._revision = 0
        self._lock = threading.Lock()  # held while a batch is applied or the state copied
        self._synced = concurrency.AsyncEvent()
        self._closing = concurrency.AsyncEvent()
        self._stopped = concurrency.AsyncEvent()
        self._watch: AsyncWatch | None = None
        # A listener given here is subscribed before the first snapshot, so it gets it.
        self._listeners: builtins.list[AsyncListener] = [] if listener is None else [listener]
        self._worker = concurrency.async_spawn(self._run, name=f"libkv-cache-{self.prefix or '/'}")

    def __repr__(self) -> str:
        state = "closed" if self.closed else "synced" if self.synced else "syncing"
        return (
            f"<Cache {self.prefix!r} {len(self._pairs)} keys at revision {self._revision} {state}>"
        )

    async def __aenter__(self) -> AsyncCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- state --------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True while the mirror is following the store (see the module docstring)."""
        return self._synced.is_set()

    @property
    def closed(self) -> bool:
        """True once the cache stopped: ``close()`` was called or its store was closed."""
        return self._stopped.is_set()

    @property
    def revision(self) -> int:
        """The store revision the mirror is consistent with (0 before the first snapshot)."""
        return self._revision

    async def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait until the mirror is synced; False if ``timeout`` passes or the cache stops."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stopped.is_set():
            remaining = _WAIT_SLICE if deadline is None else deadline - time.monotonic()
            if await concurrency.async_wait(self._synced, max(0.0, min(remaining, _WAIT_SLICE))):
                return not self._stopped.is_set()
            if remaining <= 0:
                return False
        return False

    def subscribe(self, listener: AsyncListener) -> Callable[[], None]:
        """Call ``listener(event)`` after each applied event; returns a function that
        unsubscribes it. A listener subscribed after the first snapshot is not given it:
        read the current state from the cache."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    async def close(self) -> None:
        """Stop following; the mirror keeps its last state, ``synced`` is cleared."""
        self._closing.set()
        with self._lock:
            watch = self._watch
        if watch is not None:
            watch.close()
        await concurrency.async_finish(self._worker)
        # sync-only: if threading.current_thread() is not self._worker:
        # sync-only:     self._worker.join(_JOIN_TIMEOUT)
        # async-only: begin
        # A task cancelled before it first ran never reached its clean-up.
        if self._worker.done():
            self._stopped.set()
            self._synced.clear()
        # async-only: end

    # -- reads ----------------------------------------------------------------------------

    def get(self, key: str) -> KVPair | None:
        """The cached pair at ``key``, or None if the store had no such key at ``revision``.

        InvalidKeyError if ``key`` is malformed or outside the cache's prefix.
        """
        pair = self._pairs.get(key)
        if pair is not None:  # the common case: an exact, already normal key
            return pair
        return self._pairs.get(self._checked(key))

    def __getitem__(self, key: str) -> KVPair:
        pair = self.get(key)
        if pair is None:
            raise KeyNotFoundError(normalize_key(key))
        return pair

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is cached; False (not an error) for any key outside the cache."""
        if key in self._pairs:
            return True
        try:
            return isinstance(key, str) and self.get(key) is not None
        except InvalidKeyError:
            return False

    def __len__(self) -> int:
        return len(self._pairs)

    def __iter__(self) -> collections.abc.Iterator[str]:
        """The cached keys, in key order (of one consistent state)."""
        return iter([pair.key for pair in self.list()])

    def items(self) -> builtins.list[tuple[str, KVPair]]:
        """``(key, pair)`` for every cached key, in key order, of one consistent state."""
        return [(pair.key, pair) for pair in self.list()]

    def list(self, prefix: str = "") -> builtins.list[KVPair]:
        """Like ``store.list(prefix)`` but from memory: the pairs under ``prefix`` (which
        must be within the cache's), sorted by key, of one consistent state."""
        relative = normalize_prefix(prefix) or self.prefix
        if not in_prefix(relative, self.prefix):
            raise InvalidKeyError(f"prefix {prefix!r} is outside the cache's {self.prefix!r}")
        with self._lock:
            pairs = builtins.list(self._pairs.values())
        return sorted(
            (pair for pair in pairs if in_prefix(pair.key, relative)), key=lambda pair: pair.key
        )

    def _checked(self, key: str) -> str:
        relative = normalize_key(key)
        if not in_prefix(relative, self.prefix):
            raise InvalidKeyError(f"key {key!r} is outside the cache's prefix {self.prefix!r}")
        return relative

    # -- the follower ---------------------------------------------------------------------

    async def _run(self) -> None:
        retry = _RETRY_FIRST
        try:
            while not self._closing.is_set():
                try:
                    # The sync watch takes its snapshot when created, the async one on entry.
                    async with self.store.watch(self.prefix, recursive=True) as watch:
                        with self._lock:
                            self._watch = watch
                        if self._closing.is_set():
                            return
                        await self._follow(watch)
                        return  # the watch ended without an error: the store or the cache closed
                except StoreClosedError:
                    return
                except NotSupportedError as error:
                    log.error("cache of %r cannot run: %s", self.prefix, error)
                    return
                except (HistoryLostError, NotReachableError) as error:
                    self._synced.clear()
                    log.warning("cache of %r fell behind; re-listing: %s", self.prefix, error)
                except KVError as error:
                    self._synced.clear()
                    log.warning("cache of %r: watch failed; re-listing: %s", self.prefix, error)
                finally:
                    with self._lock:
                        self._watch = None
                await concurrency.async_wait(self._closing, retry)
                retry = min(retry * 2, _RETRY_MAX)
        finally:
            self._stopped.set()
            self._synced.clear()

    async def _follow(self, watch: AsyncWatch) -> None:
        """Apply the watch's events, batch by batch, until it ends or raises."""
        while True:
            event = await watch.next_event(None)
            if event is None:
                return  # closed
            batch = [event]
            while (pending := await watch.next_event(0)) is not None:
                batch.append(pending)
            await self._apply(batch, watch.revision)

    async def _apply(self, batch: builtins.list[Event], revision: int) -> None:
        with self._lock:
            for event in batch:
                if event.action is Action.INIT:
                    self._pairs = {pair.key: pair for pair in event.snapshot}
                elif event.action is Action.UPDATE and event.pair is not None:
                    self._pairs[event.key] = event.pair
                else:
                    self._pairs.pop(event.key, None)
            # All pending events are applied, so the watch's revision is the mirror's.
            self._revision = max(revision, batch[-1].revision)
            listeners = builtins.list(self._listeners)
        if batch[0].action is Action.INIT:
            self._synced.set()
        for event in batch:
            for listener in listeners:
                try:
                    pending = listener(event)  # async-only
                    if pending is not None:  # async-only
                        await pending  # async-only
                    # sync-only: listener(event)
                except Exception:
                    log.exception("cache of %r: a listener failed on %s", self.prefix, event)


class AsyncCacheView(Generic[T]):
    """An iterator of what a :class:`Cache` shows: ``current()`` (defined by a subclass)
    now, then again each time it changes. The registry's membership watch and the
    election's leader watch are such views.

    ``next(timeout)`` returns the next value different from the last one returned, or
    None if ``timeout`` seconds pass or the view is closed. A ``current()`` of None
    means "nothing to show" and is not returned. Values are read only while the cache
    is synced, so a view never reports a state its cache has fallen behind on.
    Iteration ends once ``close()`` is called or the store closes. A context manager.
    """

    def __init__(self, store: AsyncStore, prefix: str) -> None:
        self._wake = concurrency.AsyncEvent()
        self._last: T | None = None
        self.cache = AsyncCache(store, prefix, listener=lambda event: self._wake.set())

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        value = await self.next(None)
        if value is None:
            raise StopAsyncIteration
        return value

    async def __aenter__(self) -> AsyncCacheView[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop watching; a blocked ``next`` returns None and iteration ends promptly."""
        await self.cache.close()
        self._wake.set()

    def current(self) -> T | None:
        """What the view shows of the cache's present state (None: nothing)."""
        raise NotImplementedError

    async def next(self, timeout: float | None = None) -> T | None:
        """The next value different from the last one returned, or None (see the class)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.cache.closed:
            self._wake.clear()
            if self.cache.synced:
                value = self.current()
                if value is not None and value != self._last:
                    self._last = value
                    return value
            remaining = _WAIT_SLICE if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return None
            await concurrency.async_wait(self._wake, min(remaining, _WAIT_SLICE))
        return None
