"""The Store: libkv's public interface, and the base class every driver extends.

The base class does everything that is the same for all backends exactly once: key
and value validation, namespacing, transaction checks, error translation, and the
generic operations (``keys``, ``get_many``, ``put_many``, ``wait_for_change``,
leases, locks, watches). A driver implements the small set of primitives below,
always on full (namespace-qualified) keys:

=====================================  ==============================================
``_get(key)``                          the pair or None
``_range(prefix, recursive)``          ``(sorted pairs, revision)``, one consistent read
``_commit(ops)``                       apply ops atomically or raise the first failure
``_delete_range(prefix)``              delete every key under prefix, return the count
``_grant_lease(ttl)``                  a new lease id
``_keepalive_lease(id)``               refresh; False if the lease is gone
``_lease_ttl(id)``                     seconds left, or None if gone
``_revoke_lease(id)``                  delete the lease and its keys
``_open_feed(prefix, after)``          a :class:`~libkv.watching.Feed` for the watch engine
``_compact(revision)``                 discard change history before revision
``_translate_error(error)``            a KVError for a backend exception, else None
``_close()``                           release connections
=====================================  ==============================================

A driver overrides only these (and ``capabilities``); every other name of the
base class, public or private (``_write``, ``_prepare``, ``_call``, ``_root``...),
is the core's.

Prefixes passed to drivers: ``""`` is everything, ``"p/"`` every key starting with
``p/``, and ``"p"`` the key ``p`` and every key starting with ``p/``
(:func:`in_prefix` says exactly that).
"""

from __future__ import annotations

import builtins
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, NoReturn, TypeVar

from libkv import keys as keyspace
from libkv.errors import (
    KeyNotFoundError,
    KVError,
    LeaseNotFoundError,
    NotSupportedError,
    StoreClosedError,
    ValueTooLargeError,
    WaitTimeoutError,
    _ConditionError,
)
from libkv.model import Capabilities, KVPair
from libkv.ops import Op, OpKind

if TYPE_CHECKING:
    from libkv.lease import Lease
    from libkv.lock import Lock
    from libkv.url import StoreURL
    from libkv.watching import Feed, Watch

__all__ = ["Store", "in_prefix"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def in_prefix(key: str, prefix: str) -> bool:
    """Whether ``key`` is under a driver prefix (see the module docstring)."""
    if not prefix:
        return True
    if prefix[-1] == "/":
        return key.startswith(prefix)
    return key == prefix or key.startswith(prefix + "/")


class Store:
    """A key-value store. Open one with :func:`libkv.open`; see CONTRACT.md for semantics.

    Thread-safe: one Store may be shared by threads. ``close()`` (or leaving the
    ``with`` block) ends its watches, stops its keep-alives and makes every later
    call raise StoreClosedError.
    """

    capabilities: Capabilities

    def __init__(self, url: StoreURL, *, namespace: str = "", timeout: float = 10.0) -> None:
        self.url = url
        self.namespace = keyspace.normalize_prefix(namespace)
        self.timeout = timeout
        self._closed = False
        self._root = self.namespace + "/" if self.namespace else ""
        self._watches: weakref.WeakSet[Watch] = weakref.WeakSet()
        self._leases: weakref.WeakSet[Lease] = weakref.WeakSet()
        self._close_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    # -- reading ------------------------------------------------------------------

    def get(self, key: str) -> KVPair:
        """The pair stored at ``key``; KeyNotFoundError if absent."""
        relative = keyspace.normalize_key(key)
        if self._closed:
            self._raise_closed()
        try:
            pair = self._get(self._root + relative)
        except Exception as error:
            self._reraise(error)
        if pair is None:
            raise KeyNotFoundError(relative)
        return KVPair(relative, pair.value, pair.version) if self._root else pair

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        try:
            self.get(key)
        except KeyNotFoundError:
            return False
        return True

    def list(self, prefix: str = "") -> builtins.list[KVPair]:
        """Every pair under ``prefix`` (the key itself and its descendants), sorted by key."""
        relative = keyspace.normalize_prefix(prefix)
        pairs, _ = self._call(self._range, self._driver_prefix(relative), True)
        return self._relative_pairs(pairs)

    def keys(self, pattern: str = "**") -> Iterator[str]:
        """Keys matching a glob, sorted.

        ``*``, ``?`` and ``[abc]`` match within one segment; ``**`` spans segments.
        """
        matcher = keyspace.compile_glob(pattern)
        literal = keyspace.glob_prefix(pattern.strip("/"))
        pairs = self.list(literal)
        return iter([pair.key for pair in pairs if matcher.match(pair.key)])

    def get_many(self, keys: Iterable[str]) -> builtins.list[KVPair]:
        """The pairs found for ``keys``, in the order asked; missing keys are skipped."""
        relatives = [keyspace.normalize_key(key) for key in keys]
        pairs = self._call(self._get_many, [self._root + key for key in relatives])
        return [
            KVPair(relative, pair.value, pair.version)
            for relative, pair in zip(relatives, pairs, strict=True)
            if pair is not None
        ]

    # -- writing ------------------------------------------------------------------

    def put(
        self, key: str, value: object, *, ttl: float | None = None, lease: Lease | None = None
    ) -> KVPair:
        """Write ``value`` unconditionally; without ttl/lease any earlier expiry is cleared."""
        return self._write(OpKind.PUT, key, value, None, ttl, lease)

    def create(
        self, key: str, value: object, *, ttl: float | None = None, lease: Lease | None = None
    ) -> KVPair:
        """Write ``value`` only if ``key`` is absent; KeyExistsError otherwise."""
        return self._write(OpKind.CREATE, key, value, None, ttl, lease)

    def update(
        self,
        key: str,
        value: object,
        *,
        version: int,
        ttl: float | None = None,
        lease: Lease | None = None,
    ) -> KVPair:
        """Write ``value`` only if ``key`` is at ``version``.

        KeyNotFoundError if absent, KeyModifiedError if at another version.
        """
        return self._write(OpKind.UPDATE, key, value, version, ttl, lease)

    def delete(self, key: str, *, version: int | None = None) -> None:
        """Delete ``key``: KeyNotFoundError if absent, KeyModifiedError if not at ``version``."""
        self._write(OpKind.DELETE, key, b"", version, None, None)

    def delete_tree(self, prefix: str) -> int:
        """Delete every key under ``prefix``; return how many were deleted."""
        relative = keyspace.normalize_prefix(prefix)
        return self._call(self._delete_range, self._driver_prefix(relative))

    def put_many(
        self,
        items: Mapping[str, object] | Iterable[tuple[str, object]],
        *,
        ttl: float | None = None,
        lease: Lease | None = None,
    ) -> builtins.list[KVPair]:
        """Write every (key, value) atomically; return the new pairs in order."""
        pairs = items.items() if isinstance(items, Mapping) else items
        operations = [
            Op(OpKind.PUT, key, value, None, ttl, lease)  # type: ignore[arg-type]
            for key, value in pairs
        ]
        return [pair for pair in self.transaction(operations) if pair is not None]

    def transaction(self, ops: Iterable[Op]) -> builtins.list[KVPair | None]:
        """Apply ``ops`` atomically: all or none.

        On a failed condition raises the error the single operation would, with
        ``index`` set to the first failing operation. Two ops on one key, or more than
        ``capabilities.max_transaction_ops``, raise ValueError before anything is sent.
        Returns the new pair for each write and None for deletes and checks.
        """
        operations = [self._prepare_op(operation) for operation in ops]
        if len(operations) > self.capabilities.max_transaction_ops:
            raise ValueError(
                f"{len(operations)} operations exceed this store's limit of "
                f"{self.capabilities.max_transaction_ops} per transaction"
            )
        seen: set[str] = set()
        for operation in operations:
            if operation.key in seen:
                raise ValueError(f"two operations on one key in a transaction: {operation.key!r}")
            seen.add(operation.key)
        if not operations:
            if self._closed:
                self._raise_closed()
            return []
        results = self._commit_checked(operations)
        return [self._relative_pair(pair) if pair is not None else None for pair in results]

    # -- waiting ------------------------------------------------------------------

    def watch(self, key: str, *, recursive: bool = False, since: int | None = None) -> Watch:
        """Watch ``key`` (or everything under it when ``recursive``); see :class:`Watch`."""
        from libkv.watching import Watch

        relative = keyspace.normalize_prefix(key) if recursive else keyspace.normalize_key(key)
        if since is not None:
            if not self.capabilities.watch_resume:
                raise NotSupportedError(f"{self.url.scheme}:// cannot resume a watch (since=)")
            if isinstance(since, bool) or not isinstance(since, int) or since < 0:
                raise ValueError(f"since must be a revision (int >= 0), not {since!r}")
        if self._closed:
            self._raise_closed()
        watch = Watch(self, relative, recursive=recursive, since=since)
        self._watches.add(watch)
        return watch

    def wait_for_change(self, key: str, version: int, *, timeout: float | None = None) -> KVPair:
        """Block until ``key``'s version differs from ``version``; return the new pair.

        KeyNotFoundError if the key is absent or deleted meanwhile; WaitTimeoutError
        (a TimeoutError) if ``timeout`` seconds pass first.
        """
        relative = keyspace.normalize_key(key)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.watch(relative) as watch:
            while True:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                event = watch.next_event(remaining)
                if event is None:
                    if self._closed:
                        self._raise_closed()
                    raise WaitTimeoutError(f"no change of {relative!r} within {timeout} s")
                if event.pair is None:  # absent at INIT, or a DELETE
                    raise KeyNotFoundError(relative)
                if event.pair.version != version:
                    return event.pair

    def lease(self, ttl: float, *, keepalive: bool = True) -> Lease:
        """Grant a lease of ``ttl`` seconds, refreshed in the background if ``keepalive``."""
        from libkv.lease import Lease

        seconds = self._check_ttl(ttl)
        lease_id = self._call(self._grant_lease, seconds)
        lease = Lease(self, lease_id, seconds, keepalive=keepalive)
        self._leases.add(lease)
        return lease

    def lock(self, key: str, *, ttl: float = 15.0, value: object = b"") -> Lock:
        """A distributed lock on ``key`` (not acquired yet); see :class:`Lock`."""
        from libkv.lock import Lock

        if self._closed:
            self._raise_closed()
        return Lock(
            self, keyspace.normalize_key(key), self._check_ttl(ttl), keyspace.to_bytes(value)
        )

    def compact(self, revision: int) -> None:
        """Discard change history before ``revision``.

        Watches resuming from ``since`` with ``since + 1 < revision`` then raise
        HistoryLostError. NotSupportedError where the driver cannot resume watches.
        """
        if not self.capabilities.watch_resume:
            raise NotSupportedError(f"{self.url.scheme}:// keeps no change history")
        self._call(self._compact, revision)

    def close(self) -> None:
        """Close the store: watches end, keep-alives stop, later calls raise StoreClosedError."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for watch in list(self._watches):
            watch.close()
        for lease in list(self._leases):
            lease._stop()
        try:
            self._close()
        except Exception:
            log.warning("error closing %s", self.url, exc_info=True)

    # -- what drivers implement -----------------------------------------------------

    def _get(self, key: str) -> KVPair | None:
        raise NotImplementedError

    def _get_many(self, keys: Sequence[str]) -> builtins.list[KVPair | None]:
        return [self._get(key) for key in keys]

    def _range(self, prefix: str, recursive: bool) -> tuple[builtins.list[KVPair], int]:
        raise NotImplementedError

    def _commit(self, ops: Sequence[Op]) -> builtins.list[KVPair | None]:
        raise NotImplementedError

    def _delete_range(self, prefix: str) -> int:
        raise NotImplementedError

    def _grant_lease(self, ttl: float) -> int:
        raise NotSupportedError(f"{self.url.scheme}:// has no leases")

    def _keepalive_lease(self, lease_id: int) -> bool:
        raise NotSupportedError(f"{self.url.scheme}:// has no leases")

    def _lease_ttl(self, lease_id: int) -> float | None:
        raise NotSupportedError(f"{self.url.scheme}:// has no leases")

    def _revoke_lease(self, lease_id: int) -> None:
        raise NotSupportedError(f"{self.url.scheme}:// has no leases")

    def _open_feed(self, prefix: str, after: int | None) -> Feed:
        raise NotSupportedError(f"{self.url.scheme}:// cannot watch")

    def _compact(self, revision: int) -> None:
        raise NotSupportedError(f"{self.url.scheme}:// keeps no change history")

    def _translate_error(self, error: Exception) -> KVError | None:
        return None

    def _close(self) -> None:
        pass

    # -- shared machinery -------------------------------------------------------------

    def _call(self, function: Callable[..., T], *args: object) -> T:
        """Run a driver primitive: refuse if closed, translate backend errors."""
        if self._closed:
            self._raise_closed()
        try:
            return function(*args)
        except Exception as error:
            self._reraise(error)

    def _reraise(self, error: Exception) -> NoReturn:
        if isinstance(error, KVError):
            raise error
        translated = self._translate_error(error)
        if translated is None:
            raise error
        if self._closed:
            # The call raced close(): its connection went away under it.
            raise StoreClosedError(f"store is closed: {self.url}") from error
        raise translated from error

    def _raise_closed(self) -> NoReturn:
        raise StoreClosedError(f"store is closed: {self.url}")

    def _write(
        self,
        kind: OpKind,
        key: str,
        value: object,
        version: int | None,
        ttl: float | None,
        lease: Lease | None,
    ) -> KVPair:
        prepared = self._prepare(kind, key, value, version, ttl, lease)
        pair = self._commit_checked([prepared])[0]
        if pair is None or not self._root:
            return pair  # type: ignore[return-value]  # None only for delete, which returns None
        return KVPair(prepared.key[len(self._root) :], pair.value, pair.version)

    def _commit_checked(self, operations: builtins.list[Op]) -> builtins.list[KVPair | None]:
        if self._closed:
            self._raise_closed()
        try:
            return self._commit(operations)
        except _ConditionError as error:
            raise type(error)(
                error.key[len(self._root) :] if self._root else error.key, index=error.index
            ) from None
        except Exception as error:
            self._reraise(error)

    def _prepare_op(self, operation: object) -> Op:
        if not isinstance(operation, Op):
            raise TypeError(
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
        lease: Lease | None,
    ) -> Op:
        """Validate one operation; return it with a full key and a bytes value."""
        full = self._root + keyspace.normalize_key(key)
        if kind is not OpKind.PUT and kind is not OpKind.CREATE:
            if version is not None or kind is not OpKind.DELETE:
                _check_version(version)
            if kind is OpKind.DELETE or kind is OpKind.CHECK:
                return Op(kind, full, b"", version)
        data = keyspace.to_bytes(value)
        if len(data) > self.capabilities.max_value_size:
            raise ValueTooLargeError(
                f"value of {len(data)} bytes for {key!r} exceeds "
                f"{self.capabilities.max_value_size} bytes"
            )
        if ttl is not None:
            if lease is not None:
                raise ValueError("give a write either ttl or lease, not both")
            ttl = self._check_ttl(ttl)
        elif lease is not None:
            self._check_lease(lease)
        return Op(kind, full, data, version, ttl, lease)

    def _check_ttl(self, ttl: object) -> float:
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl):
            raise ValueError(f"ttl must be a finite number of seconds, not {ttl!r}")
        if ttl < self.capabilities.ttl_min or ttl <= 0:
            raise ValueError(
                f"ttl {ttl} s is below this store's minimum of {self.capabilities.ttl_min} s"
            )
        if ttl > self.capabilities.ttl_max:
            raise ValueError(
                f"ttl {ttl} s is above this store's maximum of {self.capabilities.ttl_max:g} s"
            )
        return float(ttl)

    def _check_lease(self, lease: object) -> None:
        from libkv.lease import Lease

        if not isinstance(lease, Lease) or lease.store is not self:
            raise ValueError("lease must be a Lease granted by this store")
        if lease.revoked:
            raise LeaseNotFoundError(f"lease {lease.id} was revoked")

    def _driver_prefix(self, relative: str) -> str:
        if relative:
            return self._root + relative
        return self._root  # "ns/" (only descendants) or "" (everything)

    def _relative_pair(self, pair: KVPair) -> KVPair:
        if not self._root:
            return pair
        return KVPair(pair.key[len(self._root) :], pair.value, pair.version)

    def _relative_pairs(self, pairs: Iterable[KVPair]) -> builtins.list[KVPair]:
        if not self._root:
            return list(pairs)
        cut = len(self._root)
        return [KVPair(pair.key[cut:], pair.value, pair.version) for pair in pairs]


def _check_version(version: object) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be an int >= 0, not {version!r}")
