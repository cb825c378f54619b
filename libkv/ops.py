"""Transaction operations: ``store.transaction([ops.put(...), ops.check(...)])``.

An :class:`Op` is a plain description; the store validates and applies it. Drivers
receive ops whose keys are already normalised and namespace-qualified and whose
values are bytes, and use :func:`first_failure` to explain a failed condition.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from libkv.errors import KeyExistsError, KeyModifiedError, KeyNotFoundError
from libkv.model import KVPair

if TYPE_CHECKING:
    from libkv._async.lease import AsyncLease
    from libkv.errors import _ConditionError
    from libkv.lease import Lease

__all__ = ["Op", "OpKind", "check", "create", "delete", "first_failure", "put", "update"]


class OpKind(enum.Enum):
    """The kind of a transaction operation."""

    PUT = "put"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    CHECK = "check"

    @property
    def writes(self) -> bool:
        """True for operations that store a value (and so return a pair)."""
        return self in (OpKind.PUT, OpKind.CREATE, OpKind.UPDATE)


@dataclass(slots=True)
class Op:
    """One operation of a transaction; build it with the functions of this module.

    Not frozen, because it is built on every write and a frozen dataclass costs twice
    as much to construct; treat it as immutable.
    """

    kind: OpKind
    key: str
    value: bytes = b""
    version: int | None = None
    ttl: float | None = None
    lease: Lease | AsyncLease | None = None


def put(
    key: str, value: object, *, ttl: float | None = None, lease: Lease | AsyncLease | None = None
) -> Op:
    """Write ``value`` unconditionally."""
    return Op(OpKind.PUT, key, value, None, ttl, lease)  # type: ignore[arg-type]


def create(
    key: str, value: object, *, ttl: float | None = None, lease: Lease | AsyncLease | None = None
) -> Op:
    """Write ``value`` only if ``key`` does not exist (else KeyExistsError)."""
    return Op(OpKind.CREATE, key, value, None, ttl, lease)  # type: ignore[arg-type]


def update(
    key: str,
    value: object,
    version: int,
    *,
    ttl: float | None = None,
    lease: Lease | AsyncLease | None = None,
) -> Op:
    """Write ``value`` only if ``key`` is at ``version``.

    KeyNotFoundError if absent, KeyModifiedError if at another version.
    """
    return Op(OpKind.UPDATE, key, value, version, ttl, lease)  # type: ignore[arg-type]


def delete(key: str, version: int | None = None) -> Op:
    """Delete ``key``, which must exist (and be at ``version`` if given)."""
    return Op(OpKind.DELETE, key, b"", version)


def check(key: str, version: int) -> Op:
    """Require ``key`` to be at ``version``; ``version=0`` means it must not exist."""
    return Op(OpKind.CHECK, key, b"", version)


def first_failure(
    operations: Sequence[Op], current: Sequence[KVPair | None]
) -> _ConditionError | None:
    """The error for the first operation whose condition fails, or None.

    ``current[i]`` is the present state of ``operations[i].key``. The error names the
    operation's key and carries its position as ``index``.
    """
    for index, (operation, pair) in enumerate(zip(operations, current, strict=True)):
        kind, key, version = operation.kind, operation.key, operation.version
        if kind is OpKind.PUT:
            continue
        if kind is OpKind.CREATE or (kind is OpKind.CHECK and version == 0):
            if pair is not None:
                return KeyExistsError(key, index=index)
            continue
        if pair is None:
            return KeyNotFoundError(key, index=index)
        if version is not None and pair.version != version:
            return KeyModifiedError(key, index=index)
    return None
