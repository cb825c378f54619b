"""A lock's own recovery, in isolation: a lease lost before its key was written."""

from __future__ import annotations

import pytest

import libkv
from libkv import LeaseNotFoundError


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
