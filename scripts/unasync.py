#!/usr/bin/env python3
"""Generate libkv's sync modules from their async source (the one implementation).

The core that waits (Store, watch engine, lease, lock, recipes) is written once, as
async code under ``libkv/_async/``; this script writes the sync flavour next to it,
``libkv/_async/api.py`` to ``libkv/api.py`` and so on, by renaming:

* ``async def``/``async with``/``async for`` lose ``async``; ``await`` goes;
* ``AsyncName`` becomes ``Name`` and ``async_name`` becomes ``name``
  (``AsyncStore`` -> ``Store``, ``concurrency.async_wait`` -> ``concurrency.wait``);
* the async protocol methods and types get their sync names (``__aenter__``,
  ``AsyncIterator``, ``StopAsyncIteration``...); ``libkv._async`` becomes ``libkv``;
* the few places where the flavours differ are marked: a line ending in
  ``# async-only`` is dropped, and so is every line between ``# async-only: begin``
  and ``# async-only: end``; a comment line ``# sync-only: <code>`` becomes
  ``<code>``, and so does every comment line ``# <code>`` between
  ``# sync-only: begin`` and ``# sync-only: end``.

The same goes for a driver's modules listed in ``PLUGINS`` (the Redis driver's
``libkv_redis/_async/driver.py`` to ``libkv_redis/driver.py``, the ZooKeeper, etcd and
Consul drivers' likewise), with the renames of its client added (``redis.asyncio`` to
``redis``, ``grpc.aio`` to ``grpc``).

The output is formatted with ruff. ``--check`` writes nothing and exits 1 when a
generated file is not current, so CI fails when one flavour changes without the other.
"""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "libkv" / "_async"
TARGET = ROOT / "libkv"

RENAMES = [
    (re.compile(r"\basync (def|with|for)\b"), r"\1"),
    (re.compile(r"\bawait "), ""),
    (re.compile(r"\b__a(enter|exit|iter)__\b"), r"__\1__"),
    (re.compile(r"\b__anext__\b"), "__next__"),
    (re.compile(r"\bStopAsyncIteration\b"), "StopIteration"),
    (re.compile(r"\baclose\b"), "close"),
    (re.compile(r"\blibkv\._async\b"), "libkv"),
    (re.compile(r"\blibkv/_async/"), "libkv/"),
    (re.compile(r"\bAwaitable\[(\w+)\]"), r"\1"),
    (re.compile(r"\bAsync([A-Z]\w*)"), r"\1"),
    (re.compile(r"\basync_(\w+)"), r"\1"),
]
ASYNC_ONLY = re.compile(r"#\s*async-only\s*$")
SYNC_ONLY = re.compile(r"^(\s*)#\s*sync-only:\s?(.*)$")
BEGIN = re.compile(r"^\s*#\s*(async|sync)-only: begin\s*$")
END = re.compile(r"^\s*#\s*(async|sync)-only: end\s*$")
LINE_LENGTH = 100  # ruff's line-length
COMMENTED = re.compile(r"^(\s*)# ?(.*)$")


REDIS = ROOT / "plugins" / "redis" / "libkv_redis"
CONSUL = ROOT / "plugins" / "consul" / "libkv_consul"
ZOOKEEPER = ROOT / "plugins" / "zookeeper" / "libkv_zookeeper"
ETCD = ROOT / "plugins" / "etcd" / "libkv_etcd"
# A driver's async source modules and their sync targets, with the renames its client
# needs first. Its other modules under _async/ (io.py) are hand-written twins.
PLUGINS: dict[Path, tuple[Path, list[tuple[re.Pattern[str], str]]]] = {
    REDIS / "_async" / "driver.py": (
        REDIS / "driver.py",
        [
            (re.compile(r"\bredis\.asyncio\b"), "redis"),
            (re.compile(r"\blibkv_redis\._async\b"), "libkv_redis"),
            (re.compile(r"\bopen_redis_async\b"), "open_redis"),
        ],
    ),
    ZOOKEEPER / "_async" / "driver.py": (
        ZOOKEEPER / "driver.py",
        [
            (re.compile(r"\blibkv_zookeeper\._async\b"), "libkv_zookeeper"),
            (re.compile(r"\bopen_zookeeper_async\b"), "open_zookeeper"),
        ],
    ),
    ETCD / "_async" / "driver.py": (
        ETCD / "driver.py",
        [
            (re.compile(r"\bgrpc\.aio\.(?=\w)"), "grpc."),
            (re.compile(r"\blibkv_etcd\._async\b"), "libkv_etcd"),
            (re.compile(r"\bopen_etcd_async\b"), "open_etcd"),
        ],
    ),
    CONSUL / "_async" / "driver.py": (
        CONSUL / "driver.py",
        [
            (re.compile(r"\blibkv_consul\._async\b"), "libkv_consul"),
            (re.compile(r"\bopen_consul(s?)_async\b"), r"open_consul\1"),
        ],
    ),
}


def sources() -> list[Path]:
    """Every async source module, sorted: the core's, then the drivers'."""
    core = sorted(path for path in SOURCE.rglob("*.py") if path.name != "__init__.py")
    return core + sorted(PLUGINS)


def target_of(source: Path) -> Path:
    if source in PLUGINS:
        return PLUGINS[source][0]
    return TARGET / source.relative_to(SOURCE)


def generate(source: Path) -> str:
    """The sync module for ``source``, formatted."""
    relative = source.relative_to(ROOT).as_posix()
    lines = [
        f"# Generated from {relative} by scripts/unasync.py: edit that file, then run",
        "# `python scripts/unasync.py`. CI fails if this file is not current.",
    ]
    if len(lines[0]) > LINE_LENGTH:  # a driver's longer path
        lines = [
            f"# Generated from {relative} by scripts/unasync.py:",
            "# edit that file, then run `python scripts/unasync.py`. CI fails if this is stale.",
        ]
    renames = (PLUGINS[source][1] if source in PLUGINS else []) + RENAMES
    block: str | None = None
    for number, line in enumerate(source.read_text().splitlines(), 1):
        begin, end = BEGIN.match(line), END.match(line)
        if begin is not None or end is not None:
            marker = begin or end
            assert marker is not None
            if (block is None) != (begin is not None) or (end and marker[1] != block):
                raise SystemExit(f"{relative}:{number}: unbalanced {line.strip()!r}")
            block = begin[1] if begin is not None else None
            continue
        if block == "async":
            continue
        if block == "sync":
            commented = COMMENTED.match(line)
            if commented is None:
                raise SystemExit(f"{relative}:{number}: a sync-only line must be a comment")
            lines.append(commented.group(1) + commented.group(2))
            continue
        if ASYNC_ONLY.search(line):
            continue
        sync_only = SYNC_ONLY.match(line)
        if sync_only is not None:
            lines.append(sync_only.group(1) + sync_only.group(2))
            continue
        for pattern, replacement in renames:
            line = pattern.sub(replacement, line)
        lines.append(line)
    if block is not None:
        raise SystemExit(f"{relative}: {block}-only block not ended")
    text = "\n".join(lines) + "\n"
    return format_code(text, target_of(source))


def format_code(text: str, path: Path) -> str:
    for command in (
        ["ruff", "check", "--fix-only", "--select", "I,F401", "--stdin-filename", str(path), "-"],
        ["ruff", "format", "--stdin-filename", str(path), "-"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", *command], input=text, capture_output=True, text=True, cwd=ROOT
        )
        if done.returncode != 0:
            raise SystemExit(f"generating {path.relative_to(ROOT)}: {done.stderr.strip()}")
        text = done.stdout
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is stale"
    )
    arguments = parser.parse_args(argv)
    stale = []
    for source in sources():
        target = target_of(source)
        generated = generate(source)
        current = target.read_text() if target.exists() else ""
        if generated == current:
            continue
        stale.append(target)
        if arguments.check:
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    generated.splitlines(keepends=True),
                    str(target.relative_to(ROOT)),
                    f"generated from {source.relative_to(ROOT)}",
                )
            )
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(generated)
            print(f"wrote {target.relative_to(ROOT)}")
    if arguments.check and stale:
        print(
            f"\n{len(stale)} generated file(s) are not current: run `python scripts/unasync.py`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
