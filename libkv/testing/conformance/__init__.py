"""The libkv conformance suite: the contract (docs/contract.md) written once as tests.

Every driver, first- or third-party, runs it by subclassing `StoreConformance` and
providing one function-scoped fixture, `url`: a URL such that each test starts with an
empty namespace and every `libkv.open(url)` within that test talks to the same data
(so two `open` calls are two clients of one store)::

    import uuid

    import pytest

    from libkv.testing import StoreConformance

    class TestMemory(StoreConformance):
        @pytest.fixture
        def url(self) -> str:
            return f"memory://conformance-{uuid.uuid4().hex}"

A driver whose URL another process can open subclasses `CrossProcessConformance`
(`libkv.testing.cross_process`) instead: the same suite plus tests that need a second
process (a dead process's keys and locks vanish; locks exclude other processes). A
driver whose test can kill, freeze and restart a real server also runs
`FaultConformance` (`libkv.testing.faults`).

The suite is one mixin per topic, each readable on its own: `base` (bounds, parameter
tables, fixtures, the expiry scenario), `keyvalue`, `transactions`, `watches`,
`watch_properties` (resume points, zero timeouts, bounded memory), `expiry` (TTLs and
leases), `locks`, `lifecycle` (closing, capabilities, errors), `bounds` (arguments out of
range) and `cancellation` (async only: cancelling, `asyncio.timeout()`, a loop that never
blocks, nothing left after close). `StoreConformance` composes them.

Expectations that differ between drivers are chosen from `store.capabilities`, never
skipped: a driver declares its gaps, and the suite holds it to what it declared.
Timing bounds come from the contract (1 s for closing a watch, for convergence and for
lock hand-over; `Capabilities.latest_expiry(ttl)` for expiry). Reads are held to them
exactly (the last poll starts after the deadline); an event or a lock hand-over gets
`DELIVERY_MARGIN` more. Conditions are awaited by bounded polling; the only sleeps let
time pass.
"""

from libkv.testing.conformance.base import (
    CLOSE_BOUND,
    CONVERGENCE_BOUND,
    DELIVERY_MARGIN,
    EVENT_TIMEOUT,
    HANDOVER_BOUND,
    JOIN_MARGIN,
    LOST_MARGIN,
    ConformanceBase,
)
from libkv.testing.conformance.bounds import BoundsConformance
from libkv.testing.conformance.cancellation import AsyncConformance
from libkv.testing.conformance.expiry import ExpiryConformance
from libkv.testing.conformance.keyvalue import KeyValueConformance
from libkv.testing.conformance.lifecycle import LifecycleConformance
from libkv.testing.conformance.locks import LockConformance
from libkv.testing.conformance.transactions import TransactionConformance
from libkv.testing.conformance.watch_properties import WatchPropertyConformance
from libkv.testing.conformance.watches import WatchConformance

# The bounds stay importable from here, where the one-module suite defined them.
__all__ = [
    "CLOSE_BOUND",
    "CONVERGENCE_BOUND",
    "DELIVERY_MARGIN",
    "EVENT_TIMEOUT",
    "HANDOVER_BOUND",
    "JOIN_MARGIN",
    "LOST_MARGIN",
    "AsyncConformance",
    "BoundsConformance",
    "ConformanceBase",
    "ExpiryConformance",
    "KeyValueConformance",
    "LifecycleConformance",
    "LockConformance",
    "StoreConformance",
    "TransactionConformance",
    "WatchConformance",
    "WatchPropertyConformance",
]


class StoreConformance(
    KeyValueConformance,
    TransactionConformance,
    WatchConformance,
    WatchPropertyConformance,
    ExpiryConformance,
    LockConformance,
    LifecycleConformance,
    BoundsConformance,
    AsyncConformance,
):
    """Every contract point as a test. Subclass it and provide a function-scoped `url`."""
