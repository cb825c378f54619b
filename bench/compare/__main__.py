"""Run the comparison: ``python -m bench.compare [--operations N] [--backends ...]
[--flavours sync async]``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libkv
import libkv.aio
from libkv.aio import AsyncStore

from . import raw as raw_clients
from .measure import (
    Operation,
    Side,
    Timer,
    awaited_calls,
    event_latency,
    fan_out,
    idle_memory,
    libkv_subscriber,
    paired_rounds,
    percentile,
    timed_calls,
)
from .raw_async import (
    AsyncConsulClient,
    AsyncEtcdClient,
    AsyncMemoryClient,
    AsyncRawClient,
    AsyncRedisClient,
    AsyncZooKeeperClient,
)
from .report import FLAVOURS, Row, draw_chart, machine, server_version, table, write_json

BACKENDS = ("memory", "sqlite", "redis", "etcd", "zookeeper", "consul")
IN_PROCESS = ("memory", "sqlite")
VALUE = b"v" * 100
KEYS = 100  # distinct keys cycled through by get, put and cas
HERE = Path(__file__).resolve().parent.parent
NO_ASYNC_CLIENT = "no asyncio client of this backend to compare with"


@dataclass(frozen=True)
class Counts:
    """How many operations each measurement makes per side, from ``--operations``."""

    operations: int
    in_process_factor: int = 10

    def scaled(self, backend: str, divisor: int = 1, least: int = 10) -> int:
        factor = self.in_process_factor if backend in IN_PROCESS else 1
        return max(least, self.operations * factor // divisor)


def progress(row: Row) -> str:
    """One row as a progress line on stderr."""
    raw = "-" if row.raw is None else f"{row.raw:10.4g}"
    ratio = "" if row.ratio is None else f"  {row.ratio:.2f}x"
    return f"  {row.operation:<14} libkv {row.libkv:10.4g}  raw {raw:>10} {row.unit}{ratio}"


@dataclass(frozen=True)
class Opened:
    """A started backend: libkv's URL, the raw sync client, and the class of the raw
    asyncio client (None: there is none to compare with) with its arguments: it is made
    inside the loop that measures it."""

    url: str
    client: raw_clients.RawClient
    async_client: type[AsyncRawClient] | None
    async_arguments: tuple[Any, ...] = ()

    def make_async_client(self) -> AsyncRawClient | None:
        if self.async_client is None:
            return None
        return self.async_client(*self.async_arguments)


@contextlib.contextmanager
def open_backend(name: str, directory: Path) -> Iterator[Opened]:
    """Start ``name``'s server (if any); yield what measures it."""
    from integration import servers

    if name == "memory":
        yield Opened("memory://", raw_clients.MemoryClient(), AsyncMemoryClient)
        return
    if name == "sqlite":
        client: raw_clients.RawClient = raw_clients.SqliteClient(directory / "raw.db")
        try:
            yield Opened(f"sqlite:///{directory}/libkv.db", client, None)
        finally:
            client.close()
        return
    factories: dict[str, Callable[[], servers.ServerProcess]] = {
        "redis": servers.RedisServer,
        "etcd": servers.EtcdServer,
        "zookeeper": servers.ZooKeeperServer,
        "consul": servers.ConsulServer,
    }
    with factories[name]() as server:
        host, port = server.endpoint.rsplit(":", 1)
        opened: Opened
        if name == "redis":
            opened = Opened(
                f"{server.url}?prefix=benchlibkv",
                raw_clients.RedisClient(host, int(port)),
                AsyncRedisClient,
                (host, int(port)),
            )
        elif name == "etcd":
            opened = Opened(
                f"{server.url}/benchlibkv",
                raw_clients.EtcdClient(host, int(port)),
                AsyncEtcdClient,
                (host, int(port)),
            )
        elif name == "zookeeper":
            opened = Opened(
                f"{server.url}/benchlibkv",
                raw_clients.ZooKeeperClient(server.endpoint),
                AsyncZooKeeperClient,
                (server.endpoint,),
            )
        else:
            opened = Opened(
                f"{server.url}/benchlibkv?session_ttl_min=1",  # the harness's setting
                raw_clients.ConsulClient(host, int(port)),
                AsyncConsulClient if importlib.util.find_spec("aiohttp") else None,
                (host, int(port)),
            )
        try:
            yield opened
        finally:
            opened.client.close()


class LibkvCalls:
    """The calls measured, through a sync :class:`libkv.Store`."""

    def __init__(self, store: libkv.Store) -> None:
        self.get, self.put, self.get_many = store.get, store.put, store.get_many
        self._store = store

    def cas(self, key: str, value: bytes) -> object:
        return self._store.update(key, value, version=self._store.get(key).version)

    def lock_cycle(self) -> None:
        lock = self._store.lock("lock")
        lock.acquire()
        lock.release()


class AsyncLibkvCalls:
    """The same calls through an :class:`libkv.aio.AsyncStore`, as coroutines."""

    def __init__(self, store: AsyncStore) -> None:
        self.get, self.put, self.get_many = store.get, store.put, store.get_many
        self._store = store

    async def cas(self, key: str, value: bytes) -> object:
        current = await self._store.get(key)
        return await self._store.update(key, value, version=current.version)

    async def lock_cycle(self) -> None:
        lock = self._store.lock("lock")
        await lock.acquire()
        await lock.release()


def call_rows(
    backend: str,
    flavour: str,
    mine: Any,
    theirs: Any,
    timed: Timer,
    counts: Counts,
    log: Callable[[str], None],
) -> list[Row]:
    """get, put, cas update, get_many and lock cycle of one flavour, side by side.

    ``mine`` (:class:`LibkvCalls` or :class:`AsyncLibkvCalls`) and ``theirs`` (a raw
    client of the same flavour, or None) return values or awaitables, which ``timed``
    runs: plain calls, or awaited in the flavour's event loop.
    """
    rows: list[Row] = []
    keys = [f"k{index}" for index in range(KEYS)]
    cas_keys = [f"c{index}" for index in range(KEYS)]
    n = counts.scaled(backend)

    def add(row: Row) -> None:
        rows.append(row)
        log(progress(row))

    def paired(operation: str, libkv_call: Operation, raw_call: Operation, count: int) -> None:
        if theirs is None:
            figure = timed(libkv_call, 0, count)
            add(Row(backend, operation, figure, None, NO_ASYNC_CLIENT, flavour=flavour))
            return
        result = paired_rounds(libkv_call, raw_call, count, max(1, count // 10), timed)
        add(Row(backend, operation, result.libkv, result.raw, ratio=result.ratio, flavour=flavour))

    paired("get", lambda i: mine.get(keys[i % KEYS]), lambda i: theirs.get(keys[i % KEYS]), n)
    paired(
        "put",
        lambda i: mine.put(keys[i % KEYS], VALUE),
        lambda i: theirs.put(keys[i % KEYS], VALUE),
        n,
    )
    paired(
        "cas update",
        lambda i: mine.cas(cas_keys[i % KEYS], VALUE),
        lambda i: theirs.cas(cas_keys[i % KEYS], VALUE),
        n,
    )
    many = counts.scaled(backend, 50)
    if theirs is None:
        paired("get_many(100)", lambda _: mine.get_many(keys), lambda _: None, many)
    elif flavour == "sync":
        paired(
            "get_many(100)",
            lambda _: mine.get_many(keys),
            lambda _: [theirs.get(key) for key in keys],
            many,
        )
    else:

        async def raw_many(_: int) -> object:
            return [await theirs.get(key) for key in keys]

        paired("get_many(100)", lambda _: mine.get_many(keys), raw_many, many)
    locks = counts.scaled(backend, 20)
    if theirs is not None and theirs.lock_note is None:
        paired("lock cycle", lambda _: mine.lock_cycle(), lambda _: theirs.lock_cycle(), locks)
    else:
        note = theirs.lock_note if theirs is not None else NO_ASYNC_CLIENT
        figure = timed(lambda _: mine.lock_cycle(), 0, locks)
        add(Row(backend, "lock cycle", figure, None, note, flavour=flavour))
    return rows


def measure_backend(
    backend: str,
    store: libkv.Store,
    client: raw_clients.RawClient,
    counts: Counts,
    log: Callable[[str], None],
) -> list[Row]:
    """Every sync figure of one backend, libkv and raw side by side."""
    for index in range(KEYS):
        for key in (f"k{index}", f"c{index}"):
            store.put(key, VALUE)
            client.put(key, VALUE)
    rows = call_rows(backend, "sync", LibkvCalls(store), client, timed_calls, counts, log)

    serial = itertools.count()
    sides = {
        "libkv": Side(
            lambda _: store.put("w/k", f"{next(serial)}".encode()),
            libkv_subscriber(store),
            "w",
            client.linger,  # the same server: libkv's blocking queries linger alike
        ),
    }
    if backend not in IN_PROCESS:  # memory and sqlite have no native change notification
        sides["raw"] = Side(
            lambda _: client.put("w/k", f"{next(serial)}".encode()),
            client.subscribe,
            "w",
            client.linger,
        )
    watch_count = counts.scaled(backend, 5)
    latencies = event_latency(sides, watch_count)
    time.sleep(client.linger)
    theirs = latencies.get("raw")
    for operation, fraction in (("watch p50", 0.5), ("watch p99", 0.99)):
        rows.append(
            Row(
                backend,
                operation,
                percentile(latencies["libkv"], fraction) * 1e3,
                percentile(theirs, fraction) * 1e3 if theirs else None,
                "" if theirs else str(client.watch_note),
            )
        )
    log(progress(rows[-2]))
    log(progress(rows[-1]))
    fans = fan_out(sides, 100, max(10, counts.operations // 50))
    rows.append(
        Row(
            backend,
            "100 watchers",
            statistics.median(fans["libkv"]) * 1e3,
            statistics.median(fans["raw"]) * 1e3 if "raw" in fans else None,
            "" if "raw" in fans else str(client.watch_note),
        )
    )
    log(progress(rows[-1]))
    mine_memory = idle_memory(libkv_subscriber(store), "idle", 100)
    time.sleep(client.linger)
    their_memory = idle_memory(client.subscribe, "idle", 100) if "raw" in sides else None
    time.sleep(client.linger)
    rows.append(
        Row(
            backend,
            "idle watch",
            mine_memory.traced / 1024,
            their_memory.traced / 1024 if their_memory else None,
            f"RSS growth per watch: libkv {mine_memory.rss / 1024:.0f} KiB"
            + (f", raw {their_memory.rss / 1024:.0f} KiB" if their_memory else "")
            + ("" if their_memory else f"; {client.watch_note}"),
        )
    )
    log(progress(rows[-1]))
    return rows


def measure_async_backend(
    backend: str,
    opened: Opened,
    counts: Counts,
    log: Callable[[str], None],
) -> list[Row]:
    """The asyncio flavour's call figures: ``libkv.aio`` against the raw asyncio client,
    both driven by one event loop."""
    with asyncio.Runner() as runner:

        async def start() -> tuple[AsyncStore, AsyncRawClient | None]:
            store = libkv.aio.open(opened.url)
            client = opened.make_async_client()
            for index in range(KEYS):
                for key in (f"k{index}", f"c{index}"):
                    await store.put(key, VALUE)
                    if client is not None:
                        await client.put(key, VALUE)
            return store, client

        store, client = runner.run(start())

        def timed(operation: Any, begin: int, size: int) -> float:
            return runner.run(awaited_calls(operation, begin, size))

        try:
            return call_rows(backend, "async", AsyncLibkvCalls(store), client, timed, counts, log)
        finally:
            if client is not None:
                runner.run(client.close())
            runner.run(store.close())


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description="libkv against each backend's raw client, side by side in one process.",
    )
    parser.add_argument(
        "--operations",
        type=int,
        default=1000,
        help="get/put/cas calls per side on a server backend (x10 in memory and sqlite); "
        "the other figures scale from it",
    )
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--flavours", nargs="+", choices=FLAVOURS, default=list(FLAVOURS))
    parser.add_argument("--json", type=Path, default=HERE / "compare.json")
    parser.add_argument("--chart", type=Path, default=HERE / "compare.png")
    options = parser.parse_args(arguments)
    logging.basicConfig(level=logging.WARNING)
    counts = Counts(options.operations)
    rows: list[Row] = []
    versions: dict[str, str] = {}
    clients: dict[str, str] = {}

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as directory:
        for backend in options.backends:
            log(f"{backend}:")
            with open_backend(backend, Path(directory)) as opened:
                versions[backend] = server_version(backend)
                if "sync" in options.flavours:
                    log("  sync (libkv against the raw client):")
                    clients[f"{backend} sync"] = opened.client.client
                    with libkv.open(opened.url) as store:
                        rows.extend(measure_backend(backend, store, opened.client, counts, log))
                if "async" in options.flavours:
                    log("  async (libkv.aio against the raw asyncio client):")
                    clients[f"{backend} async"] = (
                        "none" if opened.async_client is None else opened.async_client.client
                    )
                    rows.extend(measure_async_backend(backend, opened, counts, log))
    about = machine(versions)
    about["raw_clients"] = clients
    settings = {"operations": options.operations, "seconds": round(time.monotonic() - started)}
    print(table(rows, clients))
    print(
        f"\n{about['cpu']}, {about['cores']} cores, Python {about['python']}, "
        f"load {about['load_average']}, {about['date']}, {settings['seconds']} s"
    )
    write_json(options.json, rows, about, settings)
    draw_chart(options.chart, rows, about)
    print(f"wrote {options.json} and {options.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
