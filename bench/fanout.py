"""Fan-out: many watches on one prefix of one store, per backend and per flavour.

Run: ``python -m bench.fanout [--watches 1000] [--baseline 10] [--puts 30]
[--backends memory sqlite redis etcd zookeeper consul] [--flavours sync async]``
(the server backends start their own server with the integration harness). Prints
figures; asserts nothing.

For each backend and flavour, on one store: ``--baseline`` recursive watches on one
prefix, then as many more as make ``--watches``, each past its INIT event. Printed:

* the OS threads and the sockets of this process with the baseline and with all the
  watches open (the issue: the same with 1,000 watches as with 10);
* idle memory per watch: Python allocations (tracemalloc) of the watches opened after
  the baseline, divided by their number, so what the store holds once is not counted;
* one put to all: the time from ``put`` to the moment every watch has taken its event,
  p50 and p99 over ``--puts`` puts. Sync: one thread drains the watches in turn, as a
  service watching many things from one loop would (``next_event``); async: one task
  per watch, each in ``async for``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libkv
import libkv.aio

BACKENDS = ("memory", "sqlite", "redis", "etcd", "zookeeper", "consul")
PREFIX = "fan"


@dataclass(frozen=True)
class Resources:
    """What this process holds at one moment: OS threads, sockets, traced bytes."""

    threads: int
    sockets: int
    traced: int


def resources() -> Resources:
    """OS threads (the kernel's count: gRPC's and kazoo's included) and open sockets."""
    gc.collect()
    threads = len(os.listdir("/proc/self/task"))
    sockets = 0
    for descriptor in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # a descriptor closed meanwhile
            sockets += os.readlink(f"/proc/self/fd/{descriptor}").startswith("socket:")
    traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
    return Resources(threads, sockets, traced)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def report(
    backend: str, flavour: str, first: Resources, full: Resources, added: int, samples: list[float]
) -> None:
    per_watch = (full.traced - first.traced) / added / 1024
    print(
        f"  {backend:<10} {flavour:<5}  threads {first.threads:>4} -> {full.threads:<4}  "
        f"sockets {first.sockets:>4} -> {full.sockets:<5}  KiB/watch {per_watch:6.2f}   "
        f"one put to all: p50 {statistics.median(samples) * 1e3:8.2f} ms  "
        f"p99 {percentile(samples, 0.99) * 1e3:8.2f} ms",
        flush=True,
    )


def sync_fanout(backend: str, url: str, watches: int, baseline: int, puts: int) -> None:
    with libkv.open(url) as store:
        store.put(f"{PREFIX}/key", "seed")  # the store's own connections, before counting
        opened: list[libkv.Watch] = []

        def open_watches(count: int) -> Resources:
            for _ in range(count):
                watch = store.watch(PREFIX, recursive=True)
                if watch.next_event(60) is None:
                    raise TimeoutError("no INIT event within 60 s")
                opened.append(watch)
            time.sleep(0.5)  # a benchmark: let background readers reach their idle state
            return resources()

        tracemalloc.start()
        try:
            first = open_watches(baseline)
            full = open_watches(watches - baseline)
        finally:
            tracemalloc.stop()
        samples = []
        for index in range(puts):
            sent = time.perf_counter()
            store.put(f"{PREFIX}/key", str(index))
            for watch in opened:
                if watch.next_event(30) is None:
                    raise TimeoutError(f"put {index} did not reach a watch within 30 s")
            samples.append(time.perf_counter() - sent)
        report(backend, "sync", first, full, watches - baseline, samples)
        for watch in opened:
            watch.close()


async def async_fanout(backend: str, url: str, watches: int, baseline: int, puts: int) -> None:
    async with libkv.aio.open(url) as store:
        await store.put(f"{PREFIX}/key", "seed")
        opened: list[libkv.aio.AsyncWatch] = []

        async def open_watches(count: int) -> Resources:
            for _ in range(count):
                watch = store.watch(PREFIX, recursive=True)
                if await watch.next_event(60) is None:
                    raise TimeoutError("no INIT event within 60 s")
                opened.append(watch)
            await asyncio.sleep(0.5)  # let background readers reach their idle state
            return resources()

        tracemalloc.start()
        try:
            first = await open_watches(baseline)
            full = await open_watches(watches - baseline)
        finally:
            tracemalloc.stop()
        arrived = 0
        everyone = asyncio.Event()

        async def consume(watch: libkv.aio.AsyncWatch) -> None:
            nonlocal arrived
            async for _ in watch:
                arrived += 1
                if arrived == len(opened):
                    everyone.set()

        consumers = [asyncio.create_task(consume(watch)) for watch in opened]
        samples = []
        for index in range(-1, puts):  # put -1 also starts the consumer tasks: not counted
            arrived = 0
            everyone.clear()
            sent = time.perf_counter()
            await store.put(f"{PREFIX}/key", str(index))
            await asyncio.wait_for(everyone.wait(), 30)
            samples.append(time.perf_counter() - sent)
        report(backend, "async", first, full, watches - baseline, samples[1:])
        for watch in opened:
            await watch.close()
        for consumer in consumers:
            consumer.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)


@contextlib.contextmanager
def server_url(backend: str, directory: Path) -> Iterator[str]:
    """A URL of ``backend``, its server (if any) started for the duration."""
    if backend == "memory":
        yield "memory://"
        return
    if backend == "sqlite":
        yield f"sqlite:///{directory}/fanout.db"
        return
    from integration import servers

    factory = {
        "redis": servers.RedisServer,
        "etcd": servers.EtcdServer,
        "zookeeper": servers.ZooKeeperServer,
        "consul": servers.ConsulServer,
    }[backend]
    with factory() as server:
        yield server.url


def namespaced(url: str) -> str:
    """``url`` with a fresh namespace, so that each run starts with no key."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}prefix=fanout{uuid.uuid4().hex[:8]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--watches", type=int, default=1000)
    parser.add_argument("--baseline", type=int, default=10)
    parser.add_argument("--puts", type=int, default=30)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument(
        "--flavours", nargs="+", choices=("sync", "async"), default=["sync", "async"]
    )
    arguments = parser.parse_args()
    print(
        f"{arguments.watches} recursive watches on one prefix of one store "
        f"(baseline {arguments.baseline}); {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as directory:
        for backend in arguments.backends:
            with server_url(backend, Path(directory)) as url:
                if "sync" in arguments.flavours:
                    sync_fanout(
                        backend,
                        namespaced(url),
                        arguments.watches,
                        arguments.baseline,
                        arguments.puts,
                    )
                if "async" in arguments.flavours:
                    asyncio.run(
                        async_fanout(
                            backend,
                            namespaced(url),
                            arguments.watches,
                            arguments.baseline,
                            arguments.puts,
                        )
                    )


if __name__ == "__main__":
    main()
