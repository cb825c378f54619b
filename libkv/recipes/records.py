"""What the registry and the election store and read: plain values, no I/O.

Shared by both flavours (:mod:`libkv.recipes` and :mod:`libkv.aio.recipes`), so that a
:class:`ServiceInstance` or a :class:`Leader` is one class whichever flavour read it.
The registry's JSON schema is documented in :mod:`libkv.recipes.discovery`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from libkv.errors import InvalidKeyError, InvalidValueError
from libkv.keys import normalize_key
from libkv.model import KVPair

__all__ = ["Leader", "ServiceInstance", "decode", "encode", "segment"]

# The registry's logger, as before these values moved here: logging set up for it still applies.
log = logging.getLogger("libkv.recipes.discovery")


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


@dataclass(frozen=True, slots=True)
class Leader:
    """A term of leadership: the leader's value and the term's fencing token."""

    value: bytes
    token: int


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


def segment(name: object, what: str) -> str:
    """``name`` if it is one key segment (a service name, an instance id); else
    InvalidKeyError naming ``what``."""
    if not isinstance(name, str) or "/" in name or normalize_key(name) != name:
        raise InvalidKeyError(f"{what} must be one key segment (no '/'), not {name!r}")
    return name
