# Generated from libkv/_async/lock.py by scripts/unasync.py: edit that file, then run
# `python scripts/unasync.py`. CI fails if this file is not current.
"""Distributed locks with fencing tokens, built on leases and watches.

Holding the lock on ``key`` means having created ``key`` (with the lock's value)
under a lease that we keep alive. The fencing token is the version of that write:
a store-wide revision, so strictly larger for every acquisition by anyone. Waiters
watch the key and retry when it is deleted, so a waiter gets the lock promptly once
it is released or its holder's lease expires.

The locks of one store with one ttl share one lease, as the locks of one session
share its lease in etcd's concurrency package: the first acquire grants it, the
store's keep-alive worker refreshes it, and later acquires use it again until it is
lost or the store is closed. An uncontended acquire and release are then one create
and one delete. A lease that may hold a key nobody owns (an acquire cancelled or
failed while its create was in flight, a release that failed) is retired: no later
acquire uses it, and it is revoked (its keys with it) as soon as no lock holds a key
under it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING

from libkv import concurrency
from libkv.errors import (
    HistoryLostError,
    KeyExistsError,
    KeyModifiedError,
    KeyNotFoundError,
    KVError,
    LeaseNotFoundError,
    LockError,
    NotReachableError,
)
from libkv.keys import check_timeout

if TYPE_CHECKING:
    from libkv.api import Store
    from libkv.lease import Lease

__all__ = ["Lock", "LockLeases"]

_LEASE_REPLACEMENTS = 3  # shared leases lost before use that one acquire replaces, at most


class _Shared:
    """A lease shared by the locks of one store and one ttl, with its bookkeeping."""

    __slots__ = ("held", "idle_since", "lease", "loop", "retired", "ttl", "users")

    def __init__(self, lease: Lease, ttl: float) -> None:
        self.lease = lease
        self.ttl = ttl
        self.loop = concurrency.loop()  # its keep-alive task ends with it
        self.users = 1  # acquires creating a key under it, and locks holding one
        self.held = False  # a lock has held its key under it
        self.idle_since = 0.0  # when its users last fell to none
        self.retired = False  # no acquire may use it any more


class LockLeases:
    """The leases the locks of one store create their keys under: one per ttl.

    :meth:`take` hands out the current lease of a ttl (granting one if none is usable),
    :meth:`give_back` returns it. A lease is disposed of (revoked, so that nothing of
    the locks outlives them) by the last lock to give it back if it was retired (it may
    hold a key nobody owns) or never held a key (its acquire found the lock taken);
    otherwise it is kept for the next acquire, and revoked by the store's keep-alive
    worker at its first keep-alive after a whole keep-alive period unused.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._current: dict[float, _Shared] = {}
        self._mutex = threading.Lock()  # never held across an await: serves both flavours

    def take(self, ttl: float) -> _Shared:
        """The shared lease of ``ttl``, granted if none is usable; one more user of it."""
        with self._mutex:
            shared = self._usable(ttl)
            if shared is not None:
                shared.users += 1
                return shared
        fresh = _Shared(self._store.lease(ttl), ttl)
        fresh.lease.add_listener(lambda alive: self._revoke_if_idle(fresh, alive))
        with self._mutex:
            if self._usable(ttl) is None:
                self._current[ttl] = fresh
            else:
                fresh.retired = True  # another acquire granted one meanwhile: it serves one lock
        return fresh

    def give_back(
        self,
        shared: _Shared,
        *,
        retire: bool = False,
        reachable: bool = True,
        cancelled: bool = False,
    ) -> None:
        """One user fewer. ``retire``: the lease may hold a key nobody owns, so no later
        acquire uses it. A retired lease without users is revoked; in the background if
        the caller is ``cancelled`` (it must not wait for the backend); abandoned (to
        expire by itself) when the backend is not ``reachable`` or the store closed."""
        with self._mutex:
            shared.users -= 1
            if retire:
                self._retire(shared)
            if shared.users:
                return
            shared.idle_since = time.monotonic()
            if shared.held and not shared.retired:
                return
            self._retire(shared)
        if not reachable or self._store.closed:
            shared.lease.abandon()
        elif cancelled:
            shared.lease.revoke_in_background()
        else:
            concurrency.shielded(shared.lease.revoke)

    def _retire(self, shared: _Shared) -> None:
        shared.retired = True
        if self._current.get(shared.ttl) is shared:
            del self._current[shared.ttl]

    def _revoke_if_idle(self, shared: _Shared, alive: bool) -> None:
        """A listener of every lease granted here: after a keep-alive, revoke the lease
        if no lock has used it for a whole keep-alive period."""
        with self._mutex:
            idle = time.monotonic() - shared.idle_since
            if not alive or shared.users or shared.retired or idle < shared.lease.ttl / 3:
                return
            self._retire(shared)
        with contextlib.suppress(KVError):  # if it fails, the lease expires by itself
            shared.lease.revoke()

    def _usable(self, ttl: float) -> _Shared | None:
        shared = self._current.get(ttl)
        if shared is None or shared.retired or shared.loop is not concurrency.loop():
            return None
        if shared.lease.lost.is_set() or shared.lease.revoked:
            return None
        return shared


class Lock:
    """A lock on one key; see the module docstring.

    ``lost`` is set if ownership is lost while held (the lease expired, or the key was
    deleted or overwritten by someone else). ``token`` is the fencing token of the
    current acquisition, or None. Not re-entrant. ``lost`` is a ``threading.Event``
    in the sync flavour and an ``asyncio.Event`` in the async one.
    """

    def __init__(
        self, store: Store, key: str, ttl: float, value: bytes, *, leases: LockLeases
    ) -> None:
        self.store = store
        self.key = key
        self.ttl = ttl
        self.value = value
        self.lost = concurrency.Event()
        self.token: int | None = None
        self._shared: _Shared | None = None
        self._listener: concurrency.Listener | None = None
        self._mutex = concurrency.Mutex()
        self._leases = leases

    def __repr__(self) -> str:
        return f"<Lock {self.key!r} token={self.token}>"

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def locked(self) -> bool:
        """Whether this Lock object holds the lock (and has not lost it)."""
        return self.token is not None and not self.lost.is_set()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock; return False if not blocking (or ``timeout`` passed) and it is held.

        Cancelled (async flavour), it raises CancelledError at once and leaves nothing
        behind: a key it may have written goes with its lease, which is retired and,
        once no lock of the store holds a key under it, revoked in the background.
        """
        with self._mutex:
            if self.token is not None:
                raise LockError(f"lock {self.key!r} is already held by this Lock object")
            seconds = check_timeout(timeout)
            deadline = None if seconds is None or seconds < 0 else time.monotonic() + seconds
            leases = self._leases
            replaced = 0
            while True:
                shared = leases.take(self.ttl)
                try:
                    pair = self.store.create(self.key, self.value, lease=shared.lease)
                except KeyExistsError:
                    leases.give_back(shared)
                    if not blocking or not self._wait_for_release(deadline):
                        return False
                    continue
                except LeaseNotFoundError:
                    # The lease went before this key was written: it expired, or a
                    # failover lost its grant (Redis replicates asynchronously). Nothing
                    # of this acquire is attached to it: take a new one.
                    leases.give_back(shared, retire=True, reachable=False)
                    if replaced == _LEASE_REPLACEMENTS:
                        raise
                    replaced += 1
                    continue
                except NotReachableError:
                    # The create may have been applied: the key goes with the lease.
                    # Revoking would wait out the timeout again; it expires by itself.
                    leases.give_back(shared, retire=True, reachable=False)
                    raise
                except KVError:
                    leases.give_back(shared)  # refused: nothing was written
                    raise
                except BaseException:
                    leases.give_back(shared, retire=True, cancelled=True)
                    raise
                break
            shared.held = True  # so the lease is kept for the next acquire
            token, lost = pair.version, concurrency.Event()
            self.lost, self.token, self._shared = lost, token, shared
            self._listener = lambda alive: self._verify(alive, token, lost)
            shared.lease.add_listener(self._listener)
            return True

    def release(self) -> None:
        """Release the lock: its key is deleted. LockError if not held (or lost)."""
        with self._mutex:
            shared, token, listener = self._shared, self.token, self._listener
            if shared is None or token is None or listener is None:
                raise LockError(f"lock {self.key!r} is not held")
            self._shared, self.token, self._listener = None, None, None
            shared.lease.remove_listener(listener)
            leases = self._leases
            was_lost = self.lost.is_set()
            try:
                self.store.delete(self.key, version=token)
            except (KeyNotFoundError, KeyModifiedError):
                was_lost = True
            except NotReachableError:
                leases.give_back(shared, retire=True, reachable=False)
                raise
            except BaseException:
                leases.give_back(shared, retire=True, cancelled=True)
                raise
            leases.give_back(shared)
            if was_lost:
                self.lost.set()
                raise LockError(f"lock {self.key!r} was lost before release")

    def _wait_for_release(self, deadline: float | None) -> bool:
        """Wait until the key may be free; False if ``deadline`` passes first.

        True when the key is absent, or when the watch lost its history (a failover
        that dropped changes, a compaction): the release may be among the lost
        changes, so the caller's create decides, and it waits again if the key is held.
        """
        with self.store.watch(self.key) as watch:
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                try:
                    event = watch.next_event(remaining)
                except HistoryLostError:
                    return True
                if event is None:
                    if watch.closed:
                        return False
                    continue
                if event.pair is None:
                    return True

    def _verify(self, alive: bool, token: int, lost: concurrency.Event) -> None:
        """Called by the lease after each keep-alive: is the key still ours?"""
        if not alive:
            lost.set()
            return
        try:
            pair = self.store.get(self.key)
        except KeyNotFoundError:
            lost.set()
            return
        except KVError:
            return  # unreachable: the lease's own bookkeeping decides
        if pair.version != token:
            lost.set()
