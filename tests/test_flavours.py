"""The async flavour's instrument: the portal's slow-callback check must see a held loop.

Every async conformance test relies on `Portal`'s check that no callback held the loop
over SLOW_CALLBACK; these tests prove it reports a loop held by a blocking call or by
computation, and that what it discounts (a garbage collection, the loop thread's wait
for a CPU) is not blamed on the loop.
"""

from __future__ import annotations

import asyncio
import gc
import linecache
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import cast

import pytest

from libkv import Store
from libkv.testing.flavours import (
    BLOCKING_RECIPES,
    SLOW_CALLBACK,
    Portal,
    SlowCallbacks,
    open_blocking,
)


def _hold_loop(portal: Portal, hold: Callable[[], None]) -> list[str]:
    before = len(portal.slow.messages)
    portal.call_plain(hold)
    return portal.slow.messages[before:]


@pytest.fixture
def portal() -> Iterator[Portal]:
    portal = Portal()
    yield portal
    portal.close()


def test_a_blocking_call_on_the_loop_is_reported(portal: Portal) -> None:
    """time.sleep (a blocking system call, GIL released) on the loop is caught."""
    slow = _hold_loop(portal, lambda: time.sleep(SLOW_CALLBACK * 2))
    assert len(slow) == 1, slow


def test_computing_on_the_loop_is_reported(portal: Portal) -> None:
    """Pure-Python work on the loop is caught, however loaded the machine: its CPU
    time alone exceeds the bound, and only waits are discounted."""

    def compute() -> None:  # on the CPU for twice the bound, however loaded the machine
        spent = time.thread_time() + SLOW_CALLBACK * 2
        while time.thread_time() < spent:
            pass

    slow = _hold_loop(portal, compute)
    assert len(slow) == 1, slow


def test_a_quick_callback_is_not_reported(portal: Portal) -> None:
    assert _hold_loop(portal, lambda: None) == []


def test_a_garbage_collection_during_a_callback_is_discounted(portal: Portal) -> None:
    """A collection stops every thread: its time is not the loop's. The callback's own
    work stays well under the bound; the collection (made slow by finalizers that
    sleep) takes it over."""

    class Slow:
        def __del__(self) -> None:
            time.sleep(SLOW_CALLBACK / 4)

    def collect() -> None:
        for _ in range(4):
            cycle = [Slow()]
            cycle.append(cycle)  # type: ignore[arg-type]
        gc.collect()

    assert _hold_loop(portal, collect) == []


def test_waiting_for_a_cpu_is_discounted(portal: Portal) -> None:
    """The loop's thread shares its CPU with a busy process: a callback computing for
    less than the bound takes longer than it on the clock, and is not reported."""
    cpu = min(os.sched_getaffinity(0))
    spin = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nprint(flush=True)\nwhile True: pass"
    busy = subprocess.Popen([sys.executable, "-c", spin], stdout=subprocess.PIPE)
    assert busy.stdout is not None
    busy.stdout.readline()  # spinning on that CPU from now on
    loop_thread = portal.thread.native_id
    assert loop_thread is not None
    everywhere = os.sched_getaffinity(0)
    took: list[float] = []

    def compute() -> None:
        started, spent = time.monotonic(), time.thread_time() + SLOW_CALLBACK * 0.6
        while time.thread_time() < spent:
            pass
        took.append(time.monotonic() - started)

    try:
        os.sched_setaffinity(loop_thread, {cpu})
        slow = _hold_loop(portal, compute)
    finally:
        os.sched_setaffinity(loop_thread, everywhere)
        busy.kill()
        busy.wait()
    assert took[0] > SLOW_CALLBACK, f"the callback took {took[0]:.3f} s: the CPU was not shared"
    assert slow == [], slow


def test_a_callback_on_the_loop_makes_plain_calls_and_refuses_to_wait(portal: Portal) -> None:
    """A facade called back on the loop's own thread (a cache's listener reading its
    cache) runs a plain call at once, and refuses a call it would have to await
    (waiting for the loop on its own thread would hang) with an error."""
    store = open_blocking(f"memory://flavours-{uuid.uuid4().hex}", portal)
    try:
        store.put("app/a", b"1")
        cache = BLOCKING_RECIPES.Cache(cast(Store, store), "app")
        assert cache.wait_synced(5)
        assert portal.call_plain(lambda: cache.get("app/a")) == store.get("app/a")
        with pytest.raises(RuntimeError, match="must be awaited"):
            portal.call_plain(lambda: store.get("app/a"))
        with pytest.raises(RuntimeError, match="its own thread"):
            portal.call_plain(lambda: portal.call(lambda: asyncio.sleep(0)))
        cache.close()
    finally:
        store.close()


def test_the_gil_held_by_another_thread_is_discounted(portal: Portal) -> None:
    """Another thread holds the GIL in one long C call (a sum over a range) while a
    callback that does almost nothing waits for it: not the loop's doing, not reported;
    the same call made on the loop is."""
    started = time.thread_time()
    sum(range(3_000_000))
    per_million = (time.thread_time() - started) / 3
    count = int(SLOW_CALLBACK * 4 / per_million * 1_000_000)  # four bounds of CPU time

    def wait_for_the_gil() -> None:
        # start() returns once the thread runs: it holds the GIL from then on.
        threading.Thread(target=lambda: sum(range(count)), daemon=True).start()
        took.append(time.monotonic())

    took: list[float] = [time.monotonic()]
    assert _hold_loop(portal, wait_for_the_gil) == []
    assert took[1] - took[0] > SLOW_CALLBACK * 2, "the other thread never held the GIL"
    assert len(_hold_loop(portal, lambda: sum(range(count)))) == 1


def test_the_slow_callback_check_reads_source_lines_before_the_loop_does() -> None:
    """asyncio's debug mode looks up source lines on the loop thread (a cancelled
    handle's repr reads asyncio/timeouts.py); SlowCallbacks has them read before, so a
    disk slow to answer is not taken for a callback holding the loop."""
    timeouts = asyncio.timeouts.__file__
    linecache.cache.pop(timeouts, None)
    handler = SlowCallbacks()
    try:
        assert timeouts in linecache.cache and len(linecache.cache[timeouts]) == 4
    finally:
        handler.close()
