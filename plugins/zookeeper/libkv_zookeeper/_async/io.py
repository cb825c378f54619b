"""How the async ZooKeeper driver waits, on the event loop and with no thread of its
own: kazoo's connection thread completes each request into an asyncio future with
``loop.call_soon_threadsafe``; kazoo's state changes and watch events wake the loop
likewise. And its reaper, a task. Hand-written, as its sync twin
:mod:`libkv_zookeeper.io` is; everything else of the driver is the async source
:mod:`libkv_zookeeper._async.driver`."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from kazoo.client import KazooClient
from kazoo.handlers.threading import KazooTimeoutError

from libkv.driver import FeedBatch
from libkv_zookeeper.common import REAP_INTERVAL
from libkv_zookeeper.connection import CLOSE_WAIT
from libkv_zookeeper.feed import FeedBase

if TYPE_CHECKING:
    from libkv_zookeeper._async.driver import AsyncZooKeeperBackend
    from libkv_zookeeper.connection import ZooKeeperSession

__all__ = [
    "AsyncReaper",
    "AsyncWatchFeed",
    "LoopResult",
    "async_connected",
    "async_finish_closing",
    "async_outcome",
    "pending_result",
]

CLOSE_CHECK = 0.01  # how often close() looks whether kazoo has ended the session


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Any, *arguments: Any) -> None:
    """Schedule ``callback`` on ``loop`` from any thread; nothing if the loop is closed."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *arguments)


class LoopResult:
    """What kazoo completes a request into (in place of its own AsyncResult): kazoo's
    connection thread calls :meth:`set` or :meth:`set_exception`, which complete
    ``future`` on its loop. A future already done (cancelled: the caller gave up) stays
    as it is, and the answer is dropped."""

    __slots__ = ("_loop", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()

    def set(self, value: Any = None) -> None:
        _call_soon(self._loop, self._complete, value, None)

    def set_exception(self, exception: BaseException) -> None:
        _call_soon(self._loop, self._complete, None, exception)

    def _complete(self, value: Any, exception: BaseException | None) -> None:
        if self.future.done():
            return
        if exception is not None:
            self.future.set_exception(exception)
        else:
            self.future.set_result(value)


def pending_result(client: KazooClient) -> LoopResult:
    """What kazoo completes a request into: a future of the running loop."""
    return LoopResult(asyncio.get_running_loop())


async def async_outcome(store: ZooKeeperSession, pending: LoopResult, deadline: float) -> Any:
    """The answer to a request sent with ``pending``, awaited until ``deadline``
    (KazooTimeoutError then). Cancelling the caller drops the answer when it comes."""
    try:
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
            return await pending.future
    except TimeoutError:
        raise KazooTimeoutError from None


async def async_connected(store: ZooKeeperSession, wait: float) -> bool:
    """Whether the session is connected, waiting up to ``wait`` s for it: a change of
    the session's state (kazoo's thread) wakes the loop."""
    if store._connected.is_set():
        return True
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def wake() -> None:
        _call_soon(loop, changed.set)

    store._state_wakers.add(wake)
    try:
        if not store._connected.is_set():
            await _wait(changed, wait)
    finally:
        store._state_wakers.discard(wake)
    return store._connected.is_set()


async def async_finish_closing(closer: threading.Thread) -> None:
    """Wait up to CLOSE_WAIT for the session's closing thread, polling it (a thread
    cannot complete a future it was not given; closing happens once per store)."""
    deadline = time.monotonic() + CLOSE_WAIT
    while closer.is_alive() and time.monotonic() < deadline:
        await asyncio.sleep(CLOSE_CHECK)


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Wait up to ``timeout`` s for ``event``."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


class AsyncReaper:
    """A store's reaper: a task that runs ``work()`` every REAP_INTERVAL, started in
    the running loop by :meth:`start` (the store's first call in each loop: ``open``
    does no I/O), and the store's short clean-up tasks (:meth:`spawn`). :meth:`stop`
    ends them all."""

    def __init__(self, work: Callable[[], Awaitable[None]], name: str) -> None:
        self._work = work
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    def start(self) -> None:
        """Start the work in the running loop, unless it runs or stop() began."""
        if self._stopping or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            await self._work()

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` in a task that :meth:`stop` waits for."""
        if self._stopping:
            work.close()
            return
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, timeout: float) -> None:
        """Cancel the work; wait up to ``timeout`` s for it and the clean-up tasks."""
        self._stopping = True
        waited = set(self._tasks)
        task, self._task = self._task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            waited.add(task)
        if waited:
            await asyncio.wait(waited, timeout=timeout)


class AsyncWatchFeed(FeedBase):
    """A feed whose poll awaits an event set (thread-safely) by kazoo's threads; see
    :class:`FeedBase`.

    A poll's read runs as a task: ``close()`` (from any thread) ends a poll at once,
    cancelling its read; a poll whose caller is cancelled cancels its read and puts
    back what it took, so the next poll reads it again (nothing is dropped).
    """

    store: AsyncZooKeeperBackend

    def __init__(self, store: AsyncZooKeeperBackend, root: str, generation: int) -> None:
        super().__init__(store, root, generation)
        self._loop = asyncio.get_running_loop()
        self._news = asyncio.Event()
        self._closing: asyncio.Future[None] = self._loop.create_future()

    def _wake(self) -> None:
        _call_soon(self._loop, self._news.set)

    async def poll(self, timeout: float) -> FeedBatch | None:
        """See :class:`libkv._async.watching.AsyncFeed`."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                ready = self._ready()
                if not ready:
                    self._news.clear()  # a later offer sets it again (scheduled after this)
            now = time.monotonic()
            if ready:
                break
            check = self._contact(now)
            if now >= deadline:
                break
            await _wait(self._news, max(min(deadline, check) - now, 0.001))
        with self._lock:
            taken = self._take()
        if taken is None:
            return None
        full, paths = taken
        store = self.store
        read = store._full_snapshot(self.root) if full else store._read_changes(paths)
        reading = self._loop.create_task(read, name="libkv-zookeeper-watch")
        waited: list[asyncio.Future[Any]] = [reading, self._closing]
        try:
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            reading.cancel()
            reading.add_done_callback(_retrieve)
            self._give_back(full, paths)
            raise
        if not reading.done():  # closed meanwhile: what is being read no longer matters
            reading.cancel()
            reading.add_done_callback(_retrieve)
            return None
        return reading.result()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        _call_soon(self._loop, self._finish)
        self.store._forget(self)

    def _finish(self) -> None:
        self._news.set()
        if not self._closing.done():
            self._closing.set_result(None)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a dropped task's outcome as seen (asyncio logs one never retrieved)."""
    if not task.cancelled():
        task.exception()
