"""Benchmark: libkv's Redis driver against raw redis-py, on a Redis server of its own.

Run from the repository root: ``python -m bench.bench_redis [--operations N]``.
Prints per-operation microseconds of raw GET/SET and libkv get/put side by side (same
100-byte values, same keys, after a warm-up, short chunks interleaved to share the noise)
and their ratios, the put-to-watch-event latency (a watcher in another thread), and
how late TTL expiry is reported as DELETE. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Callable

import redis

import libkv
from integration.servers import RedisServer

VALUE = b"v" * 100
CHUNK = 250
PASSES = 5


def _timed(operation: Callable[[int], object], indexes: range) -> float:
    """Microseconds per call of ``operation(i)`` for i in ``indexes``."""
    started = time.perf_counter()
    for index in indexes:
        operation(index)
    return (time.perf_counter() - started) / len(indexes) * 1e6


def _compare(server: RedisServer, count: int) -> None:
    raw = redis.Redis(host="127.0.0.1", port=server.port)
    store = libkv.open(f"{server.url}?prefix=bench{uuid.uuid4().hex}")
    raw_keys = [f"raw/{index}" for index in range(count)]
    kv_keys = [f"k{index}" for index in range(count)]
    workloads: dict[str, Callable[[int], object]] = {
        "raw SET": lambda index: raw.set(raw_keys[index], VALUE),
        "libkv put": lambda index: store.put(kv_keys[index], VALUE),
        "raw GET": lambda index: raw.get(raw_keys[index]),
        "libkv get": lambda index: store.get(kv_keys[index]),
    }
    for operation in workloads.values():  # warm-up: connections, scripts, every key
        _timed(operation, range(count))
    # Short chunks, each libkv chunk right after its raw twin: the machine's drift
    # (other processes, CPU clocks) hits both sides of each pair alike.
    chunks = [range(start, min(start + CHUNK, count)) for start in range(0, count, CHUNK)]
    results: dict[str, list[float]] = {name: [] for name in workloads}
    for _ in range(PASSES):
        for chunk in chunks:
            for name, operation in workloads.items():
                results[name].append(_timed(operation, chunk))
    median = {name: statistics.median(values) for name, values in results.items()}
    print(
        f"{count} keys x {PASSES} passes in chunks of {CHUNK}, 100-byte values, "
        f"raw and libkv chunks interleaved"
    )
    for name in workloads:
        print(f"  {name:<10} {median[name]:8.1f} us/op (median chunk)")
    for kind, kv, plain, target in (
        ("get", "libkv get", "raw GET", 1.10),
        ("put", "libkv put", "raw SET", 1.50),
    ):
        paired = [
            kv_time / raw_time
            for kv_time, raw_time in zip(results[kv], results[plain], strict=True)
        ]
        print(
            f"  {kind} ratio  {statistics.median(paired):8.2f} x raw "
            f"(median of paired chunks; target <= {target:.2f})"
        )
    raw.close()
    store.close()


def _watch_latency(server: RedisServer, count: int) -> None:
    url = f"{server.url}?prefix=bench{uuid.uuid4().hex}"
    writer, reader = libkv.open(url), libkv.open(url)
    sent: dict[int, float] = {}
    latencies: list[float] = []
    ready = threading.Event()

    def watch() -> None:
        with reader.watch("w", recursive=True) as events:
            ready.set()
            for event in events:
                if event.action is libkv.Action.UPDATE and event.pair is not None:
                    latencies.append(time.perf_counter() - sent[int(event.pair.value)])
                    if len(latencies) == count:
                        return

    watcher = threading.Thread(target=watch)
    watcher.start()
    ready.wait(10)
    for index in range(count):
        sent[index] = time.perf_counter()
        writer.put(f"w/{index % 100}", str(index))
        time.sleep(0.001)  # one write in flight at a time: latency, not throughput
    watcher.join(30)
    latencies.sort()
    print(f"put -> watch event, {len(latencies)} writes (watcher in another thread)")
    print(f"  median {statistics.median(latencies) * 1e6:8.1f} us")
    print(f"  p99    {latencies[int(len(latencies) * 0.99) - 1] * 1e6:8.1f} us")
    writer.close()
    reader.close()


def _expiry_lateness(server: RedisServer, count: int) -> None:
    """How late DELETE events arrive after a TTL deadline, with the writer closed."""
    url = f"{server.url}?prefix=bench{uuid.uuid4().hex}"
    ttl = 0.3
    lateness: list[float] = []
    with libkv.open(url) as watcher_store:
        watch = watcher_store.watch("e", recursive=True)
        watch.next_event(5)
        for index in range(count):
            with libkv.open(url) as writer:
                before = time.monotonic()
                writer.put(f"e/{index}", b"x", ttl=ttl)
            while True:
                event = watch.next_event(5)
                if event is None:
                    raise RuntimeError("no DELETE event within 5 s")
                if event.action is libkv.Action.DELETE:
                    lateness.append(time.monotonic() - before - ttl)
                    break
        watch.close()
    lateness.sort()
    print(f"TTL expiry -> DELETE event, {count} keys, writer closed (ttl {ttl} s)")
    median = statistics.median(lateness) * 1e3
    print(f"  median {median:6.0f} ms late, max {lateness[-1] * 1e3:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--operations", type=int, default=2000)
    parser.add_argument("--expiries", type=int, default=20)
    arguments = parser.parse_args()
    with RedisServer() as server:
        _compare(server, arguments.operations)
        _watch_latency(server, arguments.operations)
        _expiry_lateness(server, arguments.expiries)


if __name__ == "__main__":
    main()
