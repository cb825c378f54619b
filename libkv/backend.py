# Generated from libkv/_async/backend.py by scripts/unasync.py: edit that file, then run
# `python scripts/unasync.py`. CI fails if this file is not current.
"""The driver interface: a Backend implements the primitives, the Store does the rest.

:class:`libkv.Store` holds one backend and calls it; the backend is not a Store and sees
none of the core's state. The core does everything that is the same for all backends
exactly once: key and value validation, namespacing, transaction checks, error
translation, and the generic operations (``keys``, ``get_many``, ``put_many``,
``wait_for_change``, leases, locks, watches). A driver (see :mod:`libkv.driver` for its
one import) subclasses :class:`Backend`, calls ``Backend.__init__`` first, declares its
``capabilities`` as a class or instance attribute, and implements the primitives below,
always on full (namespace-qualified) keys.

Required: abstract methods, so a backend class that leaves one out cannot be
instantiated (TypeError naming it):

=====================================  ==============================================
``get(key)``                           the pair or None
``range(prefix, recursive)``           ``(sorted pairs, revision)``, one consistent read
``commit(ops)``                        apply ops atomically or raise the first failure
``delete_range(prefix)``               delete every key under prefix, return the count
``grant_lease(ttl)``                   a new lease id
``keepalive_lease(id)``                refresh for the lease's ttl; False if it is gone
``lease_ttl(id)``                      seconds left, or None if gone
``revoke_lease(id)``                   delete the lease and its keys (no-op if gone)
``open_feed(prefix, after)``           a :class:`~libkv.watching.Feed` for the watch engine
``translate_error(error)``             a KVError for a backend exception, else None
=====================================  ==============================================

Optional: overrides with a working default:

=====================================  ==============================================
``get_many(keys)``                     pairs or None, in order; default: ``get`` each.
                                       Override to read in one round trip.
``compact(revision)``                  discard change history before revision; default:
                                       NotSupportedError. Required when
                                       ``capabilities.watch_resume`` is True.
``close()``                            release connections; default: nothing
``last_contact()``                     ``time.monotonic()`` of the backend's latest
                                       answer to any request of this store, or None
                                       (default: not tracked). A watch that cannot
                                       reconnect fails only ``timeout`` after it.
=====================================  ==============================================

Primitives receive validated arguments only: normalised full keys, bytes values,
ttls within ``capabilities``, versions and revisions in ``0..MAX_REVISION``, at most
``max_transaction_ops`` ops on distinct keys. They raise backend exceptions freely
(``translate_error`` maps them) or libkv errors directly. The Store's public lease
methods (``keepalive_lease``, ``lease_ttl``, ``revoke_lease``) call the primitive of
the same name through the same checks. The Store starts no primitive once it is
closed (one already running may race ``close()``), and calls ``close()`` exactly once,
after ending its watches and leases; a backend that must know it is closing (a retry
loop that should give up) keeps a flag of its own.

Prefixes passed to backends: ``""`` is everything, ``"p/"`` every key starting with
``p/``, and ``"p"`` the key ``p`` and every key starting with ``p/``
(:func:`libkv.keys.in_prefix` says exactly that).
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Sequence
from typing import TYPE_CHECKING

from libkv import keys as keyspace
from libkv.errors import InvalidKeyError, InvalidURLError, KVError, NotSupportedError
from libkv.model import Capabilities, KVPair
from libkv.ops import Op

if TYPE_CHECKING:
    from libkv.url import StoreURL
    from libkv.watching import Feed

__all__ = ["Backend"]


class Backend(abc.ABC):
    """A driver's connection to one backend: the primitives a :class:`~libkv.Store` calls.

    ``url``, ``namespace`` (normalised: ``""`` or ``"a/b"``) and ``timeout`` (seconds)
    are set by ``Backend.__init__``, which raises InvalidURLError for a bad namespace
    before the driver connects to anything; ``capabilities`` is the driver's to set.
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

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    @abc.abstractmethod
    def get(self, key: str) -> KVPair | None:
        """The pair at full ``key``, or None."""

    def get_many(self, keys: Sequence[str]) -> builtins.list[KVPair | None]:
        """Optional: the pair (or None) for each of ``keys``, in order, in one round trip."""
        return [self.get(key) for key in keys]

    @abc.abstractmethod
    def range(self, prefix: str, recursive: bool) -> tuple[builtins.list[KVPair], int]:
        """Every pair under ``prefix`` sorted by key, and the revision of that one read.

        Not ``recursive``: ``prefix`` is a full key, and the list has at most its pair.
        """

    @abc.abstractmethod
    def commit(self, ops: Sequence[Op]) -> builtins.list[KVPair | None]:
        """Apply ``ops`` atomically as one revision, or raise the first failure.

        Returns the new pair of each write and None for deletes and checks. A failed
        condition raises what :func:`~libkv.ops.first_failure` returns.
        """

    @abc.abstractmethod
    def delete_range(self, prefix: str) -> int:
        """Delete every key under ``prefix``; return how many there were."""

    @abc.abstractmethod
    def grant_lease(self, ttl: float) -> int:
        """A new lease of ``ttl`` seconds; its id."""

    @abc.abstractmethod
    def keepalive_lease(self, lease_id: int) -> bool:
        """Refresh the lease for its ttl; False if it is gone."""

    @abc.abstractmethod
    def lease_ttl(self, lease_id: int) -> float | None:
        """Seconds left on the lease, or None if it is gone."""

    @abc.abstractmethod
    def revoke_lease(self, lease_id: int) -> None:
        """Delete the lease and every key attached to it; nothing if it is gone."""

    @abc.abstractmethod
    def open_feed(self, prefix: str, after: int | None) -> Feed:
        """A feed of changes under ``prefix`` after revision ``after`` (None: from now).

        Raises HistoryLostError if the changes after ``after`` are gone.
        """

    def compact(self, revision: int) -> None:
        """Optional (required with ``watch_resume``): discard history before ``revision``."""
        raise NotSupportedError(f"{self.url.scheme}:// keeps no change history")

    @abc.abstractmethod
    def translate_error(self, error: Exception) -> KVError | None:
        """The KVError for a backend exception (chained by the core), or None if unknown."""

    def close(self) -> None:  # noqa: B027 - optional, and doing nothing is its default
        """Optional: release connections; called once, by the Store's ``close()``."""

    def last_contact(self) -> float | None:
        """Optional: ``time.monotonic()`` of the backend's latest answer to any request
        of this store (a watch's included), or None if the driver does not track it;
        then a watch goes by its own contact alone."""
        return None
