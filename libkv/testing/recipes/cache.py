"""Cache: mirroring a prefix, following other clients, whole transactions, listeners,
falling behind compacted history, and closing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import cast

import pytest

import libkv
from libkv import Action, Event, KVPair, Store, ops
from libkv.recipes import Cache
from libkv.testing.conformance.base import CONVERGENCE_BOUND, EVENT_TIMEOUT
from libkv.testing.flavours import Recipes
from libkv.testing.polling import wait_until
from libkv.testing.recipes.base import RecipeConformanceBase

__all__ = ["CacheRecipeConformance"]


def _replayed(events: list[Event]) -> list[KVPair]:
    """The state a listener's events rebuild (each INIT replaces it), sorted by key."""
    state: dict[str, KVPair] = {}
    for event in events:
        if event.action is Action.INIT:
            state = {pair.key: pair for pair in event.snapshot}
        elif event.pair is not None:
            state[event.key] = event.pair
        else:
            del state[event.key]
    return sorted(state.values(), key=lambda pair: pair.key)


def _failing_listener(event: Event) -> None:
    raise RuntimeError(f"a listener that fails on {event}")


class CacheRecipeConformance(RecipeConformanceBase):
    """Cache."""

    @pytest.fixture
    def open_cache(
        self, recipes: Recipes, open_url: Callable[..., Store]
    ) -> Iterator[Callable[[Store, str], Cache]]:
        """Open caches (of the test's flavour) that are closed after the test, before
        its stores (`open_url` closes them)."""
        opened: list[Cache] = []

        def open_one(store: Store, prefix: str) -> Cache:
            cache = recipes.Cache(store, prefix)
            opened.append(cache)
            return cache

        yield open_one
        for cache in opened:
            cache.close()

    @staticmethod
    def synced(cache: Cache) -> Cache:
        assert cache.wait_synced(EVENT_TIMEOUT), f"{cache} did not sync within {EVENT_TIMEOUT} s"
        return cache

    @staticmethod
    def converged(cache: Cache, store: Store, prefix: str) -> None:
        """The cache equals store.list(prefix) within the contract's convergence bound."""
        wait_until(
            lambda: cache.list() == store.list(prefix),
            CONVERGENCE_BOUND,
            message=lambda: f"cache {cache.items()} != store {store.list(prefix)}",
        )

    def test_cache_mirrors_its_prefix_and_reads_like_the_store(
        self, store: Store, open_cache: Callable[[Store, str], Cache]
    ) -> None:
        """After wait_synced the cache holds exactly the store's pairs under its prefix,
        read through get, [], in, len, iteration (key order), items() and list()."""
        store.put("app/b", b"2")
        store.put("app/a/deep", b"1")
        store.put("app", b"0")
        store.put("apple", b"not under app")
        last = store.put("zzz", b"outside")
        cache = self.synced(open_cache(store, "app"))
        expected = store.list("app")
        assert [pair.key for pair in expected] == ["app", "app/a/deep", "app/b"]
        assert cache.list() == expected
        assert list(cache) == ["app", "app/a/deep", "app/b"]
        assert cache.items() == [(pair.key, pair) for pair in expected]
        assert len(cache) == 3
        assert cache.get("app/b") == store.get("app/b")
        assert cache.get("/app/a/deep/") == store.get("app/a/deep")
        assert cache["app"].value == b"0"
        assert "app/b" in cache and "app/c" not in cache and "apple" not in cache
        assert cache.get("app/c") is None
        with pytest.raises(KeyError):
            cache["app/c"]
        with pytest.raises(libkv.KeyNotFoundError):
            cache["app/c"]
        assert cache.list("app/a") == [store.get("app/a/deep")]
        assert cache.revision >= max(pair.version for pair in store.list("app"))
        if store.capabilities.watch_every_change:  # R is the store's revision there
            assert cache.revision >= last.version
        assert cache.synced

    def test_cache_refuses_keys_outside_its_prefix(
        self, store: Store, open_cache: Callable[[Store, str], Cache]
    ) -> None:
        """A key or prefix outside the cache, or malformed, is an InvalidKeyError (a
        ValueError), never a silent None."""
        store.put("apple", b"x")
        cache = self.synced(open_cache(store, "app"))
        for call in (
            lambda: cache.get("apple"),
            lambda: cache.get("a//b"),
            lambda: cache.list("apple"),
            lambda: cache.get(1),  # type: ignore[arg-type]
        ):
            with pytest.raises(libkv.InvalidKeyError):
                call()
        assert 1 not in cache

    def test_cache_follows_changes_from_other_clients(
        self, store: Store, other_store: Store, open_cache: Callable[[Store, str], Cache]
    ) -> None:
        """Puts, deletes, transactions, delete_tree and expiry by another client reach the
        cache within the convergence bound; its revision covers every change."""
        store.put("app/keep", b"1")
        store.put("app/gone", b"1")
        cache = self.synced(open_cache(store, "app"))
        other_store.put("app/new", b"2")
        other_store.delete("app/gone")
        other_store.transaction([ops.put("app/x", b"x"), ops.put("app/y", b"y")])
        self.converged(cache, store, "app")
        other_store.delete_tree("app/keep")
        last = other_store.put("app/keep/child", b"c")
        self.converged(cache, store, "app")
        assert cache.revision >= max(pair.version for pair in store.list("app"))
        if store.capabilities.watch_every_change:  # R is the store's revision there
            assert cache.revision >= last.version
        ttl = self.ttl_for(store)
        written = time.monotonic()
        other_store.put("app/short", b"s", ttl=ttl)
        wait_until(lambda: "app/short" in cache, CONVERGENCE_BOUND)
        wait_until(
            lambda: "app/short" not in cache,
            written + self.expiry_bound(store, ttl) + CONVERGENCE_BOUND - time.monotonic(),
            message="an expired key stayed in the cache",
        )

    def test_cache_applies_a_transaction_whole(
        self, store: Store, other_store: Store, open_cache: Callable[[Store, str], Cache]
    ) -> None:
        """Readers never see part of a transaction: two keys always written together are
        always read equal from items()."""
        other_store.put_many({"app/a": b"0", "app/b": b"0"})
        cache = self.synced(open_cache(store, "app"))
        stop = threading.Event()

        def write() -> None:
            for number in range(1, 200):
                if stop.is_set():
                    return
                other_store.put_many({"app/a": str(number), "app/b": str(number)})

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        torn: list[list[tuple[str, KVPair]]] = []
        try:
            while writer.is_alive():
                items = cache.items()
                if len({pair.value for _, pair in items}) != 1:
                    torn.append(items)
        finally:
            stop.set()
            writer.join(EVENT_TIMEOUT)
        assert not torn, f"a reader saw part of a put_many: {torn[0]}"
        self.converged(cache, store, "app")

    def test_cache_tells_listeners_init_then_each_change(
        self, recipes: Recipes, store: Store, other_store: Store
    ) -> None:
        """A listener gets the INIT snapshot, then UPDATE and DELETE, each after the cache
        applied it; an unsubscribed listener gets nothing more."""
        store.put("app/a", b"1")
        seen: list[tuple[Event, KVPair | None]] = []
        cache = recipes.Cache(
            store,
            "app",
            listener=lambda event: seen.append(
                (event, cache.get(event.key) if event.action is not Action.INIT else None)
            ),
        )
        try:
            self.synced(cache)
            other_store.put("app/b", b"2")
            other_store.delete("app/a")
            wait_until(lambda: len(seen) >= 3, EVENT_TIMEOUT, message=lambda: str(seen))
            init = seen[0][0]
            assert init.action is Action.INIT and init.snapshot == (
                KVPair("app/a", b"1", init.snapshot[0].version),
            )
            assert [(event.action, event.key) for event, _ in seen[1:]] == [
                (Action.UPDATE, "app/b"),
                (Action.DELETE, "app/a"),
            ]
            assert seen[1][1] == store.get("app/b") and seen[2][1] is None
            later: list[Event] = []
            unsubscribe = cache.subscribe(later.append)
            other_store.put("app/c", b"3")
            wait_until(lambda: [event.key for event in later] == ["app/c"], EVENT_TIMEOUT)
            cache.subscribe(_failing_listener)  # a failing listener is logged, not fatal
            unsubscribe()
            other_store.put("app/d", b"4")
            self.converged(cache, store, "app")
            assert [event.key for event in later] == ["app/c"]
            assert len(seen) == 5
        finally:
            cache.close()

    def test_caches_of_one_store_follow_together(
        self, recipes: Recipes, store: Store, other_store: Store
    ) -> None:
        """Caches of one store on nested and unrelated prefixes share its follower: each
        mirrors its own prefix, and one joining while another follows makes the other
        neither miss nor repeat a change (where the backend watches every change, its
        listener gets each one in order; elsewhere what it got rebuilds the store)."""
        store.put("app/a/1", b"1")
        store.put("other/1", b"1")
        seen: list[Event] = []
        first = self.synced(recipes.Cache(store, "app/a", listener=seen.append))
        other_store.put("app/a/2", b"2")
        second = recipes.Cache(store, "app")
        other_store.put("app/a/3", b"3")
        third = recipes.Cache(store, "other")
        other_store.put("app/a/2", b"changed")
        other_store.delete("app/a/1")
        other_store.put("other/2", b"2")
        other_store.put("app/b", b"b")
        try:
            for cache, prefix in ((first, "app/a"), (second, "app"), (third, "other")):
                self.synced(cache)
                self.converged(cache, store, prefix)
            assert "app/b" not in first and "other/1" not in second and "app/a/1" not in third
            changes = [(event.action, event.key) for event in seen[1:]]
            if store.capabilities.watch_every_change:
                assert changes == [
                    (Action.UPDATE, "app/a/2"),
                    (Action.UPDATE, "app/a/3"),
                    (Action.UPDATE, "app/a/2"),
                    (Action.DELETE, "app/a/1"),
                ], seen
            assert _replayed(seen) == store.list("app/a")
        finally:
            for cache in (first, second, third):
                cache.close()
        assert first.closed and second.closed and third.closed

    def fall_behind_compaction(
        self, recipes: Recipes, store: Store, other_store: Store
    ) -> list[Event]:
        """Block a cache's listener, write and compact past it, release it; return what the
        listener saw once the cache converged. Where the driver's live watch reads the
        compacted log (memory, SQLite, Redis), this loses the watch's history."""
        blocked = threading.Event()
        release = threading.Event()
        events: list[Event] = []

        def blocking_listener(event: Event) -> None:
            events.append(event)
            if event.key == "app/block":
                blocked.set()
                release.wait(EVENT_TIMEOUT)

        async def async_listener(event: Event) -> None:
            events.append(event)
            if event.key == "app/block":
                blocked.set()
                await asyncio.to_thread(release.wait, EVENT_TIMEOUT)

        store.put("app/a", b"1")
        listener: Callable[[Event], None] = blocking_listener
        if recipes.flavour == "async":
            # The async Cache calls its listeners on the event loop, where a blocking
            # wait would hold up the loop and with it the writes below (their store
            # runs on the same loop). It awaits a coroutine listener before it applies
            # the next event, so one that waits off the loop holds the cache back as
            # the blocked listener holds back the sync cache's thread. (The facade
            # passes it to the async Cache as is.)
            listener = cast("Callable[[Event], None]", async_listener)
        cache = recipes.Cache(store, "app", listener=listener)
        try:
            self.synced(cache)
            other_store.put("app/block", b"x")
            assert blocked.wait(EVENT_TIMEOUT)
            other_store.delete("app/a")
            other_store.put("app/b", b"2")
            last = other_store.put("app/c", b"3")
            if other_store.capabilities.watch_resume:  # no history to compact otherwise
                other_store.compact(last.version)
            release.set()
            wait_until(
                lambda: cache.synced and cache.list() == store.list("app"),
                EVENT_TIMEOUT,
                message=lambda: f"cache {cache.items()} events {events}",
            )
            assert cache.revision >= last.version
            # Whatever the listener saw rebuilds the same state: INITs replace it.
            assert _replayed(events) == store.list("app")
            return events
        finally:
            release.set()
            cache.close()

    def test_cache_converges_when_its_watch_falls_behind_compacted_history(
        self, recipes: Recipes, store: Store, other_store: Store
    ) -> None:
        """A cache blocked by a slow listener while its history is compacted converges to
        the store, by the watch's own events or by a resync its listeners are told of."""
        self.fall_behind_compaction(recipes, store, other_store)

    def test_closing_a_cache_or_its_store_stops_it(
        self,
        recipes: Recipes,
        store: Store,
        other_store: Store,
        url: str,
        open_url: Callable[..., Store],
    ) -> None:
        """close() stops the cache promptly and keeps its last state; closing its store
        stops it too; wait_synced on a stopped cache returns False at once."""
        store.put("app/a", b"1")
        with recipes.Cache(store, "app") as cache:
            self.synced(cache)
        assert cache.closed and not cache.synced
        assert cache.get("app/a") is not None
        other_store.put("app/b", b"2")
        assert cache.wait_synced(EVENT_TIMEOUT) is False
        assert "app/b" not in cache
        client = open_url(url)
        second = self.synced(recipes.Cache(client, "app"))
        client.close()
        wait_until(lambda: second.closed, CONVERGENCE_BOUND, message="cache outlived its store")
        started = time.monotonic()
        assert second.wait_synced(EVENT_TIMEOUT) is False
        assert time.monotonic() - started < CONVERGENCE_BOUND
