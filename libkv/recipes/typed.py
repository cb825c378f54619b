"""Typed values: a view of a Store whose values are Python objects, through a codec.

``TypedStore(store, JSONCodec())`` offers every Store operation (reads, writes,
``put_many``, transactions, watches, ``wait_for_change``, leases, locks) with values
encoded on the way in and decoded on the way out; keys, versions, revisions, errors
and capabilities are the store's. The store itself is unchanged and shared: raw and
typed views of one store see the same keys.

A codec is any object with ``encode(value) -> bytes | str`` and
``decode(data: bytes) -> value``. Built in: :class:`JSONCodec` (UTF-8 JSON) and
:class:`TextCodec` (``str`` in an encoding, UTF-8 by default). Others need no
dependency of libkv's; for example, with msgpack or pydantic installed::

    class MsgpackCodec:
        def encode(self, value): return msgpack.packb(value)
        def decode(self, data): return msgpack.unpackb(data)

    class ModelCodec:  # one pydantic model class per view
        def __init__(self, model): self.model = model
        def encode(self, value): return value.model_dump_json()
        def decode(self, data): return self.model.model_validate_json(data)

Errors: a value the codec cannot encode raises :class:`~libkv.InvalidValueError`
naming the key, before anything is written (also for one operation of a transaction
or one item of ``put_many``). A stored value the codec cannot decode raises
:class:`DecodeError` (a ``KVError`` and a ``ValueError``) naming the key and version,
with the codec's exception as ``__cause__``. A watch event is decoded whole before it
is returned: an event with an undecodable value (an UPDATE, or any pair of an INIT
snapshot) raises DecodeError instead, and the watch carries on with the next event.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from libkv.errors import InvalidValueError, KVError
from libkv.model import Action, Capabilities, Event, KVPair
from libkv.ops import Op

if TYPE_CHECKING:
    from libkv.api import Store
    from libkv.lease import Lease
    from libkv.lock import Lock
    from libkv.watching import Watch

__all__ = [
    "Codec",
    "DecodeError",
    "JSONCodec",
    "TextCodec",
    "TypedEvent",
    "TypedPair",
    "TypedStore",
    "TypedWatch",
]

T = TypeVar("T")


class Codec(Protocol[T]):
    """Turns values into bytes (or ``str``, stored as UTF-8) and back."""

    def encode(self, value: T, /) -> bytes | str: ...

    def decode(self, data: bytes, /) -> T: ...


class JSONCodec:
    """JSON values (dicts, lists, strings, numbers, booleans, None) as compact UTF-8."""

    def __repr__(self) -> str:
        return "JSONCodec()"

    def encode(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, data: bytes) -> Any:
        return json.loads(data)


class TextCodec:
    """``str`` values in ``encoding`` (UTF-8 by default); anything else is refused."""

    def __init__(self, encoding: str = "utf-8") -> None:
        self.encoding = encoding

    def __repr__(self) -> str:
        return f"TextCodec({self.encoding!r})"

    def encode(self, value: str) -> bytes:
        if not isinstance(value, str):
            raise TypeError(f"TextCodec encodes str, not {type(value).__name__}")
        return value.encode(self.encoding)

    def decode(self, data: bytes) -> str:
        return data.decode(self.encoding)


class DecodeError(KVError, ValueError):
    """A stored value the codec could not decode; ``key`` and ``version`` name it."""

    def __init__(self, message: str, key: str, version: int) -> None:
        super().__init__(message)
        self.key = key
        self.version = version


@dataclass(frozen=True, slots=True)
class TypedPair(Generic[T]):
    """A key, its decoded value, and the version of its last write."""

    key: str
    value: T
    version: int


@dataclass(frozen=True, slots=True)
class TypedEvent(Generic[T]):
    """A watch :class:`~libkv.Event` with decoded pairs (same fields, same meaning)."""

    action: Action
    key: str
    pair: TypedPair[T] | None
    revision: int
    snapshot: tuple[TypedPair[T], ...] = ()


class TypedWatch(Generic[T]):
    """A :class:`~libkv.Watch` whose events are decoded whole; see the module docstring."""

    def __init__(self, watch: Watch, view: TypedStore[T]) -> None:
        self.watch = watch
        self._view = view

    def __iter__(self) -> Iterator[TypedEvent[T]]:
        return self

    def __next__(self) -> TypedEvent[T]:
        return self._view._decode_event(next(self.watch))

    def __enter__(self) -> TypedWatch[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self.watch.closed

    @property
    def revision(self) -> int:
        return self.watch.revision

    def next_event(self, timeout: float | None = None) -> TypedEvent[T] | None:
        event = self.watch.next_event(timeout)
        return None if event is None else self._view._decode_event(event)

    def close(self) -> None:
        self.watch.close()


class TypedStore(Generic[T]):
    """``store`` with values encoded and decoded by ``codec``; see the module docstring.

    Each method takes and returns what the Store method of the same name does, with
    values of the codec's type in place of bytes.
    """

    def __init__(self, store: Store, codec: Codec[T]) -> None:
        self.store = store
        self.codec = codec

    def __repr__(self) -> str:
        return f"<TypedStore {self.codec!r} over {self.store!r}>"

    def __enter__(self) -> TypedStore[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def capabilities(self) -> Capabilities:
        return self.store.capabilities

    @property
    def closed(self) -> bool:
        return self.store.closed

    def close(self) -> None:
        self.store.close()

    # -- reading ----------------------------------------------------------------------

    def get(self, key: str) -> TypedPair[T]:
        return self._decode(self.store.get(key))

    def exists(self, key: str) -> bool:
        return self.store.exists(key)

    def list(self, prefix: str = "") -> builtins.list[TypedPair[T]]:
        return [self._decode(pair) for pair in self.store.list(prefix)]

    def keys(self, pattern: str = "**") -> Iterator[str]:
        return self.store.keys(pattern)

    def get_many(self, keys: Iterable[str]) -> builtins.list[TypedPair[T]]:
        return [self._decode(pair) for pair in self.store.get_many(keys)]

    # -- writing ----------------------------------------------------------------------

    def put(
        self, key: str, value: T, *, ttl: float | None = None, lease: Lease | None = None
    ) -> TypedPair[T]:
        return self._decode(self.store.put(key, self._encode(key, value), ttl=ttl, lease=lease))

    def create(
        self, key: str, value: T, *, ttl: float | None = None, lease: Lease | None = None
    ) -> TypedPair[T]:
        encoded = self._encode(key, value)
        return self._decode(self.store.create(key, encoded, ttl=ttl, lease=lease))

    def update(
        self,
        key: str,
        value: T,
        *,
        version: int,
        ttl: float | None = None,
        lease: Lease | None = None,
    ) -> TypedPair[T]:
        encoded = self._encode(key, value)
        pair = self.store.update(key, encoded, version=version, ttl=ttl, lease=lease)
        return self._decode(pair)

    def delete(self, key: str, *, version: int | None = None) -> None:
        self.store.delete(key, version=version)

    def delete_tree(self, prefix: str) -> int:
        return self.store.delete_tree(prefix)

    def put_many(
        self,
        items: Mapping[str, T] | Iterable[tuple[str, T]],
        *,
        ttl: float | None = None,
        lease: Lease | None = None,
    ) -> builtins.list[TypedPair[T]]:
        pairs = items.items() if isinstance(items, Mapping) else items
        encoded = [(key, self._encode(key, value)) for key, value in pairs]
        return [self._decode(pair) for pair in self.store.put_many(encoded, ttl=ttl, lease=lease)]

    def transaction(self, ops: Iterable[Op]) -> builtins.list[TypedPair[T] | None]:
        """``store.transaction`` with the values of ``libkv.ops`` writes encoded."""
        operations = [
            dataclasses.replace(op, value=self._encode(op.key, op.value))  # type: ignore[arg-type]
            if isinstance(op, Op) and op.kind.writes
            else op
            for op in ops
        ]
        return [
            None if pair is None else self._decode(pair)
            for pair in self.store.transaction(operations)
        ]

    # -- waiting ----------------------------------------------------------------------

    def watch(
        self, key: str, *, recursive: bool = False, since: int | None = None
    ) -> TypedWatch[T]:
        return TypedWatch(self.store.watch(key, recursive=recursive, since=since), self)

    def wait_for_change(
        self, key: str, version: int, *, timeout: float | None = None
    ) -> TypedPair[T]:
        return self._decode(self.store.wait_for_change(key, version, timeout=timeout))

    def lease(self, ttl: float, *, keepalive: bool = True) -> Lease:
        return self.store.lease(ttl, keepalive=keepalive)

    def lock(self, key: str, *, ttl: float = 15.0, value: T | None = None) -> Lock:
        """A lock whose key holds ``value`` encoded (empty bytes if None)."""
        encoded = b"" if value is None else self._encode(key, value)
        return self.store.lock(key, ttl=ttl, value=encoded)

    def compact(self, revision: int) -> None:
        self.store.compact(revision)

    # -- the codec --------------------------------------------------------------------

    def _encode(self, key: str, value: T) -> bytes | str:
        try:
            return self.codec.encode(value)
        except Exception as error:
            raise InvalidValueError(
                f"{self.codec!r} cannot encode the value for {key!r}: {error}"
            ) from error

    def _decode(self, pair: KVPair) -> TypedPair[T]:
        try:
            value = self.codec.decode(pair.value)
        except Exception as error:
            raise DecodeError(
                f"{self.codec!r} cannot decode the value of {pair.key!r} "
                f"(version {pair.version}): {error}",
                pair.key,
                pair.version,
            ) from error
        return TypedPair(pair.key, value, pair.version)

    def _decode_event(self, event: Event) -> TypedEvent[T]:
        # Everything is decoded before anything is returned: never half an event.
        pair = None if event.pair is None else self._decode(event.pair)
        snapshot = tuple(self._decode(item) for item in event.snapshot)
        return TypedEvent(event.action, event.key, pair, event.revision, snapshot)
