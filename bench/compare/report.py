"""Results of the comparison: rows, targets, notes, the machine, table, JSON and chart."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

# The issues' targets, per flavour: reads at most 1.05x (sync) or 1.10x (async), writes
# at most 1.25x the raw client of the same flavour.
FLAVOURS = ("sync", "async")
TARGETS: dict[str, dict[str, float]] = {
    "sync": {"read": 1.05, "write": 1.25},
    "async": {"read": 1.10, "write": 1.25},
}

# Operation name -> (kind, unit). Kind "read"/"write" carries a target; "watch" and
# "memory" are reported without one (the issue sets none).
OPERATIONS: dict[str, tuple[str, str]] = {
    "get": ("read", "us/op"),
    "put": ("write", "us/op"),
    "cas update": ("write", "us/op"),
    "get_many(100)": ("read", "us/100 keys"),
    "watch p50": ("watch", "ms"),
    "watch p99": ("watch", "ms"),
    "100 watchers": ("watch", "ms"),
    "lock cycle": ("write", "us/op"),
    "idle watch": ("memory", "KiB/watch"),
}

_LOCK_NOTE = (
    "libkv lock = create under the lease its store's locks share (granted once, kept "
    "alive) + delete, and returns a fencing token"
)

# Why a libkv write does more than the raw one, from the drivers' READMEs.
NOTES: dict[tuple[str, str], str] = {
    ("memory", "put"): "appends to the change log (history for watch since=); raw is a bare dict",
    ("memory", "cas update"): "appends to the change log; raw is a bare dict",
    ("memory", "get"): "key normalisation and a KVPair vs a bare dict lookup",
    (
        "memory",
        "get_many(100)",
    ): "100 lookups through the core (no batched read) vs 100 dict lookups",
    ("sqlite", "put"): "also bumps the meta revision and appends to the changes table",
    ("sqlite", "cas update"): "also bumps the meta revision and appends to the changes table",
    ("sqlite", "get"): "one SELECT that also skips expired keys, under the store's lock",
    ("sqlite", "get_many(100)"): "100 SELECTs in one read transaction vs 100 autocommit SELECTs",
    ("redis", "put"): "one Lua script that also bumps the revision and XADDs the log stream",
    ("redis", "cas update"): "one Lua script that also bumps the revision and XADDs the log stream",
    ("redis", "get_many(100)"): "one MGET vs 100 GETs",
    ("redis", "watch p50"): "raw: keyspace notifications (no value, lost on disconnect)",
    ("redis", "lock cycle"): _LOCK_NOTE + " (2 scripts); raw redis-py Lock is SET NX PX + Lua",
    ("etcd", "lock cycle"): _LOCK_NOTE
    + "; raw python-etcd3 Lock grants a lease per acquire and leaves it to expire",
    ("etcd", "get_many(100)"): "one Txn of 100 ranges vs 100 Range calls",
    ("zookeeper", "cas update"): "reads node and ancestors (multiRead), then one multi",
    ("zookeeper", "watch p50"): "libkv: recursive persistent watch; raw: one-key DataWatch",
    ("zookeeper", "lock cycle"): _LOCK_NOTE + " (TTL znode + attached entry)",
    ("zookeeper", "get_many(100)"): "one multiRead vs 100 getData calls",
    ("redis", "100 watchers"): "libkv: the 100 watches share one XREAD on the log stream"
    " (one feed per watched prefix); raw: 100 pub/sub connections",
    ("etcd", "100 watchers"): "libkv: the 100 watches share one etcd watch on the store's"
    " one watch stream; raw: 100 callbacks on python-etcd3's one shared watch stream",
    ("etcd", "idle watch"): "libkv: the engine's state of a watch sharing one etcd watch;"
    " raw: a callback on python-etcd3's one shared watch stream",
    ("zookeeper", "idle watch"): "libkv: the engine's state of a watch sharing one"
    " recursive persistent watch; raw: a one-key DataWatch",
    ("consul", "put"): "PUT /v1/txn (delete + set: a new ModifyIndex for every write)",
    ("consul", "cas update"): "PUT /v1/txn (check-index + delete + set)",
    ("consul", "lock cycle"): _LOCK_NOTE + " (a Consul session, like raw)",
    ("consul", "get_many(100)"): "the driver has no batched read: 100 GETs on both sides",
    ("consul", "get"): "raw py-consul (requests) with consistency=consistent, like libkv",
}


@dataclass
class Row:
    """One figure: a backend's operation through libkv and through the raw client, in
    one flavour (``libkv`` against the raw sync client, ``libkv.aio`` against its asyncio
    client)."""

    backend: str
    operation: str
    libkv: float
    raw: float | None  # None: no fair raw equivalent (see note)
    note: str = ""
    ratio: float | None = None  # given: the median of paired rounds' ratios
    flavour: str = "sync"
    kind: str = field(init=False)
    unit: str = field(init=False)
    target: float | None = field(init=False)
    status: str = field(init=False)

    def __post_init__(self) -> None:
        self.kind, self.unit = OPERATIONS[self.operation]
        same_note = self.operation.replace("p99", "p50")  # both percentiles share one
        known = NOTES.get((self.backend, same_note), "")
        self.note = "; ".join(part for part in (known, self.note) if part)
        if self.ratio is None and self.raw:
            self.ratio = self.libkv / self.raw
        self.target = TARGETS[self.flavour].get(self.kind)
        if self.ratio is None:
            self.status = "libkv only"
        elif self.target is None:
            self.status = "-"
        else:
            self.status = "ok" if self.ratio <= self.target else "OVER"


def _run(*command: str) -> str:
    if shutil.which(command[0]) is None:
        return ""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def machine(server_versions: dict[str, str]) -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "servers": server_versions,
        "clients": {
            name: _package(name)
            for name in ("libkv", "redis", "etcd-sdk-python", "kazoo", "py-consul")
        },
    }


def server_version(backend: str) -> str:
    """The server version a backend ran against (best effort, from the binaries)."""
    if backend == "redis":
        found = re.search(r"v=(\S+)", _run("redis-server", "--version"))
        return f"Redis {found.group(1)}" if found else "Redis ?"
    if backend == "etcd":
        found = re.search(r"etcd Version: (\S+)", _run("etcd", "--version"))
        return f"etcd {found.group(1)}" if found else "etcd ?"
    if backend == "zookeeper":
        version = _run("dpkg-query", "-W", "-f", "${Version}", "zookeeper").split("-")[0]
        return f"ZooKeeper {version or '?'}"
    if backend == "consul":
        from integration.servers import consul_version

        return f"Consul {consul_version()}"
    if backend == "sqlite":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    return f"{backend} in-process"


def _figure(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def table(rows: list[Row], clients: dict[str, str]) -> str:
    """The rows as a fixed-width text table with ratios marked against their target."""
    header = (
        "backend",
        "flavour",
        "operation",
        "libkv",
        "raw",
        "unit",
        "ratio",
        "target",
        "mark",
        "note",
    )
    lines = [header]
    for row in rows:
        note = row.note
        if row.operation == "get":
            client = clients[f"{row.backend} {row.flavour}"]
            note = f"raw: {client}" + (f"; {note}" if note else "")
        lines.append(
            (
                row.backend,
                row.flavour,
                row.operation,
                _figure(row.libkv),
                _figure(row.raw),
                row.unit,
                "-" if row.ratio is None else f"{row.ratio:.2f}x",
                "-" if row.target is None else f"<={row.target:.2f}x",
                row.status,
                note,
            )
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
        + "  "
        + line[-1]
        for line in lines
    )


def write_json(
    path: Path, rows: list[Row], about: dict[str, Any], settings: dict[str, Any]
) -> None:
    path.write_text(
        json.dumps(
            {"machine": about, "settings": settings, "results": [asdict(row) for row in rows]},
            indent=2,
        )
        + "\n"
    )


def draw_chart(path: Path, rows: list[Row], about: dict[str, Any]) -> None:
    """Grouped bars of libkv/raw per operation (one bar per backend), log scale, one panel
    per flavour, with each operation's target drawn over its group and the machine in
    the footer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flavours = [name for name in FLAVOURS if any(row.flavour == name for row in rows)]
    backends = list(dict.fromkeys(row.backend for row in rows))
    colours = plt.get_cmap("tab10")
    figure, panels = plt.subplots(len(flavours), 1, figsize=(14, 6 * len(flavours)), squeeze=False)
    for flavour, axes in zip(flavours, panels[:, 0], strict=True):
        mine = [row for row in rows if row.flavour == flavour]
        operations = [name for name in OPERATIONS if any(r.operation == name for r in mine)]
        ratios = {(row.backend, row.operation): row.ratio for row in mine}
        width = 0.8 / max(1, len(backends))
        for number, backend in enumerate(backends):
            for position, operation in enumerate(operations):
                ratio = ratios.get((backend, operation))
                x = position - 0.4 + width * (number + 0.5)
                if ratio is None:
                    axes.text(x, 1.0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
                    continue
                axes.bar(x, ratio, width, color=colours(number), label=backend)
                axes.text(
                    x, ratio, f"{ratio:.2f}", ha="center", va="bottom", fontsize=6, rotation=90
                )
        for position, operation in enumerate(operations):
            target = TARGETS[flavour].get(OPERATIONS[operation][0])
            if target is not None:
                axes.hlines(target, position - 0.45, position + 0.45, colors="red", linestyles="--")
        axes.axhline(1.0, color="black", linewidth=0.8)
        axes.set_yscale("log")
        axes.set_xticks(range(len(operations)), operations)
        axes.set_ylabel("libkv / raw client (log scale; lower is better)")
        title = "libkv against" if flavour == "sync" else "libkv.aio against"
        axes.set_title(f"{flavour}: {title} each backend's raw client (red dashes: target)")
        handles, labels = axes.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        axes.legend(unique.values(), unique.keys(), loc="upper left", ncols=max(1, len(unique)))
    servers = ", ".join(about["servers"].values())
    figure.text(
        0.01,
        0.005,
        f"{about['cpu']}, {about['cores']} cores, Python {about['python']}, "
        f"load {about['load_average'][0]}; {servers}; {about['date']}",
        fontsize=8,
    )
    figure.tight_layout(rect=(0, 0.02, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
