"""What only the async flavour can be asked: cancellation, ``asyncio.timeout()``, an
event loop that never blocks, and nothing left behind after ``close()``.

Each test runs its scenario with :meth:`AsyncConformance.run_async`: a fresh event
loop in debug mode, whose slow-callback warnings (over 50 ms) fail the test, and
after which no task of libkv may be pending and no thread of libkv alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import libkv
import libkv.aio
from libkv import Action
from libkv.aio import AsyncStore
from libkv.testing.conformance.base import EVENT_TIMEOUT, ConformanceBase
from libkv.testing.flavours import SLOW_CALLBACK, SlowCallbacks
from libkv.testing.polling import wait_until
from libkv.url import StoreURL

__all__ = ["CANCEL_BOUND", "AsyncConformance"]

CANCEL_BOUND = 1.0
"""A cancelled call raises CancelledError within this many seconds."""
BLOCKED = 0.3
"""How long a call is left blocked before it is cancelled or times out."""

Opener = Callable[[], AsyncStore]


def _libkv_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("libkv")}


class AsyncConformance(ConformanceBase):
    """The async-only tests; a driver provides the `url` fixture."""

    def run_async(self, url: str, scenario: Callable[[Opener], Awaitable[None]]) -> None:
        """Run ``scenario(open_store)`` on a fresh loop in debug mode; every store it
        opens is closed after it. Fails on a slow callback, on a libkv task still
        pending after the stores are closed, and on a libkv thread left alive."""
        libkv.aio.load(StoreURL.parse(url).scheme)  # the import, once, off the loop
        threads_before = _libkv_threads()
        slow = SlowCallbacks()
        asyncio_logger = logging.getLogger("asyncio")
        asyncio_logger.addHandler(slow)

        async def main() -> None:
            asyncio.get_running_loop().slow_callback_duration = SLOW_CALLBACK
            opened: list[AsyncStore] = []

            def open_store() -> AsyncStore:
                store = libkv.aio.open(url)
                opened.append(store)
                return store

            try:
                await scenario(open_store)
            finally:
                for store in opened:
                    await store.close()
            current = asyncio.current_task()
            pending = [
                task.get_name()
                for task in asyncio.all_tasks()
                if task is not current and task.get_name().startswith("libkv")
            ]
            assert not pending, f"tasks of libkv left after close(): {pending}"

        try:
            asyncio.run(main(), debug=True)
        finally:
            asyncio_logger.removeHandler(slow)
            slow.close()
        assert not slow.messages, f"the event loop was blocked: {slow.messages[:3]}"
        wait_until(
            lambda: _libkv_threads() <= threads_before,
            EVENT_TIMEOUT,
            message=lambda: (
                f"threads of libkv left after close(): "
                f"{sorted(t.name for t in _libkv_threads() - threads_before)}"
            ),
        )

    @staticmethod
    async def cancelled_within(call: Awaitable[Any], what: str) -> None:
        """Start ``call`` as a task, let it block, cancel it: it must raise
        CancelledError within CANCEL_BOUND."""
        task = asyncio.ensure_future(call)
        await asyncio.sleep(BLOCKED)
        assert not task.done(), f"{what} returned while it should block: {task!r}"
        task.cancel()
        started = time.monotonic()
        done, _ = await asyncio.wait({task}, timeout=CANCEL_BOUND + EVENT_TIMEOUT)
        elapsed = time.monotonic() - started
        assert done, f"{what} ignored its cancellation for {CANCEL_BOUND + EVENT_TIMEOUT} s"
        assert task.cancelled(), f"{what} ended otherwise than cancelled: {task!r}"
        assert elapsed <= CANCEL_BOUND, f"{what} took {elapsed:.2f} s to be cancelled"

    @staticmethod
    async def times_out(call: Awaitable[Any], what: str) -> None:
        """``asyncio.timeout(BLOCKED)`` around ``call`` raises TimeoutError promptly."""
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(BLOCKED):
                await call
        elapsed = time.monotonic() - started
        assert elapsed <= BLOCKED + CANCEL_BOUND, f"{what}: timed out after {elapsed:.2f} s"

    @staticmethod
    async def assert_usable(store: AsyncStore, key: str) -> None:
        """The store still reads and writes."""
        written = await store.put(key, b"still usable")
        pair = await store.get(key)
        assert pair.value == b"still usable" and pair.version == written.version

    @staticmethod
    @contextlib.asynccontextmanager
    async def held_lock(store: AsyncStore, key: str, ttl: float) -> AsyncIterator[None]:
        holder = store.lock(key, ttl=ttl, value=b"holder")
        assert await holder.acquire(timeout=EVENT_TIMEOUT), "uncontended acquire() failed"
        try:
            yield
        finally:
            await holder.release()

    # -- cancellation -----------------------------------------------------------------

    def test_a_cancelled_next_event_leaves_the_watch_and_store_usable(self, url: str) -> None:
        """Cancelling a task blocked in next_event raises CancelledError in it promptly;
        the watch still delivers the next change, and the store still works."""

        async def scenario(open_store: Opener) -> None:
            store = open_store()
            async with store.watch("cancel/watched") as watch:
                first = await watch.next_event(EVENT_TIMEOUT)
                assert first is not None and first.action is Action.INIT
                await self.cancelled_within(watch.next_event(), "next_event()")
                await store.put("cancel/watched", b"after")
                event = await watch.next_event(EVENT_TIMEOUT)
                assert event is not None and event.action is Action.UPDATE, event
                assert event.pair is not None and event.pair.value == b"after"
            await self.assert_usable(store, "cancel/other")

        self.run_async(url, scenario)

    def test_a_cancelled_acquire_leaves_no_lock_key(self, url: str) -> None:
        """Cancelling a task blocked in acquire() on a held lock raises CancelledError
        promptly and leaves nothing: once the holder releases, the key stays absent."""
        ttl = 2.0

        async def scenario(open_store: Opener) -> None:
            holder_store, waiter_store = open_store(), open_store()
            ttl_used = max(ttl, holder_store.capabilities.ttl_min)
            async with self.held_lock(holder_store, "cancel/lock", ttl_used):
                waiter = waiter_store.lock("cancel/lock", ttl=ttl_used, value=b"waiter")
                await self.cancelled_within(waiter.acquire(), "acquire()")
                assert not waiter.locked()
            deadline = time.monotonic() + BLOCKED  # a late write would show up here
            while True:
                assert await waiter_store.exists("cancel/lock") is False, (
                    "the cancelled waiter left its lock key written"
                )
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.05)
            again = waiter_store.lock("cancel/lock", ttl=ttl_used)
            assert await again.acquire(blocking=False) is True
            await again.release()
            await self.assert_usable(waiter_store, "cancel/other")

        self.run_async(url, scenario)

    def test_a_cancelled_wait_for_change_leaves_the_store_usable(self, url: str) -> None:
        """Cancelling a task blocked in wait_for_change raises CancelledError promptly."""

        async def scenario(open_store: Opener) -> None:
            store = open_store()
            pair = await store.put("cancel/waited", b"v")
            await self.cancelled_within(
                store.wait_for_change("cancel/waited", pair.version, timeout=None),
                "wait_for_change()",
            )
            await self.assert_usable(store, "cancel/waited")

        self.run_async(url, scenario)

    def test_a_cancelled_lease_grant_leaves_no_lease(self, url: str) -> None:
        """A lease whose grant is cancelled at any await point is revoked, not left
        granted: a key written with a lease granted afterwards is unaffected, and the
        store's own close() has nothing left to stop."""

        async def scenario(open_store: Opener) -> None:
            store = open_store()
            ttl = max(1.0, store.capabilities.ttl_min)
            for _ in range(5):
                task = asyncio.ensure_future(store.lease(ttl).__aenter__())
                await asyncio.sleep(0)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    lease = await task
                    await lease.revoke()
            async with store.lease(ttl) as lease:
                await store.put("cancel/leased", b"v", lease=lease)
                assert (await store.get("cancel/leased")).value == b"v"

        self.run_async(url, scenario)

    # -- asyncio.timeout ----------------------------------------------------------------

    def test_asyncio_timeout_around_each_blocking_call(self, url: str) -> None:
        """asyncio.timeout() around next_event, acquire and wait_for_change raises
        TimeoutError promptly, and each leaves the store usable."""

        async def scenario(open_store: Opener) -> None:
            store, other = open_store(), open_store()
            ttl = max(2.0, store.capabilities.ttl_min)
            async with store.watch("timeout/watched") as watch:
                assert await watch.next_event(EVENT_TIMEOUT) is not None
                await self.times_out(watch.next_event(), "next_event()")
            async with self.held_lock(other, "timeout/lock", ttl):
                waiter = store.lock("timeout/lock", ttl=ttl)
                await self.times_out(waiter.acquire(), "acquire()")
            assert await store.exists("timeout/lock") is False
            pair = await store.put("timeout/waited", b"v")
            await self.times_out(
                store.wait_for_change("timeout/waited", pair.version, timeout=None),
                "wait_for_change()",
            )
            await self.assert_usable(store, "timeout/other")

        self.run_async(url, scenario)

    # -- nothing left behind ------------------------------------------------------------

    def test_close_leaves_no_task_and_no_thread(self, url: str) -> None:
        """A store used for everything (watches, leases, locks) and then closed leaves
        no task of libkv pending and no thread of libkv alive (checked by run_async)."""

        async def scenario(open_store: Opener) -> None:
            store = open_store()
            ttl = max(1.0, store.capabilities.ttl_min)
            watch = store.watch("leftovers", recursive=True)
            assert await watch.next_event(EVENT_TIMEOUT) is not None
            lease = await store.lease(ttl)
            await store.put("leftovers/a", b"v", lease=lease)
            lock = store.lock("leftovers-lock", ttl=ttl)
            assert await lock.acquire(timeout=EVENT_TIMEOUT)
            assert await watch.next_event(EVENT_TIMEOUT) is not None
            # Closed with all of these still open: close() stops each of them.

        self.run_async(url, scenario)
