"""libkv.aio against libkv, on memory, SQLite, Redis and ZooKeeper, side by side in one run.

Run: ``python -m bench.bench_aio [--operations N] [--leases N] [--backends ...]``
(``redis`` and ``zookeeper`` start their own server with the integration harness).
Prints figures; asserts nothing.

For each backend and flavour:

* get and put: microseconds per call, one call at a time (async: awaited in a loop),
  and the async/sync ratio; for a driver with a native async backend (Redis,
  ZooKeeper), also its sync backend on the worker threads of ``libkv.aio`` (the
  bridge it replaced);
* watch latency: ``put`` to the event of a recursive watch (sync: consumed by a
  thread; async: by a task), p50 and p99;
* leases: ``--leases`` leases on one store: the threads the store added and memory per
  lease (tracemalloc). Many watches on one store: ``python -m bench.fanout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable

import libkv
import libkv.aio
from libkv.aio import AsyncStore
from libkv.driver import ThreadedBackend

# The server URL of each backend that needs one, set by main() once it is started.
SERVERS: dict[str, str] = {}


def url_for(backend: str, directory: str) -> str:
    if backend == "memory":
        return f"memory://bench-{uuid.uuid4().hex}"
    if backend in SERVERS:
        return f"{SERVERS[backend]}?prefix=bench{uuid.uuid4().hex}"
    return f"sqlite://{directory}/{uuid.uuid4().hex}.db"


def bridged(url: str) -> AsyncStore:
    """The async store of ``url`` on its sync backend, through the worker threads."""
    return AsyncStore(ThreadedBackend(libkv.open(url).backend))


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


# -- get and put ---------------------------------------------------------------------


def sync_calls(url: str, count: int) -> dict[str, float]:
    with libkv.open(url) as store:
        store.put("bench/key", b"x" * 100)
        return {
            "get": per_call(lambda: store.get("bench/key"), count),
            "put": per_call(lambda: store.put("bench/key", b"x" * 100), count),
        }


def per_call(call: Callable[[], object], count: int) -> float:
    for _ in range(min(count // 10, 200)):
        call()
    started = time.perf_counter()
    for _ in range(count):
        call()
    return (time.perf_counter() - started) / count * 1e6


async def async_per_call(call: Callable[[], Awaitable[object]], count: int) -> float:
    for _ in range(min(count // 10, 200)):
        await call()
    started = time.perf_counter()
    for _ in range(count):
        await call()
    return (time.perf_counter() - started) / count * 1e6


async def async_calls(url: str, count: int, *, bridge: bool = False) -> dict[str, float]:
    async with bridged(url) if bridge else libkv.aio.open(url) as store:
        await store.put("bench/key", b"x" * 100)
        return {
            "get": await async_per_call(lambda: store.get("bench/key"), count),
            "put": await async_per_call(lambda: store.put("bench/key", b"x" * 100), count),
        }


# -- one watch's latency ---------------------------------------------------------------


def sync_watch_latency(url: str, count: int) -> list[float]:
    with libkv.open(url) as store, store.watch("latency", recursive=True) as watch:
        assert watch.next_event(5) is not None
        samples = []
        for index in range(count):
            sent = time.perf_counter()
            store.put(f"latency/{index % 10}", str(index))
            event = watch.next_event(5)
            assert event is not None
            samples.append(time.perf_counter() - sent)
        return samples


async def async_watch_latency(url: str, count: int) -> list[float]:
    async with libkv.aio.open(url) as store, store.watch("latency", recursive=True) as watch:
        assert await watch.next_event(5) is not None
        samples = []
        for index in range(count):
            sent = time.perf_counter()
            await store.put(f"latency/{index % 10}", str(index))
            event = await watch.next_event(5)
            assert event is not None
            samples.append(time.perf_counter() - sent)
        return samples


# -- fan-out: many watches and leases on one store ------------------------------------------


def report_leases(label: str, threads: int, lease_bytes: float) -> None:
    print(f"  {label:<16} threads added {threads:>4}   KiB/lease {lease_bytes / 1024:6.2f}")


def sync_leases(url: str, count: int) -> None:
    with libkv.open(url) as store:
        store.put("warm/up", b"")
        threads_before = threading.active_count()
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        leases = [store.lease(60) for _ in range(count)]
        lease_bytes = (tracemalloc.get_traced_memory()[0] - base) / count
        tracemalloc.stop()
        report_leases("sync", threading.active_count() - threads_before, lease_bytes)
        for lease in leases:
            lease.revoke()


async def async_leases(url: str, count: int) -> None:
    async with libkv.aio.open(url) as store:
        await store.put("warm/up", b"")
        threads_before = threading.active_count()
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        leases = [await store.lease(60) for _ in range(count)]
        lease_bytes = (tracemalloc.get_traced_memory()[0] - base) / count
        tracemalloc.stop()
        report_leases("async", threading.active_count() - threads_before, lease_bytes)
        for lease in leases:
            await lease.revoke()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--operations", type=int, default=5000)
    parser.add_argument("--leases", type=int, default=1000)
    parser.add_argument("--backends", nargs="+", default=["memory", "sqlite"])
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as servers:
        if "redis" in arguments.backends:
            from integration.servers import RedisServer

            SERVERS["redis"] = servers.enter_context(RedisServer()).url
        if "zookeeper" in arguments.backends:
            from integration.servers import ZooKeeperServer

            SERVERS["zookeeper"] = servers.enter_context(ZooKeeperServer()).url
        for backend in arguments.backends:
            print(f"{backend}")
            sync = sync_calls(url_for(backend, directory), arguments.operations)
            aio = asyncio.run(async_calls(url_for(backend, directory), arguments.operations))
            bridge = None
            if backend in SERVERS:
                url = url_for(backend, directory)
                bridge = asyncio.run(async_calls(url, arguments.operations, bridge=True))
            for name in ("get", "put"):
                through = (
                    ""
                    if bridge is None
                    else f"   bridge {bridge[name]:8.2f} us ({bridge[name] / sync[name]:5.2f}x)"
                )
                print(
                    f"  {name:<6} sync {sync[name]:8.2f} us   async {aio[name]:8.2f} us   "
                    f"async/sync {aio[name] / sync[name]:5.2f}x{through}"
                )
            count = max(arguments.operations // 10, 50)
            for label, samples in (
                ("sync", sync_watch_latency(url_for(backend, directory), count)),
                (
                    "async",
                    asyncio.run(async_watch_latency(url_for(backend, directory), count)),
                ),
            ):
                print(
                    f"  watch put->event {label:<5} p50 {statistics.median(samples) * 1e6:8.1f} us"
                    f"   p99 {percentile(samples, 0.99) * 1e6:8.1f} us"
                )
            print(f"  {arguments.leases} leases on one store:")
            sync_leases(url_for(backend, directory), arguments.leases)
            asyncio.run(async_leases(url_for(backend, directory), arguments.leases))


if __name__ == "__main__":
    main()
