"""Run the sync conformance suite against the async flavour: a blocking facade.

:class:`Portal` runs an event loop (in debug mode) on a thread of its own; the
facade's objects (:class:`BlockingStore`, the recipes of :data:`BLOCKING_RECIPES`,
and what they return) look like the sync API, and each call runs the async flavour's
coroutine on that loop and waits for it (``with`` runs ``__aenter__``/``__aexit__``,
iteration ``__anext__``, an ``asyncio.Event`` reads like a ``threading.Event``).
Every test of the suite thereby drives the async implementation (``libkv.aio``) with
the sync suite's expectations, and the portal records every callback that held the
loop longer than :data:`SLOW_CALLBACK` (asyncio's debug-mode warning), which the
fixtures turn into a failure.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import gc
import inspect
import linecache
import logging
import os
import re
import sys
import threading
import time
import types
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Protocol, Self, TypeVar, cast

import libkv.aio
import libkv.aio.recipes
import libkv.recipes
from libkv import concurrency
from libkv._async.api import AsyncStore
from libkv._async.lease import AsyncLease
from libkv._async.lock import AsyncLock
from libkv._async.recipes.cache import AsyncCache
from libkv._async.watching import AsyncWatch
from libkv.ops import Op
from libkv.url import StoreURL

__all__ = [
    "SLOW_CALLBACK",
    "BLOCKING_RECIPES",
    "SYNC_RECIPES",
    "BlockingStore",
    "Portal",
    "Recipes",
    "SlowCallbacks",
    "open_blocking",
    "raising",
    "underlying",
]

T = TypeVar("T")
V = TypeVar("V")

SLOW_CALLBACK = 0.05
"""The longest a callback may hold the event loop (seconds): the issue's 50 ms."""
WAIT_SAMPLING = 0.005
"""How often the loop thread's run-queue delay is read (seconds)."""
SAMPLER_LATE = 0.02
"""How late the sampler may wake before it counts as kept from the GIL: four switch
intervals, so a loop thread computing in Python (which yields the GIL every interval)
never passes for one."""


def _warm_source_lines() -> None:
    """Read the source of every module loaded into :mod:`linecache`, where asyncio's
    debug mode looks its lines up (on the loop thread); a module read already costs a
    dictionary lookup."""
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if isinstance(filename, str) and filename.endswith(".py"):
            linecache.getlines(filename, module.__dict__)


class SlowCallbacks(logging.Handler):
    """Collects asyncio's debug-mode warnings about callbacks that held the loop.

    A callback is judged on its time less the time the loop could not run through no
    fault of its own, whichever measure sees more of it: the garbage collections during
    it (one stops every thread of the test process, whose heap is the whole session's,
    not libkv's), the time its thread waited for a CPU (Linux's per-thread run-queue
    delay: the machine's two cores lent to the servers), or the time the GIL was held
    by another thread (a sampler thread kept from running while the loop thread was
    off a CPU). A callback that blocks in a system call or computes adds to none of
    them, so it is reported once what is left exceeds SLOW_CALLBACK; a report says
    where the loop thread was seen meanwhile.

    Debug mode itself reads source files on the loop thread (a task's creation
    traceback, a cancelled handle's repr): the first lookup of a file reads it from
    disk, which on CI's busy disk blocked the loop 94-267 ms. So the source of every
    module loaded is read into :mod:`linecache` first.
    """

    def __init__(self, loop_thread: threading.Thread | None = None) -> None:
        """Count the warnings of ``loop_thread``'s loop only (None: of any thread)."""
        super().__init__(logging.WARNING)
        _warm_source_lines()
        self.loop_thread = loop_thread
        self.messages: list[str] = []
        self._collections: collections.deque[tuple[float, float]] = collections.deque(maxlen=1024)
        # (time.time(), the loop thread's time on a CPU and waiting for one, seconds)
        self._waits: collections.deque[tuple[float, float, float]] = collections.deque(maxlen=64)
        # (from, to, the sampler's own CPU wait meanwhile): when it could not sample
        self._gaps: collections.deque[tuple[float, float, float]] = collections.deque(maxlen=256)
        self._last_sample: tuple[float, float] | None = None  # (time, own CPU wait)
        # (time.time(), where the loop thread was): named in a report
        self._places: collections.deque[tuple[float, str]] = collections.deque(maxlen=512)
        self._collecting_since = 0.0
        self._stopped = threading.Event()
        gc.callbacks.append(self._on_collection)
        self._sampler: threading.Thread | None = None
        if loop_thread is not None and loop_thread.native_id is not None:
            self._sampler = threading.Thread(
                target=self._sample_waits,
                args=(loop_thread.native_id, loop_thread.ident),
                name="portal-sampler",
            )
            self._sampler.daemon = True
            self._sampler.start()

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        now = time.time()  # the clock of LogRecord.created
        if phase == "start":
            self._collecting_since = now
        else:
            self._collections.append((self._collecting_since, now))

    def _sample_waits(self, native_id: int, ident: int | None) -> None:
        own = threading.get_native_id()
        previous: tuple[float, float] | None = None  # (time, own CPU wait) last round
        while True:
            sampled, readings = time.time(), _schedstat(native_id)
            if readings is not None:
                self._waits.append((sampled, *readings))
            own_readings = _schedstat(own)
            if own_readings is not None:
                if previous is not None and sampled - previous[0] > WAIT_SAMPLING + SAMPLER_LATE:
                    # The sampler could not run: the GIL was held elsewhere, or no CPU
                    # was free for it (its own CPU wait, counted apart).
                    self._gaps.append((previous[0], sampled, own_readings[1] - previous[1]))
                previous = self._last_sample = (sampled, own_readings[1])
            frame = sys._current_frames().get(ident) if ident is not None else None
            if frame is not None:
                self._places.append((sampled, _place(frame)))
            del frame
            if self._stopped.wait(WAIT_SAMPLING):
                return

    def _accounted(self, start: float, end: float) -> tuple[float, float]:
        """(surely waited for a CPU, at most on a CPU) of the loop thread within
        [start, end].

        Read now (in the loop thread, just after the callback) against the sampler's
        last reading before ``start``. The wait outside the window (from that reading
        to ``start``, from ``end`` to now) is taken off, so the first figure never
        exceeds the wait inside it; the second is left whole (an upper bound, for the
        report). The sampler cannot read while the loop thread holds the GIL, hence
        no reading inside the window.
        """
        if self.loop_thread is None or self.loop_thread.native_id is None:
            return 0.0, end - start
        now = time.time()
        readings = _schedstat(self.loop_thread.native_id)
        before = [sample for sample in list(self._waits) if sample[0] <= start]
        if readings is None or not before:
            return 0.0, end - start
        sampled, on_cpu_then, waited_then = before[-1]
        on_cpu, waited = readings
        surely_waited = waited - waited_then - (start - sampled) - (now - end)
        return max(0.0, surely_waited), on_cpu - on_cpu_then

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_collection)
        self._stopped.set()
        if self._sampler is not None:
            self._sampler.join()
        super().close()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.startswith("Executing "):
            return
        if self.loop_thread is not None and record.thread != self.loop_thread.ident:
            return
        took = _TOOK.search(message)
        if took is not None:
            duration = float(took.group(1))
            start, end = record.created - duration, record.created
            collecting = _covered(start, end, list(self._collections))
            waited, on_cpu = self._accounted(start, end)
            # While the sampler could not get the GIL, another thread held it, unless
            # the loop thread did: never more than the loop thread spent off a CPU.
            gaps = list(self._gaps)
            last, sampler = self._last_sample, self._sampler
            now = time.time()
            if last is not None and sampler is not None and sampler.native_id is not None:
                # A gap still open: the sampler has not run since the GIL came back.
                readings = _schedstat(sampler.native_id)
                if readings is not None and now - last[0] > WAIT_SAMPLING + SAMPLER_LATE:
                    gaps.append((last[0], now, readings[1] - last[1]))
            held_elsewhere = _covered(start, end, [(begin, stop) for begin, stop, _ in gaps])
            held_elsewhere -= sum(
                wait for begin, stop, wait in gaps if begin < end and stop > start
            )
            held_elsewhere = min(held_elsewhere, duration - on_cpu)
            if duration - max(collecting, waited, held_elsewhere) < SLOW_CALLBACK:
                return
            places = collections.Counter(
                place for sampled, place in list(self._places) if start <= sampled <= end
            )
            message += (
                f" [garbage collection {collecting * 1e3:.0f} ms, GIL held elsewhere"
                f" {max(held_elsewhere, 0.0) * 1e3:.0f} ms, waiting for a CPU"
                f" {waited * 1e3:.0f} ms, on a CPU at most {on_cpu * 1e3:.0f} ms; the loop"
                f" thread was seen at {places.most_common(3) or 'no sample'}]"
            )
        self.messages.append(message)


def _schedstat(native_id: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds waiting for one) of thread ``native_id`` (Linux)."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat") as schedstat:
            on_cpu, waited = schedstat.read().split()[:2]
        return int(on_cpu) / 1e9, int(waited) / 1e9
    except (OSError, ValueError):
        return None


def _place(frame: types.FrameType) -> str:
    """Where ``frame`` (a thread's innermost) is, and which call of libkv led there."""
    here = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} {frame.f_code.co_name}"
    caller = frame.f_back
    while caller is not None and "libkv" not in caller.f_code.co_filename:
        caller = caller.f_back
    if caller is None or caller is frame:
        return here
    return f"{here} < {os.path.basename(caller.f_code.co_filename)}:{caller.f_lineno}"


def _covered(start: float, end: float, intervals: Iterable[tuple[float, float]]) -> float:
    """How much of [start, end] the union of ``intervals`` covers."""
    covered, reached = 0.0, start
    for begin, stop in sorted(intervals):
        begin, stop = max(begin, reached), min(stop, end)
        if stop > begin:
            covered += stop - begin
            reached = stop
    return covered


_TOOK = re.compile(r"took (\d+(?:\.\d+)?) seconds$")


class Portal:
    """An event loop on its own thread, in debug mode, for blocking callers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_debug(True)
        self.loop.slow_callback_duration = SLOW_CALLBACK
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(started.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="portal-loop", daemon=True)
        self.thread.start()
        started.wait()
        self.slow = SlowCallbacks(self.thread)
        logging.getLogger("asyncio").addHandler(self.slow)

    def on_loop(self) -> bool:
        """Whether the caller runs on the loop's own thread (a callback of the loop)."""
        return threading.current_thread() is self.thread

    def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the loop and wait for its result (or exception)."""
        if self.on_loop():
            raise RuntimeError("waiting for the portal's loop on its own thread would hang")

        async def run() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise asyncio.CancelledError from None

    def call_plain(self, function: Callable[[], T]) -> T:
        """Run a plain ``function()`` on the loop's thread (asyncio objects are not
        thread-safe) and wait for its result."""

        async def run() -> T:
            return function()

        return self.call(run)

    def pending_tasks(self) -> list[str]:
        """Names of the loop's tasks that have not finished."""

        async def names() -> list[str]:
            current = asyncio.current_task()
            return sorted(task.get_name() for task in asyncio.all_tasks() if task is not current)

        return self.call(names)

    def close(self) -> None:
        logging.getLogger("asyncio").removeHandler(self.slow)
        self.slow.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


def open_blocking(url: str, portal: Portal, **options: object) -> BlockingStore:
    """``libkv.aio.open(url)`` behind the blocking facade.

    The driver is imported first, off the loop (:func:`libkv.aio.load`): the import
    is the process's once, while open() itself must not hold the loop.
    """
    libkv.aio.load(StoreURL.parse(url).scheme)
    return BlockingStore(portal.call_plain(lambda: libkv.aio.open(url, **options)), portal)


class _Facade:
    """Forwards attribute reads, and runs method calls on the portal's loop."""

    def __init__(self, target: Any, portal: Portal) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_portal", portal)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if callable(value) and not isinstance(value, type):
            return functools.partial(self._invoke, value)
        return _wrap(value, self._portal)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, _unwrap(value))

    def __repr__(self) -> str:
        return repr(self._target)

    def _invoke(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        args = tuple(_unwrap(argument) for argument in args)
        kwargs = {name: _unwrap(value) for name, value in kwargs.items()}
        portal = self._portal
        if portal.on_loop():
            # A callback of the loop (a cache's listener reading the cache) calls it as
            # an async caller would: a plain call runs at once; one to await cannot.
            result = method(*args, **kwargs)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise RuntimeError(f"{method.__qualname__} must be awaited: not on the loop")
            return _wrap(result, portal)

        async def run() -> Any:
            result = method(*args, **kwargs)
            if isinstance(result, concurrency.Done):
                return None
            if isinstance(result, concurrency.AwaitableContext) or asyncio.iscoroutine(result):
                return await result
            if hasattr(result, "__anext__"):
                if not hasattr(result, "__aenter__"):  # keys(): a plain iterator in sync
                    return iter([item async for item in result])
                # A watch (of a store or a typed view, a membership, an election's
                # leaders): the sync flavour starts it in the call that makes it (a
                # store watch's INIT is the state then); the async one on entry, which
                # is idempotent: enter it here, as sync.
                return await result.__aenter__()
            return result

        return _wrap(portal.call(run), portal)


class BlockingStore(_Facade):
    """An :class:`~libkv.aio.AsyncStore` that looks like a :class:`~libkv.Store`."""

    def __enter__(self) -> BlockingStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _BlockingContext(_Facade):
    """An async context manager (a lease, a lock, a recipe): ``with`` enters and exits
    it on the loop."""

    def __enter__(self) -> Self:
        self._portal.call(self._target.__aenter__)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._portal.call(lambda: self._target.__aexit__(*exc_info))


class _BlockingIterator(_BlockingContext):
    """A watch (or a recipe's view): iterated, each item awaited on the loop."""

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return _wrap(self._portal.call(self._target.__anext__), self._portal)
        except StopAsyncIteration:
            raise StopIteration from None


class _BlockingCache(_BlockingContext):
    """A cache, read like a mapping (its reads are plain calls in both flavours)."""

    def __len__(self) -> int:
        return int(self._invoke(self._target.__len__))

    def __iter__(self) -> Iterator[str]:
        return iter(self._invoke(self._target.__iter__))

    def __contains__(self, key: object) -> bool:
        return bool(self._invoke(self._target.__contains__, key))

    def __getitem__(self, key: str) -> Any:
        return self._invoke(self._target.__getitem__, key)


class _BlockingEvent:
    """An ``asyncio.Event`` read like a ``threading.Event``."""

    def __init__(self, event: asyncio.Event, portal: Portal) -> None:
        self._event = event
        self._portal = portal

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._portal.call_plain(self._event.set)

    def clear(self) -> None:
        self._portal.call_plain(self._event.clear)

    def wait(self, timeout: float | None = None) -> bool:
        return self._portal.call(lambda: concurrency.async_wait(self._event, timeout))


def _wrap(value: Any, portal: Portal) -> Any:
    if isinstance(value, AsyncStore):
        return BlockingStore(value, portal)
    if isinstance(value, asyncio.Event):
        return _BlockingEvent(value, portal)
    if isinstance(value, AsyncCache):
        return _BlockingCache(value, portal)
    if hasattr(type(value), "__anext__") and hasattr(type(value), "__aenter__"):
        return _BlockingIterator(value, portal)
    if hasattr(type(value), "__aenter__"):  # a lease, a lock, a recipe
        return _BlockingContext(value, portal)
    return value


def _unwrap(value: Any) -> Any:
    if isinstance(value, _Facade):
        return value._target
    if isinstance(value, list):
        return [_unwrap(item) for item in value]
    lease: Any = value.lease if isinstance(value, Op) else None
    if isinstance(lease, _Facade):
        return dataclasses.replace(value, lease=lease._target)
    return value


def underlying(client: Any) -> Any:
    """The object a facade drives (an AsyncStore, AsyncWatch, ...), else ``client``.

    For a test that patches the implementation itself: in the async flavour the
    patch must reach the async object, which the facade's callers never see.
    """
    return client._target if isinstance(client, _Facade) else client


def raising(target: Any, error: BaseException) -> Callable[..., Any]:
    """A stand-in for a method of ``target`` that raises ``error``: a coroutine
    function when ``target`` is an async flavour's object, else a plain one."""
    if isinstance(target, (AsyncStore, AsyncWatch, AsyncLease, AsyncLock)):

        async def fail_async(*args: Any, **kwargs: Any) -> Any:
            raise error

        return fail_async

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    return fail


class _TypedStoreClass(Protocol):
    """``TypedStore``'s constructor, generic in the codec's type as the class is."""

    def __call__(
        self, store: libkv.Store, codec: libkv.recipes.Codec[V]
    ) -> libkv.recipes.TypedStore[V]: ...


@dataclasses.dataclass(frozen=True)
class Recipes:
    """The recipe classes of one flavour, each called as :mod:`libkv.recipes`' is.

    In the async flavour (:data:`BLOCKING_RECIPES`) each takes a :class:`BlockingStore`
    where the sync class takes a Store, builds the :mod:`libkv.aio.recipes` class on
    the store's loop from the AsyncStore behind it, and returns it behind the facade;
    the values (codecs, ``Leader``, ``ServiceInstance``...) are one class in both.
    """

    flavour: str
    Cache: type[libkv.recipes.Cache]
    ServiceRegistry: type[libkv.recipes.ServiceRegistry]
    Election: type[libkv.recipes.Election]
    TypedStore: _TypedStoreClass


class _Recipe:
    """An async recipe class called with a blocking store, as its sync twin is."""

    def __init__(self, recipe: Callable[..., Any]) -> None:
        self._recipe = recipe

    def __call__(self, store: BlockingStore, *args: Any, **kwargs: Any) -> Any:
        target, portal = store._target, store._portal
        # On the loop: a cache (and a view's) starts its task there.
        recipe = portal.call_plain(lambda: self._recipe(target, *args, **kwargs))
        wrapped = _wrap(recipe, portal)
        return _Facade(recipe, portal) if wrapped is recipe else wrapped  # a registry


SYNC_RECIPES = Recipes(
    "sync",
    libkv.recipes.Cache,
    libkv.recipes.ServiceRegistry,
    libkv.recipes.Election,
    libkv.recipes.TypedStore,
)
BLOCKING_RECIPES = Recipes(
    "async",
    # The facade answers every call of the sync class's, in the async flavour.
    cast("type[libkv.recipes.Cache]", _Recipe(libkv.aio.recipes.Cache)),
    cast("type[libkv.recipes.ServiceRegistry]", _Recipe(libkv.aio.recipes.ServiceRegistry)),
    cast("type[libkv.recipes.Election]", _Recipe(libkv.aio.recipes.Election)),
    cast("_TypedStoreClass", _Recipe(libkv.aio.recipes.TypedStore)),
)


@contextlib.contextmanager
def portal_checks(portal: Portal) -> Iterator[None]:
    """Fail if any callback held the portal's loop longer than SLOW_CALLBACK."""
    before = len(portal.slow.messages)
    yield
    slow = portal.slow.messages[before:]
    assert not slow, f"the event loop was blocked: {slow[:3]}"
