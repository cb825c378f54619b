"""The few primitives where the two flavours differ, side by side.

The core is written once, as async code under :mod:`libkv._async`; ``scripts/unasync.py``
generates the sync modules from it by renaming (``AsyncEvent`` to ``Event``,
``async_wait`` to ``wait``...). Whatever cannot be renamed lives here, once per
flavour, with the same meaning: the async name waits on the event loop, the sync
name blocks the calling thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "AsyncEvent",
    "AsyncListener",
    "Listener",
    "AsyncMutex",
    "AwaitableContext",
    "Wakers",
    "Event",
    "Mutex",
    "Done",
    "async_checkpoint",
    "async_finish",
    "async_loop",
    "async_running",
    "async_shielded",
    "async_spawn",
    "async_wait",
    "checkpoint",
    "finish",
    "loop",
    "running",
    "shielded",
    "spawn",
    "wait",
]

AsyncListener = Callable[[bool], Awaitable[None] | None]
"""A lease listener: called with True after each keep-alive, False once on loss."""
Listener = Callable[[bool], None]

AsyncEvent = asyncio.Event
Event = threading.Event
AsyncMutex = asyncio.Lock
Mutex = threading.Lock

# The longest a sync wait may last: threading refuses longer ones (OverflowError).
_LONGEST_WAIT = threading.TIMEOUT_MAX


async def async_wait(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait up to ``timeout`` seconds (None: no limit) for ``event``; whether it is set."""
    if event.is_set():
        return True
    if timeout is None:
        await event.wait()
        return True
    if timeout <= 0:
        return False
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


def wait(event: threading.Event, timeout: float | None) -> bool:
    """Wait up to ``timeout`` seconds (None: no limit) for ``event``; whether it is set."""
    return event.wait(None if timeout is None else min(max(timeout, 0.0), _LONGEST_WAIT))


def async_loop() -> object:
    """What state tied to the flavour's background work belongs to: the running loop
    (a task of it ends with it)."""
    return asyncio.get_running_loop()


def loop() -> object:
    """The sync twin of :func:`async_loop`: no loop, so None (threads outlive none)."""
    return None


async def async_checkpoint() -> None:
    """Let other tasks run once (and cancellation reach this one)."""
    await asyncio.sleep(0)


def checkpoint() -> None:
    """Let other threads run once: a feed read by a thread of its own can queue news."""
    time.sleep(0)


def async_spawn(function: Callable[[], Awaitable[None]], name: str) -> asyncio.Task[None]:
    """Run ``function()`` in the background: a task on the running loop."""

    async def run() -> None:
        await function()

    return asyncio.get_running_loop().create_task(run(), name=name)


def spawn(function: Callable[[], None], name: str) -> threading.Thread:
    """Run ``function()`` in the background: a daemon thread."""
    thread = threading.Thread(target=function, name=name, daemon=True)
    thread.start()
    return thread


def async_running(worker: asyncio.Task[Any] | None) -> bool:
    """Whether a background task was started and has not ended (nor been cancelled,
    as when the loop that ran it closed)."""
    return worker is not None and not worker.done()


def running(worker: threading.Thread | None) -> bool:
    """Whether a background thread was started and has not ended."""
    return worker is not None and worker.is_alive()


async def async_finish(worker: asyncio.Task[Any] | None) -> None:
    """Stop a background task now and wait for it, unless it is the caller itself."""
    if worker is None or worker is asyncio.current_task() or worker.done():
        return
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker
    if (current := asyncio.current_task()) is not None and current.cancelling():
        raise asyncio.CancelledError  # the caller itself was cancelled meanwhile


def finish(worker: threading.Thread | None) -> None:
    """Nothing to do: a background thread ends by itself once told to stop.

    A thread cannot be interrupted in a blocking call; it notices its stop event
    when that call returns, and it is a daemon meanwhile.
    """


Result = TypeVar("Result")


async def async_shielded(work: Callable[[], Awaitable[Result]]) -> Result:
    """Run ``work()`` to its end even if the caller is cancelled meanwhile.

    For clean-up (revoking a lease, deleting a lock key): a cancelled caller waits for
    it to finish, then gets its CancelledError, so nothing is left behind.
    """
    task = asyncio.ensure_future(work())
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def shielded(work: Callable[[], Result]) -> Result:
    """The sync twin of :func:`async_shielded`: a thread is not cancelled."""
    return work()


class Done:
    """What a call that completes at once returns in the async flavour: awaitable.

    So ``watch.close()`` and ``await watch.close()`` both work.
    """

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator that finishes at once


DONE = Done()


class _AsyncResource(Protocol):
    async def __aexit__(self, *exc_info: object) -> None: ...


Resource = TypeVar("Resource", bound=_AsyncResource)


class AwaitableContext(Generic[Resource]):
    """A call whose result may be awaited or entered: ``await store.lease(10)`` gives
    the lease; ``async with store.lease(10) as lease`` also revokes it on exit.

    ``make`` runs once, at the await or the entry; not at all if neither happens.
    """

    __slots__ = ("_make", "_resource")

    def __init__(self, make: Callable[[], Coroutine[Any, Any, Resource]]) -> None:
        self._make = make
        self._resource: Resource | None = None

    def __await__(self) -> Generator[Any, None, Resource]:
        return self._make().__await__()

    async def __aenter__(self) -> Resource:
        self._resource = await self._make()
        return self._resource

    async def __aexit__(self, *exc_info: object) -> None:
        if self._resource is not None:
            await self._resource.__aexit__(*exc_info)


class Wakers:
    """Callbacks run after every in-process change: how an async feed over a local
    backend (memory, SQLite) hears of a write without a thread waiting for it."""

    __slots__ = ("_callbacks", "_lock")

    def __init__(self) -> None:
        self._callbacks: set[Callable[[], None]] = set()
        self._lock = threading.Lock()

    def add(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._callbacks.add(callback)

    def discard(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._callbacks.discard(callback)

    def wake(self) -> None:
        """Run every callback; each must return at once (it schedules, never waits)."""
        if not self._callbacks:
            return
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()
