"""What only the async recipes (libkv.aio.recipes) have, on the memory and SQLite drivers.

Their behaviours are the recipe conformance suite's, which runs in both flavours
(tests/test_recipes.py, libkv.testing.recipes). Here: the API's shape (reads are plain
calls, listeners may be coroutine functions, ``register()`` is awaitable and an async
context manager, ``async for`` and ``anext``), a loop paused past a lease's expiry, a
task cancelled in a recipe call ends promptly and leaves no lease, and once the recipes
and their store are closed no task of libkv is pending and no thread of libkv is alive.
Each test is a coroutine run by ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import libkv
import libkv.aio
import libkv.recipes
from libkv import Action, Event, KVPair
from libkv.aio import AsyncStore
from libkv.aio.recipes import (
    Cache,
    Election,
    JSONCodec,
    ServiceInstance,
    ServiceRegistry,
    TypedStore,
)
from libkv.testing.conformance.base import (
    EVENT_TIMEOUT,
    LOST_MARGIN,
)
from libkv.testing.polling import async_wait_until, wait_until

CANCEL_BOUND = 1.0
"""A task cancelled in a recipe call ends within this (the issue's figure)."""


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://aio-recipes-{uuid.uuid4().hex}"
    return f"sqlite:///{tmp_path}/kv.db"


def run(test: Callable[[AsyncStore, AsyncStore], Coroutine[Any, Any, None]], url: str) -> None:
    """Run ``test(store, other_store)`` (two clients of ``url``) in a new loop; then check
    that closing both left no task of libkv pending and no thread of libkv alive."""

    async def main() -> None:
        async with libkv.aio.open(url) as store, libkv.aio.open(url) as other_store:
            _stores[:] = [store, other_store]
            try:
                await test(store, other_store)
            finally:
                _stores.clear()
        assert libkv_tasks() == [], "a libkv task outlived the recipes and their store"

    asyncio.run(main())
    assert libkv_threads() == [], "a libkv thread outlived the store"


def libkv_tasks() -> list[str]:
    """The names of the tasks still pending besides the caller."""
    return sorted(
        task.get_name() for task in asyncio.all_tasks() if task is not asyncio.current_task()
    )


_stores: list[AsyncStore] = []
"""The stores of the running test (set by run())."""


def held_leases() -> list[int]:
    """The leases the test's stores still keep alive: granted, neither stopped nor lost."""
    return sorted(
        lease.id
        for store in _stores
        for lease in store._leases
        if not lease._stopped.is_set() and not lease.lost.is_set()
    )


def libkv_threads() -> list[str]:
    return sorted(
        thread.name for thread in threading.enumerate() if thread.name.startswith("libkv")
    )


def ttl_for(store: AsyncStore) -> float:
    return max(store.capabilities.ttl_min, 1.0)


async def cancel_while_blocked(call: Awaitable[object]) -> None:
    """Start ``call``, check that it blocks, cancel it: CancelledError within 1 s."""
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait([task], timeout=0.2)
    assert not done, f"the call did not block: {task}"
    task.cancel()
    cancelled = time.monotonic()
    done, _ = await asyncio.wait([task], timeout=CANCEL_BOUND)
    assert done, f"a cancelled call still ran {CANCEL_BOUND} s later"
    assert time.monotonic() - cancelled <= CANCEL_BOUND
    with pytest.raises(asyncio.CancelledError):
        task.result()


# -- Cache ------------------------------------------------------------------------------


def test_cache_reads_are_plain_and_listeners_may_be_coroutine_functions(url: str) -> None:
    """The cache's reads are plain calls (no await); a listener may be a plain function
    or a coroutine function, which is awaited: both get INIT, then each change once
    applied, in order; ``async with`` closes the cache."""

    async def test(store: AsyncStore, other_store: AsyncStore) -> None:
        await store.put("app/b", b"2")
        seen: list[tuple[Action, str, KVPair | None]] = []
        awaited: list[Event] = []

        async def slow_listener(event: Event) -> None:
            await asyncio.sleep(0)  # a yield: the cache's task awaits a coroutine listener
            awaited.append(event)

        cache = Cache(
            store,
            "app",
            listener=lambda event: seen.append((event.action, event.key, cache.get(event.key))),
        )
        async with cache:
            cache.subscribe(slow_listener)
            assert await cache.wait_synced(EVENT_TIMEOUT)
            assert cache.list() == await store.list("app")
            assert list(cache) == ["app/b"] and len(cache) == 1
            assert cache["app/b"].value == b"2" and "app/c" not in cache
            await other_store.put("app/c", b"3")
            await other_store.delete("app/b")
            expected = await store.list("app")
            await async_wait_until(
                lambda: len(awaited) == 3, EVENT_TIMEOUT, message=lambda: str(awaited)
            )
            assert [(event.action, event.key) for event in awaited] == [
                (Action.INIT, "app"),
                (Action.UPDATE, "app/c"),
                (Action.DELETE, "app/b"),
            ]
            assert seen == [
                (Action.INIT, "app", None),
                (Action.UPDATE, "app/c", expected[0]),
                (Action.DELETE, "app/b", None),
            ]
        assert cache.closed

    run(test, url)


# -- ServiceRegistry ----------------------------------------------------------------------


def test_registry_registers_lists_and_deregisters(url: str) -> None:
    """register() is awaitable and an async context manager (bad input raises at the
    call); deregister, and leaving the block, delete the key and revoke its lease."""

    async def test(store: AsyncStore, other_store: AsyncStore) -> None:
        registry = ServiceRegistry(store)
        reader = ServiceRegistry(other_store)
        ttl = ttl_for(store)
        with pytest.raises(libkv.InvalidKeyError):  # at the call, not at the await
            registry.register("a/b", "x")
        assert held_leases() == []
        first = await registry.register(
            "api", "10.0.0.1:80", instance_id="a", metadata={"zone": "eu"}, ttl=ttl
        )
        async with registry.register("web", "http://10.0.0.3", ttl=ttl) as web:
            assert len(web.id) == 32 and web.registered and web.registrations == 1
            assert await reader.services() == ["api", "web"]
        assert "deregistered" in repr(web) and await reader.services() == ["api"]
        members = await reader.instances("api")
        assert members == [
            ServiceInstance("api", "a", "10.0.0.1:80", {"zone": "eu"}, members[0].version)
        ]
        assert isinstance(members[0], libkv.recipes.ServiceInstance)  # one class, both flavours
        await first.deregister()
        await first.deregister()  # harmless
        assert await reader.instances("api") == [] and await other_store.list() == []
        assert held_leases() == []

    run(test, url)


@pytest.mark.parametrize("reregister", [True, False], ids=["reregister", "stay-out"])
def test_lost_registration_is_told_by_its_lease_and_registers_again(
    url: str, reregister: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A loop paused past its lease's expiry (as a paused process) drops out of the
    registry; resumed, the handle hears of the loss from its lease's listener and
    registers again under a new lease (a new version), or stays out and lost."""

    async def test(store: AsyncStore, other_store: AsyncStore) -> None:
        ttl = ttl_for(store)
        registry = ServiceRegistry(store)
        instance = await registry.register(
            "api", "10.0.0.1:80", instance_id="a", ttl=ttl, reregister=reregister
        )
        before = (await other_store.get("services/api/a")).version
        with libkv.open(url) as observer:  # a sync client: it reads while the loop is paused
            # The pause: the loop runs nothing until the backend expired the lease.
            wait_until(
                lambda: observer.list("services") == [],
                store.capabilities.latest_expiry(ttl) + LOST_MARGIN,
                message="a registration whose keep-alives stopped outlived latest_expiry(ttl)",
            )
        bound = ttl / 3 + LOST_MARGIN  # the lease's next keep-alive tells it
        if reregister:
            await async_wait_until(lambda: instance.registrations == 2, bound)
            assert instance.registered and not instance.lost.is_set()
            after = await other_store.get("services/api/a")
            assert after.version > before
            assert "lost its lease; re-registering" in caplog.text
        else:
            await async_wait_until(instance.lost.is_set, bound)
            assert not instance.registered and instance.registrations == 1
            assert await other_store.list("services") == []
            assert "lost its lease; not re-registering" in caplog.text
        assert not [name for name in libkv_threads() if "instance" in name]
        await instance.deregister()
        assert await other_store.list("services") == [] and held_leases() == []

    caplog.set_level(logging.WARNING, logger="libkv.recipes.discovery")
    run(test, url)


def test_sync_registration_starts_no_thread_of_its_own(url: str) -> None:
    """The sync handle adds no thread: its lease is kept alive by the store's one
    keep-alive worker, which serves another lease already."""
    with libkv.open(url) as store:
        ttl = max(store.capabilities.ttl_min, 1.0)
        with store.lease(ttl) as lease:  # the store's threads (keep-alive, reaper) start
            store.put("warm-up", b"", lease=lease)
            before = set(threading.enumerate())
            assert any(thread.name.startswith("libkv-keepalive") for thread in before)
            with libkv.recipes.ServiceRegistry(store).register("api", "10.0.0.1:80", ttl=ttl):
                added = [thread.name for thread in set(threading.enumerate()) - before]
                assert added == [], added


# -- Election -----------------------------------------------------------------------------


# -- TypedStore ---------------------------------------------------------------------------


def test_typed_watch_is_an_async_iterator_and_context(url: str) -> None:
    """A typed watch iterates with ``anext`` (decoded events) and ``async with`` closes it."""

    async def test(store: AsyncStore, other_store: AsyncStore) -> None:
        typed = TypedStore(store, JSONCodec())
        async with typed.watch("config", recursive=True) as watch:
            init = await anext(watch)
            assert init.action is Action.INIT and init.snapshot == ()
            await other_store.put("config/a", b'"changed"')
            update = await anext(watch)
            assert update.pair is not None and update.pair.value == "changed"
        assert watch.closed

    run(test, url)


# -- cancellation and closing -------------------------------------------------------------


def test_cancelled_campaign_ends_promptly_and_leaves_no_lease(url: str) -> None:
    """A campaign blocked behind a leader, cancelled, raises CancelledError within 1 s;
    it leaves no lease granted and nothing it wrote remains."""

    async def test(store: AsyncStore, other_store: AsyncStore) -> None:
        ttl = ttl_for(store)
        leader = Election(other_store, "elections/main", "leader", ttl=ttl)
        assert await leader.campaign(timeout=EVENT_TIMEOUT)
        assert len(held_leases()) == 1
        candidate = Election(store, "elections/main", "candidate", ttl=ttl)
        await cancel_while_blocked(candidate.campaign())
        assert len(held_leases()) == 1, held_leases()  # the leader's alone
        assert not candidate.is_leader and await store.get("elections/main") == (
            await other_store.get("elections/main")
        )
        assert (await store.get("elections/main")).value == b"leader"
        await leader.resign()
        assert await store.list() == []
        # The leader's store keeps its locks' lease for its next lock, and revokes it
        # at its first keep-alive after a whole keep-alive period (ttl/3) unused.
        await async_wait_until(lambda: held_leases() == [], ttl, message=held_leases)

    run(test, url)


@pytest.mark.parametrize("view", ["membership", "leaders"])
def test_cancelled_view_wait_ends_promptly(url: str, view: str) -> None:
    """A task blocked in a membership's or a leader watch's next(), cancelled, raises
    CancelledError within 1 s; the view still works and closes cleanly."""

    async def test(store: AsyncStore, other_store: AsyncStore) -> None:
        watch = (
            ServiceRegistry(store).watch("api")
            if view == "membership"
            else Election(store, "elections/main", "observer").observe()
        )
        async with watch:
            if view == "membership":
                assert await watch.next(EVENT_TIMEOUT) == []  # the empty membership first
            await cancel_while_blocked(watch.next(None))
            assert held_leases() == []
            assert not watch.cache.closed and watch.cache.synced
        assert watch.cache.closed
        assert [item async for item in watch] == []

    run(test, url)


def test_cancelled_register_leaves_nothing_behind(url: str) -> None:
    """register() cancelled at any point leaves neither a key nor a lease: it either
    completed (and is deregistered here) or left no trace. Cancelled at successive
    loop iterations, and once its lease is granted (while it writes the key)."""

    async def test(store: AsyncStore, other_store: AsyncStore) -> None:
        registry = ServiceRegistry(store)
        outcomes: list[str] = []

        async def cancel_when(ready: Callable[[], Awaitable[object]], attempt: str) -> None:
            task = asyncio.ensure_future(
                registry.register("api", "10.0.0.1:80", instance_id="a", ttl=ttl_for(store))
            )
            await ready()
            task.cancel()
            try:
                instance = await task
            except asyncio.CancelledError:
                outcomes.append(attempt)
            else:
                await instance.deregister()
            assert held_leases() == [], f"cancelled {attempt}: a lease is left"
            assert await other_store.list() == [], f"cancelled {attempt}: the key is left"

        async def iterations(count: int) -> None:
            for _ in range(count):
                await asyncio.sleep(0)  # one loop iteration: the next cancellation point

        async def lease_granted() -> None:
            await async_wait_until(held_leases, EVENT_TIMEOUT, interval=0)

        for count in range(40):
            await cancel_when(functools.partial(iterations, count), f"after {count} iterations")
        for attempt in range(5):
            await cancel_when(lease_granted, f"with its lease granted ({attempt})")
        assert outcomes[0] == "after 0 iterations", outcomes
        if not store.capabilities.native_async:  # its writes wait for a worker thread
            assert any(attempt.startswith("with its lease") for attempt in outcomes), outcomes

    run(test, url)


def test_cancelled_deregister_still_deletes_the_key(url: str) -> None:
    """deregister() cancelled while it revokes still finishes: the key is gone."""

    async def test(store: AsyncStore, other_store: AsyncStore) -> None:
        instance = await ServiceRegistry(store).register("api", "x", ttl=ttl_for(store))
        task = asyncio.ensure_future(instance.deregister())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not instance.registered
        assert await other_store.list() == [] and held_leases() == []

    run(test, url)


def test_closed_recipes_and_store_leave_no_task_and_no_thread(url: str) -> None:
    """Every recipe in use at once; once each is closed and the store too, no libkv task
    is pending and no libkv thread alive (``run`` checks both)."""

    async def test(store: AsyncStore, other_store: AsyncStore) -> None:
        ttl = ttl_for(store)
        registry = ServiceRegistry(store)
        cache = Cache(store, "")
        membership = registry.watch("api")
        election = Election(store, "elections/main", "me", ttl=ttl)
        leaders = election.observe()
        instance = await registry.register("api", "10.0.0.1:80", ttl=ttl)
        assert await election.campaign(timeout=EVENT_TIMEOUT)
        assert await membership.next(EVENT_TIMEOUT) is not None
        assert await leaders.next(EVENT_TIMEOUT) is not None
        assert await cache.wait_synced(EVENT_TIMEOUT)
        # three caches share the store's one follower, beside its one keep-alive worker
        assert len(held_leases()) == 2, held_leases()
        assert sorted(libkv_tasks()) == [
            f"libkv-caches-{store.url.scheme}",
            f"libkv-keepalive-{store.url.scheme}",
        ], libkv_tasks()
        await instance.deregister()
        await election.resign()
        await leaders.close()
        await membership.close()
        await cache.close()
        # Only the store's keep-alive worker is left (it lingers for the next lease);
        # it ends with the store, which ``run`` closes and checks.
        assert [name for name in libkv_tasks() if not name.startswith("libkv-keepalive")] == []

    run(test, url)
