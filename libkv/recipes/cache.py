# Generated from libkv/_async/recipes/cache.py by scripts/unasync.py: edit that file, then run
# `python scripts/unasync.py`. CI fails if this file is not current.
"""A local mirror of a prefix, kept current by a watch: reads never touch the backend.

``Cache(store, prefix)`` lists ``prefix`` through a recursive watch's INIT snapshot and
then applies the watch's UPDATE and DELETE events in the background. The caches of one
store share that background work: one follower (a thread; in :mod:`libkv.aio.recipes`
a task of the running loop) and one recursive watch, on the longest prefix common to
all of them (the store's whole namespace when they have none), started by the first
cache and ended with the last, so a store holding many caches (and the service
registry's and election's views, which are caches) runs one thread, not one per cache.
Keep caches of unrelated prefixes on stores of their own where a watch on their common
prefix would carry much that none of them wants. Reads (``get``, ``[key]``,
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

Listeners (``subscribe(callback)``) are called in the follower's thread (task), after
the event is applied, with every :class:`~libkv.Event`: INIT for the first snapshot and
for each resync (``event.snapshot`` is then the whole new state), then UPDATE and DELETE.
A listener that takes long holds up every cache of its store (and one that blocks, all).
In the async flavour a listener may also be a coroutine function; it is awaited. A
listener that raises is logged and kept. Keys are the store's keys (relative to its
namespace), exactly as ``store.get`` and ``store.list`` name them.

Closing: ``close()`` stops following; the last cache of a store to close stops the
follower and waits for it (async: the task is cancelled and awaited, so none is left
pending). Closing the store stops every cache of it.
"""

from __future__ import annotations

import builtins
import collections.abc
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
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
    from libkv.api import Store
    from libkv.watching import Watch

__all__ = ["Cache", "CacheView", "Listener"]

log = logging.getLogger(__name__)

Listener = Callable[[Event], None]
T = TypeVar("T")

_RETRY_FIRST = 0.1
_RETRY_MAX = 1.0  # a follower that lost its watch re-lists at least this often
_JOIN_TIMEOUT = 2.0  # how long the sync close() waits for the follower thread


def _common_prefix(prefixes: builtins.list[str]) -> str:
    """The longest prefix that covers every one of ``prefixes``: one of them if all are
    the same, else their deepest common ancestor (whole key segments; "" is the root)."""
    if all(prefix == prefixes[0] for prefix in prefixes):
        return prefixes[0]
    common: builtins.list[str] = []
    for segments in zip(*(prefix.rstrip("/").split("/") for prefix in prefixes), strict=False):
        if any(segment != segments[0] for segment in segments):
            break
        common.append(segments[0])
    return "/".join(common)


_WAIT_SLICE = 0.1  # how often wait_synced() checks that the cache still runs


_followers: weakref.WeakKeyDictionary[Store, builtins.list[_Follower]] = weakref.WeakKeyDictionary()
_followers_lock = threading.Lock()


def _follower_of(store: Store, cache: Cache) -> _Follower:
    """The follower of ``store`` (in the running event loop), started for ``cache`` if
    there is none; ``cache`` is added to it."""
    loop = concurrency.loop()
    with _followers_lock:
        followers = _followers.setdefault(store, [])
        for follower in followers:
            if follower.loop is loop and follower.add(cache):
                return follower
        follower = _Follower(store, cache)
        followers.append(follower)
    return follower


class _Follower:
    """The one watch and worker that keep every cache of a store current.

    It watches the prefix common to its caches and hands each of them the events under
    its own prefix. A cache that joins wakes it (its watch is closed under it): it then
    watches again, resuming from the revision its caches are at where the backend
    resumes watches (the new cache lists its own prefix), or re-reading the snapshot
    otherwise (a cache that was synced is then told only what changed). A watch that
    fails (history lost, backend unreachable) leaves every cache unsynced until the
    next snapshot, which they get as INIT.
    """

    def __init__(self, store: Store, cache: Cache) -> None:
        self.store = store
        self.loop = concurrency.loop()
        self._lock = threading.Lock()
        self._caches: builtins.list[Cache] = []  # followed
        self._joining: builtins.list[Cache] = [cache]  # to be listed first
        self._ended = False
        self._watch: Watch | None = None
        self._wake = concurrency.Event()
        self._revision: int | None = None  # where every followed cache is, to resume from
        self.worker = concurrency.spawn(self._run, name=f"libkv-caches-{store.url.scheme}")

    def add(self, cache: Cache) -> bool:
        """Follow ``cache`` too; False if this follower has ended (start another)."""
        with self._lock:
            if self._ended:
                return False
            self._joining.append(cache)
            watch = self._watch
        self._wake.set()
        if watch is not None:
            watch.close()
        return True

    def remove(self, cache: Cache) -> bool:
        """Follow ``cache`` no more; True if it was the last (the follower then ends)."""
        with self._lock:
            for caches in (self._caches, self._joining):
                if cache in caches:
                    caches.remove(cache)
            last = not self._caches and not self._joining
            if last:
                self._ended = True
            watch = self._watch
        if last:
            self._forget()
            self._wake.set()
            if watch is not None:
                watch.close()
        return last

    def _forget(self) -> None:
        """Leave the registry: the store's next cache starts a new follower."""
        with _followers_lock:
            followers = _followers.get(self.store, [])
            if self in followers:
                followers.remove(self)

    def _run(self) -> None:
        retry = _RETRY_FIRST
        try:
            while True:
                with self._lock:
                    if self._ended or self.store.closed:
                        return
                    joining, self._joining = self._joining, []
                    self._caches += joining
                    caches = builtins.list(self._caches)
                self._wake.clear()
                try:
                    self._follow(_common_prefix([cache.prefix for cache in caches]), joining)
                    retry = _RETRY_FIRST
                    continue
                except StoreClosedError:
                    return
                except NotSupportedError as error:
                    log.error("caches of %s cannot run: %s", self.store.url, error)
                    return
                except (HistoryLostError, NotReachableError) as error:
                    log.warning("caches of %s fell behind; re-listing: %s", self.store.url, error)
                except KVError as error:
                    log.warning("caches of %s: watch failed; re-listing: %s", self.store.url, error)
                self._revision = None
                for cache in caches:
                    cache._synced.clear()
                concurrency.wait(self._wake, retry)
                retry = min(retry * 2, _RETRY_MAX)
        finally:
            with self._lock:
                self._ended = True
                stopped, self._caches, self._joining = self._caches + self._joining, [], []
            self._forget()
            for cache in stopped:
                cache._stop()

    def _follow(self, prefix: str, joining: builtins.list[Cache]) -> None:
        """Watch ``prefix`` until the watch is closed (a cache joined or left, the store
        closed) or fails; ``joining`` caches are listed first."""
        store = self.store
        resume = self._revision
        if resume is not None and not store.capabilities.watch_resume:
            resume = None
        # The sync watch takes its snapshot when created, the async one on entry.
        with store.watch(prefix, recursive=True, since=resume) as watch:
            if resume is not None:
                for cache in joining:  # listed after the resumed watch began: no gap
                    with store.watch(cache.prefix, recursive=True) as first:
                        init = first.next_event(None)
                    if init is None:
                        return  # the store closed
                    cache._apply([init], init.revision)
            with self._lock:
                if self._ended or self._joining:
                    return
                self._watch = watch
            try:
                while True:
                    event = watch.next_event(None)
                    if event is None:
                        return  # closed
                    batch = [event]
                    while (pending := watch.next_event(0)) is not None:
                        batch.append(pending)
                    revision = max(watch.revision, batch[-1].revision)
                    self._hand_out(batch, revision)
                    self._revision = revision
            finally:
                with self._lock:
                    self._watch = None

    def _hand_out(self, batch: builtins.list[Event], revision: int) -> None:
        """Give every followed cache what ``batch`` holds under its prefix."""
        init, changes = (batch[0], batch[1:]) if batch[0].action is Action.INIT else (None, batch)
        with self._lock:
            caches = builtins.list(self._caches)
        for cache in caches:
            if cache.closed:  # by a listener of this batch
                continue
            if init is not None:
                cache._apply(cache._news_of(init), init.revision)
                cache._after = init.revision
            events = [
                event
                for event in changes
                if event.revision > cache._after and in_prefix(event.key, cache.prefix)
            ]
            cache._apply(events, revision)


class Cache:
    """A watch-fed, read-only mirror of every key under ``prefix``; see the module docstring.

    It starts following at once (``listener``, if given, is subscribed first, so it
    gets the first INIT too); ``close()`` (or leaving the ``with`` block) stops it,
    and so does closing its store. In the async flavour, create it inside the running
    loop (its task runs there).
    """

    def __init__(self, store: Store, prefix: str = "", *, listener: Listener | None = None) -> None:
        self.store = store
        self.prefix = normalize_prefix(prefix)
        self._pairs: dict[str, KVPair] = {}
        self._revision = 0
        self._lock = threading.Lock()  # held while a batch is applied or the state copied
        self._synced = concurrency.Event()
        self._stopped = concurrency.Event()
        self._after = 0  # the revision of its snapshot: the follower's events up to it are in
        # A listener given here is subscribed before the first snapshot, so it gets it.
        self._listeners: builtins.list[Listener] = [] if listener is None else [listener]
        self._follower = _follower_of(store, self)  # last: it may start applying at once

    def __repr__(self) -> str:
        state = "closed" if self.closed else "synced" if self.synced else "syncing"
        return (
            f"<Cache {self.prefix!r} {len(self._pairs)} keys at revision {self._revision} {state}>"
        )

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait until the mirror is synced; False if ``timeout`` passes or the cache stops."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stopped.is_set():
            remaining = _WAIT_SLICE if deadline is None else deadline - time.monotonic()
            if concurrency.wait(self._synced, max(0.0, min(remaining, _WAIT_SLICE))):
                return not self._stopped.is_set()
            if remaining <= 0:
                return False
        return False

    def subscribe(self, listener: Listener) -> Callable[[], None]:
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

    def close(self) -> None:
        """Stop following; the mirror keeps its last state, ``synced`` is cleared."""
        follower = self._follower
        if follower.remove(self):  # the last cache of its store: the follower ends
            concurrency.finish(follower.worker)
            if threading.current_thread() is not follower.worker:
                follower.worker.join(_JOIN_TIMEOUT)
        self._stop()

    def _stop(self) -> None:
        self._stopped.set()
        self._synced.clear()

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

    # -- what the follower calls ---------------------------------------------------------

    def _news_of(self, init: Event) -> builtins.list[Event]:
        """What a snapshot of the follower's prefix tells this cache: INIT of its own
        prefix if it is not synced (it is new, or fell behind), else only what changed
        (the follower re-read its snapshot because another cache joined)."""
        pairs = tuple(pair for pair in init.snapshot if in_prefix(pair.key, self.prefix))
        if not self._synced.is_set():
            return [Event(Action.INIT, self.prefix, None, init.revision, pairs)]
        fresh = {pair.key: pair for pair in pairs}
        with self._lock:
            gone = [key for key in self._pairs if key not in fresh]
            changed = [pair for pair in pairs if self._pairs.get(pair.key) != pair]
        return [Event(Action.UPDATE, pair.key, pair, pair.version) for pair in changed] + [
            Event(Action.DELETE, key, None, init.revision) for key in sorted(gone)
        ]

    def _apply(self, batch: builtins.list[Event], revision: int) -> None:
        """Apply ``batch`` (events under this cache's prefix, possibly none), then tell
        the listeners; the mirror is then the store's state at ``revision``."""
        with self._lock:
            for event in batch:
                if event.action is Action.INIT:
                    self._pairs = {pair.key: pair for pair in event.snapshot}
                    self._after = self._revision = event.revision
                elif event.action is Action.UPDATE and event.pair is not None:
                    self._pairs[event.key] = event.pair
                else:
                    self._pairs.pop(event.key, None)
            self._revision = max(self._revision, revision)
            listeners = builtins.list(self._listeners)
        if batch and batch[0].action is Action.INIT:
            self._synced.set()
        for event in batch:
            for listener in listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("cache of %r: a listener failed on %s", self.prefix, event)


class CacheView(Generic[T]):
    """An iterator of what a :class:`Cache` shows: ``current()`` (defined by a subclass)
    now, then again each time it changes. The registry's membership watch and the
    election's leader watch are such views.

    ``next(timeout)`` returns the next value different from the last one returned, or
    None if ``timeout`` seconds pass or the view is closed. A ``current()`` of None
    means "nothing to show" and is not returned. Values are read only while the cache
    is synced, so a view never reports a state its cache has fallen behind on.
    Iteration ends once ``close()`` is called or the store closes. A context manager.
    """

    def __init__(self, store: Store, prefix: str) -> None:
        self._wake = concurrency.Event()
        self._last: T | None = None
        self.cache = Cache(store, prefix, listener=lambda event: self._wake.set())

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        value = self.next(None)
        if value is None:
            raise StopIteration
        return value

    def __enter__(self) -> CacheView[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching; a blocked ``next`` returns None and iteration ends promptly."""
        self.cache.close()
        self._wake.set()

    def current(self) -> T | None:
        """What the view shows of the cache's present state (None: nothing)."""
        raise NotImplementedError

    def next(self, timeout: float | None = None) -> T | None:
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
            concurrency.wait(self._wake, min(remaining, _WAIT_SLICE))
        return None
