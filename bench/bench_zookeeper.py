"""ZooKeeper: libkv's overhead over raw kazoo, and what a watched change costs.

Starts its own standalone ZooKeeper (``integration.servers.ZooKeeperServer``) and
measures, in one run and interleaved so that server noise hits both sides alike:

* get and put of 100-byte values through kazoo (``client.get``/``client.set``) and
  through ``libkv.open("zookeeper://...")``: microseconds per operation and the ratio;
* the time from calling ``put`` to a recursive watch delivering its event, median and
  p99, under a watched prefix of 10 keys and under one of 10,000 keys (a change must
  cost one read of the changed znode, not a re-read of the subtree).

Run from the repository root: ``python -m bench.bench_zookeeper [--operations 2000]``.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kazoo.client import KazooClient

import libkv
from integration.servers import ZooKeeperServer

VALUE = b"v" * 100
KEYS = 100  # distinct keys cycled through


def overhead(
    name: str, raw: Callable[[int], object], wrapped: Callable[[int], object], count: int
) -> None:
    """Print raw and libkv microseconds per call: the two alternate call by call, so that
    the shared machine's noise hits both alike; medians and means of single calls."""
    for index in range(min(count // 5, 500)):  # warm-up
        raw(index)
        wrapped(index)
    raw_times, libkv_times = [], []
    clock = time.perf_counter
    for index in range(count):
        started = clock()
        raw(index)
        middle = clock()
        wrapped(index)
        ended = clock()
        raw_times.append((middle - started) * 1e6)
        libkv_times.append((ended - middle) * 1e6)
    raw_median, libkv_median = statistics.median(raw_times), statistics.median(libkv_times)
    raw_mean, libkv_mean = statistics.fmean(raw_times), statistics.fmean(libkv_times)
    print(
        f"{name:<4} raw kazoo {raw_median:7.1f} us   libkv {libkv_median:7.1f} us   "
        f"ratio {libkv_median / raw_median:5.2f}x (medians; means {raw_mean:.0f} / "
        f"{libkv_mean:.0f} us, {libkv_mean / raw_mean:.2f}x; {count} alternating calls)"
    )


class Watcher:
    """A recursive watch consumed by a thread, recording when each key's event arrives."""

    def __init__(self, store: libkv.Store, prefix: str) -> None:
        self.arrivals: dict[str, float] = {}
        self.ready = threading.Event()
        self.delivered = threading.Condition()
        self.started = time.perf_counter()
        self.init_seconds = 0.0
        self._watch = store.watch(prefix, recursive=True)
        self._thread = threading.Thread(target=self._consume, daemon=True)
        self._thread.start()

    def _consume(self) -> None:
        for event in self._watch:
            if event.action is libkv.Action.INIT:
                self.init_seconds = time.perf_counter() - self.started
                self.ready.set()
                continue
            with self.delivered:
                self.arrivals[f"{event.key}@{event.revision}"] = time.perf_counter()
                self.delivered.notify_all()

    def wait_for(self, key: str, revision: int, timeout: float = 10.0) -> float:
        name = f"{key}@{revision}"
        with self.delivered:
            if not self.delivered.wait_for(lambda: name in self.arrivals, timeout):
                raise TimeoutError(f"no watch event for {name} within {timeout} s")
            return self.arrivals[name]

    def close(self) -> None:
        self._watch.close()


def put_to_event(store: libkv.Store, prefix: str, size: int, count: int) -> None:
    """Fill ``prefix`` with ``size`` keys, watch it, then time ``count`` puts one at a time."""
    keys = [f"{prefix}/k{index:05d}" for index in range(size)]
    for start in range(0, size, 500):
        store.put_many({key: VALUE for key in keys[start : start + 500]})
    watcher = Watcher(store, prefix)
    if not watcher.ready.wait(60):
        raise TimeoutError("no INIT event within 60 s")
    latencies = []
    for index in range(count):
        key = keys[index % size]
        started = time.perf_counter()
        pair = store.put(key, VALUE)
        latencies.append((watcher.wait_for(pair.key, pair.version) - started) * 1e6)
    watcher.close()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"put -> watch event under {size:>6} keys: median {statistics.median(latencies):8.1f} us"
        f"   p99 {p99:8.1f} us   ({count} puts, one at a time; INIT took "
        f"{watcher.init_seconds * 1e3:.0f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=2000, help="per measured side")
    parser.add_argument("--watch-operations", type=int, default=500)
    parser.add_argument("--large-prefix", type=int, default=10_000, help="keys under it")
    options = parser.parse_args()
    with ZooKeeperServer() as server:
        raw = KazooClient(hosts=server.endpoint)
        raw.start(timeout=30)
        root = f"/bench-{uuid.uuid4().hex[:8]}"
        store = libkv.open(f"{server.url}{root}/libkv")
        raw_paths = [f"{root}/raw/k{index}" for index in range(KEYS)]
        libkv_keys = [f"k{index}" for index in range(KEYS)]
        for path in raw_paths:
            raw.create(path, VALUE, makepath=True)
        for key in libkv_keys:
            store.put(key, VALUE)
        print(f"zookeeper {server.url}, {len(VALUE)}-byte values, N={options.operations} per side")
        overhead(
            "get",
            lambda index: raw.get(raw_paths[index % KEYS]),
            lambda index: store.get(libkv_keys[index % KEYS]),
            options.operations,
        )
        overhead(
            "put",
            lambda index: raw.set(raw_paths[index % KEYS], VALUE),
            lambda index: store.put(libkv_keys[index % KEYS], VALUE),
            options.operations,
        )
        put_to_event(store, "small", 10, options.watch_operations)
        put_to_event(store, "large", options.large_prefix, options.watch_operations)
        store.close()
        raw.stop()
        raw.close()


if __name__ == "__main__":
    main()
