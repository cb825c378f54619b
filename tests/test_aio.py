"""libkv.aio as the issue writes it: every call of the async API on memory and SQLite.

The contract itself is checked in both flavours by the conformance suite
(tests/test_conformance_*.py); these tests pin the async API's shape: which calls are
plain and which are awaited, the awaitable-or-context lease, ``lost`` as an
``asyncio.Event``, async iteration, and the same errors as the sync flavour. Each
test is a coroutine run by ``asyncio.run`` in debug mode.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import libkv
import libkv.aio
from libkv import Action, KVPair, ops
from libkv.aio import AsyncStore
from libkv.keepalive import IDLE_LINGER
from libkv.testing.conformance.base import EVENT_TIMEOUT
from libkv.testing.polling import assert_holds_until, wait_until


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://aio-{uuid.uuid4().hex}/app"
    return f"sqlite:///{tmp_path}/kv.db"


def run(test: Callable[[AsyncStore], Coroutine[Any, Any, None]], url: str) -> None:
    """Run ``test(store)`` in a new loop in debug mode, then close the store."""

    async def main() -> None:
        async with libkv.aio.open(url) as store:
            await test(store)

    asyncio.run(main(), debug=True)


def test_open_is_a_plain_call_returning_an_async_store(url: str) -> None:
    """open() needs no loop and does no I/O; the store's attributes are plain."""
    store = libkv.aio.open(url)
    assert isinstance(store, AsyncStore)
    assert store.closed is False
    assert isinstance(store.capabilities, libkv.Capabilities)
    assert store.capabilities.native_async is True
    assert store.url.scheme == url.split(":")[0]

    async def close_twice() -> None:
        await store.close()
        await store.close()

    asyncio.run(close_twice())
    assert store.closed is True


def test_every_public_method_has_its_twin() -> None:
    """Store, Watch, Lease and Lock and their async twins have the same public names
    and the same parameters (names, kinds and defaults)."""
    from libkv._async.lease import AsyncLease
    from libkv._async.lock import AsyncLock
    from libkv._async.watching import AsyncWatch

    pairs = [
        (libkv.Store, AsyncStore),
        (libkv.Watch, AsyncWatch),
        (libkv.Lease, AsyncLease),
        (libkv.Lock, AsyncLock),
    ]
    for sync_class, async_class in pairs:
        sync_names = {name for name in dir(sync_class) if not name.startswith("_")}
        async_names = {name for name in dir(async_class) if not name.startswith("_")}
        assert sync_names == async_names, (sync_class, sync_names ^ async_names)
        for name in sync_names:
            sync_member = getattr(sync_class, name)
            if not callable(sync_member) or isinstance(sync_member, type):
                continue
            sync_parameters = inspect.signature(sync_member).parameters
            async_parameters = inspect.signature(getattr(async_class, name)).parameters
            assert [(p.name, p.kind, p.default) for p in sync_parameters.values()] == [
                (p.name, p.kind, p.default) for p in async_parameters.values()
            ], f"{async_class.__name__}.{name}"


def test_key_value_calls(url: str) -> None:
    async def test(store: AsyncStore) -> None:
        put = await store.put("config/color", "blue", ttl=None, lease=None)
        assert isinstance(put, KVPair) and put.value == b"blue"
        assert (await store.get("config/color")).version == put.version
        created = await store.create("config/size", "1")
        updated = await store.update("config/size", "2", version=created.version)
        assert updated.value == b"2"
        assert await store.exists("config/size") is True
        assert [pair.key for pair in await store.list("config")] == [
            "config/color",
            "config/size",
        ]
        many = await store.get_many(["config/color", "config/missing"])
        assert [pair.key for pair in many] == ["config/color"]  # missing keys skipped
        assert [pair.key for pair in await store.put_many({"x/a": "1", "x/b": "2"})] == [
            "x/a",
            "x/b",
        ]
        results = await store.transaction(
            [ops.put("x/c", "3"), ops.check("config/color", put.version)]
        )
        assert results[0] is not None and results[1] is None
        keys = store.keys("x/*")
        assert hasattr(keys, "__anext__")
        assert sorted([key async for key in keys]) == ["x/a", "x/b", "x/c"]
        with pytest.raises(libkv.KeyModifiedError):
            await store.update("config/size", "3", version=created.version)
        with pytest.raises(libkv.KeyNotFoundError):
            await store.get("config/missing")
        with pytest.raises(libkv.InvalidKeyError):
            await store.put("a//b", "v")
        assert await store.delete("config/size", version=None) is None
        assert await store.delete_tree("x") == 3
        async with store.watch("config") as watch:
            await watch.next_event(EVENT_TIMEOUT)
            await store.compact(watch.revision)

    run(test, url)


def test_watch_is_a_plain_call_and_an_async_iterator(url: str) -> None:
    async def test(store: AsyncStore) -> None:
        await store.put("config/color", "blue")
        watch = store.watch("config", recursive=True, since=None)
        async with watch:
            first = await watch.next_event(EVENT_TIMEOUT)
            assert first is not None and first.action is Action.INIT
            assert isinstance(watch.revision, int)
            assert await watch.next_event(0.2) is None
            await store.put("config/color", "red")
            async for event in watch:
                assert event.action is Action.UPDATE and event.key == "config/color"
                break
            await store.delete("config/color")
            deleted = await watch.next_event(EVENT_TIMEOUT)
            assert deleted is not None and deleted.action is Action.DELETE
        assert watch.closed

    run(test, url)


def test_lease_is_awaitable_and_a_context(url: str) -> None:
    async def test(store: AsyncStore) -> None:
        async with store.lease(10) as lease:
            assert isinstance(lease.lost, asyncio.Event)
            assert lease.id and lease.ttl == 10 and not lease.lost.is_set()
            await store.put("eph", "x", lease=lease)
        assert await store.exists("eph") is False
        lease = await store.lease(10)
        await store.put("eph", "y", lease=lease)
        await lease.revoke()
        assert await store.exists("eph") is False
        with pytest.raises(libkv.InvalidArgumentError):
            await store.lease(0)

    run(test, url)


def test_lock_is_a_plain_call_and_a_context(url: str) -> None:
    async def test(store: AsyncStore) -> None:
        async with store.lock("jobs/nightly", ttl=15) as lock:
            assert lock.locked() and isinstance(lock.token, int)
            assert isinstance(lock.lost, asyncio.Event) and not lock.lost.is_set()
            other = store.lock("jobs/nightly")
            assert await other.acquire(blocking=False) is False
            assert await other.acquire(blocking=True, timeout=0.2) is False
        assert not lock.locked()
        lock = store.lock("jobs/x")
        assert await lock.acquire(blocking=True, timeout=None) is True
        await lock.release()
        with pytest.raises(libkv.LockError):
            await lock.release()

    run(test, url)


def test_wait_for_change_returns_the_change(url: str) -> None:
    async def test(store: AsyncStore) -> None:
        pair = await store.put("config/color", "blue")
        waiter = asyncio.ensure_future(
            store.wait_for_change("config/color", pair.version, timeout=5)
        )
        await asyncio.sleep(0.05)
        await store.put("config/color", "green")
        changed = await asyncio.wait_for(waiter, EVENT_TIMEOUT)
        assert changed is not None and changed.value == b"green"

    run(test, url)


def test_a_closed_store_raises_store_closed(url: str) -> None:
    async def test(store: AsyncStore) -> None:
        await store.close()
        with pytest.raises(libkv.StoreClosedError):
            await store.get("a")
        with pytest.raises(libkv.StoreClosedError):
            store.watch("a")

    run(test, url)


def test_the_generated_sync_modules_are_current() -> None:
    """scripts/unasync.py --check: the sync flavour is what the async source makes."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(root / "scripts" / "unasync.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=root,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_store_serves_one_loop_after_another(url: str) -> None:
    """Opened outside any loop, a store serves asyncio.run() after asyncio.run(): its
    background work (the keep-alive worker) starts again in the loop that needs it."""
    store = libkv.aio.open(url)

    async def use(round_number: int) -> None:
        await store.put("rounds/current", str(round_number))
        async with store.watch("rounds", recursive=True) as watch:
            first = await watch.next_event(EVENT_TIMEOUT)
            assert first is not None and first.action is Action.INIT
        async with store.lease(5) as lease:
            await store.put("rounds/leased", "x", lease=lease)
            await asyncio.sleep(5 / 3 + 0.2)  # one keep-alive runs in this loop
            assert not lease.lost.is_set()
        async with store.lock("rounds/lock", ttl=5) as lock:
            assert lock.locked()

    asyncio.run(use(1), debug=True)
    asyncio.run(use(2), debug=True)
    asyncio.run(store.close())
    assert store.closed


def _keepalive_workers() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("libkv-keepalive")}


def _one_alive(started: frozenset[threading.Thread]) -> bool:
    """Whether exactly one of the ``started`` keep-alive workers is alive."""
    return len(_keepalive_workers() & started) == 1


def _keepalive_tasks() -> set[asyncio.Task[Any]]:
    return {task for task in asyncio.all_tasks() if task.get_name().startswith("libkv-keepalive")}


def test_lock_cycles_reuse_one_keepalive_worker(url: str) -> None:
    """The store's keep-alive worker outlives the last lease by IDLE_LINGER seconds, so
    a lock taken and released over and over starts it once, not once per cycle (a
    thread start per cycle was a tenth of a Redis lock cycle); it ends with the store.
    In both flavours."""
    linger = time.monotonic() + IDLE_LINGER / 5
    workers: set[threading.Thread] = set()  # the objects: an ident may be reused
    with libkv.open(url) as store:
        for _ in range(3):
            with store.lock("cycles/lock", ttl=5):
                workers |= _keepalive_workers()
            assert_holds_until(functools.partial(_one_alive, frozenset(workers)), linger)
            linger += IDLE_LINGER / 5
    assert len(workers) == 1
    wait_until(lambda: not any(thread.is_alive() for thread in workers), EVENT_TIMEOUT)

    async def cycles(store: AsyncStore) -> None:
        linger = time.monotonic() + IDLE_LINGER / 5
        tasks: set[asyncio.Task[Any]] = set()
        for _ in range(3):
            async with store.lock("cycles/lock", ttl=5):
                tasks |= _keepalive_tasks()
            while time.monotonic() < linger:
                assert len(_keepalive_tasks() & tasks) == 1
                await asyncio.sleep(0.02)
            linger += IDLE_LINGER / 5
        assert len(tasks) == 1
        await store.close()
        assert all(task.done() for task in tasks)

    run(cycles, url)


def test_open_touches_no_file_and_the_first_call_reports_a_bad_path(tmp_path: Path) -> None:
    """open() of SQLite does no I/O (the file is opened on the store's worker thread at
    the first call); a path that cannot be opened fails each call with
    NotReachableError, not open()."""
    path = tmp_path / "later" / "kv.db"
    store = libkv.aio.open(f"sqlite://{path}")
    assert not path.exists() and not path.parent.exists()
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    broken = libkv.aio.open(f"sqlite://{blocker}/kv.db")

    async def use() -> None:
        await store.put("a", "1")
        assert path.exists()
        for _ in range(2):
            with pytest.raises(libkv.NotReachableError):
                await broken.get("a")
        await store.close()
        await broken.close()

    asyncio.run(use(), debug=True)


def test_load_imports_a_driver_ahead_and_names_an_unknown_scheme() -> None:
    libkv.aio.load("sqlite")
    libkv.aio.load("MEMORY")
    with pytest.raises(libkv.UnknownSchemeError):
        libkv.aio.load("no-such-scheme")


def test_worker_pool_runs_waiting_calls_side_by_side() -> None:
    """A sync-only driver's calls made at once each get a worker thread (up to the
    pool's size): none queues behind another that may block for a whole timeout. Here
    eight calls meet at a barrier, which only eight threads side by side can pass."""
    import threading

    from libkv.aio.bridge import WorkerPool

    barrier = threading.Barrier(8, timeout=EVENT_TIMEOUT)

    async def run() -> None:
        pool = WorkerPool(16, "libkv-test")
        try:
            await pool.run(lambda: None)  # one idle thread when the eight arrive
            await asyncio.gather(*(pool.run(barrier.wait) for _ in range(8)))
        finally:
            pool.close()
            await pool.join()

    asyncio.run(run())


def test_bridged_next_event_zero_waits_for_a_change_the_feed_must_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the bridge (a sync-only driver), next_event(0) returns a change the feed
    has ready even when the feed must read it first (ZooKeeper's reads the nodes its
    watch named), as the sync flavour's does; it used to return None meanwhile, so an
    async Cache, which applies together what next_event(0) drains, showed part of a
    put_many on ZooKeeper."""
    from libkv.aio.bridge import ThreadedBackend
    from libkv.drivers.memory import open_memory
    from libkv.url import StoreURL

    backend = open_memory(StoreURL.parse(f"memory://aio-bridge-{uuid.uuid4().hex}"))
    open_feed = backend.open_feed

    class ReadingFeed:
        """A feed that takes a network round trip to read a change it was told of."""

        def __init__(self, prefix: str, after: int | None) -> None:
            self._feed = open_feed(prefix, after)

        def poll(self, timeout: float) -> object:
            batch = self._feed.poll(timeout)
            if batch is not None:
                time.sleep(0.02)
            return batch

        def close(self) -> None:
            self._feed.close()

    monkeypatch.setattr(backend, "open_feed", ReadingFeed)

    async def main() -> None:
        store = AsyncStore(ThreadedBackend(backend))
        async with store, store.watch("app", recursive=True) as watch:
            init = await watch.next_event(EVENT_TIMEOUT)
            assert init is not None and init.action is Action.INIT
            written = await store.put("app/a", b"1")
            event = await watch.next_event(0)
            assert event is not None, "next_event(0) did not wait for the feed's read"
            assert (event.action, event.pair) == (Action.UPDATE, written)

    asyncio.run(main(), debug=True)
