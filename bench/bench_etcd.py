"""etcd: libkv's overhead over the raw client, and put-to-watch-event latency.

Starts its own single-member etcd (``integration.servers.EtcdServer``) and measures,
in one run and interleaved so that server noise hits both sides alike:

* get and put of 100-byte values through etcd-sdk-python (``pyetcd``) and through
  ``libkv.open("etcd://...")``: microseconds per operation and the libkv/raw ratio;
* the time from calling ``put`` to the recursive watch delivering its event.

Run from the repository root: ``python -m bench.bench_etcd [--operations 2000]``.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyetcd  # type: ignore[import-untyped]

import libkv
from integration.servers import EtcdServer

VALUE = b"v" * 100
KEYS = 100  # distinct keys cycled through


def per_operation(operation: Callable[[int], object], count: int) -> float:
    """Microseconds per call of ``operation(i)`` over ``count`` calls."""
    started = time.perf_counter()
    for index in range(count):
        operation(index)
    return (time.perf_counter() - started) / count * 1e6


def compare(
    name: str, raw: Callable[[int], object], wrapped: Callable[[int], object], count: int
) -> None:
    rounds = 5
    share = max(count // rounds, 1)
    for index in range(min(count // 5, 500)):  # warm-up
        raw(index)
        wrapped(index)
    raw_times, libkv_times = [], []
    for _ in range(rounds):
        raw_times.append(per_operation(raw, share))
        libkv_times.append(per_operation(wrapped, share))
    raw_us, libkv_us = statistics.median(raw_times), statistics.median(libkv_times)
    print(
        f"{name:<4} raw pyetcd {raw_us:8.1f} us/op   libkv {libkv_us:8.1f} us/op   "
        f"ratio {libkv_us / raw_us:5.2f}x   ({rounds} rounds of {share}, medians)"
    )


def watch_latency(store: libkv.Store, count: int) -> None:
    arrived: dict[str, float] = {}
    ready = threading.Event()
    done = threading.Event()
    delivered = threading.Event()
    keys = [f"latency/k{index:05d}" for index in range(count)]

    def consume() -> None:
        with store.watch("latency", recursive=True) as watch:
            for event in watch:
                if event.action is libkv.Action.INIT:
                    ready.set()
                    continue
                arrived[event.key] = time.perf_counter()
                delivered.set()
                if len(arrived) == count:
                    done.set()
                    return

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    ready.wait(10)
    latencies = []
    for key in keys:
        delivered.clear()
        started = time.perf_counter()
        store.put(key, VALUE)
        while key not in arrived:  # one write in flight at a time
            if not delivered.wait(10):
                raise TimeoutError(f"no watch event for {key} within 10 s")
            delivered.clear()
        latencies.append((arrived[key] - started) * 1e6)
    done.wait(10)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"put -> watch event: median {statistics.median(latencies):8.1f} us   "
        f"p99 {p99:8.1f} us   ({count} puts, one at a time)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=2000, help="per measured side")
    parser.add_argument("--watch-operations", type=int, default=500)
    options = parser.parse_args()
    with EtcdServer() as server:
        host, port = server.endpoint.rsplit(":", 1)
        raw = pyetcd.client(host=host, port=int(port), timeout=10)
        store = libkv.open(f"{server.url}/bench")
        raw_keys = [f"/bench/raw/k{index}" for index in range(KEYS)]
        libkv_keys = [f"k{index}" for index in range(KEYS)]
        for key in raw_keys:
            raw.put(key, VALUE)
        for key in libkv_keys:
            store.put(key, VALUE)
        print(f"etcd {server.url}, {len(VALUE)}-byte values, N={options.operations} per side")
        compare(
            "get",
            lambda index: raw.get(raw_keys[index % KEYS]),
            lambda index: store.get(libkv_keys[index % KEYS]),
            options.operations,
        )
        compare(
            "put",
            lambda index: raw.put(raw_keys[index % KEYS], VALUE),
            lambda index: store.put(libkv_keys[index % KEYS], VALUE),
            options.operations,
        )
        watch_latency(store, options.watch_operations)
        store.close()
        raw.close()


if __name__ == "__main__":
    main()
