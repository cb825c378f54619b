"""Run the comparison: ``python -m bench.compare [--operations N] [--backends ...]``."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import libkv

from . import raw as raw_clients
from .measure import (
    Side,
    event_latency,
    fan_out,
    idle_memory,
    libkv_subscriber,
    paired_rounds,
    percentile,
)
from .report import Row, draw_chart, machine, server_version, table, write_json

BACKENDS = ("memory", "sqlite", "redis", "etcd", "zookeeper", "consul")
IN_PROCESS = ("memory", "sqlite")
VALUE = b"v" * 100
KEYS = 100  # distinct keys cycled through by get, put and cas
HERE = Path(__file__).resolve().parent.parent


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


@contextlib.contextmanager
def open_backend(name: str, directory: Path) -> Iterator[tuple[str, raw_clients.RawClient]]:
    """Start ``name``'s server (if any); yield the libkv URL and the raw client."""
    from integration import servers

    if name == "memory":
        yield "memory://", raw_clients.MemoryClient()
        return
    if name == "sqlite":
        client: raw_clients.RawClient = raw_clients.SqliteClient(directory / "raw.db")
        try:
            yield f"sqlite:///{directory}/libkv.db", client
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
        if name == "redis":
            url, client = (
                f"{server.url}?prefix=benchlibkv",
                raw_clients.RedisClient(host, int(port)),
            )
        elif name == "etcd":
            url, client = f"{server.url}/benchlibkv", raw_clients.EtcdClient(host, int(port))
        elif name == "zookeeper":
            url, client = f"{server.url}/benchlibkv", raw_clients.ZooKeeperClient(server.endpoint)
        else:
            url = f"{server.url}/benchlibkv?session_ttl_min=1"  # the harness's setting
            client = raw_clients.ConsulClient(host, int(port))
        try:
            yield url, client
        finally:
            client.close()


def measure_backend(
    backend: str,
    store: libkv.Store,
    client: raw_clients.RawClient,
    counts: Counts,
    log: Callable[[str], None],
) -> list[Row]:
    """Every figure of one backend, libkv and raw side by side."""
    rows: list[Row] = []
    keys = [f"k{index}" for index in range(KEYS)]
    cas_keys = [f"c{index}" for index in range(KEYS)]
    for key in keys + cas_keys:
        store.put(key, VALUE)
        client.put(key, VALUE)
    n = counts.scaled(backend)

    def paired(
        operation: str,
        mine: Callable[[int], object],
        theirs: Callable[[int], object],
        count: int,
        chunk: int,
    ) -> None:
        result = paired_rounds(mine, theirs, count, chunk)
        rows.append(Row(backend, operation, result.libkv, result.raw, ratio=result.ratio))
        log(progress(rows[-1]))

    paired(
        "get", lambda i: store.get(keys[i % KEYS]), lambda i: client.get(keys[i % KEYS]), n, n // 10
    )
    paired(
        "put",
        lambda i: store.put(keys[i % KEYS], VALUE),
        lambda i: client.put(keys[i % KEYS], VALUE),
        n,
        n // 10,
    )

    def libkv_cas(index: int) -> object:
        key = cas_keys[index % KEYS]
        return store.update(key, VALUE, version=store.get(key).version)

    paired("cas update", libkv_cas, lambda i: client.cas(cas_keys[i % KEYS], VALUE), n, n // 10)
    many = counts.scaled(backend, 50)
    paired(
        "get_many(100)",
        lambda _: store.get_many(keys),
        lambda _: [client.get(key) for key in keys],
        many,
        max(1, many // 10),
    )
    locks = counts.scaled(backend, 20)
    if client.lock_note is None:

        def libkv_lock(_: int) -> None:
            lock = store.lock("lock")
            lock.acquire()
            lock.release()

        paired("lock cycle", libkv_lock, lambda _: client.lock_cycle(), locks, max(1, locks // 10))
    else:
        lock = store.lock("lock")
        started = time.perf_counter()
        for _ in range(locks):
            lock.acquire()
            lock.release()
        rows.append(
            Row(
                backend,
                "lock cycle",
                (time.perf_counter() - started) / locks * 1e6,
                None,
                client.lock_note,
            )
        )

    log(progress(rows[-1]))

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
            with open_backend(backend, Path(directory)) as (url, client), libkv.open(url) as store:
                versions[backend] = server_version(backend)
                clients[backend] = client.client
                rows.extend(measure_backend(backend, store, client, counts, log))
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
