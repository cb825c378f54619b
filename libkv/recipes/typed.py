# Generated from libkv/_async/recipes/typed.py by scripts/unasync.py: edit that file, then run
# `python scripts/unasync.py`. CI fails if this file is not current.
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

The codecs, ``TypedPair``, ``TypedEvent`` and ``DecodeError`` live in
:mod:`libkv.recipes.codecs`, shared by both flavours.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

from libkv.model import Capabilities, Event, KVPair
from libkv.ops import Op
from libkv.recipes.codecs import (
    Codec,
    DecodeError,
    JSONCodec,
    TextCodec,
    TypedEvent,
    TypedPair,
    decode_event,
    decode_pair,
    encode_ops,
    encode_value,
)

if TYPE_CHECKING:
    from libkv.api import Store
    from libkv.lease import Lease
    from libkv.lock import Lock
    from libkv.watching import Watch

__all__ = [
    "TypedStore",
    "TypedWatch",
    "Codec",
    "DecodeError",
    "JSONCodec",
    "TextCodec",
    "TypedEvent",
    "TypedPair",
]

T = TypeVar("T")


class TypedWatch(Generic[T]):
    """A :class:`~libkv.Watch` whose events are decoded whole; see the module docstring."""

    def __init__(self, watch: Watch, view: TypedStore[T]) -> None:
        self.watch = watch
        self._view = view

    def __iter__(self) -> Iterator[TypedEvent[T]]:
        return self

    def __next__(self) -> TypedEvent[T]:
        return self._view._decode_event(self.watch.__next__())

    def __enter__(self) -> TypedWatch[T]:
        self.watch.__enter__()
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
        """End the watch (see :meth:`Watch.close <libkv.Watch.close>`)."""
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
        encoded = self._encode(key, value)
        return self._decode(self.store.put(key, encoded, ttl=ttl, lease=lease))

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
        written = self.store.put_many(encoded, ttl=ttl, lease=lease)
        return [self._decode(pair) for pair in written]

    def transaction(self, ops: Iterable[Op]) -> builtins.list[TypedPair[T] | None]:
        """``store.transaction`` with the values of ``libkv.ops`` writes encoded."""
        results = self.store.transaction(encode_ops(self.codec, ops))
        return [None if pair is None else self._decode(pair) for pair in results]

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
        """``store.lease``: in :mod:`libkv.aio`, awaitable and an async context manager."""
        return self.store.lease(ttl, keepalive=keepalive)

    def lock(self, key: str, *, ttl: float = 15.0, value: T | None = None) -> Lock:
        """A lock whose key holds ``value`` encoded (empty bytes if None)."""
        encoded = b"" if value is None else self._encode(key, value)
        return self.store.lock(key, ttl=ttl, value=encoded)

    def compact(self, revision: int) -> None:
        self.store.compact(revision)

    # -- the codec --------------------------------------------------------------------

    def _encode(self, key: str, value: T) -> bytes | str:
        return encode_value(self.codec, key, value)

    def _decode(self, pair: KVPair) -> TypedPair[T]:
        return decode_pair(self.codec, pair)

    def _decode_event(self, event: Event) -> TypedEvent[T]:
        return decode_event(self.codec, event)
