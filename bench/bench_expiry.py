"""How late TTL expiry is reported, on every backend, with the writer gone.

For each backend (servers started by the harness, as ``python -m bench.compare``
does), a writer opens its own Store, puts a key with the shortest ttl the driver
accepts (at least 0.3 s) and closes; a watcher on another Store times the DELETE.
Prints the median and worst lateness after the ttl, against the driver's
``latest_expiry(ttl) - ttl`` allowance. Prints figures; asserts nothing.

Run from the repository root: ``python -m bench.bench_expiry [--keys 5] [--backends ...]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import libkv
from bench.compare.__main__ import open_backend
from bench.compare.measure import percentile

BACKENDS = ("memory", "sqlite", "redis", "etcd", "zookeeper", "consul")


def lateness(url: str, keys: int) -> tuple[float, list[float], float]:
    """(ttl, seconds each DELETE came after its ttl, the driver's allowance)."""
    prefix = f"expiry{uuid.uuid4().hex}"
    separator = "&" if "?" in url else "?"
    namespaced = f"{url}{separator}prefix={prefix}" if "prefix=" not in url else url
    late: list[float] = []
    with libkv.open(namespaced) as watcher:
        ttl = max(watcher.capabilities.ttl_min, 0.3)
        allowance = watcher.capabilities.latest_expiry(ttl) - ttl
        watch = watcher.watch("e", recursive=True)
        watch.next_event(5)  # INIT
        for index in range(keys):
            # memory:// is private to its Store: write through the watcher there.
            writer = watcher if url == "memory://" else libkv.open(namespaced)
            written = time.monotonic()
            writer.put(f"e/{index}", b"x", ttl=ttl)
            if writer is not watcher:
                writer.close()
            deadline = written + ttl + allowance + 5
            while True:
                event = watch.next_event(max(deadline - time.monotonic(), 0))
                if event is None:
                    raise RuntimeError(f"no DELETE within the allowance + 5 s on {url}")
                if event.action is libkv.Action.DELETE:
                    late.append(time.monotonic() - written - ttl)
                    break
        watch.close()
    return ttl, late, allowance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    arguments = parser.parse_args()
    print(
        f"{'backend':<10} {'ttl (s)':>8} {'median late (ms)':>17} {'p99/max (ms)':>13} "
        f"{'allowed (ms)':>13}"
    )
    for backend in arguments.backends:
        with (
            tempfile.TemporaryDirectory() as directory,
            open_backend(backend, Path(directory)) as opened,
        ):
            ttl, late, allowance = lateness(opened.url, arguments.keys)
        print(
            f"{backend:<10} {ttl:8.2f} {statistics.median(late) * 1e3:17.0f} "
            f"{percentile(late, 0.99) * 1e3:13.0f} {allowance * 1e3:13.0f}"
        )


if __name__ == "__main__":
    main()
