"""Redis: where a libkv write's time goes, on the server and in the client.

Starts its own Redis (``integration.servers.RedisServer``) and runs, side by side in
one process, a plain put against redis-py's ``SET`` and a lock cycle (acquire and
release, uncontended) against redis-py's ``Lock``. For each it prints the time per
operation seen by the caller, and the server's own microseconds per operation from
``INFO commandstats`` (reset before each side), split by command: what the Lua
scripts run, and the scripts themselves (``evalsha``, which includes the commands
they call).

Run from the repository root: ``python -m bench.bench_redis [--operations 3000]``.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

import libkv
from integration.servers import RedisServer

VALUE = b"v" * 100


def measure(
    client: redis.Redis, name: str, operation: Callable[[], object], count: int
) -> tuple[float, dict[str, float]]:
    """Run ``operation`` ``count`` times: caller µs per call, server µs per call by command."""
    operation()  # load scripts, open connections
    client.config_resetstat()
    started = time.perf_counter()
    for _ in range(count):
        operation()
    elapsed = (time.perf_counter() - started) / count * 1e6
    server = {
        command.removeprefix("cmdstat_"): stats["usec"] / count
        for command, stats in client.info("commandstats").items()
        if not command.startswith("cmdstat_config")
    }
    return elapsed, server


def report(name: str, sides: dict[str, tuple[float, dict[str, float]]]) -> None:
    (raw_name, (raw, raw_server)), (libkv_name, (wrapped, wrapped_server)) = sides.items()
    print(f"\n{name}: {raw_name} {raw:.0f} µs, {libkv_name} {wrapped:.0f} µs, {wrapped / raw:.2f}x")
    for side, server in ((raw_name, raw_server), (libkv_name, wrapped_server)):
        scripts = server.pop("evalsha", 0.0)
        calls = ", ".join(f"{command} {cost:.1f}" for command, cost in sorted(server.items()))
        print(f"  {side:8} server µs/op: scripts {scripts:.1f} (calling: {calls or 'none'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--operations", type=int, default=3000)
    count = parser.parse_args().operations
    with RedisServer() as server:
        host, port = server.endpoint.rsplit(":", 1)
        client = redis.Redis(host=host, port=int(port))
        with libkv.open(f"{server.url}?prefix=benchredis") as store:

            def raw_lock() -> None:
                lock = client.lock("benchraw:lock", timeout=15)
                lock.acquire()
                lock.release()

            def libkv_lock() -> None:
                lock = store.lock("lock", ttl=15)
                lock.acquire()
                lock.release()

            for _ in range(2):  # the second round is the one to read: all warm
                puts = {
                    "redis-py": measure(
                        client, "set", lambda: client.set("benchraw:key", VALUE), count
                    ),
                    "libkv": measure(client, "put", lambda: store.put("key", VALUE), count),
                }
                locks = {
                    "redis-py": measure(client, "lock", raw_lock, count),
                    "libkv": measure(client, "lock", libkv_lock, count),
                }
            report("put", puts)
            report("lock cycle", locks)


if __name__ == "__main__":
    main()
