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
  deregistered), then clears ``lost``.
- ``instances(service)`` is one consistent read; ``watch(service)`` yields the whole
  membership first and then each time it changes (a :class:`~libkv.recipes.Cache` of
  the service's keys: it converges on every backend and re-lists by itself after
  history lost). ``services()`` lists the names with at least one live instance.
- Service names and instance ids are single key segments: a non-empty ``str`` without
  ``/`` that is a valid key (``InvalidKeyError`` otherwise, before anything is written).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from libkv.api import Store
from libkv.errors import (
    InvalidKeyError,
    InvalidValueError,
    KVError,
    LeaseNotFoundError,
    StoreClosedError,
)
from libkv.keys import normalize_key, normalize_prefix
from libkv.lease import Lease
from libkv.model import KVPair
from libkv.recipes.cache import CacheView

__all__ = ["Instance", "Membership", "ServiceInstance", "ServiceRegistry"]

log = logging.getLogger(__name__)

_CHECK_INTERVAL = 0.25  # how often a handle looks at its lease (and notices deregister)
_RETRY_FIRST = 0.1
_RETRY_MAX = 1.0


@dataclass(frozen=True, slots=True)
class ServiceInstance:
    """One registered instance, as read from the registry (a value: changing its
    ``metadata`` dict changes nothing stored).

    ``version`` is the version of its key: it changes with every (re-)registration.
    """

    service: str
    id: str
    address: str
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)
    version: int = 0


def encode(service: str, instance_id: str, address: str, metadata: Mapping[str, Any]) -> bytes:
    """The registry's JSON value of an instance (see the module docstring)."""
    document = {
        "service": service,
        "id": instance_id,
        "address": address,
        "metadata": dict(metadata),
    }
    try:
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    except (TypeError, ValueError) as error:
        raise InvalidValueError(f"metadata is not JSON-serializable: {error}") from error


def decode(pair: KVPair, root: str) -> ServiceInstance | None:
    """The instance a registry key holds, or None (logged) if it is not one."""
    relative = pair.key[len(root) + 1 :] if root else pair.key
    segments = relative.split("/")
    if len(segments) != 2:
        log.warning("registry key %r is not <service>/<id>; skipped", pair.key)
        return None
    try:
        document = json.loads(pair.value)
        address = document["address"]
        metadata = document.get("metadata", {})
        if not isinstance(address, str) or not isinstance(metadata, dict):
            raise TypeError("address must be a string and metadata an object")
    except (ValueError, TypeError, KeyError) as error:
        log.warning("registry key %r holds no instance (%s); skipped", pair.key, error)
        return None
    return ServiceInstance(segments[0], segments[1], address, metadata, pair.version)


def _segment(name: object, what: str) -> str:
    if not isinstance(name, str) or "/" in name or normalize_key(name) != name:
        raise InvalidKeyError(f"{what} must be one key segment (no '/'), not {name!r}")
    return name


class Instance:
    """A registration held alive by a lease; see the module docstring.

    ``lost`` is set while the registration is lost and not (yet) restored;
    ``registrations`` counts successful registrations (1, plus one per re-registration).
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
        self.lost = threading.Event()
        self.registrations = 0
        self._value = encode(self.service, self.id, self.address, self.metadata)
        self._mutex = threading.Lock()  # register() against deregister()
        self._stopped = threading.Event()
        self._lease: Lease | None = None
        self._register()
        self._thread = threading.Thread(
            target=self._run, name=f"libkv-instance-{self.service}/{self.id}", daemon=True
        )
        self._thread.start()

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
        """Delete the instance's key now and stop keeping it alive. Idempotent."""
        with self._mutex:
            if self._stopped.is_set():
                return
            self._stopped.set()
            lease, self._lease = self._lease, None
        if lease is not None and not self.store.closed:
            with contextlib.suppress(LeaseNotFoundError):  # lost meanwhile: key gone already
                lease.revoke()  # deletes the key with it

    def _register(self) -> bool:
        """Write the key under a new lease; False (nothing written) if deregistered."""
        lease = self.store.lease(self.ttl)
        with self._mutex:
            if not self._stopped.is_set():
                try:
                    self.store.put(self.key, self._value, lease=lease)
                except BaseException:
                    self._revoke_unused(lease)
                    raise
                self._lease = lease
                self.registrations += 1
                return True
        self._revoke_unused(lease)
        return False

    def _revoke_unused(self, lease: Lease) -> None:
        if not self.store.closed:
            try:
                lease.revoke()
            except KVError:
                log.debug("could not revoke an unused lease", exc_info=True)

    def _run(self) -> None:
        while not self._stopped.is_set() and not self.store.closed:
            lease = self._lease
            if lease is None or not lease.lost.wait(_CHECK_INTERVAL):
                continue
            if self._stopped.is_set():
                return
            self.lost.set()
            if not self.reregister:
                log.warning(
                    "instance %s/%s lost its lease; not re-registering", self.service, self.id
                )
                return
            log.warning("instance %s/%s lost its lease; re-registering", self.service, self.id)
            retry = _RETRY_FIRST
            while not self._stopped.is_set():
                try:
                    if not self._register():
                        return
                except StoreClosedError:
                    return
                except KVError as error:
                    log.info("re-registering %s/%s failed: %s", self.service, self.id, error)
                    self._stopped.wait(retry)
                    retry = min(retry * 2, _RETRY_MAX)
                    continue
                self.lost.clear()
                log.info("instance %s/%s registered again", self.service, self.id)
                break


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
        (``InvalidValueError`` otherwise). Returns the :class:`Instance` handle.
        """
        _segment(service, "a service name")
        instance_id = _segment(
            uuid.uuid4().hex if instance_id is None else instance_id, "an instance id"
        )
        if not isinstance(address, str) or not address:
            raise InvalidValueError(f"address must be a non-empty string, not {address!r}")
        record = ServiceInstance(service, instance_id, address, dict(metadata or {}))
        encode(service, instance_id, address, record.metadata)  # refuse bad metadata first
        key = f"{self._prefix(service)}/{instance_id}"
        return Instance(self.store, key, record, ttl, reregister=reregister)

    def instances(self, service: str) -> list[ServiceInstance]:
        """The live instances of ``service``, sorted by id, from one consistent read."""
        prefix = self._prefix(_segment(service, "a service name"))
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
        return Membership(self.store, self._prefix(_segment(service, "a service name")), self.root)
