"""How the driver lays libkv out in znodes: the data markers of a value, path
arithmetic, and the pieces of a multi (its error codes, its requests, lease ids)."""

from __future__ import annotations

import random
from typing import Any

from kazoo.protocol.serialization import SetData as KazooSetData

PLAIN = b"\x00k"  # data marker of a libkv value
LEASED = b"\x00l"  # data marker of a libkv value under a lease: 8-byte lease id follows
LEASE_HEADER = len(LEASED) + 8

# ZooKeeper error codes (KeeperException.Code)
NO_NODE = -101
NO_AUTH = -102
UNIMPLEMENTED = -6
BAD_ARGUMENTS = -8
NO_CHILDREN_FOR_EPHEMERALS = -108
ROLLED_BACK = 0
RUNTIME_INCONSISTENCY = -2


def parent_path(path: str) -> str:
    """The parent path ("" for a top-level node, whose parent is the root)."""
    return path[: path.rfind("/")]


def lineage(path: str) -> list[str]:
    """``path`` and its ancestors below the root, top-down."""
    parts = path.split("/")[1:]
    return ["/" + "/".join(parts[: index + 1]) for index in range(len(parts))]


def path_depth(path: str) -> int:
    return path.count("/")


def decode_data(data: bytes) -> tuple[bytes, int] | None:
    """(value, lease id or 0) of a znode's data; None for an implicit parent."""
    if not data:
        return None
    marker = data[:2]
    if marker == PLAIN:
        return data[2:], 0
    if marker == LEASED and len(data) >= LEASE_HEADER:
        return data[LEASE_HEADER:], int.from_bytes(data[2:LEASE_HEADER], "big")
    return data, 0  # a foreign znode: its data is its value


def encode_data(value: bytes, lease_id: int) -> bytes:
    if lease_id:
        return LEASED + lease_id.to_bytes(8, "big") + value
    return PLAIN + value


def protocol_set_data(path: str, data: bytes) -> Any:
    """A plain setData request (any version) as kazoo sends it; it answers the stat."""
    return KazooSetData(path, data, -1)


def is_error(result: object) -> bool:
    """Whether a multi slot holds an error code (successes are stats, paths or True)."""
    return type(result) is int


def new_lease_id() -> int:
    return random.getrandbits(63) or 1


def milliseconds(ttl: float) -> int:
    return max(int(ttl * 1000 + 0.999), 1)
