"""From sync to async: a sync :class:`~libkv.backend.Backend` driven from ``libkv.aio``.

:class:`ThreadedBackend` runs a sync backend's primitives on a small pool of worker
threads owned by the store (:class:`WorkerPool`), so the event loop never blocks on
them; ``capabilities.native_async`` is False. :class:`InlineBackend` calls a backend
whose primitives never block (memory) directly on the loop. Either way the watch
feed is wrapped so that no batch is ever dropped: a poll abandoned by a cancelled or
timed-out waiter is picked up by the next one.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import dataclasses
import functools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from libkv._async.backend import AsyncBackend
from libkv._async.watching import AsyncFeed
from libkv.backend import Backend
from libkv.changes import FeedBatch
from libkv.concurrency import Wakers
from libkv.errors import KVError
from libkv.model import KVPair
from libkv.ops import Op
from libkv.watching import Feed

__all__ = [
    "InlineBackend",
    "LocalBackend",
    "SignalledFeed",
    "ThreadedBackend",
    "WorkerPool",
]

T = TypeVar("T")

_POLL_SLICE = 0.25  # longest a worker thread spends in one blocking feed poll
_JOIN_TIMEOUT = 1.0  # longest close() waits for idle workers to end


class WorkerPool:
    """Up to ``size`` daemon threads, started on demand, running submitted calls in order.

    ``close()`` ends idle threads at once and busy ones when their call returns; the
    async ``join()`` waits (boundedly) for them.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue[
            tuple[concurrent.futures.Future[Any], Callable[[], Any]] | None
        ] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a call
        self._waiting = 0  # calls no thread has taken yet
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, function: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("worker pool is closed")
            self._queue.put((future, function))
            self._waiting += 1
            # Each call waiting gets a thread of its own (up to size): a call must not
            # queue behind one that may block for the whole timeout on a dead server.
            if self._waiting > self._idle and len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    async def run(self, function: Callable[[], T]) -> T:
        """Run ``function`` on a worker; cancelling the caller does not stop the call."""
        return await asyncio.wrap_future(self.submit(function))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)

    async def join(self) -> None:
        """Wait up to a second for the threads to end (a call stuck on a frozen server
        keeps its daemon thread until it returns)."""
        deadline = time.monotonic() + _JOIN_TIMEOUT
        while any(thread.is_alive() for thread in self._threads):
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.005)

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1  # waiting for work: submit() starts no thread for it
            item = self._queue.get()
            with self._lock:
                self._idle -= 1
                if item is not None:
                    self._waiting -= 1
            if item is None:
                return
            future, function = item
            if future.set_running_or_notify_cancel():
                try:
                    result = function()
                except BaseException as error:  # handed to the awaiting task
                    future.set_exception(error)
                else:
                    future.set_result(result)


class ThreadedBackend(AsyncBackend):
    """A sync backend's primitives, each run on the store's worker threads."""

    def __init__(
        self,
        backend: Backend,
        *,
        workers: int = 16,
        native: bool = False,
        setup: Callable[[], None] | None = None,
    ) -> None:
        """Drive ``backend`` on up to ``workers`` threads (0: on the loop itself).

        ``setup``, if given, runs on a worker before the first primitive (a backend
        that opens a file or a connection there leaves ``open()`` free of I/O); until
        it succeeds, each call runs it again and fails with its error.
        """
        super().__init__(backend.url, namespace=backend.namespace, timeout=backend.timeout)
        self.sync_backend = backend
        self.capabilities = dataclasses.replace(backend.capabilities, native_async=native)
        self._pool: WorkerPool | None = (
            WorkerPool(workers, f"libkv-worker-{backend.url.scheme}") if workers else None
        )
        self._setup = setup
        self._setup_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    def __getattr__(self, name: str) -> Any:
        # A driver's own attributes (``endpoint``...), as on the sync backend.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.sync_backend, name)

    def _job(self, function: Callable[..., T], *args: object) -> Callable[[], T]:
        """``function(*args)`` as a worker's job, preceded by the setup until it succeeds."""
        call = functools.partial(function, *args)
        if self._setup is None:
            return call

        def job() -> T:
            with self._setup_lock:
                if self._setup is not None:
                    self._setup()
                    self._setup = None
            return call()

        return job

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        if self._pool is None:
            return self._job(function, *args)()
        return await self._pool.run(self._job(function, *args))

    async def get(self, key: str) -> KVPair | None:
        return await self._run(self.sync_backend.get, key)

    async def get_many(self, keys: Sequence[str]) -> builtins.list[KVPair | None]:
        return await self._run(self.sync_backend.get_many, keys)

    async def range(self, prefix: str, recursive: bool) -> tuple[builtins.list[KVPair], int]:
        return await self._run(self.sync_backend.range, prefix, recursive)

    async def commit(self, ops: Sequence[Op]) -> builtins.list[KVPair | None]:
        return await self._run(self.sync_backend.commit, ops)

    async def delete_range(self, prefix: str) -> int:
        return await self._run(self.sync_backend.delete_range, prefix)

    async def grant_lease(self, ttl: float) -> int:
        if self._pool is None:
            return self._job(self.sync_backend.grant_lease, ttl)()
        future = self._pool.submit(self._job(self.sync_backend.grant_lease, ttl))
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # The caller is gone but the lease may be granted: revoke it once it is.
            future.add_done_callback(self._revoke_orphan)
            raise

    def _revoke_orphan(self, future: concurrent.futures.Future[int]) -> None:
        if future.cancelled() or future.exception() is not None or self._pool is None:
            return
        with contextlib.suppress(RuntimeError):  # the pool closed: the ttl ends it
            self._pool.submit(functools.partial(self._revoke_quietly, future.result()))

    def _revoke_quietly(self, lease_id: int) -> None:
        with contextlib.suppress(Exception):  # best effort: the ttl ends it anyway
            self.sync_backend.revoke_lease(lease_id)

    async def keepalive_lease(self, lease_id: int) -> bool:
        return await self._run(self.sync_backend.keepalive_lease, lease_id)

    async def lease_ttl(self, lease_id: int) -> float | None:
        return await self._run(self.sync_backend.lease_ttl, lease_id)

    async def revoke_lease(self, lease_id: int) -> None:
        await self._run(self.sync_backend.revoke_lease, lease_id)

    async def open_feed(self, prefix: str, after: int | None) -> AsyncFeed:
        feed = await self._run(self.sync_backend.open_feed, prefix, after)
        return ThreadedFeed(feed, self._pool)

    async def compact(self, revision: int) -> None:
        await self._run(self.sync_backend.compact, revision)

    def translate_error(self, error: Exception) -> KVError | None:
        return self.sync_backend.translate_error(error)

    def last_contact(self) -> float | None:
        return self.sync_backend.last_contact()

    async def close(self) -> None:
        pool = self._pool
        if pool is None:
            self.sync_backend.close()
            return
        try:
            await pool.run(self.sync_backend.close)
        finally:
            pool.close()
            await pool.join()


class ThreadedFeed:
    """A sync feed polled on a worker thread, in slices; a batch is never dropped."""

    def __init__(self, feed: Feed, pool: WorkerPool | None) -> None:
        self._feed = feed
        self._pool = pool
        self._inflight: asyncio.Future[FeedBatch | None] | None = None

    async def poll(self, timeout: float) -> FeedBatch | None:
        if self._pool is None:
            return self._feed.poll(0)
        inflight = self._inflight
        if inflight is None:
            poll = functools.partial(self._feed.poll, min(timeout, _POLL_SLICE))
            inflight = self._inflight = asyncio.wrap_future(self._pool.submit(poll))
            # Not cancelled with the waiter: the next poll collects its batch.
            if timeout > 0:
                await asyncio.wait([inflight], timeout=timeout)
            else:
                # poll(0) waits for no change, but reads one the feed has ready (a
                # ZooKeeper feed reads the nodes its watch named): wait for that, as the
                # sync flavour does. Else next_event(0) returns None while the rest of a
                # transaction is being read, and a Cache, which applies together what
                # next_event(0) drains, shows part of it.
                await asyncio.wait([inflight])
        else:
            # The sync poll outlived its slice: it is in a backend call. None now would
            # tell the engine the backend answered, and restart its unreachable clock,
            # so wait for the call's outcome: its own timeout bounds it, close() ends it.
            await asyncio.wait([inflight])
        if not inflight.done():
            return None
        self._inflight = None
        return inflight.result()

    def close(self) -> None:
        self._feed.close()


class SignalledFeed:
    """An async feed over a sync feed that answers ``poll(0)`` at once, woken by the
    backend's :class:`~libkv.concurrency.Wakers` on every in-process change and
    re-polled every ``interval`` seconds for changes made elsewhere."""

    def __init__(
        self,
        feed: Feed,
        wakers: Wakers,
        run: Callable[[Callable[[], FeedBatch | None]], Any],
        interval: float,
    ) -> None:
        self._feed = feed
        self._wakers = wakers
        self._run = run
        self._interval = interval
        self._closed = False

    async def poll(self, timeout: float) -> FeedBatch | None:
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(changed.set)

        deadline = time.monotonic() + timeout
        self._wakers.add(wake)
        try:
            while not self._closed:
                changed.clear()
                batch: FeedBatch | None = await self._run(functools.partial(self._feed.poll, 0))
                if batch is not None:
                    return batch
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, self._interval)):
                        await changed.wait()
            return None
        finally:
            self._wakers.discard(wake)

    def close(self) -> None:
        self._closed = True
        self._feed.close()
        self._wakers.wake()


class LocalBackend(ThreadedBackend):
    """A backend in this process (SQLite): its calls run on one worker thread of the
    store, and its watches wait on the loop, woken by this process's writes
    (``wakers``) and re-polled every ``interval`` seconds for other processes'."""

    def __init__(
        self,
        backend: Backend,
        wakers: Wakers,
        interval: float,
        *,
        setup: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(backend, workers=1, native=True, setup=setup)
        self._wakers = wakers
        self._interval = interval

    async def open_feed(self, prefix: str, after: int | None) -> AsyncFeed:
        feed = await self._run(self.sync_backend.open_feed, prefix, after)
        assert self._pool is not None
        return SignalledFeed(feed, self._wakers, self._pool.run, self._interval)


class InlineBackend(ThreadedBackend):
    """A backend whose primitives never block, called directly on the loop (memory)."""

    def __init__(self, backend: Backend, wakers: Wakers) -> None:
        super().__init__(backend, workers=0, native=True)
        self._wakers = wakers

    async def open_feed(self, prefix: str, after: int | None) -> AsyncFeed:
        feed = self.sync_backend.open_feed(prefix, after)

        async def run(function: Callable[[], FeedBatch | None]) -> FeedBatch | None:
            return function()

        return SignalledFeed(feed, self._wakers, run, interval=1.0)
