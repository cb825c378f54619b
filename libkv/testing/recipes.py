"""The recipes' tests (libkv.recipes), written once and run on every backend.

`RecipeConformance` needs only the function-scoped `url` fixture of the conformance
suite (each test starts with an empty namespace; every `libkv.open(url)` in a test
reaches the same data). A backend whose URL another process can open subclasses
`CrossProcessRecipeConformance`, which adds the cases that need a real second process
(a killed registrant disappears; a killed leader is replaced).

Expectations are chosen from `store.capabilities`, never skipped. Timing bounds are the
contract's: 1 s for convergence, `latest_expiry(ttl)` for a dead holder's keys.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import libkv
from libkv import Action, Event, KVPair, Store, ops
from libkv.recipes import (
    Cache,
    DecodeError,
    Election,
    JSONCodec,
    Leader,
    ServiceInstance,
    ServiceRegistry,
    TextCodec,
    TypedPair,
    TypedStore,
)
from libkv.testing.conformance import (
    CONVERGENCE_BOUND,
    DELIVERY_MARGIN,
    EVENT_TIMEOUT,
    HANDOVER_BOUND,
    LOST_MARGIN,
    StoreConformance,
)
from libkv.testing.cross_process import CHILD_TIMEOUT, read_line, spawn_child
from libkv.testing.polling import assert_holds_until, wait_until

__all__ = ["CrossProcessRecipeConformance", "RecipeConformance"]


def _close_quietly(closeable: Store | Cache) -> None:
    with contextlib.suppress(libkv.StoreClosedError):
        closeable.close()


def _term(election: Election) -> tuple[bool, int | None]:
    """Whether a candidate leads, and its token (read afresh: both change under us)."""
    return election.is_leader, election.token


def _failing_listener(event: Event) -> None:
    raise RuntimeError(f"a listener that fails on {event}")


class RecipeConformance:
    """Every recipe's guarantees as tests. Subclass it and provide a function-scoped `url`."""

    ttl_for = staticmethod(StoreConformance.ttl_for)
    expiry_bound = staticmethod(StoreConformance.expiry_bound)

    # The conformance suite's clients of the test's store, closed after the test.
    store = StoreConformance.store
    other_store = StoreConformance.other_store

    @pytest.fixture
    def open_cache(self) -> Iterator[Callable[[Store, str], Cache]]:
        """Open caches that are closed after the test."""
        opened: list[Cache] = []

        def open_one(store: Store, prefix: str) -> Cache:
            cache = Cache(store, prefix)
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

    # -- Cache ----------------------------------------------------------------------------

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
        self, store: Store, other_store: Store, open_cache: Callable[[Store, str], Cache]
    ) -> None:
        """A listener gets the INIT snapshot, then UPDATE and DELETE, each after the cache
        applied it; an unsubscribed listener gets nothing more."""
        store.put("app/a", b"1")
        seen: list[tuple[Event, KVPair | None]] = []
        cache = Cache(
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

    def fall_behind_compaction(self, store: Store, other_store: Store) -> list[Event]:
        """Block a cache's listener, write and compact past it, release it; return what the
        listener saw once the cache converged. Where the driver's live watch reads the
        compacted log (memory, SQLite, Redis), this loses the watch's history."""
        blocked = threading.Event()
        release = threading.Event()
        events: list[Event] = []

        def listener(event: Event) -> None:
            events.append(event)
            if event.key == "app/block":
                blocked.set()
                release.wait(EVENT_TIMEOUT)

        store.put("app/a", b"1")
        cache = Cache(store, "app", listener=listener)
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
            state: dict[str, KVPair] = {}
            for event in events:
                if event.action is Action.INIT:
                    state = {pair.key: pair for pair in event.snapshot}
                elif event.pair is not None:
                    state[event.key] = event.pair
                else:
                    del state[event.key]
            assert sorted(state.values(), key=lambda pair: pair.key) == store.list("app")
            return events
        finally:
            release.set()
            cache.close()

    def test_cache_converges_when_its_watch_falls_behind_compacted_history(
        self, store: Store, other_store: Store
    ) -> None:
        """A cache blocked by a slow listener while its history is compacted converges to
        the store, by the watch's own events or by a resync its listeners are told of."""
        self.fall_behind_compaction(store, other_store)

    def test_closing_a_cache_or_its_store_stops_it(
        self, store: Store, other_store: Store, url: str
    ) -> None:
        """close() stops the cache promptly and keeps its last state; closing its store
        stops it too; wait_synced on a stopped cache returns False at once."""
        store.put("app/a", b"1")
        with Cache(store, "app") as cache:
            self.synced(cache)
        assert cache.closed and not cache.synced
        assert cache.get("app/a") is not None
        other_store.put("app/b", b"2")
        assert cache.wait_synced(EVENT_TIMEOUT) is False
        assert "app/b" not in cache
        client = libkv.open(url)
        second = self.synced(Cache(client, "app"))
        client.close()
        wait_until(lambda: second.closed, CONVERGENCE_BOUND, message="cache outlived its store")
        started = time.monotonic()
        assert second.wait_synced(EVENT_TIMEOUT) is False
        assert time.monotonic() - started < CONVERGENCE_BOUND

    # -- ServiceRegistry ------------------------------------------------------------------

    @staticmethod
    def membership(registry: ServiceRegistry, service: str) -> list[tuple[str, str]]:
        return [(member.id, member.address) for member in registry.instances(service)]

    def test_registry_registers_lists_and_deregisters(
        self, store: Store, other_store: Store
    ) -> None:
        """Registered instances are listed (sorted by id) by any client, with their
        address and metadata; their values are the documented JSON; deregister() and
        leaving the with block delete them at once."""
        registry = ServiceRegistry(store)
        reader = ServiceRegistry(other_store)
        ttl = self.ttl_for(store)
        second = registry.register("api", "10.0.0.2:80", instance_id="b", ttl=ttl)
        first = registry.register(
            "api", "10.0.0.1:80", instance_id="a", metadata={"zone": "eu", "weight": 2}, ttl=ttl
        )
        with registry.register("web", "http://10.0.0.3", ttl=ttl) as web:
            assert len(web.id) == 32 and web.registered
            assert reader.services() == ["api", "web"]
            assert [pair.key for pair in other_store.list("services/web")] == [
                f"services/web/{web.id}"
            ]
        assert reader.services() == ["api"]
        members = reader.instances("api")
        assert members == [
            ServiceInstance(
                "api", "a", "10.0.0.1:80", {"zone": "eu", "weight": 2}, members[0].version
            ),
            ServiceInstance("api", "b", "10.0.0.2:80", {}, members[1].version),
        ]
        assert members[0].version == other_store.get("services/api/a").version
        assert json.loads(other_store.get("services/api/a").value) == {
            "service": "api",
            "id": "a",
            "address": "10.0.0.1:80",
            "metadata": {"zone": "eu", "weight": 2},
        }
        first.deregister()
        first.deregister()  # harmless
        assert not first.registered
        assert self.membership(reader, "api") == [("b", "10.0.0.2:80")]
        second.deregister()
        assert reader.instances("api") == [] and reader.services() == []
        assert other_store.list() == []

    def test_registry_refuses_bad_names_and_values_and_writes_nothing(self, store: Store) -> None:
        """A service name or instance id that is not one key segment is an
        InvalidKeyError; metadata that is not JSON or an empty address an
        InvalidValueError; nothing is written."""
        registry = ServiceRegistry(store)
        calls: list[tuple[Callable[[], object], type[Exception]]] = [
            (lambda: registry.register("a/b", "x"), libkv.InvalidKeyError),
            (lambda: registry.register("", "x"), libkv.InvalidKeyError),
            (lambda: registry.register("api", "x", instance_id="1/2"), libkv.InvalidKeyError),
            (lambda: registry.register("api", "x", instance_id=".."), libkv.InvalidKeyError),
            (
                lambda: registry.register("api", "x", metadata={"a": object()}),
                libkv.InvalidValueError,
            ),
            (lambda: registry.register("api", ""), libkv.InvalidValueError),
            (lambda: registry.instances("a/b"), libkv.InvalidKeyError),
            (lambda: registry.watch("a/b"), libkv.InvalidKeyError),
        ]
        for call, error in calls:
            with pytest.raises(error):
                call()
        assert store.list() == []

    def test_registry_skips_keys_that_are_not_instances(self, store: Store) -> None:
        """A key under the root that is not <service>/<id> holding the JSON object is
        skipped by readers, never fatal."""
        registry = ServiceRegistry(store, root="reg")
        with registry.register("api", "10.0.0.1:80", instance_id="good", ttl=self.ttl_for(store)):
            store.put("reg/api/not-json", b"\xff{")
            store.put("reg/api/no-address", b'{"metadata": {}}')
            store.put("reg/api/deep/x", b'{"address": "a"}')
            store.put("reg/stray", b'{"address": "a"}')
            assert self.membership(registry, "api") == [("good", "10.0.0.1:80")]
            assert registry.services() == ["api"]
            with registry.watch("api") as watch:
                assert [member.id for member in watch.next(EVENT_TIMEOUT) or []] == ["good"]

    def test_registered_instance_outlives_its_ttl_and_dies_with_its_store(
        self, store: Store, other_store: Store
    ) -> None:
        """A held registration is kept alive past its ttl; when its store is closed
        without deregistering (as a dying process would), it is gone within
        latest_expiry(ttl)."""
        ttl = self.ttl_for(store)
        reader = ServiceRegistry(other_store)
        instance = ServiceRegistry(store).register("api", "10.0.0.1:80", instance_id="a", ttl=ttl)
        assert_holds_until(
            lambda: self.membership(reader, "api") == [("a", "10.0.0.1:80")],
            time.monotonic() + self.expiry_bound(store, ttl),
            message="a held registration expired",
        )
        assert instance.registered and instance.registrations == 1
        store.close()
        closed = time.monotonic()
        wait_until(
            lambda: reader.instances("api") == [],
            closed + self.expiry_bound(store, ttl) - time.monotonic(),
            message="the registration of a closed store outlived latest_expiry(ttl)",
        )

    def test_registry_watch_yields_the_membership_on_every_change(
        self, store: Store, other_store: Store
    ) -> None:
        """watch(service) yields the current membership, then the whole new membership
        after each registration, re-registration and deregistration, promptly."""
        ttl = self.ttl_for(store)
        registry = ServiceRegistry(other_store)
        other = registry.register("other", "x", ttl=ttl)

        def next_ids(watch: object) -> list[str]:
            assert isinstance(watch, libkv.recipes.Membership)
            members = watch.next(CONVERGENCE_BOUND + DELIVERY_MARGIN)
            assert members is not None, "no new membership within the convergence bound"
            return [member.id for member in members]

        with ServiceRegistry(store).watch("api") as watch:
            assert next_ids(watch) == []
            first = registry.register("api", "10.0.0.1:80", instance_id="a", ttl=ttl)
            assert next_ids(watch) == ["a"]
            second = registry.register("api", "10.0.0.2:80", instance_id="b", ttl=ttl)
            assert next_ids(watch) == ["a", "b"]
            again = registry.register("api", "10.0.0.9:80", instance_id="a", ttl=ttl)
            members = watch.next(CONVERGENCE_BOUND + DELIVERY_MARGIN)
            assert members is not None and members[0].address == "10.0.0.9:80"
            first.deregister()  # its key now belongs to the newer registration: kept
            second.deregister()
            assert next_ids(watch) == ["a"]
            again.deregister()
            assert next_ids(watch) == []
            assert watch.next(0.2) is None  # nothing changed: nothing yielded
        assert watch.next(EVENT_TIMEOUT) is None  # closed
        assert list(watch) == []
        other.deregister()

    # -- Election --------------------------------------------------------------------------

    @staticmethod
    def campaign_in_thread(election: Election) -> tuple[threading.Thread, list[float]]:
        """Campaign in a thread; the list gets the time of the election."""
        elected: list[float] = []

        def run() -> None:
            if election.campaign(timeout=30):
                elected.append(time.monotonic())

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread, elected

    def test_election_has_one_leader_at_a_time_and_hands_over_on_resign(
        self, store: Store, other_store: Store
    ) -> None:
        """One candidate leads; another cannot campaign its way in until the leader
        resigns, then it is elected within 1 s with a larger fencing token."""
        ttl = self.ttl_for(store)
        first = Election(store, "elections/main", "first", ttl=ttl)
        second = Election(other_store, "elections/main", b"second", ttl=ttl)
        assert first.leader() is None and _term(first) == (False, None)
        assert first.campaign(timeout=EVENT_TIMEOUT)
        assert first.campaign(timeout=0)  # already leader: at once
        leading, term = _term(first)
        assert leading and term is not None and not first.lost.is_set()
        assert second.leader() == b"first" and first.leader() == b"first"
        assert second.campaign(timeout=0) is False and not second.is_leader
        thread, elected = self.campaign_in_thread(second)
        assert_holds_until(lambda: not elected, time.monotonic() + 0.3)
        first.resign()
        resigned = time.monotonic()
        first.resign()  # harmless
        thread.join(HANDOVER_BOUND + EVENT_TIMEOUT)
        assert elected and elected[0] - resigned <= HANDOVER_BOUND + DELIVERY_MARGIN
        assert _term(first) == (False, None)
        leading, new_term = _term(second)
        assert leading and new_term is not None and new_term > term
        assert first.leader() == b"second"
        with second:
            assert _term(second)[0]  # still leading inside the block
        assert first.leader() is None and store.list() == []

    def test_election_observers_see_each_new_leader(self, store: Store, other_store: Store) -> None:
        """observe() yields the current leader, then each new term (value and token),
        once each; a vacancy is not yielded."""
        ttl = self.ttl_for(store)
        first = Election(other_store, "elections/main", "first", ttl=ttl)
        second = Election(other_store, "elections/main", "second", ttl=ttl)
        bound = CONVERGENCE_BOUND + DELIVERY_MARGIN
        with Election(store, "elections/main", "observer").observe() as leaders:
            assert leaders.next(0.2) is None  # no leader yet
            assert first.campaign(timeout=EVENT_TIMEOUT) and first.token is not None
            assert leaders.next(bound) == Leader(b"first", first.token)
            first.resign()
            assert second.campaign(timeout=EVENT_TIMEOUT) and second.token is not None
            assert leaders.next(bound) == Leader(b"second", second.token)
            second.resign()
            assert first.campaign(timeout=EVENT_TIMEOUT) and first.token is not None
            assert leaders.next(bound) == Leader(b"first", first.token)
            assert leaders.next(0.2) is None
            first.resign()
        assert list(leaders) == []

    def test_leader_whose_key_is_taken_is_told_it_lost(
        self, store: Store, other_store: Store
    ) -> None:
        """A leader whose key another client deletes sets lost and stops leading; it may
        campaign again, and its old term never deletes what others wrote."""
        ttl = self.ttl_for(store)
        leader = Election(store, "elections/main", "leader", ttl=ttl)
        assert leader.campaign(timeout=EVENT_TIMEOUT)
        lost = leader.lost
        other_store.delete("elections/main")
        wait_until(
            lost.is_set,
            ttl + store.capabilities.ttl_slack + LOST_MARGIN,
            message="lost not set after the leader's key was deleted",
        )
        assert not leader.is_leader and leader.token is None
        usurper = Election(other_store, "elections/main", "usurper", ttl=ttl)
        assert usurper.campaign(timeout=self.expiry_bound(store, ttl) + LOST_MARGIN)
        assert leader.campaign(timeout=0) is False
        assert leader.leader() == b"usurper"
        usurper.resign()
        assert leader.campaign(timeout=EVENT_TIMEOUT) and not leader.lost.is_set()
        leader.resign()

    # -- typed values --------------------------------------------------------------------

    def test_typed_values_go_through_every_operation(
        self, store: Store, other_store: Store
    ) -> None:
        """Through a JSON view, every Store operation takes and returns Python values,
        stored as the documented bytes any raw client reads."""
        typed = TypedStore(store, JSONCodec())
        config = {"color": "blue", "sizes": [1, 2], "on": True, "name": "é"}
        pair = typed.put("app/config", config)
        assert pair == TypedPair("app/config", config, pair.version)
        assert json.loads(other_store.get("app/config").value) == config
        assert typed.get("app/config") == pair and typed.exists("app/config")
        updated = typed.update("app/config", {"color": "green"}, version=pair.version)
        assert updated.value == {"color": "green"} and updated.version > pair.version
        created = typed.create("app/count", 1)
        with pytest.raises(libkv.KeyExistsError):
            typed.create("app/count", 2)
        assert [item.value for item in typed.put_many({"app/a": [1], "app/b": None})] == [[1], None]
        results = typed.transaction(
            [
                ops.update("app/count", 2, created.version),
                ops.put("app/c", "three"),
                ops.check("app/a", typed.get("app/a").version),
            ]
        )
        assert [None if item is None else item.value for item in results] == [2, "three", None]
        assert [(item.key, item.value) for item in typed.list("app")] == [
            ("app/a", [1]),
            ("app/b", None),
            ("app/c", "three"),
            ("app/config", {"color": "green"}),
            ("app/count", 2),
        ]
        assert [item.value for item in typed.get_many(["app/c", "app/x", "app/a"])] == [
            "three",
            [1],
        ]
        assert list(typed.keys("app/c*")) == ["app/c", "app/config", "app/count"]
        with typed.watch("app", recursive=True) as watch:
            init = watch.next_event(EVENT_TIMEOUT)
            assert init is not None and init.action is Action.INIT
            assert init.snapshot == tuple(typed.list("app"))
            TypedStore(other_store, JSONCodec()).put("app/b", {"now": 1})
            event = watch.next_event(EVENT_TIMEOUT)
            assert event is not None and event.pair is not None
            assert (event.action, event.key, event.pair.value) == (
                Action.UPDATE,
                "app/b",
                {"now": 1},
            )
            typed.delete("app/b")
            event = watch.next_event(EVENT_TIMEOUT)
            assert event is not None and (event.action, event.pair) == (Action.DELETE, None)
        count = typed.get("app/count")
        waiter = threading.Thread(target=lambda: typed.put("app/count", 3), daemon=True)
        waiter.start()
        assert typed.wait_for_change("app/count", count.version, timeout=EVENT_TIMEOUT).value == 3
        waiter.join(EVENT_TIMEOUT)
        with typed.lock("app/lock", ttl=self.ttl_for(store), value={"owner": "me"}):
            assert typed.get("app/lock").value == {"owner": "me"}
        with typed.lease(self.ttl_for(store)) as lease:
            typed.put("app/leased", [True], lease=lease)
            assert typed.get("app/leased").value == [True]
        assert not typed.exists("app/leased")
        assert typed.delete_tree("app") == 4 and store.list() == []
        assert typed.capabilities == store.capabilities

    def test_text_and_custom_codecs(self, store: Store) -> None:
        """TextCodec stores str in its encoding; any object with encode/decode is a codec."""

        class Reversed:
            def encode(self, value: str) -> bytes:
                return value[::-1].encode()

            def decode(self, data: bytes) -> str:
                return data.decode()[::-1]

        latin = TypedStore(store, TextCodec("latin-1"))
        assert latin.put("t", "café").value == "café"
        assert store.get("t").value == "café".encode("latin-1")
        reversed_view = TypedStore(store, Reversed())
        assert reversed_view.put("r", "abc").value == "abc"
        assert store.get("r").value == b"cba"
        with pytest.raises(libkv.InvalidValueError):
            latin.put("t", 1)  # type: ignore[arg-type]

    def test_undecodable_values_raise_decode_error_naming_the_key(
        self, store: Store, other_store: Store
    ) -> None:
        """A stored value the codec cannot decode raises DecodeError (a KVError and a
        ValueError) naming key and version, from reads and watches, never half an event;
        the watch carries on. A value it cannot encode is refused and nothing written."""
        typed = TypedStore(store, JSONCodec())
        typed.put("app/good", 1)
        bad = other_store.put("app/bad", b"{not json")
        for call in (lambda: typed.get("app/bad"), lambda: typed.list("app")):
            with pytest.raises(DecodeError) as raised:
                call()
            error = raised.value
            assert isinstance(error, libkv.KVError) and isinstance(error, ValueError)
            assert (error.key, error.version) == ("app/bad", bad.version)
            assert "app/bad" in str(error) and isinstance(error.__cause__, ValueError)
        with typed.watch("app", recursive=True) as watch:
            with pytest.raises(DecodeError, match="app/bad"):
                watch.next_event(EVENT_TIMEOUT)  # the INIT holds the bad value
            other_store.put("app/worse", b"\xff")
            other_store.put("app/fine", b"[2]")
            with pytest.raises(DecodeError, match="app/worse"):
                watch.next_event(EVENT_TIMEOUT)
            event = watch.next_event(EVENT_TIMEOUT)
            assert event is not None and event.pair is not None and event.pair.value == [2]
        with pytest.raises(libkv.InvalidValueError, match="app/new"):
            typed.put("app/new", object())
        with pytest.raises(libkv.InvalidValueError, match="app/tx"):
            typed.transaction([ops.put("app/ok", 1), ops.put("app/tx", {1, 2})])
        with pytest.raises(libkv.InvalidValueError, match="app/many"):
            typed.put_many({"app/ok": 1, "app/many": object()})
        assert [pair.key for pair in store.list("app")] == [
            "app/bad",
            "app/fine",
            "app/good",
            "app/worse",
        ]


class CrossProcessRecipeConformance(RecipeConformance):
    """RecipeConformance plus the cases that need the store reachable from another process."""

    def test_killed_registrant_disappears_within_latest_expiry(
        self, url: str, store: Store
    ) -> None:
        """A process killed (SIGKILL) while registered leaves the registry within
        latest_expiry(ttl) of its death, and watchers are told."""
        ttl = self.ttl_for(store)
        registry = ServiceRegistry(store)
        with registry.watch("api") as watch:
            assert watch.next(EVENT_TIMEOUT) == []
            child = spawn_child(REGISTERING_CHILD, url, str(ttl), "dying", "yes")
            try:
                assert read_line(child, CHILD_TIMEOUT) == "ready"
                members = watch.next(CONVERGENCE_BOUND + DELIVERY_MARGIN)
                assert members is not None and [member.id for member in members] == ["dying"]
                child.kill()
                child.wait(CHILD_TIMEOUT)
                died = time.monotonic()
            finally:
                if child.poll() is None:
                    child.kill()
                child.communicate(timeout=CHILD_TIMEOUT)
            deadline = died + self.expiry_bound(store, ttl)
            wait_until(
                lambda: registry.instances("api") == [],
                deadline - time.monotonic(),
                message="a killed process's instance outlived latest_expiry(ttl)",
            )
            assert watch.next(deadline + DELIVERY_MARGIN - time.monotonic()) == []

    def test_paused_registrant_is_told_it_was_lost_and_registers_again(
        self, url: str, store: Store
    ) -> None:
        """A process paused (SIGSTOP) past its lease's expiry drops out of the registry;
        resumed, its handle reports the loss and, unless told not to, registers again by
        itself (a new version); with reregister=False it stays out."""
        ttl = self.ttl_for(store)
        registry = ServiceRegistry(store)
        children = {
            name: spawn_child(REGISTERING_CHILD, url, str(ttl), name, again)
            for name, again in (("comeback", "yes"), ("quitter", "no"))
        }
        try:
            for child in children.values():
                assert read_line(child, CHILD_TIMEOUT) == "ready"
            before = {member.id: member.version for member in registry.instances("api")}
            assert sorted(before) == ["comeback", "quitter"]
            for child in children.values():
                os.kill(child.pid, signal.SIGSTOP)
            paused = time.monotonic()
            wait_until(
                lambda: registry.instances("api") == [],
                paused + self.expiry_bound(store, ttl) - time.monotonic(),
                message="a paused process's instances outlived latest_expiry(ttl)",
            )
            for child in children.values():
                os.kill(child.pid, signal.SIGCONT)
            for child in children.values():
                assert read_line(child, CHILD_TIMEOUT) == "lost"
            assert read_line(children["comeback"], CHILD_TIMEOUT) == "registered 2"
            after = registry.instances("api")
            assert [member.id for member in after] == ["comeback"]
            assert after[0].version > before["comeback"]
        finally:
            for child in children.values():
                os.kill(child.pid, signal.SIGCONT)
                child.kill()
                child.communicate(timeout=CHILD_TIMEOUT)

    def test_killed_leader_is_replaced_within_latest_expiry(self, url: str, store: Store) -> None:
        """A leader in another process killed by SIGKILL is replaced by a waiting
        candidate within latest_expiry(ttl), with a larger fencing token, and observers
        see the new term."""
        ttl = self.ttl_for(store)
        candidate = Election(store, "elections/main", "survivor", ttl=ttl)
        child = spawn_child(LEADING_CHILD, url, str(ttl))
        try:
            child_token = int(read_line(child, CHILD_TIMEOUT))
            with candidate.observe() as leaders:
                assert leaders.next(EVENT_TIMEOUT) == Leader(b"doomed", child_token)
                thread, elected = self.campaign_in_thread(candidate)
                child.kill()
                child.wait(CHILD_TIMEOUT)
                died = time.monotonic()
                bound = self.expiry_bound(store, ttl) + DELIVERY_MARGIN
                thread.join(bound + EVENT_TIMEOUT)
                assert elected, "the killed leader was not replaced"
                assert elected[0] - died <= bound
                assert candidate.token is not None and candidate.token > child_token
                new_term = leaders.next(CONVERGENCE_BOUND + DELIVERY_MARGIN)
                assert new_term == Leader(b"survivor", candidate.token)
        finally:
            if child.poll() is None:
                child.kill()
            child.communicate(timeout=CHILD_TIMEOUT)
        candidate.resign()


REGISTERING_CHILD = """
import sys
import libkv
from libkv.recipes import ServiceRegistry
from libkv.testing import wait_until
store = libkv.open(sys.argv[1])
instance = ServiceRegistry(store).register(
    "api", "127.0.0.1:1", instance_id=sys.argv[3], ttl=float(sys.argv[2]),
    reregister=sys.argv[4] == "yes",
)
print("ready", flush=True)
instance.lost.wait()
print("lost", flush=True)
if instance.reregister:
    wait_until(lambda: not instance.lost.is_set(), 30)
    print("registered", instance.registrations, flush=True)
sys.stdin.readline()
"""

LEADING_CHILD = """
import sys
import libkv
from libkv.recipes import Election
store = libkv.open(sys.argv[1])
election = Election(store, "elections/main", "doomed", ttl=float(sys.argv[2]))
assert election.campaign(timeout=10)
print(election.token, flush=True)
sys.stdin.readline()
"""
