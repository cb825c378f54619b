"""The Store: libkv's public interface, over a driver's :class:`~libkv.backend.Backend`.

The Store does everything that is the same for all backends exactly once: key and
value validation, namespacing, transaction checks, error translation, and the generic
operations (``keys``, ``get_many``, ``put_many``, ``wait_for_change``, leases, locks,
watches). It holds one backend (composition, not inheritance) and calls its
primitives, documented in :mod:`libkv.backend`, with validated full keys only.
"""

from __future__ import annotations

import builtins
import logging
import math
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, NoReturn, TypeVar

from libkv import concurrency
from libkv import keys as keyspace
from libkv._async.keepalive import AsyncKeepalive
from libkv._async.lock import AsyncLock, AsyncLockLeases
from libkv._async.sharing import AsyncSharedFeeds
from libkv.changes import FeedBatch
from libkv.errors import (
    InvalidArgumentError,
    KeyNotFoundError,
    KVError,
    LeaseNotFoundError,
    NotSupportedError,
    StoreClosedError,
    ValueTooLargeError,
    WaitTimeoutError,
    _ConditionError,
)
from libkv.model import MAX_REVISION, Capabilities, Event, KVPair
from libkv.ops import Op, OpKind

if TYPE_CHECKING:
    from libkv._async.backend import AsyncBackend
    from libkv._async.lease import AsyncLease
    from libkv._async.watching import AsyncWatch
    from libkv.url import StoreURL

__all__ = ["AsyncStore"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# async-only: begin
_PREPARED_PER_TURN = 1000
"""Operations validated between two yields to the event loop (about 2 ms)."""
# async-only: end


class AsyncStore:
    """A key-value store. Open one with :func:`libkv.open`; see CONTRACT.md for semantics.

    Thread-safe: one Store may be shared by threads. ``close()`` (or leaving the
    ``with`` block) ends its watches, stops its keep-alives and makes every later
    call raise StoreClosedError.
    """

    def __init__(self, backend: AsyncBackend) -> None:
        """Wrap ``backend``; :func:`libkv.open` does this with the driver's backend."""
        self._backend = backend
        self.url: StoreURL = backend.url
        self.namespace: str = backend.namespace
        self.timeout: float = backend.timeout
        self.capabilities: Capabilities = backend.capabilities
        self._closed = False
        self._root = self.namespace + "/" if self.namespace else ""
        # Held strongly: a watch dropped unclosed keeps its feed (a thread, a socket)
        # until the store closes, never past it. AsyncWatch.close() removes it.
        self._watches: set[AsyncWatch] = set()
        self._shared_feeds = AsyncSharedFeeds(self)  # one backend feed per watched prefix
        self._leases: weakref.WeakSet[AsyncLease] = weakref.WeakSet()
        self._keepalive = AsyncKeepalive(f"libkv-keepalive-{self.url.scheme}")
        self._lock_leases = AsyncLockLeases(self)  # the leases its locks share
        # The last change batch on relative keys, which every watch taking it shares.
        self._relative_batch: tuple[FeedBatch, builtins.list[Event]] | None = None
        self._close_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def backend(self) -> AsyncBackend:
        """The driver's backend, for its own attributes (a network driver's ``endpoint``).

        Its primitives skip the Store's validation, namespacing and error translation:
        call the Store's methods instead.
        """
        return self._backend

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    # -- reading ------------------------------------------------------------------

    async def get(self, key: str) -> KVPair:
        """The pair stored at ``key``; KeyNotFoundError if absent."""
        relative = keyspace.normalize_key(key)
        if self._closed:
            self._raise_closed()
        try:
            pair = await self._backend.get(self._root + relative)
        except Exception as error:
            self._reraise(error)
        if pair is None:
            raise KeyNotFoundError(relative)
        return KVPair(relative, pair.value, pair.version) if self._root else pair

    async def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        try:
            await self.get(key)
        except KeyNotFoundError:
            return False
        return True

    async def list(self, prefix: str = "") -> builtins.list[KVPair]:
        """Every pair under ``prefix`` (the key itself and its descendants), sorted by key."""
        relative = keyspace.normalize_prefix(prefix)
        pairs, _ = await self._call(self._backend.range, self._driver_prefix(relative), True)
        return self._relative_pairs(pairs)

    def keys(self, pattern: str = "**") -> AsyncIterator[str]:
        """Keys matching a glob, sorted.

        ``*``, ``?`` and ``[abc]`` match within one segment; ``**`` spans segments. A
        malformed pattern (``[]``, ``[z-a]``...) raises InvalidArgumentError.
        """
        matcher = keyspace.compile_glob(pattern)
        literal = keyspace.glob_prefix(pattern.strip("/"))
        if self._closed:
            self._raise_closed()
        return self._matching_keys(literal, matcher.match)

    async def _matching_keys(
        self, prefix: str, match: Callable[[str], object]
    ) -> AsyncIterator[str]:
        for pair in await self.list(prefix):
            if match(pair.key):
                yield pair.key

    async def get_many(self, keys: Iterable[str]) -> builtins.list[KVPair]:
        """The pairs found for ``keys``, in the order asked; missing keys are skipped."""
        relatives = [keyspace.normalize_key(key) for key in keys]
        pairs = await self._call(self._backend.get_many, [self._root + key for key in relatives])
        return [
            KVPair(relative, pair.value, pair.version)
            for relative, pair in zip(relatives, pairs, strict=True)
            if pair is not None
        ]

    # -- writing ------------------------------------------------------------------

    async def put(
        self, key: str, value: object, *, ttl: float | None = None, lease: AsyncLease | None = None
    ) -> KVPair:
        """Write ``value`` unconditionally; without ttl/lease any earlier expiry is cleared."""
        return await self._write(OpKind.PUT, key, value, None, ttl, lease)

    async def create(
        self, key: str, value: object, *, ttl: float | None = None, lease: AsyncLease | None = None
    ) -> KVPair:
        """Write ``value`` only if ``key`` is absent; KeyExistsError otherwise."""
        return await self._write(OpKind.CREATE, key, value, None, ttl, lease)

    async def update(
        self,
        key: str,
        value: object,
        *,
        version: int,
        ttl: float | None = None,
        lease: AsyncLease | None = None,
    ) -> KVPair:
        """Write ``value`` only if ``key`` is at ``version``.

        KeyNotFoundError if absent, KeyModifiedError if at another version.
        """
        return await self._write(OpKind.UPDATE, key, value, version, ttl, lease)

    async def delete(self, key: str, *, version: int | None = None) -> None:
        """Delete ``key``: KeyNotFoundError if absent, KeyModifiedError if not at ``version``."""
        await self._write(OpKind.DELETE, key, b"", version, None, None)

    async def delete_tree(self, prefix: str) -> int:
        """Delete every key under ``prefix``; return how many were deleted."""
        relative = keyspace.normalize_prefix(prefix)
        return await self._call(self._backend.delete_range, self._driver_prefix(relative))

    async def put_many(
        self,
        items: Mapping[str, object] | Iterable[tuple[str, object]],
        *,
        ttl: float | None = None,
        lease: AsyncLease | None = None,
    ) -> builtins.list[KVPair]:
        """Write every (key, value) atomically; return the new pairs in order."""
        pairs = items.items() if isinstance(items, Mapping) else items
        operations = [
            Op(OpKind.PUT, key, value, None, ttl, lease)  # type: ignore[arg-type]
            for key, value in pairs
        ]
        return [pair for pair in await self.transaction(operations) if pair is not None]

    async def transaction(self, ops: Iterable[Op]) -> builtins.list[KVPair | None]:
        """Apply ``ops`` atomically: all or none.

        On a failed condition raises the error the single operation would, with
        ``index`` set to the first failing operation. Two ops on one key, or more than
        ``capabilities.max_transaction_ops``, raise InvalidArgumentError before anything
        is sent.
        Returns the new pair for each write and None for deletes and checks.
        """
        given = builtins.list(ops)
        if len(given) > self.capabilities.max_transaction_ops:
            raise InvalidArgumentError(
                f"{len(given)} operations exceed this store's limit of "
                f"{self.capabilities.max_transaction_ops} per transaction"
            )
        operations: builtins.list[Op] = []
        for operation in given:
            operations.append(self._prepare_op(operation))
            # async-only: begin
            if len(operations) % _PREPARED_PER_TURN == 0:
                await concurrency.async_checkpoint()  # a large batch leaves the loop free
            # async-only: end
        seen: set[str] = set()
        for operation in operations:
            if operation.key in seen:
                relative = operation.key[len(self._root) :]
                raise InvalidArgumentError(
                    f"two operations on one key in a transaction: {relative!r}"
                )
            seen.add(operation.key)
        if not operations:
            if self._closed:
                self._raise_closed()
            return []
        results = await self._commit_checked(operations)
        return [self._relative_pair(pair) if pair is not None else None for pair in results]

    # -- waiting ------------------------------------------------------------------

    def watch(self, key: str, *, recursive: bool = False, since: int | None = None) -> AsyncWatch:
        """Watch ``key`` (or everything under it when ``recursive``); see :class:`Watch`."""
        from libkv._async.watching import AsyncWatch

        relative = keyspace.normalize_prefix(key) if recursive else keyspace.normalize_key(key)
        if since is not None:
            if not self.capabilities.watch_resume:
                raise NotSupportedError(f"{self.url.scheme}:// cannot resume a watch (since=)")
            _check_revision(since, "since")
        if self._closed:
            self._raise_closed()
        watch = AsyncWatch(self, relative, recursive=recursive, since=since)
        self._watches.add(watch)
        # sync-only: watch._start()
        return watch

    async def wait_for_change(
        self, key: str, version: int, *, timeout: float | None = None
    ) -> KVPair:
        """Block until ``key``'s version differs from ``version``; return the new pair.

        KeyNotFoundError if the key is absent or deleted meanwhile; WaitTimeoutError
        (a TimeoutError) if ``timeout`` seconds pass first.
        """
        relative = keyspace.normalize_key(key)
        timeout = keyspace.check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self.watch(relative) as watch:
            while True:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                event = await watch.next_event(remaining)
                if event is None:
                    if self._closed:
                        self._raise_closed()
                    raise WaitTimeoutError(f"no change of {relative!r} within {timeout} s")
                if event.pair is None:  # absent at INIT, or a DELETE
                    raise KeyNotFoundError(relative)
                if event.pair.version != version:
                    return event.pair

    # sync-only: begin
    # def lease(self, ttl: float, *, keepalive: bool = True) -> Lease:
    # sync-only: end
    # async-only: begin
    def lease(
        self, ttl: float, *, keepalive: bool = True
    ) -> concurrency.AwaitableContext[AsyncLease]:
        # async-only: end
        """Grant a lease of ``ttl`` seconds, refreshed in the background if ``keepalive``.

        In :mod:`libkv.aio` the result is awaitable (the lease) and is also an
        asynchronous context manager that revokes the lease on exit.
        """
        seconds = self._check_ttl(ttl)
        # async-only: begin
        return concurrency.AwaitableContext(lambda: self._grant_lease(seconds, keepalive))
        # async-only: end
        # sync-only: return self._grant_lease(seconds, keepalive)

    async def _grant_lease(self, ttl: float, keepalive: bool) -> AsyncLease:
        from libkv._async.lease import AsyncLease

        if self._closed:
            self._raise_closed()
        backend = self._backend
        lease_id = await self._call(backend.grant_lease, ttl)
        lease = AsyncLease(self, lease_id, ttl, keepalive=keepalive, scheduler=self._keepalive)
        self._leases.add(lease)
        return lease

    # The lease life cycle by id: what a Lease object calls (and other recipes may).

    async def keepalive_lease(self, lease_id: int) -> bool:
        """Refresh lease ``lease_id`` for its whole ttl; False if it has expired or is revoked.

        :class:`~libkv.lease.Lease` calls this every ttl/3; call it yourself only for
        a lease granted with ``keepalive=False``.
        """
        return await self._call(self._backend.keepalive_lease, _check_lease_id(lease_id))

    async def lease_ttl(self, lease_id: int) -> float | None:
        """Seconds left before lease ``lease_id`` expires, or None if it is gone."""
        return await self._call(self._backend.lease_ttl, _check_lease_id(lease_id))

    async def revoke_lease(self, lease_id: int) -> None:
        """Revoke lease ``lease_id`` and delete every key attached to it; no error if gone.

        Prefer :meth:`Lease.revoke <libkv.lease.Lease.revoke>`, which also stops the
        lease's keep-alive.
        """
        await self._call(self._backend.revoke_lease, _check_lease_id(lease_id))

    def lock(self, key: str, *, ttl: float = 15.0, value: object = b"") -> AsyncLock:
        """A distributed lock on ``key`` (not acquired yet); see :class:`Lock`."""
        if self._closed:
            self._raise_closed()
        return AsyncLock(
            self,
            keyspace.normalize_key(key),
            self._check_ttl(ttl),
            keyspace.to_bytes(value),
            leases=self._lock_leases,
        )

    async def compact(self, revision: int) -> None:
        """Discard change history before ``revision`` (an int in 0..2**63-1).

        Watches resuming from ``since`` with ``since + 1 < revision`` then raise
        HistoryLostError. NotSupportedError where the driver cannot resume watches;
        InvalidArgumentError, before anything is sent, for any other ``revision``.
        """
        _check_revision(revision, "revision")
        if not self.capabilities.watch_resume:
            raise NotSupportedError(f"{self.url.scheme}:// keeps no change history")
        await self._call(self._backend.compact, revision)

    async def close(self) -> None:
        """Close the store: watches end, keep-alives stop, later calls raise StoreClosedError."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for watch in list(self._watches):
            watch.close()
        for lease in list(self._leases):
            await lease._stop()
        await self._keepalive.close()
        try:
            await self._backend.close()
        except Exception:
            log.warning("error closing %s", self.url, exc_info=True)

    # -- shared machinery -------------------------------------------------------------

    async def _call(self, function: Callable[..., Awaitable[T]], *args: object) -> T:
        """Run a driver primitive: refuse if closed, translate backend errors."""
        if self._closed:
            self._raise_closed()
        try:
            return await function(*args)
        except Exception as error:
            self._reraise(error)

    def _reraise(self, error: Exception) -> NoReturn:
        if isinstance(error, KVError):
            raise error
        if self._closed:
            # The call raced close(): its connection went away under it, whatever the
            # client raised for that (a closed gRPC channel raises a bare ValueError).
            raise StoreClosedError(f"store is closed: {self.url}") from error
        translated = self._backend.translate_error(error)
        if translated is None:
            raise error
        raise translated from error

    def _raise_closed(self) -> NoReturn:
        raise StoreClosedError(f"store is closed: {self.url}")

    async def _write(
        self,
        kind: OpKind,
        key: str,
        value: object,
        version: int | None,
        ttl: float | None,
        lease: AsyncLease | None,
    ) -> KVPair:
        prepared = self._prepare(kind, key, value, version, ttl, lease)
        results = await self._commit_checked([prepared])
        pair = results[0]
        if pair is None or not self._root:
            return pair  # type: ignore[return-value]  # None only for delete, which returns None
        return KVPair(prepared.key[len(self._root) :], pair.value, pair.version)

    async def _commit_checked(self, operations: builtins.list[Op]) -> builtins.list[KVPair | None]:
        if self._closed:
            self._raise_closed()
        try:
            return await self._backend.commit(operations)
        except _ConditionError as error:
            raise type(error)(
                error.key[len(self._root) :] if self._root else error.key, index=error.index
            ) from None
        except Exception as error:
            self._reraise(error)

    def _prepare_op(self, operation: object) -> Op:
        if not isinstance(operation, Op):
            raise InvalidArgumentError(
                f"transaction takes libkv.ops operations, not {type(operation).__name__}"
            )
        return self._prepare(
            operation.kind,
            operation.key,
            operation.value,
            operation.version,
            operation.ttl,
            operation.lease,
        )

    def _prepare(
        self,
        kind: OpKind,
        key: str,
        value: object,
        version: int | None,
        ttl: float | None,
        lease: object,
    ) -> Op:
        """Validate one operation; return it with a full key and a bytes value."""
        full = self._root + keyspace.normalize_key(key)
        if kind is not OpKind.PUT and kind is not OpKind.CREATE:
            if version is not None or kind is not OpKind.DELETE:
                _check_revision(version, "version")
            if kind is OpKind.DELETE or kind is OpKind.CHECK:
                return Op(kind, full, b"", version)
        checked: AsyncLease | None = None
        data = keyspace.to_bytes(value)
        if len(data) > self.capabilities.max_value_size:
            raise ValueTooLargeError(
                f"value of {len(data)} bytes for {key!r} exceeds "
                f"{self.capabilities.max_value_size} bytes"
            )
        if ttl is not None:
            if lease is not None:
                raise InvalidArgumentError("give a write either ttl or lease, not both")
            ttl = self._check_ttl(ttl)
        elif lease is not None:
            checked = self._check_lease(lease)
        return Op(kind, full, data, version, ttl, checked)

    def _check_ttl(self, ttl: object) -> float:
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            raise InvalidArgumentError(f"ttl must be a number of seconds, not {ttl!r}")
        try:
            finite = math.isfinite(ttl)
        except OverflowError:  # an int too large for a float
            finite = False
        if not finite:
            raise InvalidArgumentError(f"ttl must be a finite number of seconds, not {ttl!r}")
        if ttl < self.capabilities.ttl_min or ttl <= 0:
            raise InvalidArgumentError(
                f"ttl {ttl} s is below this store's minimum of {self.capabilities.ttl_min} s"
            )
        if ttl > self.capabilities.ttl_max:
            raise InvalidArgumentError(
                f"ttl {ttl} s is above this store's maximum of {self.capabilities.ttl_max:g} s"
            )
        return float(ttl)

    def _check_lease(self, lease: object) -> AsyncLease:
        from libkv._async.lease import AsyncLease

        if not isinstance(lease, AsyncLease) or lease.store is not self:
            raise InvalidArgumentError("lease must be a Lease granted by this store")
        if lease.revoked:
            raise LeaseNotFoundError(f"lease {lease.id} was revoked")
        return lease

    def _driver_prefix(self, relative: str) -> str:
        if relative:
            return self._root + relative
        return self._root  # "ns/" (only descendants) or "" (everything)

    def _relative_pair(self, pair: KVPair) -> KVPair:
        if not self._root:
            return pair
        return KVPair(pair.key[len(self._root) :], pair.value, pair.version)

    def _relative_event(self, event: Event) -> Event:
        if not self._root:
            return event
        pair = event.pair if event.pair is None else self._relative_pair(event.pair)
        return Event(event.action, event.key[len(self._root) :], pair, event.revision)

    def _relative_events(self, batch: FeedBatch) -> builtins.list[Event]:
        """The changes of ``batch`` on relative keys, made once for all the watches of
        the store that take it whole (the watches of one prefix share its batches)."""
        made = self._relative_batch
        if made is not None and made[0] is batch:
            return made[1]
        events = [self._relative_event(event) for event in batch.changes]
        self._relative_batch = (batch, events)
        return events

    def _relative_pairs(self, pairs: Iterable[KVPair]) -> builtins.list[KVPair]:
        if not self._root:
            return list(pairs)
        cut = len(self._root)
        return [KVPair(pair.key[cut:], pair.value, pair.version) for pair in pairs]


def _check_revision(value: object, name: str) -> None:
    """The one check of every version and revision argument (version, since, compact)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REVISION:
        raise InvalidArgumentError(f"{name} must be an int in 0..2**63-1, not {value!r:.60}")


def _check_lease_id(lease_id: object) -> int:
    if isinstance(lease_id, bool) or not isinstance(lease_id, int):
        raise InvalidArgumentError(f"lease id must be an int, not {type(lease_id).__name__}")
    return lease_id
