"""Benchmark: the recipes' two figures that matter to a service.

Run from the repository root: ``python -m bench.bench_recipes [--reads N] [--registrations N]``.

1. ``Cache.get`` against ``store.get`` on memory, SQLite, Redis and etcd (servers of
   their own, started by the integration harness): microseconds per read of one of
   1,000 keys (100-byte values), median of 5 alternating passes, and the ratio.
2. Discovery latency: a child process registers instances one by one
   (``ServiceRegistry.register``); this process's ``registry.watch(service)`` reports
   each; the time from just before ``register()`` to the membership holding it
   (``time.monotonic``, one clock for both processes on Linux), median and p99, on
   SQLite, Redis and etcd.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator

import libkv
from integration.servers import EtcdServer, RedisServer
from libkv.recipes import Cache, ServiceRegistry
from libkv.testing.cross_process import read_line, spawn_child

KEYS = 1000
PASSES = 5
VALUE = b"v" * 100

REGISTERING_CHILD = """
import sys, time
import libkv
from libkv.recipes import ServiceRegistry
store = libkv.open(sys.argv[1])
registry = ServiceRegistry(store)
print("ready", flush=True)
sys.stdin.readline()
started = {}
for number in range(int(sys.argv[2])):
    started[f"i{number}"] = time.monotonic()
    registry.register("api", f"10.0.0.1:{number}", instance_id=f"i{number}", ttl=10)
    time.sleep(0.02)  # a steady pace, as services start: one registration per change
for name, moment in started.items():
    print(name, repr(moment), flush=True)
print("done", flush=True)
sys.stdin.readline()
"""


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _reads(name: str, url: str, count: int) -> None:
    with libkv.open(url) as store:
        chunk = store.capabilities.max_transaction_ops
        for start in range(0, KEYS, chunk):
            store.put_many(
                {f"cache/{index}": VALUE for index in range(start, min(start + chunk, KEYS))}
            )
        with Cache(store, "cache") as cache:
            assert cache.wait_synced(30)
            keys = [f"cache/{random.randrange(KEYS)}" for _ in range(count)]
            runs: dict[str, list[float]] = {"store.get": [], "Cache.get": []}
            for _ in range(PASSES):  # alternate, so the machine's drift hits both alike
                for label, read in (("store.get", store.get), ("Cache.get", cache.get)):
                    read(keys[0])  # warm-up
                    started = time.perf_counter()
                    for key in keys:
                        read(key)
                    runs[label].append((time.perf_counter() - started) / count * 1e6)
            timings = {label: statistics.median(values) for label, values in runs.items()}
        store.delete_tree("cache")
    ratio = timings["store.get"] / timings["Cache.get"]
    print(
        f"  {name:<7} store.get {timings['store.get']:9.2f} us  Cache.get "
        f"{timings['Cache.get']:6.3f} us  ratio {ratio:6.0f}x  ({PASSES} x {count} reads)"
    )


def _discovery(name: str, url: str, count: int) -> None:
    with libkv.open(url) as store:
        arrivals: dict[str, float] = {}
        child = spawn_child(REGISTERING_CHILD, url, str(count))
        try:
            assert read_line(child, 30) == "ready"
            with ServiceRegistry(store).watch("api") as membership:
                assert membership.next(30) == []
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
                while len(arrivals) < count:
                    members = membership.next(30)
                    assert members is not None, "the watch stopped reporting"
                    now = time.monotonic()
                    for member in members:
                        arrivals.setdefault(member.id, now)
            started: dict[str, float] = {}
            while (line := read_line(child, 30)) != "done":
                instance, moment = line.split()
                started[instance] = float(moment)
        finally:
            child.kill()
            child.communicate(timeout=30)
        store.delete_tree("services")
    latencies = [(arrivals[instance] - started[instance]) * 1e3 for instance in started]
    print(
        f"  {name:<7} median {statistics.median(latencies):7.2f} ms   p99 "
        f"{_percentile(latencies, 0.99):7.2f} ms   max {max(latencies):7.2f} ms  ({count} regs)"
    )


@contextlib.contextmanager
def _urls() -> Iterator[dict[str, str]]:
    with tempfile.TemporaryDirectory() as directory, RedisServer() as redis, EtcdServer() as etcd:
        yield {
            "memory": f"memory://bench-{uuid.uuid4().hex}",
            "sqlite": f"sqlite:///{directory}/bench.db",
            "redis": f"{redis.url}?prefix=bench{uuid.uuid4().hex}",
            "etcd": f"{etcd.url}/bench{uuid.uuid4().hex}",
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reads", type=int, default=20_000, help="reads per backend")
    parser.add_argument("--registrations", type=int, default=200, help="per backend")
    arguments = parser.parse_args()
    with _urls() as urls:
        print(f"Cache.get vs store.get, {KEYS} keys of {len(VALUE)} bytes, random keys")
        for name, url in urls.items():
            network = name not in ("memory", "sqlite")
            _reads(name, url, arguments.reads // 10 if network else arguments.reads)
        print("registration in another process -> registry.watch(service) reports it")
        for name, url in urls.items():
            if name != "memory":  # in-process only: no other process can reach it
                _discovery(name, url, arguments.registrations)


if __name__ == "__main__":
    main()
