"""The async etcd driver's I/O that is not the sync one's renamed: the watch stream,
a lease keep-alive's one exchange, and the clean-up of a cancelled grant.
Hand-written, as its sync twin :mod:`libkv_etcd.io` is; the logic both share is in
:mod:`libkv_etcd.common`.

No thread: a store's watches share one gRPC stream, read by one task; a cancelled
call's clean-up (revoking a lease granted after its caller gave up) is a task the
store's ``close()`` waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio

from libkv.driver import FeedBatch, NotReachableError
from libkv_etcd import common

__all__ = ["AsyncCleanup", "AsyncEtcdFeed", "AsyncWatchStream", "keepalive_once"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a store's close() waits for the clean-up of cancelled calls. A grant held by
# a frozen member is cancelled then (close() stays prompt); its lease ends by its ttl.
CLEANUP_WAIT = 0.5


class AsyncWatchStream(common.Stream):
    """A store's one Watch stream: a grpc.aio call fed from a queue, read by a task."""

    def __init__(
        self,
        stub: Any,
        address: str,
        timeout: float,
        metadata: Any,
        failed: Callable[[str], None],
    ) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        super().__init__(
            address, timeout, contextlib.nullcontext(), self._queue, common.ASYNC_POLL_EVENTS
        )
        self._failed = failed
        self.loop = asyncio.get_running_loop()
        self.call = stub.Watch(self._send(), metadata=metadata)
        self._reader = self.loop.create_task(self._read(), name="libkv-etcd-watch")

    async def _send(self) -> AsyncIterator[Any]:
        while (request := await self._queue.get()) is not None:
            yield request

    async def _read(self) -> None:
        error: BaseException
        try:
            async for response in self.call:
                self.deliver(response, time.monotonic())
            error = NotReachableError(f"etcd at {self.address} ended the watch stream")
        except grpc.RpcError as raised:
            if raised.code() is grpc.StatusCode.UNAVAILABLE:
                self._failed((raised.details() or "").lower())
            error = common.stream_error(raised, self.address)
        except asyncio.CancelledError:
            error = NotReachableError(f"the watch stream to etcd at {self.address} ended")
        except Exception as raised:  # delivered to the watches by their polls
            error = raised
        self.fail(error)

    async def close(self) -> None:
        """End the stream and its reader."""
        self.fail(NotReachableError(f"the watch stream to etcd at {self.address} ended"))
        self._reader.cancel()
        await asyncio.wait([self._reader])


class AsyncEtcdFeed(common.WatchState):
    """A watch on the store's shared stream; see :class:`libkv_etcd.common.Stream`.

    A poll that got an answer from etcd for this watch (its creation, events, a
    progress report) returns a batch, even without news: it proves contact.
    """

    def __init__(self, stream: AsyncWatchStream, prefix: str, after: int | None) -> None:
        super().__init__(prefix, after, asyncio.Event())
        self._stream = stream
        stream.add(self)

    async def poll(self, timeout: float) -> FeedBatch | None:
        if self.closed:
            return None
        batch, wait = self._stream.ready(self, timeout)
        if batch is not None:
            return batch
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.news.wait(), wait)
        return None if self._ended() else self._stream.take(self)

    def _ended(self) -> bool:
        return self.closed

    def close(self) -> None:
        """End the watch on the stream (from any thread); a blocked poll returns None."""
        if self.closed:
            return
        self.closed = True
        loop = self._stream.loop
        if _on_loop(loop):
            self._finish()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        self._stream.remove(self)
        self.news.set()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


async def keepalive_once(stub: Any, request: Any, timeout: float, metadata: Any) -> Any:
    """One LeaseKeepAlive exchange: the answer to ``request``, or None."""
    call = stub.LeaseKeepAlive(iter([request]), timeout=timeout, metadata=metadata)
    try:
        response = await call.read()
    finally:
        call.cancel()
    return None if response is grpc.aio.EOF else response


class AsyncCleanup:
    """A store's clean-up tasks: what a cancelled call made is undone in a task of
    its own, which the store's ``close()`` waits for."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    async def unless_cancelled(self, work: Awaitable[T], undo: Callable[[T], Awaitable[None]]) -> T:
        """``await work``; if the caller is cancelled meanwhile, ``work`` runs on and
        what it made is then undone by ``undo(result)``."""
        task = asyncio.ensure_future(work)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self._tasks.add(task)
            task.add_done_callback(lambda done: self._undo(done, undo))
            raise

    def _undo(self, done: asyncio.Future[T], undo: Callable[[T], Awaitable[None]]) -> None:
        self._tasks.discard(done)
        if done.cancelled() or done.exception() is not None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing: the ttl ends it
            task = asyncio.get_running_loop().create_task(
                _run(undo(done.result())), name="libkv-etcd-clean-up"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Wait up to CLEANUP_WAIT seconds for the clean-up in progress."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CLEANUP_WAIT)


async def _run(work: Awaitable[None]) -> None:
    await work
