"""How the driver lays libkv out in znodes: which data is a value, path arithmetic,
and the pieces of a multi (its error codes, its requests, lease ids).

A value is its znode's data, verbatim. Data alone is ambiguous in two cases, and then
a *verbatim record* (an empty znode ``%libkv/verbatim/<path>`` whose mzxid equals the
key's: both written by one multi) says it is a value: empty data (else an implicit
parent) and data that starts like a value of the previous layout (``\\0k``, or
``\\0l`` plus an 8-byte lease id), which is still read without its marker.
"""

from __future__ import annotations

import random
from typing import Any

from kazoo.protocol.serialization import SetData as KazooSetData

# The previous layout's markers, which it put in front of every value: read, never written.
PLAIN = b"\x00k"  # a value
LEASED = b"\x00l"  # a value under a lease: the 8-byte lease id follows
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


def is_ambiguous(data: bytes) -> bool:
    """Whether ``data`` is a value only with a verbatim record: empty (an implicit
    parent's data) or starting like a value of the previous layout."""
    return not data or data[:2] == PLAIN or (data[:2] == LEASED and len(data) >= LEASE_HEADER)


def decode_data(data: bytes, verbatim: bool) -> tuple[bytes, int] | None:
    """(value, lease id of the previous layout or 0) of a znode's data; None for an
    implicit parent. ``verbatim``: the znode has a matching verbatim record."""
    if verbatim:
        return data, 0
    if not data:
        return None
    marker = data[:2]
    if marker == PLAIN:
        return data[2:], 0
    if marker == LEASED and len(data) >= LEASE_HEADER:
        return data[LEASE_HEADER:], int.from_bytes(data[2:LEASE_HEADER], "big")
    return data, 0


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
