"""Value types shared by the public API and the drivers."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["MAX_REVISION", "Action", "Capabilities", "Event", "KVPair"]

MAX_REVISION = 2**63 - 1
"""The largest version or revision: every backend represents a signed 64-bit int.

The core refuses larger version, ``since`` and ``compact`` arguments before a driver
is called.
"""


@dataclass(frozen=True, slots=True)
class KVPair:
    """A key, its value, and the store revision of the key's last write (> 0)."""

    key: str
    value: bytes
    version: int


class Action(enum.Enum):
    """What a watch :class:`Event` reports."""

    INIT = "init"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Event:
    """One watch event.

    ``INIT`` carries the consistent snapshot the watch starts from (``snapshot``, and
    for a single-key watch also ``pair``) at store revision ``revision``. ``UPDATE``
    carries the new pair; ``DELETE`` has ``pair=None``.
    """

    action: Action
    key: str
    pair: KVPair | None
    revision: int
    snapshot: tuple[KVPair, ...] = ()


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a driver guarantees; the conformance suite holds it to these.

    ``watch_every_change``: every change is delivered in revision order (otherwise
    intermediate states of a key may be merged, but watchers converge).
    ``watch_resume``: ``watch(since=...)`` is supported.
    ``ttl_min``/``ttl_max``: the shortest and longest TTL accepted (seconds).
    ``ttl_slack`` and ``ttl_slack_ratio``: how late an expiry may be observed, a
    fixed number of seconds plus a fraction of the TTL (see :meth:`latest_expiry`).
    ``max_value_size`` in bytes; ``max_transaction_ops`` per transaction.
    ``native_async``: in :mod:`libkv.aio`, the driver's own async backend serves the
    store; False when a sync-only driver runs there on worker threads.
    """

    watch_every_change: bool
    watch_resume: bool
    ttl_min: float
    ttl_max: float
    ttl_slack: float
    max_value_size: int
    max_transaction_ops: int
    ttl_slack_ratio: float = 0.0
    native_async: bool = False

    def latest_expiry(self, ttl: float) -> float:
        """Seconds after a write with ``ttl`` by which the key is guaranteed gone."""
        return ttl + self.ttl_slack + self.ttl_slack_ratio * ttl
