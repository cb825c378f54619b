# Generated from libkv/_async/lease.py by scripts/unasync.py: edit that file, then run
# `python scripts/unasync.py`. CI fails if this file is not current.
"""Leases: a time-to-live shared by keys, kept alive in the background.

Service registration is built on this: keys written with ``lease=`` vanish when the
lease is revoked, or ``ttl`` (+ the driver's slack) after the holder stops
refreshing it, for instance because its process died.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING

from libkv import concurrency
from libkv.errors import KVError, NotReachableError, StoreClosedError

if TYPE_CHECKING:
    from libkv.api import Store
    from libkv.keepalive import Keepalive

__all__ = ["Lease"]

log = logging.getLogger(__name__)


class Lease:
    """A lease granted by :meth:`Store.lease`.

    ``lost`` is set when the lease expired while held (keep-alives failed for a whole
    ttl, the backend dropped it, or ``keepalive=False`` and the ttl ran out). Keep-alives
    run every ttl/3 (through :meth:`Store.keepalive_lease`) until :meth:`revoke` or
    ``store.close()``, by the store's one keep-alive worker, which serves all its
    leases (``libkv.keepalive``). As a context manager the lease is revoked on exit.

    ``lost`` is a ``threading.Event`` in the sync flavour and an ``asyncio.Event`` in
    the async one; both answer ``is_set()``.
    """

    def __init__(
        self,
        store: Store,
        lease_id: int,
        ttl: float,
        *,
        keepalive: bool,
        scheduler: Keepalive,
    ) -> None:
        self.store = store
        self.id = lease_id
        self.ttl = ttl
        self.keepalive = keepalive
        self.lost = concurrency.Event()
        self._revoked = False
        self._revoke_pending = False  # revoke_in_background() was called
        self._stopped = concurrency.Event()
        self._alive_until = time.monotonic() + ttl
        self._listeners: list[concurrency.Listener] = []
        self._listeners_lock = threading.Lock()  # a listener hears of the loss exactly once
        self._scheduler = scheduler
        scheduler.schedule(self, self._next_due())

    def __repr__(self) -> str:
        state = "revoked" if self._revoked else "lost" if self.lost.is_set() else "held"
        return f"<Lease {self.id} ttl={self.ttl} {state}>"

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._revoked and not self.store.closed:
            self.revoke()

    @property
    def revoked(self) -> bool:
        """True once :meth:`revoke` was called."""
        return self._revoked

    def revoke(self) -> None:
        """Delete the lease and, now, every key attached to it."""
        self._stop()
        if self._revoked:
            return
        self._revoked = True
        self.store.revoke_lease(self.id)

    def revoke_in_background(self) -> None:
        """Revoke the lease (and delete its keys) soon, by the store's keep-alive worker,
        without waiting: for a caller being cancelled, which must not wait for a backend
        that may not answer. If the revoke fails, the lease expires by itself."""
        if self._revoked:
            return
        self._revoked = True
        self._revoke_pending = True
        self._scheduler.cancel(self)
        self._scheduler.schedule(self, time.monotonic())

    def abandon(self) -> None:
        """Stop refreshing the lease without revoking it.

        The backend expires the lease, and deletes its keys, within
        ``capabilities.latest_expiry(ttl)``. For when revoking would only wait out the
        store's timeout again: the backend cannot be reached.
        """
        self._stop()

    def add_listener(self, listener: concurrency.Listener) -> None:
        """Call ``listener(True)`` after every successful keep-alive (or, with
        ``keepalive=False``, every check that the lease still lives), and
        ``listener(False)`` once when the lease is lost.

        Listeners run on the store's keep-alive worker (sync: its thread; async: a
        task of it, and a listener may be a coroutine function), in the order added;
        they should return quickly (they delay the store's other keep-alives), and an
        exception in one is logged and does not stop the keep-alive. A listener added
        once the lease is lost is called with False at once.
        :class:`~libkv.lock.Lock` uses this to check, after every keep-alive, that its
        key is still its own.
        """
        with self._listeners_lock:
            self._listeners.append(listener)
            lost = self.lost.is_set()
        if lost:
            try:
                listener(False)
            except Exception:
                log.exception("lease %s: a listener failed", self.id)

    def remove_listener(self, listener: concurrency.Listener) -> None:
        """Call ``listener`` no more; no error if it was not added."""
        with self._listeners_lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _stop(self) -> None:
        """Stop the keep-alive without revoking (the store is closing)."""
        self._stopped.set()
        self._scheduler.cancel(self)

    def _notify(self, alive: bool) -> None:
        with self._listeners_lock:
            if not alive:
                self.lost.set()
            listeners = list(self._listeners)
        for listener in listeners:
            self._call(listener, alive)

    def _call(self, listener: concurrency.Listener, alive: bool) -> None:
        try:
            listener(alive)
        except Exception:
            log.exception("lease %s: a listener failed", self.id)

    def _set_lost(self) -> None:
        self._notify(False)

    def _next_due(self) -> float:
        """When the next keep-alive (or, without keep-alive, the next check) is due."""
        now = time.monotonic()
        if self.keepalive:
            return now + self.ttl / 3
        return now + max(self._alive_until - now, 0.05)

    def _refresh(self, reachable: bool) -> tuple[float | None, bool]:
        """One keep-alive (or check), run by the store's keep-alive scheduler.

        Returns when the next is due (None: the lease is done with: stopped, lost,
        or the store closed) and whether the backend answered; with ``reachable``
        False (another lease of this round found the backend unreachable) it only
        checks the deadline, and declares the lease lost once a whole ttl passed
        without an answer.
        """
        if self._stopped.is_set():
            return None, reachable
        if self._revoke_pending:
            self._stopped.set()
            with contextlib.suppress(KVError):  # if it fails, the lease expires by itself
                self.store.revoke_lease(self.id)
            return None, reachable
        alive, remaining = False, 0.0
        if reachable:
            try:
                if self.keepalive:
                    alive, remaining = self.store.keepalive_lease(self.id), self.ttl
                else:
                    left = self.store.lease_ttl(self.id)
                    alive, remaining = left is not None, left or 0.0
            except StoreClosedError:
                return None, reachable
            except NotReachableError:
                reachable = False
            except KVError:
                log.exception("lease %s: keep-alive failed", self.id)
                return self._next_due(), reachable
        if self._stopped.is_set():
            return None, reachable
        if not reachable:
            if time.monotonic() < self._alive_until:
                return self._next_due(), reachable
            log.warning("lease %s lost: backend unreachable for its ttl", self.id)
            self._set_lost()
            return None, reachable
        if not alive:
            log.warning("lease %s expired", self.id)
            self._set_lost()
            return None, reachable
        self._alive_until = time.monotonic() + remaining
        self._notify(True)
        if self._stopped.is_set():  # a listener revoked it
            return None, reachable
        return self._next_due(), reachable
