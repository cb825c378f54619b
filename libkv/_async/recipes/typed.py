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
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

from libkv import concurrency
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
    from libkv._async.api import AsyncStore
    from libkv._async.lease import AsyncLease
    from libkv._async.lock import AsyncLock
    from libkv._async.watching import AsyncWatch

__all__ = [
    "AsyncTypedStore",
    "AsyncTypedWatch",
    "Codec",
    "DecodeError",
    "JSONCodec",
    "TextCodec",
    "TypedEvent",
    "TypedPair",
]

T = TypeVar("T")


class AsyncTypedWatch(Generic[T]):
    """A :class:`~libkv.Watch` whose events are decoded whole; see the module docstring."""

    def __init__(self, watch: AsyncWatch, view: AsyncTypedStore[T]) -> None:
        self.watch = watch
        self._view = view

    def __aiter__(self) -> AsyncIterator[TypedEvent[T]]:
        return self

    async def __anext__(self) -> TypedEvent[T]:
        return self._view._decode_event(await self.watch.__anext__())

    async def __aenter__(self) -> AsyncTypedWatch[T]:
        await self.watch.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self.watch.closed

    @property
    def revision(self) -> int:
        return self.watch.revision

    async def next_event(self, timeout: float | None = None) -> TypedEvent[T] | None:
        event = await self.watch.next_event(timeout)
        return None if event is None else self._view._decode_event(event)

    # sync-only: begin
    # def close(self) -> None:
    # sync-only: end
    # async-only: begin
    def close(self) -> concurrency.Done:
        # async-only: end
        """End the watch (see :meth:`Watch.close <libkv.Watch.close>`)."""
        return self.watch.close()  # async-only
        # sync-only: self.watch.close()


class AsyncTypedStore(Generic[T]):
    """``store`` with values encoded and decoded by ``codec``; see the module docstring.

    Each method takes and returns what the Store method of the same name does, with
    values of the codec's type in place of bytes.
    """

    def __init__(self, store: AsyncStore, codec: Codec[T]) -> None:
        self.store = store
        self.codec = codec

    def __repr__(self) -> str:
        return f"<TypedStore {self.codec!r} over {self.store!r}>"

    async def __aenter__(self) -> AsyncTypedStore[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def capabilities(self) -> Capabilities:
        return self.store.capabilities

    @property
    def closed(self) -> bool:
        return self.store.closed

    async def close(self) -> None:
        await self.store.close()

    # -- reading ----------------------------------------------------------------------

    async def get(self, key: str) -> TypedPair[T]:
        return self._decode(await self.store.get(key))

    async def exists(self, key: str) -> bool:
        return await self.store.exists(key)

    async def list(self, prefix: str = "") -> builtins.list[TypedPair[T]]:
        return [self._decode(pair) for pair in await self.store.list(prefix)]

    def keys(self, pattern: str = "**") -> AsyncIterator[str]:
        return self.store.keys(pattern)

    async def get_many(self, keys: Iterable[str]) -> builtins.list[TypedPair[T]]:
        return [self._decode(pair) for pair in await self.store.get_many(keys)]

    # -- writing ----------------------------------------------------------------------

    async def put(
        self, key: str, value: T, *, ttl: float | None = None, lease: AsyncLease | None = None
    ) -> TypedPair[T]:
        encoded = self._encode(key, value)
        return self._decode(await self.store.put(key, encoded, ttl=ttl, lease=lease))

    async def create(
        self, key: str, value: T, *, ttl: float | None = None, lease: AsyncLease | None = None
    ) -> TypedPair[T]:
        encoded = self._encode(key, value)
        return self._decode(await self.store.create(key, encoded, ttl=ttl, lease=lease))

    async def update(
        self,
        key: str,
        value: T,
        *,
        version: int,
        ttl: float | None = None,
        lease: AsyncLease | None = None,
    ) -> TypedPair[T]:
        encoded = self._encode(key, value)
        pair = await self.store.update(key, encoded, version=version, ttl=ttl, lease=lease)
        return self._decode(pair)

    async def delete(self, key: str, *, version: int | None = None) -> None:
        await self.store.delete(key, version=version)

    async def delete_tree(self, prefix: str) -> int:
        return await self.store.delete_tree(prefix)

    async def put_many(
        self,
        items: Mapping[str, T] | Iterable[tuple[str, T]],
        *,
        ttl: float | None = None,
        lease: AsyncLease | None = None,
    ) -> builtins.list[TypedPair[T]]:
        pairs = items.items() if isinstance(items, Mapping) else items
        encoded = [(key, self._encode(key, value)) for key, value in pairs]
        written = await self.store.put_many(encoded, ttl=ttl, lease=lease)
        return [self._decode(pair) for pair in written]

    async def transaction(self, ops: Iterable[Op]) -> builtins.list[TypedPair[T] | None]:
        """``store.transaction`` with the values of ``libkv.ops`` writes encoded."""
        results = await self.store.transaction(encode_ops(self.codec, ops))
        return [None if pair is None else self._decode(pair) for pair in results]

    # -- waiting ----------------------------------------------------------------------

    def watch(
        self, key: str, *, recursive: bool = False, since: int | None = None
    ) -> AsyncTypedWatch[T]:
        return AsyncTypedWatch(self.store.watch(key, recursive=recursive, since=since), self)

    async def wait_for_change(
        self, key: str, version: int, *, timeout: float | None = None
    ) -> TypedPair[T]:
        return self._decode(await self.store.wait_for_change(key, version, timeout=timeout))

    # sync-only: begin
    # def lease(self, ttl: float, *, keepalive: bool = True) -> Lease:
    # sync-only: end
    # async-only: begin
    def lease(
        self, ttl: float, *, keepalive: bool = True
    ) -> concurrency.AwaitableContext[AsyncLease]:
        # async-only: end
        """``store.lease``: in :mod:`libkv.aio`, awaitable and an async context manager."""
        return self.store.lease(ttl, keepalive=keepalive)

    def lock(self, key: str, *, ttl: float = 15.0, value: T | None = None) -> AsyncLock:
        """A lock whose key holds ``value`` encoded (empty bytes if None)."""
        encoded = b"" if value is None else self._encode(key, value)
        return self.store.lock(key, ttl=ttl, value=encoded)

    async def compact(self, revision: int) -> None:
        await self.store.compact(revision)

    # -- the codec --------------------------------------------------------------------

    def _encode(self, key: str, value: T) -> bytes | str:
        return encode_value(self.codec, key, value)

    def _decode(self, pair: KVPair) -> TypedPair[T]:
        return decode_pair(self.codec, pair)

    def _decode_event(self, event: Event) -> TypedEvent[T]:
        return decode_event(self.codec, event)
