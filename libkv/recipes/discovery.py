# Generated from libkv/_async/recipes/discovery.py by scripts/unasync.py: edit that file, then run
# `python scripts/unasync.py`. CI fails if this file is not current.
"""Service discovery: register instances held alive by a lease, list and watch them.

``ServiceRegistry(store, root="services")`` keeps one key per live instance::

    <root>/<service>/<instance id>

whose value is a UTF-8 JSON object, so that any client (not only Python, not only
libkv) can read the registry:

.. code-block:: json

    {"service": "api", "id": "4f1c...", "address": "10.0.0.7:8080",
     "metadata": {"zone": "eu-1"}}

- ``service`` (string) and ``id`` (string) repeat the key's last two segments; the key
  is authoritative.
- ``address`` (string): where to reach the instance, in whatever form the service
  uses (``host:port``, a URL...).
- ``metadata`` (object): free-form JSON given at registration (``{}`` if none).

Readers ignore members they do not know, so the schema can grow. A key under the root
that is not ``<service>/<id>``, or whose value is not such an object, is not an
instance: it is logged and skipped, never fatal to a reader.

Guarantees:

- ``register()`` writes the instance's key under a lease kept alive in the background.
  ``deregister()`` (or leaving the ``with`` block) deletes it at once; if the process
  dies, the key disappears within ``store.capabilities.latest_expiry(ttl)``.
- If the lease is lost while the process lives (a pause or a partition longer than the
  ttl), the handle's ``lost`` event is set and, unless ``reregister=False``, the handle
  registers again by itself under a new lease (retrying until it succeeds or is
  deregistered), then clears ``lost``. A handle starts nothing of its own: it hears of
  the loss from its lease (``Lease.add_listener``), and registers again in the lost
  lease's keep-alive worker, which has nothing else left to do.
- ``instances(service)`` is one consistent read; ``watch(service)`` yields the whole
  membership first and then each time it changes (a :class:`~libkv.recipes.Cache` of
  the service's keys: it converges on every backend and re-lists by itself after
  history lost). ``services()`` lists the names with at least one live instance.
- Service names and instance ids are single key segments: a non-empty ``str`` without
  ``/`` that is a valid key (``InvalidKeyError`` otherwise, before anything is written).
- In :mod:`libkv.aio.recipes` every call that does I/O is awaited; ``register()`` is
  awaitable and an async context manager, as ``store.lease()`` is. A cancelled call
  leaves nothing behind (a lease it granted is revoked), and ``deregister()`` ends the
  re-registration task, if any.

The values (:class:`ServiceInstance` and its JSON) are in :mod:`libkv.recipes.records`.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from libkv import concurrency
from libkv.errors import InvalidValueError, KVError, LeaseNotFoundError, StoreClosedError
from libkv.keys import normalize_prefix
from libkv.recipes.cache import CacheView
from libkv.recipes.records import ServiceInstance, decode, encode, segment

if TYPE_CHECKING:
    from libkv.api import Store
    from libkv.lease import Lease

__all__ = ["Instance", "Membership", "ServiceRegistry", "ServiceInstance"]

log = logging.getLogger(__name__)

_RETRY_FIRST = 0.1
_RETRY_MAX = 1.0


class Instance:
    """A registration held alive by a lease; see the module docstring.

    ``lost`` is set while the registration is lost and not (yet) restored;
    ``registrations`` counts successful registrations (1, plus one per re-registration).
    ``ServiceRegistry.register`` makes these; a handle is registered once it returns.
    """

    def __init__(
        self,
        store: Store,
        key: str,
        record: ServiceInstance,
        ttl: float,
        *,
        reregister: bool,
    ) -> None:
        self.store = store
        self.key = key
        self.service = record.service
        self.id = record.id
        self.address = record.address
        self.metadata = record.metadata
        self.ttl = ttl
        self.reregister = reregister
        self.lost = concurrency.Event()
        self.registrations = 0
        self._value = encode(self.service, self.id, self.address, self.metadata)
        self._mutex = concurrency.Mutex()  # a registration against deregister()
        self._stopped = concurrency.Event()
        self._lease: Lease | None = None  # the lease holding the key
        self._lost_lease: Lease | None = None  # whose worker registers again

    def __repr__(self) -> str:
        state = (
            "deregistered"
            if self._stopped.is_set()
            else "lost"
            if self.lost.is_set()
            else "registered"
        )
        return f"<Instance {self.service}/{self.id} {self.address!r} {state}>"

    def __enter__(self) -> Instance:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.deregister()

    @property
    def registered(self) -> bool:
        """True while the instance's key is held (not lost, not deregistered)."""
        return not self._stopped.is_set() and not self.lost.is_set()

    def deregister(self) -> None:
        """Delete the instance's key now and stop keeping it alive. Idempotent.

        It also ends a re-registration under way (async: cancels its task and waits for
        it). A cancelled deregister (async) still finishes before it raises."""
        with self._mutex:
            if self._stopped.is_set():
                return
            self._stopped.set()
            lease, self._lease = self._lease, None
            lost, self._lost_lease = self._lost_lease, None
        if lost is not None:  # stops the lost lease's worker, which is registering again
            concurrency.shielded(lost.abandon)
        if lease is not None and not self.store.closed:
            with contextlib.suppress(LeaseNotFoundError):  # lost meanwhile: key gone already
                concurrency.shielded(lease.revoke)  # deletes the key with it

    def _register(self) -> bool:
        """Write the key under a new lease; False (nothing written) if deregistered.

        Raised out of or cancelled, it leaves nothing behind: the lease is revoked.
        """
        lease = self.store.lease(self.ttl)
        # Listening before the key is written: a loss is heard whenever it happens.
        lease.add_listener(lambda alive: self._lease_news(lease, alive))
        try:
            with self._mutex:
                if not self._stopped.is_set():
                    self.store.put(self.key, self._value, lease=lease)
                    if lease.lost.is_set():  # before the listener could see it was ours
                        raise LeaseNotFoundError(f"lease {lease.id} was lost while registering")
                    self._lease, self._lost_lease = lease, None
                    self.registrations += 1
                    self.lost.clear()
                    return True
        except BaseException:
            self._revoke_unused(lease)
            raise
        self._revoke_unused(lease)
        return False

    def _revoke_unused(self, lease: Lease) -> None:
        if self.store.closed:  # it cannot revoke any more: stop the keep-alive at least
            lease.abandon()
            return
        try:
            concurrency.shielded(lease.revoke)
        except KVError:
            log.debug("could not revoke an unused lease", exc_info=True)

    def _lease_news(self, lease: Lease, alive: bool) -> None:
        """The lease's listener: on its loss, mark the handle lost and register again.

        Runs in the lease's keep-alive worker (thread or task), which ends after this.
        """
        if alive:
            return
        with self._mutex:
            if lease is not self._lease or self._stopped.is_set():
                return  # not (or no longer) the lease holding the key
            self._lease, self._lost_lease = None, lease
            self.lost.set()
        if not self.reregister:
            log.warning("instance %s/%s lost its lease; not re-registering", self.service, self.id)
            return
        log.warning("instance %s/%s lost its lease; re-registering", self.service, self.id)
        retry = _RETRY_FIRST
        while not self._stopped.is_set() and not self.store.closed:
            try:
                if self._register():
                    log.info("instance %s/%s registered again", self.service, self.id)
                return
            except StoreClosedError:
                return
            except KVError as error:
                log.info("re-registering %s/%s failed: %s", self.service, self.id, error)
            concurrency.wait(self._stopped, retry)
            retry = min(retry * 2, _RETRY_MAX)


class Membership(CacheView[list[ServiceInstance]]):
    """An iterator over a service's membership: the list of its live instances (sorted
    by id), first the current one, then a new list each time it changes (see
    :class:`~libkv.recipes.cache.CacheView` for ``next(timeout)`` and ``close()``)."""

    def __init__(self, store: Store, prefix: str, root: str) -> None:
        self._root = root
        super().__init__(store, prefix)

    def __enter__(self) -> Membership:
        return self

    def current(self) -> list[ServiceInstance]:
        """The membership as the cache holds it now."""
        members = (decode(pair, self._root) for pair in self.cache.list())
        return [member for member in members if member is not None]


class ServiceRegistry:
    """Register, discover and watch service instances under ``root``; see the module
    docstring for the key layout, the JSON schema and the guarantees."""

    def __init__(self, store: Store, root: str = "services") -> None:
        self.store = store
        self.root = normalize_prefix(root)

    def __repr__(self) -> str:
        return f"<ServiceRegistry {self.root!r} on {self.store!r}>"

    def _prefix(self, service: str) -> str:
        return f"{self.root}/{service}" if self.root else service

    def register(
        self,
        service: str,
        address: str,
        *,
        instance_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        ttl: float = 10.0,
        reregister: bool = True,
    ) -> Instance:
        """Register an instance of ``service`` at ``address`` and keep it alive.

        ``instance_id`` defaults to a new random id; registering an id again replaces
        the earlier registration. ``metadata`` must be JSON-serializable
        (``InvalidValueError`` otherwise). Returns the :class:`Instance` handle (in
        :mod:`libkv.aio.recipes`, awaitable, and an async context manager that
        deregisters it on exit). Bad input raises at the call, before anything is written.
        """
        segment(service, "a service name")
        instance_id = segment(
            uuid.uuid4().hex if instance_id is None else instance_id, "an instance id"
        )
        if not isinstance(address, str) or not address:
            raise InvalidValueError(f"address must be a non-empty string, not {address!r}")
        record = ServiceInstance(service, instance_id, address, dict(metadata or {}))
        encode(service, instance_id, address, record.metadata)  # refuse bad metadata first
        instance = Instance(
            self.store, f"{self._prefix(service)}/{instance_id}", record, ttl, reregister=reregister
        )
        return _registered(instance)

    def instances(self, service: str) -> list[ServiceInstance]:
        """The live instances of ``service``, sorted by id, from one consistent read."""
        prefix = self._prefix(segment(service, "a service name"))
        members = (decode(pair, self.root) for pair in self.store.list(prefix))
        return [member for member in members if member is not None]

    def services(self) -> list[str]:
        """The names of the services with at least one registered instance, sorted."""
        names = {
            member.service
            for pair in self.store.list(self.root)
            if (member := decode(pair, self.root)) is not None
        }
        return sorted(names)

    def watch(self, service: str) -> Membership:
        """Yield the membership of ``service`` now and after every change."""
        prefix = self._prefix(segment(service, "a service name"))
        return Membership(self.store, prefix, self.root)


def _registered(instance: Instance) -> Instance:
    instance._register()
    return instance
