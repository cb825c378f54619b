"""The async Redis driver's I/O that is not the sync one's renamed: the store's
background tasks and the watch feed. Hand-written, as its sync twin
:mod:`libkv_redis.io` is; the logic both share is in :mod:`libkv_redis.common`.

No thread anywhere: the reaper is one task per store, a watch's read is a task of
its own only while it is in flight (so ``close()``, a plain call, can cancel it),
and a cancelled call's clean-up (revoking a lease granted after its caller gave up)
is a task the store's ``close()`` waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import redis.exceptions

from libkv.driver import FeedBatch
from libkv_redis import common

if TYPE_CHECKING:
    from libkv_redis._async.driver import AsyncRedisBackend

__all__ = ["AsyncBackground", "AsyncRedisFeed", "cancellable"]

log = logging.getLogger(__name__)

T = TypeVar("T")


async def cancellable(call: Awaitable[T]) -> T:
    """``await call`` (a redis-py call), raising CancelledError if this task was
    cancelled meanwhile even when redis-py swallowed the cancellation.

    redis.asyncio (8.2) sometimes completes a call whose task was cancelled while it
    ran (6 of 6,000 cancellations of an EVAL at random points, measured): the call
    returns normally and the cancellation is lost. A cancelled call must end
    cancelled, and the task's cancellation count must stay right for an
    asyncio.timeout() around it.
    """
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    result = await call
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
    return result


class AsyncBackground:
    """A store's background: ``tick(n)`` every REAP_INTERVAL in a task started by
    :meth:`start` (on the loop, at the store's first call: opening does no I/O), and
    the store's short clean-up tasks. :meth:`stop` ends them all.

    A store may serve one loop after another (``asyncio.run`` twice): the first call
    in a new loop starts the ticks there, and calls ``moved()`` first, which drops
    what belonged to the loop gone (pooled connections).
    """

    def __init__(self, tick: Callable[[int], Awaitable[None]], name: str) -> None:
        self._tick = tick
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.moved: Callable[[], None] | None = None
        self.stopping = False

    def start(self) -> None:
        """Start the ticks in the running loop, once per loop; not once stopping."""
        loop = asyncio.get_running_loop()
        if loop is self._loop or self.stopping:
            return
        if self._loop is not None and self.moved is not None:
            self.moved()
        self._loop = loop
        self._task = loop.create_task(self._run(), name=self._name)

    async def _run(self) -> None:
        ticks = 0
        # Not `while True`: stop() cancels this task, but redis-py may swallow that
        # cancellation (see cancellable) and the tick then returns, quietly.
        while not self.stopping:
            await asyncio.sleep(common.REAP_INTERVAL)
            ticks += 1
            await self._tick(ticks)

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` in a task that :meth:`stop` waits for."""
        if self.stopping:
            work.close()
            return
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def unless_cancelled(
        self, work: Coroutine[Any, Any, T], undo: Callable[[T], Coroutine[Any, Any, None]]
    ) -> T:
        """``await work``; if the caller is cancelled meanwhile, ``work`` still runs to
        its end, and what it made is undone by ``undo(result)`` in a clean-up task."""
        task = asyncio.ensure_future(work)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(lambda done: self._undo(done, undo))
            raise

    def _undo(
        self, done: asyncio.Future[T], undo: Callable[[T], Coroutine[Any, Any, None]]
    ) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing: the ttl ends it
            self.spawn(undo(done.result()), f"{self._name} clean-up")

    async def stop(self, timeout: float) -> None:
        """Stop the ticks, and wait up to ``timeout`` s for the clean-up tasks."""
        self.stopping = True
        task, self._task = self._task, None
        waited: set[asyncio.Task[Any]] = set(self._tasks)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            waited.add(task)
        if waited:
            await asyncio.wait(waited, timeout=timeout)


class AsyncRedisFeed:
    """Reads the log stream after a revision with short blocking XREADs.

    Each poll is one round trip (reap, then XREAD BLOCK) on a connection of the feed's
    own, run as a task: a poll whose caller is cancelled leaves its read running, and
    the next poll collects it (no batch is dropped, the connection stays in step);
    ``close()`` cancels it, which ends a read blocked on a frozen server at once (and
    redis-py then drops that connection). A poll that got an answer returns a batch
    even without news: it proves contact with the server.
    """

    def __init__(
        self, store: AsyncRedisBackend, prefix: str, after: int, epoch: str | None
    ) -> None:
        self._store = store
        self._reader = common.LogReader(prefix, after, epoch)
        self._loop = asyncio.get_running_loop()
        self._closed = False
        # Made now (no I/O): what a watch holds is there from its start.
        self._connection: Any = None if store._cluster else store._feed_connection()
        self._reading: asyncio.Task[tuple[Any, Any]] | None = None

    async def poll(self, timeout: float) -> FeedBatch | None:
        if self._closed:
            return None
        opened = self._reader.opened()
        if opened is not None:
            return opened
        reading = self._reading
        if reading is None:
            read = self._read(common.feed_block(timeout))
            reading = self._reading = self._loop.create_task(read, name="libkv-redis-watch")
        await asyncio.wait([reading])  # bounded by the connection's socket timeout
        if self._reading is not reading or self._closed:
            return None  # closed, or another poller of this watch took the reply
        self._reading = None
        try:
            reap_reply, reply = reading.result()
        except redis.exceptions.NoScriptError:
            await self._store._reap()  # loads the script; the next poll reads the log
            return None
        except Exception:
            await self._disconnect()
            if self._closed or self._store._background.stopping:
                return None  # closed under this poll
            raise
        return self._reader.batch(reap_reply, reply)

    async def _read(self, block: int) -> tuple[Any, Any]:
        """Reap, then read the log after the reader's position: the two replies."""
        store = self._store
        connection = self._connection
        if connection is None and not store._cluster:
            connection = self._connection = store._feed_connection()
        if connection is not None:
            if store._master_moved(connection):
                await connection.disconnect()
            await connection.connect()
        position = self._reader.position
        return await store._read_log(connection, position, block, common.ASYNC_FEED_BATCH)

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.disconnect(nowait=True)
            except Exception:
                log.debug("error closing a watch connection", exc_info=True)

    def close(self) -> None:
        """End the feed: a read in flight is cancelled, the connection closed (from
        any thread; the work is done on the feed's loop)."""
        if self._closed:
            return
        self._closed = True
        if _on_loop(self._loop):
            self._finish()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        reading = self._reading
        if reading is not None:
            reading.cancel()
            reading.add_done_callback(_retrieve)  # its outcome is nobody's now
        self._store._background.spawn(self._closing(reading), "libkv-redis-watch-close")

    async def _closing(self, reading: asyncio.Task[Any] | None) -> None:
        if reading is not None:
            await asyncio.wait([reading])
        await self._disconnect()


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
