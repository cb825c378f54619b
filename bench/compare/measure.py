"""The benchmark's one copy of its timing code.

Every figure compares two *sides* (libkv and the raw client) measured in the same
process, interleaved so that whatever else the machine does hits both alike:

* :func:`paired_rounds` runs short rounds of each operation, alternating which side
  goes first, and reports each side's median round and the median of the per-round
  libkv/raw ratios (a ratio of two neighbours in time, not of two distant medians);
  its ``timed`` is :func:`timed_calls` or, for coroutines, :func:`awaited_calls` run in
  the flavour's event loop (so the loop is entered once per round, not per call);
* :func:`event_latency` times put -> watch event, one put in flight at a time, the two
  sides' puts alternating;
* :func:`fan_out` times one put until all of N watchers on one prefix have seen it;
* :func:`idle_memory` measures what N idle watches hold (tracemalloc and RSS);
* :func:`libkv_subscriber` makes a libkv store's recursive watch a watcher for these,
  like the raw adapters' ``subscribe``; :func:`percentile` is the one quantile.
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import libkv

Operation = Callable[[int], object]
AsyncOperation = Callable[[int], Awaitable[object]]
# A timer: timed(operation, start, count) -> microseconds per call.
Timer = Callable[[Any, int, int], float]

# A watcher factory: subscribe(prefix, on_event) starts watching and returns a closer.
# on_event() is called once per change delivered (from any thread).
Subscribe = Callable[[str, Callable[[], None]], Callable[[], None]]


@dataclass(frozen=True)
class Paired:
    """Microseconds per operation of each side, and the libkv/raw ratio."""

    libkv: float
    raw: float
    ratio: float


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def timed_calls(operation: Operation, start: int, count: int) -> float:
    """Microseconds per call of ``operation(i)`` for ``i`` in ``start .. start+count``."""
    begun = time.perf_counter()
    for index in range(start, start + count):
        operation(index)
    return (time.perf_counter() - begun) / count * 1e6


async def awaited_calls(operation: AsyncOperation, start: int, count: int) -> float:
    """Microseconds per awaited call of ``operation(i)``, as :func:`timed_calls`."""
    begun = time.perf_counter()
    for index in range(start, start + count):
        await operation(index)
    return (time.perf_counter() - begun) / count * 1e6


def paired_rounds(
    libkv: Operation, raw: Operation, count: int, chunk: int, timed: Timer = timed_calls
) -> Paired:
    """Run ``count`` calls per side in rounds of ``chunk``, alternating the side that goes
    first each round (after a warm-up of one round each); medians and median ratio."""
    chunk = max(1, min(chunk, count))
    timed(raw, 0, chunk)
    timed(libkv, 0, chunk)
    libkv_times: list[float] = []
    raw_times: list[float] = []
    for number, start in enumerate(range(0, count, chunk)):
        size = min(chunk, count - start)
        if number % 2:
            libkv_times.append(timed(libkv, start, size))
            raw_times.append(timed(raw, start, size))
        else:
            raw_times.append(timed(raw, start, size))
            libkv_times.append(timed(libkv, start, size))
    ratios = [mine / theirs for mine, theirs in zip(libkv_times, raw_times, strict=True)]
    return Paired(
        statistics.median(libkv_times), statistics.median(raw_times), statistics.median(ratios)
    )


class Arrivals:
    """Times at which a watcher saw events; ``mark`` is its ``on_event`` callback."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._condition = threading.Condition()

    def mark(self) -> None:
        with self._condition:
            self.times.append(time.perf_counter())
            self._condition.notify_all()

    def count(self) -> int:
        with self._condition:
            return len(self.times)

    def wait_beyond(self, seen: int, timeout: float = 30.0) -> float:
        """The time of event number ``seen`` (0-based), waiting for it if needed."""
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.times) > seen, timeout):
                raise TimeoutError(f"watch event {seen} did not arrive within {timeout} s")
            return self.times[seen]

    def settle(self, quiet: float = 0.2) -> int:
        """Wait until no event arrived for ``quiet`` seconds; the number seen."""
        while True:
            before = self.count()
            time.sleep(quiet)  # a benchmark, not a test: draining stray events
            if self.count() == before:
                return before


@dataclass(frozen=True)
class Side:
    """One side of a watch measurement: how to write, and how to watch."""

    put: Callable[[int], object]  # put(i) writes one watched key with a fresh value
    subscribe: Subscribe
    prefix: str
    linger: float = 0.0  # seconds closed watchers may still hold connections


def event_latency(sides: dict[str, Side], count: int) -> dict[str, list[float]]:
    """Seconds from calling put to its event reaching a watcher, per side.

    Each side has one watcher; puts alternate between the sides, one in flight at a
    time, so both see the same machine at nearly the same moment.
    """
    arrivals = {name: Arrivals() for name in sides}
    closers = [side.subscribe(side.prefix, arrivals[name].mark) for name, side in sides.items()]
    try:
        for name, side in sides.items():  # warm-up write; drain a watch's initial call
            side.put(-1)
            arrivals[name].wait_beyond(0)
        seen = {name: arrivals[name].settle() for name in sides}
        latencies: dict[str, list[float]] = {name: [] for name in sides}
        for index in range(count):
            for name, side in sides.items():
                started = time.perf_counter()
                side.put(index)
                latencies[name].append(arrivals[name].wait_beyond(seen[name]) - started)
                seen[name] += 1
        return latencies
    finally:
        for close in closers:
            close()


def fan_out(sides: dict[str, Side], watchers: int, puts: int) -> dict[str, list[float]]:
    """Seconds from one put until each of ``watchers`` watchers has seen it, per side."""
    results: dict[str, list[float]] = {}
    for name, side in sides.items():
        arrivals = [Arrivals() for _ in range(watchers)]
        closers = [side.subscribe(side.prefix, watcher.mark) for watcher in arrivals]
        try:
            side.put(-1)
            for watcher in arrivals:
                watcher.wait_beyond(0, timeout=60)
            seen = [watcher.settle(0.05) for watcher in arrivals]
            samples: list[float] = []
            for index in range(puts):
                started = time.perf_counter()
                side.put(index)
                last = max(
                    watcher.wait_beyond(seen[number]) for number, watcher in enumerate(arrivals)
                )
                samples.append(last - started)
                seen = [count + 1 for count in seen]
            results[name] = samples
        finally:
            for close in closers:
                close()
            time.sleep(side.linger)  # let the server see those connections go
    return results


def libkv_subscriber(store: libkv.Store) -> Subscribe:
    """A recursive libkv watch consumed by a thread of its own (the iterator API's way)."""

    def subscribe(prefix: str, on_event: Callable[[], None]) -> Callable[[], None]:
        watch = store.watch(prefix, recursive=True)
        if watch.next_event(60) is None:  # INIT: changes from here on are events
            raise TimeoutError(f"no INIT event for {prefix!r} within 60 s")

        def consume() -> None:
            with contextlib.suppress(libkv.KVError):
                for _ in watch:
                    on_event()

        threading.Thread(target=consume, daemon=True).start()
        return watch.close

    return subscribe


def _rss_bytes() -> int:
    """Resident set size of this process, from /proc (0 where there is no /proc)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


@dataclass(frozen=True)
class Memory:
    """Bytes per idle watch: Python allocations (tracemalloc) and resident set growth."""

    traced: float
    rss: float


def idle_memory(subscribe: Subscribe, prefix: str, count: int, settle: float = 0.5) -> Memory:
    """Open ``count`` watchers on ``prefix`` and leave them idle; bytes per watcher."""
    gc.collect()
    rss_before = _rss_bytes()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        closers = [subscribe(prefix, lambda: None) for _ in range(count)]
        time.sleep(settle)  # let background readers reach their idle state
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
        rss_after = _rss_bytes()
    finally:
        tracemalloc.stop()
    for close in closers:
        close()
    return Memory((after - before) / count, (rss_after - rss_before) / count)
