"""Core benchmarks: memory and sqlite get/put throughput, and put-to-watch latency.

Run: ``python bench/bench_core.py [--count N]``. Prints figures; asserts nothing.
Targets (issue 2): memory get and put >= 200k ops/s, sqlite put >= 5k ops/s (at the
documented default ``synchronous=normal``), memory put-to-watch median < 1 ms.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time

import libkv


def throughput(label: str, operation: object, count: int) -> float:
    """Run ``operation(i)`` ``count`` times and print ops/s and microseconds per op."""
    run = operation  # type: ignore[assignment]
    for index in range(min(count // 10, 1000)):  # warm-up
        run(index)  # type: ignore[operator]
    start = time.perf_counter()
    for index in range(count):
        run(index)  # type: ignore[operator]
    elapsed = time.perf_counter() - start
    rate = count / elapsed
    print(f"  {label:<34} {rate:>12,.0f} ops/s  {elapsed / count * 1e6:8.2f} us/op")
    return rate


def watch_latency(store: libkv.Store, count: int) -> tuple[float, float]:
    """Median and p99 seconds from put() returning... to the watcher receiving the event."""
    received: dict[int, float] = {}
    ready = threading.Event()

    def consume() -> None:
        with store.watch("latency", recursive=True) as watch:
            ready.set()
            for event in watch:
                if event.pair is not None:
                    received[int(event.pair.value)] = time.perf_counter()
                    if len(received) == count:
                        return

    consumer = threading.Thread(target=consume)
    consumer.start()
    ready.wait()
    sent: dict[int, float] = {}
    for index in range(count):
        sent[index] = time.perf_counter()
        store.put(f"latency/{index % 10}", str(index))
        deadline = time.monotonic() + 5
        while index not in received and time.monotonic() < deadline:
            time.sleep(0)  # yield to the consumer; one put in flight at a time
    consumer.join(timeout=10)
    samples = sorted(received[index] - sent[index] for index in received)
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def bench(url: str, count: int) -> None:
    with libkv.open(url) as store:
        print(f"{url.split('?')[0]}")
        keys = [f"bench/key{index % 1000}" for index in range(count)]
        value = b"x" * 100
        throughput("put (100 B, 1000 keys)", lambda index: store.put(keys[index], value), count)
        throughput("get", lambda index: store.get(keys[index]), count)
        median, p99 = watch_latency(store, min(count, 2000))
        print(f"  {'put -> watch event':<34} median {median * 1e3:.3f} ms  p99 {p99 * 1e3:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    arguments = parser.parse_args()
    bench("memory://", arguments.count)
    with tempfile.TemporaryDirectory() as directory:
        bench(f"sqlite:///{directory}/bench.db", min(arguments.count, 20_000))


if __name__ == "__main__":
    main()
