"""Locks.

Held values, release, exclusion, fencing tokens, hand-over, keep-alive, a stopped
holder, lost ownership, and hidden bookkeeping.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import pytest

import libkv
from libkv import Action, Store
from libkv.testing import flavours
from libkv.testing.conformance.base import (
    DELIVERY_MARGIN,
    EVENT_TIMEOUT,
    HANDOVER_BOUND,
    LOST_MARGIN,
    ConformanceBase,
    call_within,
    keys_of,
    run_concurrently,
)
from libkv.testing.history import (
    WatchRecorder,
)
from libkv.testing.polling import assert_holds_until, wait_until

__all__ = ["LockConformance"]


class LockConformance(ConformanceBase):
    """Locks."""

    # -- locks ----------------------------------------------------------------------

    def test_lock_holds_its_value_and_releases(self, store: Store, other_store: Store) -> None:
        """While held, get(key).value is the lock's value and token is an int; after
        release the key is gone and a second release raises LockError."""
        lock = store.lock("locks/a", ttl=self.ttl_for(store), value=b"holder")
        assert not lock.locked()
        token_before = lock.token
        assert token_before is None
        assert call_within(lock.acquire, EVENT_TIMEOUT, "uncontended acquire()") is True
        assert lock.locked()
        assert isinstance(lock.token, int)
        assert other_store.get("locks/a").value == b"holder"
        lock.release()
        assert not lock.locked()
        assert not other_store.exists("locks/a")
        with pytest.raises(libkv.LockError):
            lock.release()

    def test_a_blocked_acquire_outlives_its_watch_losing_history(
        self, store: Store, other_store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A waiter whose watch raises HistoryLostError (a failover that dropped
        changes, a compaction) tries the key again and goes on waiting: acquire neither
        raises nor misses the release that follows."""
        ttl = self.ttl_for(store)
        holder = other_store.lock("locks/history", ttl=ttl)
        assert call_within(holder.acquire, EVENT_TIMEOUT, "uncontended acquire()") is True
        watches: list[Any] = []
        # In the async flavour the lock drives the AsyncStore behind the facade, so
        # the failure is injected there, with a coroutine in place of next_event.
        target = flavours.underlying(store)
        open_watch = target.watch

        def watch_losing_history_once(key: str, **options: Any) -> Any:
            watch = open_watch(key, **options)
            watches.append(watch)
            if len(watches) == 1:
                lost = libkv.HistoryLostError("injected: the watch's changes are gone")
                monkeypatch.setattr(watch, "next_event", flavours.raising(watch, lost))
            return watch

        monkeypatch.setattr(target, "watch", watch_losing_history_once)
        waiter = store.lock("locks/history", ttl=ttl)
        outcome: list[object] = []

        def acquire() -> None:
            try:
                outcome.append(waiter.acquire(timeout=HANDOVER_BOUND + EVENT_TIMEOUT))
            except BaseException as error:  # reported by the assertion below
                outcome.append(error)

        worker = threading.Thread(target=acquire, daemon=True)
        worker.start()
        wait_until(
            lambda: len(watches) >= 2 or bool(outcome),
            EVENT_TIMEOUT,
            message="the waiter neither watched again nor returned",
        )
        assert not outcome, f"acquire ended while the lock was held: {outcome!r}"
        holder.release()
        worker.join(HANDOVER_BOUND + EVENT_TIMEOUT)
        assert outcome == [True], f"acquire after the release: {outcome!r}"
        waiter.release()

    def test_release_of_a_lock_never_held_raises_lock_error(self, store: Store) -> None:
        """release() of a lock that is not held raises LockError and deletes nothing."""
        store.put("locks/b", b"someone else's")
        with pytest.raises(libkv.LockError):
            store.lock("locks/b").release()
        assert store.get("locks/b").value == b"someone else's"
        with pytest.raises(libkv.LockError):
            store.lock("locks/never").release()
        assert issubclass(libkv.LockError, libkv.KVError)

    def test_lock_context_manager_holds_and_releases(
        self, store: Store, other_store: Store
    ) -> None:
        """A Lock is a context manager: held inside the block, released after it."""
        lock = store.lock("locks/c", ttl=self.ttl_for(store), value=b"inside")
        with lock as held:
            assert held is lock
            assert lock.locked()
            assert other_store.get("locks/c").value == b"inside"
        assert not lock.locked()
        assert not other_store.exists("locks/c")

    def test_lock_excludes_other_clients(self, store: Store, other_store: Store) -> None:
        """While one client holds a lock, another's non-blocking acquire returns False at
        once and a timed acquire returns False after the timeout; tokens increase."""
        ttl = self.ttl_for(store)
        first = store.lock("locks/x", ttl=ttl, value=b"first")
        second = other_store.lock("locks/x", ttl=ttl, value=b"second")
        assert first.acquire(timeout=EVENT_TIMEOUT)
        assert second.acquire(blocking=False) is False
        assert not second.locked()
        started = time.monotonic()
        assert second.acquire(timeout=0.3) is False
        assert 0.3 <= time.monotonic() - started < 0.3 + EVENT_TIMEOUT
        assert other_store.get("locks/x").value == b"first"
        first_token = cast(int, first.token)
        first.release()
        assert second.acquire(timeout=EVENT_TIMEOUT)
        second_token = cast(int, second.token)
        assert second_token > first_token
        assert store.get("locks/x").value == b"second"
        second.release()
        assert first.acquire(timeout=EVENT_TIMEOUT)
        assert cast(int, first.token) > second_token
        first.release()

    def test_lock_is_mutually_exclusive_under_contention(
        self, open_client: Callable[[], Store]
    ) -> None:
        """Three clients taking one lock in turns never overlap, and every acquisition
        gets a strictly larger fencing token."""
        clients = [open_client() for _ in range(3)]
        ttl = self.ttl_for(clients[0])
        rounds = 4
        holders = 0
        overlaps = 0
        tokens: list[int] = []
        errors: list[BaseException] = []
        guard = threading.Lock()

        def contend(client: Store, name: str) -> None:
            nonlocal holders, overlaps
            lock = client.lock("locks/shared", ttl=ttl, value=name.encode())
            try:
                for _ in range(rounds):
                    assert lock.acquire(timeout=30), f"{name} starved"
                    with guard:
                        holders += 1
                        overlaps += holders > 1
                        tokens.append(cast(int, lock.token))
                    time.sleep(0.01)  # stay inside long enough for an overlap to show
                    with guard:
                        holders -= 1
                    lock.release()
            except BaseException as error:
                errors.append(error)

        run_concurrently(
            [
                functools.partial(contend, client, f"client-{index}")
                for index, client in enumerate(clients)
            ],
            120,
            "lock contention",
        )
        assert not errors, errors
        assert overlaps == 0
        assert len(tokens) == len(clients) * rounds
        assert tokens == sorted(set(tokens)), f"tokens not strictly increasing: {tokens}"

    def test_lock_waiter_gets_the_lock_within_one_second_of_release(
        self, store: Store, other_store: Store
    ) -> None:
        """A blocked waiter acquires the lock within 1 s of its release."""
        ttl = self.ttl_for(store)
        holder = store.lock("locks/w", ttl=ttl, value=b"holder")
        waiter = other_store.lock("locks/w", ttl=ttl, value=b"waiter")
        assert holder.acquire(timeout=EVENT_TIMEOUT)
        acquired: list[tuple[bool, float]] = []

        def wait() -> None:
            acquired.append((waiter.acquire(timeout=30), time.monotonic()))

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        time.sleep(0.3)  # let the waiter block
        assert acquired == [], "the waiter got a held lock"
        released = time.monotonic()
        holder.release()
        thread.join(HANDOVER_BOUND + EVENT_TIMEOUT)
        assert acquired and acquired[0][0], "the waiter did not get the lock"
        assert acquired[0][1] - released <= HANDOVER_BOUND
        assert store.get("locks/w").value == b"waiter"
        waiter.release()

    def test_held_lock_is_kept_alive_past_its_ttl(self, store: Store, other_store: Store) -> None:
        """A held lock does not expire while its holder runs, however long it holds it."""
        ttl = self.ttl_for(store)
        lock = store.lock("locks/long", ttl=ttl, value=b"holder")
        assert lock.acquire(timeout=EVENT_TIMEOUT)
        contender = other_store.lock("locks/long", ttl=ttl)
        assert_holds_until(
            lambda: other_store.get("locks/long").value == b"holder" and not lock.lost.is_set(),
            time.monotonic() + ttl + store.capabilities.ttl_slack + 0.5,
            message="a held lock expired",
        )
        assert contender.acquire(blocking=False) is False
        lock.release()

    def test_locks_of_one_store_hold_and_release_independently(
        self, store: Store, other_store: Store
    ) -> None:
        """Locks of one store and one ttl share one lease: a lock taken and released over
        and over, or refused, never frees another, and every held lock outlives its ttl."""
        ttl = self.ttl_for(store)
        kept = store.lock("locks/kept", ttl=ttl, value=b"kept")
        assert kept.acquire(timeout=EVENT_TIMEOUT)
        for _ in range(3):
            cycled = store.lock("locks/cycled", ttl=ttl, value=b"cycled")
            assert cycled.acquire(timeout=EVENT_TIMEOUT)
            cycled.release()
        taken = other_store.lock("locks/taken", ttl=ttl, value=b"other")
        assert taken.acquire(timeout=EVENT_TIMEOUT)
        assert store.lock("locks/taken", ttl=ttl).acquire(blocking=False) is False
        again = store.lock("locks/cycled", ttl=ttl, value=b"again")
        assert again.acquire(timeout=EVENT_TIMEOUT)
        assert_holds_until(
            lambda: (
                [(pair.key, pair.value) for pair in other_store.list("locks")]
                == [("locks/cycled", b"again"), ("locks/kept", b"kept"), ("locks/taken", b"other")]
                and kept.locked()
                and again.locked()
            ),
            time.monotonic() + ttl + store.capabilities.ttl_slack + 0.5,
            message="a held lock of the store was freed",
        )
        kept.release()
        again.release()
        taken.release()
        assert other_store.list("locks") == []

    def test_lock_of_a_stopped_holder_is_freed_after_its_ttl(
        self, open_client: Callable[[], Store], other_store: Store
    ) -> None:
        """When the holder stops (its store closes) without releasing, another client gets
        the lock within ttl + ttl_slack."""
        holder = open_client()
        ttl = self.ttl_for(holder)
        assert holder.lock("locks/dead", ttl=ttl, value=b"holder").acquire(timeout=EVENT_TIMEOUT)
        holder.close()
        stopped = time.monotonic()
        contender = other_store.lock("locks/dead", ttl=ttl, value=b"next")
        bound = self.expiry_bound(other_store, ttl) + DELIVERY_MARGIN
        assert contender.acquire(timeout=bound), "the lock was not freed by ttl + ttl_slack"
        assert time.monotonic() - stopped <= bound
        assert other_store.get("locks/dead").value == b"next"
        contender.release()

    @pytest.mark.parametrize("intrusion", ["delete", "overwrite"])
    def test_lock_lost_when_another_client_takes_its_key(
        self, store: Store, other_store: Store, intrusion: str
    ) -> None:
        """Ownership lost while held (another client deletes or overwrites the key) sets
        lost; releasing the lost lock never deletes what the other client wrote."""
        ttl = self.ttl_for(store)
        lock = store.lock("locks/l", ttl=ttl, value=b"mine")
        assert lock.acquire(timeout=EVENT_TIMEOUT)
        if intrusion == "delete":
            other_store.delete("locks/l")
        else:
            other_store.put("locks/l", b"intruder")
        wait_until(
            lock.lost.is_set,
            ttl + store.capabilities.ttl_slack + LOST_MARGIN,
            message=f"lost not set after the lock key was {intrusion}d",
        )
        if intrusion == "delete":
            contender = other_store.lock("locks/l", ttl=ttl, value=b"theirs")
            assert contender.acquire(timeout=ttl + store.capabilities.ttl_slack + LOST_MARGIN)
            expected = b"theirs"
        else:
            expected = b"intruder"
        with contextlib.suppress(libkv.LockError):
            lock.release()
        assert other_store.get("locks/l").value == expected
        if intrusion == "delete":
            assert not contender.lost.is_set()
            contender.release()

    def test_lock_and_lease_bookkeeping_is_hidden(self, store: Store, other_store: Store) -> None:
        """Lock and lease bookkeeping never appears in get/list/keys/watch: only the user's
        keys and the lock key itself (which holds the lock's value) are visible."""
        ttl = self.ttl_for(store)
        visible = {"app/config", "app/lock", "app/service"}
        with store.watch("", recursive=True) as watch, WatchRecorder(watch) as recorder:
            self.recorded_init(recorder)
            store.put("app/config", b"1")
            lease = store.lease(ttl)
            store.lease(ttl)  # a lease with no key at all
            store.put("app/service", b"up", lease=lease)
            lock = store.lock("app/lock", ttl=ttl, value=b"owner")
            assert lock.acquire(timeout=EVENT_TIMEOUT)
            contender = other_store.lock("app/lock", ttl=ttl, value=b"contender")
            assert contender.acquire(blocking=False) is False
            assert contender.acquire(timeout=0.2) is False
            for client in (store, other_store):
                assert set(keys_of(client.list(""))) == visible
                assert set(client.keys("**")) == visible
                assert client.get("app/lock").value == b"owner"
            with other_store.watch("", recursive=True) as snapshot_watch:
                snapshot = self.first_event(snapshot_watch).snapshot
            assert set(keys_of(list(snapshot))) == visible
            lock.release()
            lease.revoke()
            assert set(keys_of(store.list(""))) == {"app/config"}
            wait_until(
                lambda: any(
                    event.action is Action.DELETE and event.key == "app/service"
                    for event in recorder.events
                ),
                EVENT_TIMEOUT,
            )
        seen = {event.key for event in recorder.events[1:]}
        assert seen <= visible, f"bookkeeping leaked into the watch: {sorted(seen - visible)}"
