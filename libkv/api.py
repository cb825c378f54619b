"""The Store: libkv's public interface, and the base class every driver extends.

The base class does everything that is the same for all backends exactly once: key
and value validation, namespacing, transaction checks, error translation, and the
generic operations (``keys``, ``get_many``, ``put_many``, ``wait_for_change``,
leases, locks, watches). A driver (see :mod:`libkv.driver` for its one import)
implements the primitives below, always on full (namespace-qualified) keys, and
declares its ``capabilities`` as a class or instance attribute.

Required: abstract methods, so a driver class that leaves one out cannot be
instantiated (TypeError naming it):

=====================================  ==============================================
``_get(key)``                          the pair or None
``_range(prefix, recursive)``          ``(sorted pairs, revision)``, one consistent read
``_commit(ops)``                       apply ops atomically or raise the first failure
``_delete_range(prefix)``              delete every key under prefix, return the count
``_grant_lease(ttl)``                  a new lease id
``_keepalive_lease(id)``               refresh for the lease's ttl; False if it is gone
``_lease_ttl(id)``                     seconds left, or None if gone
``_revoke_lease(id)``                  delete the lease and its keys (no-op if gone)
``_open_feed(prefix, after)``          a :class:`~libkv.watching.Feed` for the watch engine
``_translate_error(error)``            a KVError for a backend exception, else None
=====================================  ==============================================

Optional: overrides with a working default:

=====================================  ==============================================
``_get_many(keys)``                    pairs or None, in order; default: ``_get`` each.
                                       Override to read in one round trip.
``_compact(revision)``                 discard change history before revision; default:
                                       NotSupportedError. Required when
                                       ``capabilities.watch_resume`` is True.
``_close()``                           release connections; default: nothing
``_last_contact()``                    ``time.monotonic()`` of the latest answer from
                                       the backend to any request of this store, or
                                       None (default: not tracked). A watch that
                                       cannot reconnect fails only ``timeout`` after
                                       it (see :mod:`libkv.watching`).
=====================================  ==============================================

Primitives receive validated arguments only: normalised full keys, bytes values,
ttls within ``capabilities``, versions and revisions in ``0..MAX_REVISION``, at most
``max_transaction_ops`` ops on distinct keys. They raise backend exceptions freely
(``_translate_error`` maps them) or libkv errors directly. The public lease methods
(``keepalive_lease``, ``lease_ttl``, ``revoke_lease``) call the primitive of the same
name through the same checks.

A driver overrides only these (and ``capabilities``); every other name of the base
class, public or private (``_write``, ``_prepare``, ``_call``, ``_root``...), is the
core's.

Prefixes passed to drivers: ``""`` is everything, ``"p/"`` every key starting with
``p/``, and ``"p"`` the key ``p`` and every key starting with ``p/``
(:func:`libkv.keys.in_prefix` says exactly that).
"""

from __future__ import annotations

import abc
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
    InvalidArgumentError,
    InvalidKeyError,
    InvalidURLError,
    KeyNotFoundError,
    KVError,
    LeaseNotFoundError,
    NotSupportedError,
    StoreClosedError,
    ValueTooLargeError,
    WaitTimeoutError,
    _ConditionError,
)
from libkv.model import MAX_REVISION, Capabilities, KVPair
from libkv.ops import Op, OpKind

if TYPE_CHECKING:
    from libkv.lease import Lease
    from libkv.lock import Lock
    from libkv.url import StoreURL
    from libkv.watching import Feed, Watch

__all__ = ["Store"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class Store(abc.ABC):
    """A key-value store. Open one with :func:`libkv.open`; see CONTRACT.md for semantics.

    Thread-safe: one Store may be shared by threads. ``close()`` (or leaving the
    ``with`` block) ends its watches, stops its keep-alives and makes every later
    call raise StoreClosedError.
    """

    capabilities: Capabilities

    def __init__(self, url: StoreURL, *, namespace: str = "", timeout: float = 10.0) -> None:
        self.url = url
        try:
            self.namespace = keyspace.normalize_prefix(namespace)
        except InvalidKeyError as error:
            # The namespace comes from the URL (its path or ``prefix`` option).
            raise InvalidURLError(f"invalid namespace (prefix) in {url}: {error}") from None
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

        ``*``, ``?`` and ``[abc]`` match within one segment; ``**`` spans segments. A
        malformed pattern (``[]``, ``[z-a]``...) raises InvalidArgumentError.
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
        ``capabilities.max_transaction_ops``, raise InvalidArgumentError before anything
        is sent.
        Returns the new pair for each write and None for deletes and checks.
        """
        operations = [self._prepare_op(operation) for operation in ops]
        if len(operations) > self.capabilities.max_transaction_ops:
            raise InvalidArgumentError(
                f"{len(operations)} operations exceed this store's limit of "
                f"{self.capabilities.max_transaction_ops} per transaction"
            )
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
            _check_revision(since, "since")
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
        timeout = keyspace.check_timeout(timeout)
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

    # The lease life cycle by id: what a Lease object calls (and other recipes may).

    def keepalive_lease(self, lease_id: int) -> bool:
        """Refresh lease ``lease_id`` for its whole ttl; False if it has expired or is revoked.

        :class:`~libkv.lease.Lease` calls this every ttl/3; call it yourself only for
        a lease granted with ``keepalive=False``.
        """
        return self._call(self._keepalive_lease, _check_lease_id(lease_id))

    def lease_ttl(self, lease_id: int) -> float | None:
        """Seconds left before lease ``lease_id`` expires, or None if it is gone."""
        return self._call(self._lease_ttl, _check_lease_id(lease_id))

    def revoke_lease(self, lease_id: int) -> None:
        """Revoke lease ``lease_id`` and delete every key attached to it; no error if gone.

        Prefer :meth:`Lease.revoke <libkv.lease.Lease.revoke>`, which also stops the
        lease's keep-alive.
        """
        self._call(self._revoke_lease, _check_lease_id(lease_id))

    def lock(self, key: str, *, ttl: float = 15.0, value: object = b"") -> Lock:
        """A distributed lock on ``key`` (not acquired yet); see :class:`Lock`."""
        from libkv.lock import Lock

        if self._closed:
            self._raise_closed()
        return Lock(
            self, keyspace.normalize_key(key), self._check_ttl(ttl), keyspace.to_bytes(value)
        )

    def compact(self, revision: int) -> None:
        """Discard change history before ``revision`` (an int in 0..2**63-1).

        Watches resuming from ``since`` with ``since + 1 < revision`` then raise
        HistoryLostError. NotSupportedError where the driver cannot resume watches;
        InvalidArgumentError, before anything is sent, for any other ``revision``.
        """
        _check_revision(revision, "revision")
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

    # -- what drivers implement (see the module docstring) ----------------------------

    @abc.abstractmethod
    def _get(self, key: str) -> KVPair | None:
        """The pair at full ``key``, or None."""

    def _get_many(self, keys: Sequence[str]) -> builtins.list[KVPair | None]:
        """Optional: the pair (or None) for each of ``keys``, in order, in one round trip."""
        return [self._get(key) for key in keys]

    @abc.abstractmethod
    def _range(self, prefix: str, recursive: bool) -> tuple[builtins.list[KVPair], int]:
        """Every pair under ``prefix`` sorted by key, and the revision of that one read.

        Not ``recursive``: ``prefix`` is a full key, and the list has at most its pair.
        """

    @abc.abstractmethod
    def _commit(self, ops: Sequence[Op]) -> builtins.list[KVPair | None]:
        """Apply ``ops`` atomically as one revision, or raise the first failure.

        Returns the new pair of each write and None for deletes and checks. A failed
        condition raises what :func:`~libkv.ops.first_failure` returns.
        """

    @abc.abstractmethod
    def _delete_range(self, prefix: str) -> int:
        """Delete every key under ``prefix``; return how many there were."""

    @abc.abstractmethod
    def _grant_lease(self, ttl: float) -> int:
        """A new lease of ``ttl`` seconds; its id."""

    @abc.abstractmethod
    def _keepalive_lease(self, lease_id: int) -> bool:
        """Refresh the lease for its ttl; False if it is gone."""

    @abc.abstractmethod
    def _lease_ttl(self, lease_id: int) -> float | None:
        """Seconds left on the lease, or None if it is gone."""

    @abc.abstractmethod
    def _revoke_lease(self, lease_id: int) -> None:
        """Delete the lease and every key attached to it; nothing if it is gone."""

    @abc.abstractmethod
    def _open_feed(self, prefix: str, after: int | None) -> Feed:
        """A feed of changes under ``prefix`` after revision ``after`` (None: from now).

        Raises HistoryLostError if the changes after ``after`` are gone.
        """

    def _compact(self, revision: int) -> None:
        """Optional (required with ``watch_resume``): discard history before ``revision``."""
        raise NotSupportedError(f"{self.url.scheme}:// keeps no change history")

    @abc.abstractmethod
    def _translate_error(self, error: Exception) -> KVError | None:
        """The KVError for a backend exception (chained by the core), or None if unknown."""

    def _close(self) -> None:  # noqa: B027 - optional, and doing nothing is its default
        """Optional: release connections; called once, by :meth:`close`."""

    def _last_contact(self) -> float | None:
        """Optional: ``time.monotonic()`` of the latest answer from the backend to any
        request of this store (a watch's included), or None if the driver does not track
        it; then a watch goes by its own contact alone."""
        return None

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
        if self._closed:
            # The call raced close(): its connection went away under it, whatever the
            # client raised for that (a closed gRPC channel raises a bare ValueError).
            raise StoreClosedError(f"store is closed: {self.url}") from error
        translated = self._translate_error(error)
        if translated is None:
            raise error
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
        lease: Lease | None,
    ) -> Op:
        """Validate one operation; return it with a full key and a bytes value."""
        full = self._root + keyspace.normalize_key(key)
        if kind is not OpKind.PUT and kind is not OpKind.CREATE:
            if version is not None or kind is not OpKind.DELETE:
                _check_revision(version, "version")
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
                raise InvalidArgumentError("give a write either ttl or lease, not both")
            ttl = self._check_ttl(ttl)
        elif lease is not None:
            self._check_lease(lease)
        return Op(kind, full, data, version, ttl, lease)

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

    def _check_lease(self, lease: object) -> None:
        from libkv.lease import Lease

        if not isinstance(lease, Lease) or lease.store is not self:
            raise InvalidArgumentError("lease must be a Lease granted by this store")
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


def _check_revision(value: object, name: str) -> None:
    """The one check of every version and revision argument (version, since, compact)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REVISION:
        raise InvalidArgumentError(f"{name} must be an int in 0..2**63-1, not {value!r:.60}")


def _check_lease_id(lease_id: object) -> int:
    if isinstance(lease_id, bool) or not isinstance(lease_id, int):
        raise InvalidArgumentError(f"lease id must be an int, not {type(lease_id).__name__}")
    return lease_id
