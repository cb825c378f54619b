"""Distributed locks with fencing tokens, built on leases and watches.

Holding the lock on ``key`` means having created ``key`` (with the lock's value)
under a lease that we keep alive. The fencing token is the version of that write:
a store-wide revision, so strictly larger for every acquisition by anyone. Waiters
watch the key and retry when it is deleted, so a waiter gets the lock promptly once
it is released or its holder's lease expires.
"""

from __future__ import annotations

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
    from libkv._async.api import AsyncStore
    from libkv._async.lease import AsyncLease

__all__ = ["AsyncLock"]

_LEASE_REPLACEMENTS = 3  # leases lost before use that one acquire replaces, at most


class AsyncLock:
    """A lock on one key; see the module docstring.

    ``lost`` is set if ownership is lost while held (the lease expired, or the key was
    deleted or overwritten by someone else). ``token`` is the fencing token of the
    current acquisition, or None. Not re-entrant. ``lost`` is a ``threading.Event``
    in the sync flavour and an ``asyncio.Event`` in the async one.
    """

    def __init__(self, store: AsyncStore, key: str, ttl: float, value: bytes) -> None:
        self.store = store
        self.key = key
        self.ttl = ttl
        self.value = value
        self.lost = concurrency.AsyncEvent()
        self.token: int | None = None
        self._lease: AsyncLease | None = None
        self._mutex = concurrency.AsyncMutex()

    def __repr__(self) -> str:
        return f"<Lock {self.key!r} token={self.token}>"

    async def __aenter__(self) -> AsyncLock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()

    def locked(self) -> bool:
        """Whether this Lock object holds the lock (and has not lost it)."""
        return self.token is not None and not self.lost.is_set()

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock; return False if not blocking (or ``timeout`` passed) and it is held.

        Cancelled (async flavour), it leaves nothing behind: its lease is revoked and
        its key, if written, with it.
        """
        async with self._mutex:
            if self.token is not None:
                raise LockError(f"lock {self.key!r} is already held by this Lock object")
            seconds = check_timeout(timeout)
            deadline = None if seconds is None or seconds < 0 else time.monotonic() + seconds
            lease = await self.store.lease(self.ttl)
            replaced = 0
            try:
                while True:
                    try:
                        pair = await self.store.create(self.key, self.value, lease=lease)
                    except KeyExistsError:
                        if not blocking or not await self._wait_for_release(deadline):
                            await lease.revoke()
                            return False
                        continue
                    except LeaseNotFoundError:
                        # The lease went before its key was written: it expired while
                        # this waited, or a failover lost its grant (Redis replicates
                        # asynchronously). Nothing is attached to it: take a new one.
                        if replaced == _LEASE_REPLACEMENTS:
                            raise
                        replaced += 1
                        await lease.abandon()
                        lease = await self.store.lease(self.ttl)
                        continue
                    break
            except NotReachableError:
                # Revoking would wait out the timeout again; the lease expires by itself
                # (and with it the key, should the create have been applied after all).
                await lease.abandon()
                raise
            except BaseException:
                if not self.store.closed:
                    await concurrency.async_shielded(lease.revoke)
                raise
            self.lost = concurrency.AsyncEvent()
            self.token = pair.version
            self._lease = lease
            lost = self.lost
            lease.add_listener(lambda alive: self._verify(alive, pair.version, lost))
            return True

    async def release(self) -> None:
        """Release the lock: its key is deleted. LockError if not held (or lost)."""
        async with self._mutex:
            lease, token = self._lease, self.token
            if lease is None or token is None:
                raise LockError(f"lock {self.key!r} is not held")
            self._lease, self.token = None, None
            was_lost = self.lost.is_set()
            try:
                await self.store.delete(self.key, version=token)
            except (KeyNotFoundError, KeyModifiedError):
                was_lost = True
            finally:
                await concurrency.async_shielded(lease.revoke)
            if was_lost:
                self.lost.set()
                raise LockError(f"lock {self.key!r} was lost before release")

    async def _wait_for_release(self, deadline: float | None) -> bool:
        """Wait until the key may be free; False if ``deadline`` passes first.

        True when the key is absent, or when the watch lost its history (a failover
        that dropped changes, a compaction): the release may be among the lost
        changes, so the caller's create decides, and it waits again if the key is held.
        """
        async with self.store.watch(self.key) as watch:
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                try:
                    event = await watch.next_event(remaining)
                except HistoryLostError:
                    return True
                if event is None:
                    if watch.closed:
                        return False
                    continue
                if event.pair is None:
                    return True

    async def _verify(self, alive: bool, token: int, lost: concurrency.AsyncEvent) -> None:
        """Called by the lease after each keep-alive: is the key still ours?"""
        if not alive:
            lost.set()
            return
        try:
            pair = await self.store.get(self.key)
        except KeyNotFoundError:
            lost.set()
            return
        except KVError:
            return  # unreachable: the lease's own bookkeeping decides
        if pair.version != token:
            lost.set()
