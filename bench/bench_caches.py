"""Many caches on one store: what they add, in each flavour.

Opens ``--caches`` caches (``libkv.recipes.Cache`` / ``libkv.aio.recipes.Cache``) spread
over ``--prefixes`` prefixes of one SQLite store (or memory), and prints the threads
(sync) or tasks (async) they add, the memory per cache (tracemalloc, after every cache
synced), and the time for one put to reach every cache of its prefix.

Run from the repository root: ``python -m bench.bench_caches [--caches 100]``.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import libkv
import libkv.aio
from libkv.aio.recipes import Cache as AsyncCache
from libkv.recipes import Cache


def report(flavour: str, url: str, added: int, memory: int, caches: int, seconds: float) -> None:
    what = "threads" if flavour == "sync" else "tasks"
    print(
        f"{url.split(':')[0]:7} {flavour:5} {caches} caches: {what} +{added}, "
        f"{memory / caches / 1024:.1f} KiB per cache, one put to its caches {seconds * 1e3:.1f} ms"
    )


def sync_caches(url: str, count: int, prefixes: int) -> None:
    with libkv.open(url) as store:
        before = threading.active_count()
        tracemalloc.start()
        caches = [Cache(store, f"p{index % prefixes}") for index in range(count)]
        for cache in caches:
            assert cache.wait_synced(30)
        memory, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        added = threading.active_count() - before
        started = time.perf_counter()
        store.put("p0/new", b"x")
        while not all("p0/new" in cache for cache in caches if cache.prefix == "p0"):
            time.sleep(0.0005)
        report("sync", url, added, memory, count, time.perf_counter() - started)
        for cache in caches:
            cache.close()


async def async_caches(url: str, count: int, prefixes: int) -> None:
    async with libkv.aio.open(url) as store:
        before = len(asyncio.all_tasks())
        tracemalloc.start()
        caches = [AsyncCache(store, f"p{index % prefixes}") for index in range(count)]
        for cache in caches:
            assert await cache.wait_synced(30)
        memory, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        added = len(asyncio.all_tasks()) - before
        started = time.perf_counter()
        await store.put("p0/new", b"x")
        while not all("p0/new" in cache for cache in caches if cache.prefix == "p0"):
            await asyncio.sleep(0.0005)
        report("async", url, added, memory, count, time.perf_counter() - started)
        for cache in caches:
            await cache.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--caches", type=int, default=100)
    parser.add_argument("--prefixes", type=int, default=10)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        for url in ("memory://caches", f"sqlite:///{directory}/caches.db"):
            with libkv.open(url) as seed:  # memory://caches lives while a store is open
                for index in range(50):
                    seed.put(f"p{index % arguments.prefixes}/k{index}", b"v")
                sync_caches(url, arguments.caches, arguments.prefixes)
                asyncio.run(async_caches(url, arguments.caches, arguments.prefixes))


if __name__ == "__main__":
    main()
