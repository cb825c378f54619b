"""A lock's leases, in isolation: shared by the locks of a store, disposed of when
unused, replaced when lost before a key was written."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

import libkv
import libkv.aio
from libkv import LeaseNotFoundError
from libkv.ops import Op
from libkv.testing.polling import wait_until

TTL = 1.0


def lose_grants(store: libkv.Store, monkeypatch: pytest.MonkeyPatch, count: int) -> list[int]:
    """Make the backend's first ``count`` grants vanish at once, as a failover that lost
    them would (Redis replicates asynchronously); return every lease id granted."""
    backend = store.backend
    grant = backend.grant_lease
    granted: list[int] = []

    def grant_then_lose(ttl: float) -> int:
        lease_id = grant(ttl)
        if len(granted) < count:
            backend.revoke_lease(lease_id)
        granted.append(lease_id)
        return lease_id

    monkeypatch.setattr(backend, "grant_lease", grant_then_lose)
    return granted


def test_an_acquire_whose_lease_vanished_takes_a_new_one(monkeypatch: pytest.MonkeyPatch) -> None:
    with libkv.open("memory://") as store:
        granted = lose_grants(store, monkeypatch, 1)
        lock = store.lock("resource")
        assert lock.acquire(timeout=5)
        assert len(granted) == 2
        assert lock.token == store.get("resource").version
        lock.release()
        assert store.list("") == []


def test_an_acquire_gives_up_when_every_lease_vanishes(monkeypatch: pytest.MonkeyPatch) -> None:
    with libkv.open("memory://") as store:
        granted = lose_grants(store, monkeypatch, 100)
        with pytest.raises(LeaseNotFoundError):
            store.lock("resource").acquire(timeout=5)
        assert len(granted) == 4  # the first lease and three replacements
        assert store.list("") == []


def count_leases(
    store: libkv.Store, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[int], list[int]]:
    """Record every lease id the backend grants and every one it is asked to revoke."""
    backend = store.backend
    grant, revoke = backend.grant_lease, backend.revoke_lease
    granted: list[int] = []
    revoked: list[int] = []

    def granting(ttl: float) -> int:
        granted.append(grant(ttl))
        return granted[-1]

    def revoking(lease_id: int) -> None:
        revoked.append(lease_id)
        revoke(lease_id)

    monkeypatch.setattr(backend, "grant_lease", granting)
    monkeypatch.setattr(backend, "revoke_lease", revoking)
    return granted, revoked


def test_locks_of_one_store_and_ttl_share_one_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    with libkv.open("memory://") as store:
        granted, revoked = count_leases(store, monkeypatch)
        kept = store.lock("kept", ttl=TTL)
        assert kept.acquire(timeout=5)
        for _ in range(5):
            cycled = store.lock("cycled", ttl=TTL)
            assert cycled.acquire(timeout=5)
            cycled.release()
        other = store.lock("other", ttl=2 * TTL)
        assert other.acquire(timeout=5)
        assert len(granted) == 2 and revoked == []  # one lease per ttl
        kept.release()
        other.release()


def test_an_acquire_that_finds_the_lock_taken_leaves_no_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with libkv.open("memory://locks") as store, libkv.open("memory://locks") as waiting:
        holder = store.lock("resource", ttl=TTL)
        assert holder.acquire(timeout=5)
        granted, revoked = count_leases(waiting, monkeypatch)
        assert waiting.lock("resource", ttl=TTL).acquire(timeout=0.2) is False
        assert len(granted) == 1 and revoked == granted
        holder.release()


def test_a_lease_unused_for_a_keepalive_period_is_revoked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with libkv.open("memory://") as store:
        granted, revoked = count_leases(store, monkeypatch)
        lock = store.lock("resource", ttl=TTL)
        assert lock.acquire(timeout=5)
        lock.release()
        assert revoked == []  # kept for the next acquire...
        wait_until(lambda: revoked == granted, 2 * TTL)  # ...for a keep-alive period at most
        assert lock.acquire(timeout=5)  # and a new one is granted after that
        assert len(granted) == 2
        lock.release()


def test_a_lock_whose_lease_is_lost_is_lost_and_the_next_takes_a_new_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with libkv.open("memory://") as store:
        granted, _ = count_leases(store, monkeypatch)
        lock = store.lock("resource", ttl=TTL)
        assert lock.acquire(timeout=5)
        store.backend.revoke_lease(granted[0])  # as a backend that dropped it would
        wait_until(lock.lost.is_set, 2 * TTL)
        with pytest.raises(libkv.LockError):
            lock.release()
        assert lock.acquire(timeout=5)
        assert len(granted) == 2 and store.get("resource").version == lock.token
        lock.release()


def test_a_cancelled_acquire_does_not_wait_for_a_frozen_backend_to_clean_up() -> None:
    """An acquire cancelled while its create is in flight, on a backend that answers
    nothing (as a SIGSTOPped server): CancelledError within 1 s; once the backend
    answers again, the key it wrote goes with its lease, revoked in the background."""

    async def scenario() -> None:
        async with libkv.aio.open("memory://") as store:
            warm = store.lock("resource", ttl=TTL)
            assert await warm.acquire(timeout=5)  # the store's lock lease is granted
            await warm.release()  # and kept for the next acquire
            backend = store.backend
            commit, revoke = backend.commit, backend.revoke_lease
            thawed = asyncio.Event()

            async def frozen_commit(ops: Sequence[Op]) -> list[libkv.KVPair | None]:
                written = await commit(ops)  # applied, but the answer does not come back
                await thawed.wait()
                return written

            async def frozen_revoke(lease_id: int) -> None:
                await thawed.wait()
                await revoke(lease_id)

            backend.commit = frozen_commit  # type: ignore[method-assign]
            backend.revoke_lease = frozen_revoke  # type: ignore[method-assign]
            task = asyncio.ensure_future(store.lock("resource", ttl=TTL).acquire(timeout=5))
            await asyncio.sleep(0.2)
            task.cancel()
            started = time.monotonic()
            done, _ = await asyncio.wait({task}, timeout=2.0)
            elapsed = time.monotonic() - started
            if not done:  # waiting for the frozen backend: let it answer, then fail
                thawed.set()
                await asyncio.wait({task})
            assert done and task.cancelled() and elapsed < 1.0, (task, elapsed)
            backend.commit = commit  # type: ignore[method-assign]
            assert await store.exists("resource")  # written, under a lease still granted
            thawed.set()  # the background revoke goes through
            for _ in range(100):
                if not await store.exists("resource"):
                    break
                await asyncio.sleep(0.05)
            assert await store.list() == []

    asyncio.run(scenario())
