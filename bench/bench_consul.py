"""Consul: libkv's overhead over raw py-consul, put-to-watch-event latency, and the cost
of one change under a large watched prefix.

Starts its own Consul agent (``integration.servers.ConsulServer``) and measures, in one
run and interleaved so that server noise hits both sides alike:

* get and put of 100-byte values through py-consul (``consul.Consul().kv``) and through
  ``libkv.open("consul://...")``, each read consistency mode alike on both sides
  (py-consul's default is ``default``, libkv's ``consistent``): microseconds per
  operation and the libkv/raw ratio; also the driver's HTTP client alone (urllib3,
  the same request as raw py-consul's) to separate the HTTP client from libkv's work;
* the time from calling ``put`` to a recursive watch delivering its event;
* the same for one change under a watched prefix holding 10,000 keys against 10.

Run from the repository root: ``python -m bench.bench_consul [--operations 2000]``
(needs ``pip install 'libkv-consul[bench]'`` for py-consul). Prints figures; asserts
nothing.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import threading
import time
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import consul
from libkv_consul import ConsulBackend
from libkv_consul.http import key_path

import libkv
from integration.servers import ConsulServer

VALUE = b"v" * 100
KEYS = 100  # distinct keys cycled through


def per_operation(operation: Callable[[int], object], count: int) -> float:
    """Microseconds per call of ``operation(i)`` over ``count`` calls."""
    indexes = itertools.count()
    return timeit.timeit(lambda: operation(next(indexes)), number=count) / count * 1e6


def compare(name: str, sides: dict[str, Callable[[int], object]], count: int) -> None:
    """Interleave rounds of every side; print medians and each side's ratio to the first."""
    rounds = 5
    share = max(count // rounds, 1)
    for index in range(min(count // 5, 300)):  # warm-up
        for operation in sides.values():
            operation(index)
    times: dict[str, list[float]] = {label: [] for label in sides}
    for _ in range(rounds):
        for label, operation in sides.items():
            times[label].append(per_operation(operation, share))
    medians = {label: statistics.median(values) for label, values in times.items()}
    first = next(iter(medians.values()))
    shown = "   ".join(
        f"{label} {value:7.1f} us ({value / first:4.2f}x)" for label, value in medians.items()
    )
    print(f"{name:<16} {shown}   ({rounds} rounds of {share}, medians)")


def watch_latency(store: libkv.Store, prefix: str, count: int) -> tuple[float, float]:
    """Median and p99 microseconds from ``put`` to the watch's event, one put at a time."""
    arrived: dict[str, float] = {}
    ready = threading.Event()
    delivered = threading.Event()
    keys = [f"{prefix}/changed/k{index:05d}" for index in range(count)]
    watch = store.watch(prefix, recursive=True)

    def consume() -> None:
        for event in watch:
            if event.action is libkv.Action.INIT:
                ready.set()
                continue
            arrived[event.key] = time.perf_counter()
            delivered.set()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    if not ready.wait(60):
        raise TimeoutError("no INIT within 60 s")
    latencies = []
    for key in keys:
        delivered.clear()
        started = time.perf_counter()
        store.put(key, VALUE)
        while key not in arrived:
            if not delivered.wait(30):
                raise TimeoutError(f"no watch event for {key} within 30 s")
            delivered.clear()
        latencies.append((arrived[key] - started) * 1e6)
    watch.close()
    consumer.join(5)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return statistics.median(latencies), p99


def compare_reads(server: ConsulServer, mode: str, operations: int) -> None:
    """get through py-consul, libkv and the driver's HTTP client, with one consistency mode."""
    host, port = server.endpoint.rsplit(":", 1)
    raw = consul.Consul(host=host, port=int(port), consistency=mode)
    store = libkv.open(f"{server.url}/bench?consistency={mode}")
    assert isinstance(store.backend, ConsulBackend)
    query = () if mode == "default" else ("consistent",)
    raw_keys = [f"raw/k{index}" for index in range(KEYS)]
    libkv_keys = [f"k{index}" for index in range(KEYS)]
    for key in raw_keys:
        raw.kv.put(key, VALUE)
    for key in libkv_keys:
        store.put(key, VALUE)
    compare(
        f"get ({mode})",
        {
            "raw py-consul": lambda index: raw.kv.get(raw_keys[index % KEYS]),
            "libkv": lambda index: store.get(libkv_keys[index % KEYS]),
            "driver HTTP only": lambda index: store.backend.client.request(
                "GET", key_path(raw_keys[index % KEYS]), query, write=False
            ),
        },
        operations,
    )
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=2000, help="per measured side")
    parser.add_argument("--watch-operations", type=int, default=300)
    parser.add_argument("--large-prefix", type=int, default=10_000)
    options = parser.parse_args()
    with ConsulServer() as server:
        host, port = server.endpoint.rsplit(":", 1)
        print(f"Consul {server.url}, {len(VALUE)}-byte values, N={options.operations} per side")
        for mode in ("default", "consistent"):
            compare_reads(server, mode, options.operations)
        raw = consul.Consul(host=host, port=int(port))
        store = libkv.open(f"{server.url}/bench")
        raw_keys = [f"raw/k{index}" for index in range(KEYS)]
        libkv_keys = [f"k{index}" for index in range(KEYS)]
        assert isinstance(store.backend, ConsulBackend)
        compare(
            "put",
            {
                "raw py-consul": lambda index: raw.kv.put(raw_keys[index % KEYS], VALUE),
                "libkv": lambda index: store.put(libkv_keys[index % KEYS], VALUE),
                "driver HTTP only": lambda index: store.backend.client.request(
                    "PUT", key_path(raw_keys[index % KEYS]), body=VALUE, write=True
                ),
            },
            options.operations,
        )
        median, p99 = watch_latency(store, "latency", options.watch_operations)
        print(
            f"put -> watch event: median {median:8.1f} us   p99 {p99:8.1f} us   "
            f"({options.watch_operations} puts, one at a time, prefix of up to "
            f"{options.watch_operations} keys)"
        )
        for size in (10, options.large_prefix):
            prefix = f"prefix{size}"
            items = [(f"{prefix}/k{index:05d}", VALUE) for index in range(size)]
            step = store.capabilities.max_transaction_ops
            for begin in range(0, size, step):
                store.put_many(items[begin : begin + step])
            median, p99 = watch_latency(store, prefix, 50)
            print(
                f"one change under a watched prefix of {size:>6} keys: put -> event "
                f"median {median:9.1f} us   p99 {p99:9.1f} us   (50 puts)"
            )
        store.close()


if __name__ == "__main__":
    main()
