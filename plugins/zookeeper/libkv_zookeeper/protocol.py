"""ZooKeeper requests kazoo 2.11 has no call for, as kazoo request objects.

kazoo's connection sends any object with ``type``, ``serialize()`` and
``deserialize(buffer, offset)``; these add what the driver needs from ZooKeeper 3.6+:

* :class:`Multi`: a write multi (opcode 14) that also carries TTL creates (opcode 21)
  and answers with every slot's result or error, plus the zxid of its reply header;
* :class:`MultiRead`: a read multi (opcode 22): getData and getChildren of many nodes
  served at one point of the server's history (one request, one consistent state);
* :class:`AddWatch` / :class:`RemoveWatches`: persistent (recursive) watches (opcodes
  106 and 18).

The reply header (xid, zxid, err) precedes ``offset`` in the buffer kazoo hands to
``deserialize``; its zxid is the last transaction the server had applied when it
answered, which is the revision a read is consistent with.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AddWatch",
    "Create",
    "CreateTTL",
    "Multi",
    "MultiRead",
    "ReadData",
    "RemoveWatches",
    "Stat",
    "request_size",
]

_INT = struct.Struct("!i")
_LONG = struct.Struct("!q")
_HEADER = struct.Struct("!iBi")  # MultiHeader: type, done, err
_STAT = struct.Struct("!qqqqiiiqiiq")

CREATE = 1
DELETE = 2
GET_DATA = 4
SET_DATA = 5
GET_CHILDREN = 8
CHECK = 13
CREATE2 = 15
CREATE_CONTAINER = 19
CREATE_TTL = 21
ERROR = -1

PERSISTENT = 0
PERSISTENT_WITH_TTL = 5

WATCH_PERSISTENT = 0
WATCH_PERSISTENT_RECURSIVE = 1
WATCHER_TYPE_PERSISTENT = 4  # removeWatches' WatcherType codes
WATCHER_TYPE_PERSISTENT_RECURSIVE = 5

OPEN_ACL_UNSAFE: tuple[tuple[int, str, str], ...] = ((31, "world", "anyone"),)


@dataclass(frozen=True, slots=True)
class Stat:
    """A znode's stat (the fields the driver reads)."""

    czxid: int
    mzxid: int
    version: int
    ephemeral_owner: int
    num_children: int
    pzxid: int

    @classmethod
    def read(cls, buffer: bytes, offset: int) -> Stat:
        fields = _STAT.unpack_from(buffer, offset)
        # czxid, mzxid, ctime, mtime, version, cversion, aversion, owner, length,
        # numChildren, pzxid
        return cls(fields[0], fields[1], fields[4], fields[7], fields[9], fields[10])


def _string(text: str) -> bytes:
    encoded = text.encode("utf-8")
    return _INT.pack(len(encoded)) + encoded


def _buffer(data: bytes) -> bytes:
    return _INT.pack(len(data)) + data


def _acl(acl: tuple[tuple[int, str, str], ...]) -> bytes:
    parts = [_INT.pack(len(acl))]
    for permissions, scheme, identity in acl:
        parts.append(_INT.pack(permissions) + _string(scheme) + _string(identity))
    return b"".join(parts)


def _read_string(buffer: bytes, offset: int) -> tuple[str | None, int]:
    (length,) = _INT.unpack_from(buffer, offset)
    offset += 4
    if length < 0:
        return None, offset
    return buffer[offset : offset + length].decode("utf-8"), offset + length


def _read_buffer(buffer: bytes, offset: int) -> tuple[bytes, int]:
    (length,) = _INT.unpack_from(buffer, offset)
    offset += 4
    if length < 0:
        return b"", offset
    return bytes(buffer[offset : offset + length]), offset + length


def reply_zxid(buffer: bytes, offset: int) -> int:
    """The zxid of the reply header that precedes ``offset`` (kazoo's layout)."""
    return int(_LONG.unpack_from(buffer, offset - 12)[0])


# -- write multi ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Create:
    path: str
    data: bytes
    acl: tuple[tuple[int, str, str], ...]
    flags: int = PERSISTENT
    type: int = CREATE

    def serialize(self) -> bytes:
        return _string(self.path) + _buffer(self.data) + _acl(self.acl) + _INT.pack(self.flags)


@dataclass(frozen=True, slots=True)
class CreateTTL:
    path: str
    data: bytes
    acl: tuple[tuple[int, str, str], ...]
    ttl_milliseconds: int
    type: int = CREATE_TTL

    def serialize(self) -> bytes:
        return (
            _string(self.path)
            + _buffer(self.data)
            + _acl(self.acl)
            + _INT.pack(PERSISTENT_WITH_TTL)
            + _LONG.pack(self.ttl_milliseconds)
        )


@dataclass(frozen=True, slots=True)
class Delete:
    path: str
    version: int
    type: int = DELETE

    def serialize(self) -> bytes:
        return _string(self.path) + _INT.pack(self.version)


@dataclass(frozen=True, slots=True)
class SetData:
    path: str
    data: bytes
    version: int
    type: int = SET_DATA

    def serialize(self) -> bytes:
        return _string(self.path) + _buffer(self.data) + _INT.pack(self.version)


@dataclass(frozen=True, slots=True)
class Check:
    path: str
    version: int
    type: int = CHECK

    def serialize(self) -> bytes:
        return _string(self.path) + _INT.pack(self.version)


WriteOp = Create | CreateTTL | Delete | SetData | Check

_HEADER_SIZE = _HEADER.size + 4  # a request's header (xid, type) and length prefix


def request_size(operations: list[WriteOp]) -> int:
    """Bytes of the multi request carrying ``operations`` (what jute.maxbuffer bounds)."""
    return _HEADER_SIZE + sum(_HEADER.size + len(op.serialize()) for op in operations) + 9


class Multi:
    """A write multi: all ops or none. The result lists each slot's outcome.

    On failure the failing slot holds its error code, earlier slots 0 (rolled back)
    and later ones -2 (runtime inconsistency), as ZooKeeper reports them.
    """

    type = 14

    def __init__(self, operations: list[WriteOp]) -> None:
        self.operations = operations
        self.zxid = 0  # of the reply; kazoo replaces a multi's result by a plain list

    def serialize(self) -> bytes:
        parts = [_HEADER.pack(op.type, False, -1) + op.serialize() for op in self.operations]
        return b"".join(parts) + _HEADER.pack(-1, True, -1)

    def deserialize(self, buffer: bytes, offset: int) -> list[Any]:
        """One entry per op: a Stat, a path, True, or an int error code."""
        self.zxid = reply_zxid(buffer, offset)
        return _multi_results(buffer, offset, _write_result)


def _write_result(kind: int, buffer: bytes, offset: int) -> tuple[Any, int]:
    if kind == CREATE:
        return _read_string(buffer, offset)
    if kind in (CREATE2, CREATE_TTL, CREATE_CONTAINER):
        _, offset = _read_string(buffer, offset)
        return Stat.read(buffer, offset), offset + _STAT.size
    if kind == SET_DATA:
        return Stat.read(buffer, offset), offset + _STAT.size
    if kind in (DELETE, CHECK):
        return True, offset
    raise ValueError(f"unexpected multi result type {kind}")


def _multi_results(
    buffer: bytes, offset: int, read_one: Callable[[int, bytes, int], tuple[Any, int]]
) -> list[Any]:
    """A MultiResponse's results: ``read_one(type, buffer, offset)`` each, or error codes."""
    results: list[Any] = []
    while True:
        kind, done, _ = _HEADER.unpack_from(buffer, offset)
        offset += _HEADER.size
        if done:
            return results
        if kind == ERROR:
            (code,) = _INT.unpack_from(buffer, offset)
            results.append(int(code))
            offset += 4
        else:
            result, offset = read_one(kind, buffer, offset)
            results.append(result)


# -- read multi ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadData:
    """A getData result: the data and stat, or None for a missing node."""

    data: bytes
    stat: Stat


class MultiRead:
    """Read several nodes' data (``("data", path)``) and children (``("children", path)``)
    in one request, answered from one state of the server. A missing node's slot holds
    its error code (-101)."""

    type = 22

    def __init__(self, reads: list[tuple[str, str]]) -> None:
        self.reads = reads
        self.zxid = 0  # of the reply: the state every result was read from

    def serialize(self) -> bytes:
        parts = []
        for kind, path in self.reads:
            code = GET_DATA if kind == "data" else GET_CHILDREN
            parts.append(_HEADER.pack(code, False, -1) + _string(path) + b"\0")
        return b"".join(parts) + _HEADER.pack(-1, True, -1)

    def deserialize(self, buffer: bytes, offset: int) -> list[ReadData | list[str] | int]:
        """One entry per read: ReadData, a list of child names, or an int error code."""
        self.zxid = reply_zxid(buffer, offset)
        return _multi_results(buffer, offset, _read_result)


def _read_result(kind: int, buffer: bytes, offset: int) -> tuple[Any, int]:
    if kind == GET_DATA:
        data, offset = _read_buffer(buffer, offset)
        return ReadData(data, Stat.read(buffer, offset)), offset + _STAT.size
    if kind == GET_CHILDREN:
        (count,) = _INT.unpack_from(buffer, offset)
        offset += 4
        children: list[str] = []
        for _ in range(max(count, 0)):
            child, offset = _read_string(buffer, offset)
            children.append(child or "")
        return children, offset
    raise ValueError(f"unexpected multiRead result type {kind}")


# -- watches ---------------------------------------------------------------------------


class _PathAndNumber:
    """A request of a path and an int whose reply is only its header's error code."""

    type = 0

    def __init__(self, path: str, number: int) -> None:
        self.path = path
        self.number = number

    def serialize(self) -> bytes:
        return _string(self.path) + _INT.pack(self.number)

    @classmethod
    def deserialize(cls, buffer: bytes, offset: int) -> bool:
        return True


class AddWatch(_PathAndNumber):
    """Add a persistent (mode 0) or persistent recursive (mode 1) watch on a path."""

    type = 106


class RemoveWatches(_PathAndNumber):
    """Remove this connection's watches of a WatcherType (3: any) on a path.

    ZooKeeper 3.8 refuses the persistent types (4, 5) here (ZOOKEEPER-4472), so the
    driver removes with 3, and keeps one persistent watch per path.
    """

    type = 18
