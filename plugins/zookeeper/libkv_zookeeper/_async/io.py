"""How the async ZooKeeper driver waits, on the event loop and with no thread of its
own: kazoo's connection thread completes each request into an asyncio future with
``loop.call_soon_threadsafe``; kazoo's state changes and watch events wake the loop
likewise. Hand-written, as its sync twin :mod:`libkv_zookeeper.io` is; everything else
of the driver is the async source :mod:`libkv_zookeeper._async.driver`."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

from kazoo.client import KazooClient
from kazoo.handlers.threading import KazooTimeoutError

from libkv.concurrency import async_wait
from libkv.driver import FeedBatch
from libkv_zookeeper.connection import CLOSE_WAIT
from libkv_zookeeper.feed import FeedBase

if TYPE_CHECKING:
    from libkv_zookeeper._async.driver import AsyncZooKeeperBackend
    from libkv_zookeeper.connection import ZooKeeperSession

__all__ = [
    "AsyncWatchFeed",
    "LoopResult",
    "async_connected",
    "async_finish_closing",
    "async_outcome",
    "send",
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


def send(client: KazooClient, request: Any) -> LoopResult:
    """Queue ``request`` on kazoo's connection; its pending result, on the running loop."""
    result = LoopResult(asyncio.get_running_loop())
    client._call(request, result)
    return result


async def async_outcome(store: ZooKeeperSession, pending: LoopResult, deadline: float) -> Any:
    """The answer to a request sent with :func:`send`, awaited until ``deadline``
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
            await async_wait(changed, wait)
    finally:
        store._state_wakers.discard(wake)
    return store._connected.is_set()


async def async_finish_closing(closer: threading.Thread) -> None:
    """Wait up to CLOSE_WAIT for the session's closing thread, polling it (a thread
    cannot complete a future it was not given; closing happens once per store)."""
    deadline = time.monotonic() + CLOSE_WAIT
    while closer.is_alive() and time.monotonic() < deadline:
        await asyncio.sleep(CLOSE_CHECK)


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
            await async_wait(self._news, max(min(deadline, check) - now, 0.001))
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
