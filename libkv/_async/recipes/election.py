"""Leader election with fencing tokens, built on the lock (and so on a lease).

``Election(store, name, value, ttl=10.0)``: every candidate campaigns for the key
``name``; the leader is whoever holds the lock on it, and the key's value is the
leader's ``value`` (so ``leader()`` and observers learn who leads, in any language:
it is the raw value the candidate gave). Guarantees, from the lock's:

- At most one candidate is leader at a time, as long as leadership is not lost.
- ``token`` is the fencing token of the current term: strictly larger for every new
  term, whoever wins it. Pass it to the resources the leader writes, so that a deposed
  leader's late writes can be refused.
- ``lost`` is set if leadership is lost while held (the lease expired, for instance
  after a pause, or the key was deleted or overwritten); the candidate is then no
  longer leader and may ``campaign()`` again.
- A leader that resigns is replaced within 1 s by a waiting candidate; a leader that
  dies (even by SIGKILL) within ``store.capabilities.latest_expiry(ttl)``.
- ``observe()`` yields each new leader (value and token) once per term; it is built on
  :class:`~libkv.recipes.Cache`, so it converges on every backend and re-lists by
  itself after history lost.
- In :mod:`libkv.aio.recipes`, ``campaign``, ``resign`` and ``leader`` are awaited; a
  cancelled campaign leaves nothing behind (the lock's lease is revoked, its key with it).

An Election object is one candidate: call ``campaign`` and ``resign`` from one thread
(or task) at a time.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from libkv import concurrency
from libkv._async.recipes.cache import AsyncCacheView
from libkv.errors import LockError
from libkv.keys import normalize_key, to_bytes
from libkv.recipes.records import Leader

if TYPE_CHECKING:
    from libkv._async.api import AsyncStore
    from libkv._async.lock import AsyncLock

__all__ = ["AsyncElection", "AsyncLeaderWatch", "Leader"]


class AsyncLeaderWatch(AsyncCacheView[Leader]):
    """An iterator over the leaders of one election: the current leader (if any), then
    each new one (see :class:`~libkv.recipes.cache.CacheView` for ``next(timeout)`` and
    ``close()``). A vacancy is not yielded; ``current()`` is then None."""

    def __init__(self, store: AsyncStore, key: str) -> None:
        self._key = key
        super().__init__(store, key)

    async def __aenter__(self) -> AsyncLeaderWatch:
        return self

    def current(self) -> Leader | None:
        """The leader as the cache holds it now, or None if there is none."""
        pair = self.cache.get(self._key)
        return None if pair is None else Leader(pair.value, pair.version)


class AsyncElection:
    """One candidate in the election ``name``; see the module docstring."""

    def __init__(self, store: AsyncStore, name: str, value: object, *, ttl: float = 10.0) -> None:
        self.store = store
        self.name = normalize_key(name)
        self.value = to_bytes(value)
        self.ttl = ttl
        self._lock: AsyncLock | None = None
        self._lost = concurrency.AsyncEvent()

    def __repr__(self) -> str:
        state = f"leader (token {self.token})" if self.is_leader else "not leader"
        return f"<Election {self.name!r} {self.value!r} {state}>"

    async def __aenter__(self) -> AsyncElection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.resign()

    @property
    def is_leader(self) -> bool:
        """Whether this candidate leads now (elected, not resigned, not lost)."""
        return self._lock is not None and self._lock.locked()

    @property
    def token(self) -> int | None:
        """The fencing token of this candidate's term while it leads, else None."""
        lock = self._lock
        return lock.token if lock is not None and lock.locked() else None

    @property
    def lost(self) -> concurrency.AsyncEvent:
        """Set if the current (or last) term's leadership was lost while held."""
        return self._lost

    async def campaign(self, timeout: float | None = None) -> bool:
        """Become leader: True once elected (at once if already leader), False if
        ``timeout`` seconds pass first (``None`` waits as long as it takes)."""
        if self.is_leader:
            return True
        await self._release()  # a lost term still holds its Lock object
        lock = self.store.lock(self.name, ttl=self.ttl, value=self.value)
        if not await lock.acquire(timeout=timeout):
            return False
        self._lock = lock
        self._lost = lock.lost
        return True

    async def resign(self) -> None:
        """Step down (the key is deleted, so a waiting candidate is elected at once).
        Harmless if not leader or if leadership was already lost."""
        await self._release()

    async def leader(self) -> bytes | None:
        """The current leader's value, or None if there is no leader (one read)."""
        pair = await self.store.get_many([self.name])
        return pair[0].value if pair else None

    def observe(self) -> AsyncLeaderWatch:
        """Yield the current leader (if any) and then each new one; see LeaderWatch."""
        return AsyncLeaderWatch(self.store, self.name)

    async def _release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            with contextlib.suppress(LockError):  # lost: the key is not ours to delete
                await lock.release()
