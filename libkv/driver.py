"""Everything a driver needs, in one import.

A driver subclasses :class:`Backend`, implements its abstract primitives (the table in
:mod:`libkv.backend`; a class that leaves one out cannot be instantiated), declares its
:class:`Capabilities`, and returns :class:`FeedBatch` objects from its watch
:class:`Feed`. It raises the error classes below (or maps its client's exceptions to
them in ``translate_error``), and its initializer reads its options with
:meth:`StoreURL.read_options` and the ``parse_*`` helpers and returns the backend;
:func:`libkv.open` wraps it in a :class:`libkv.Store`. Nothing a driver uses lives
anywhere else::

    from libkv.driver import Backend, Capabilities, FeedBatch, KVPair, StoreURL

and it is made usable by URL through the ``libkv.stores`` entry point (see
:mod:`libkv.registry`). The Store is not exported here: a backend never sees it.

For :mod:`libkv.aio` a driver may also provide an :class:`AsyncBackend` (the same
primitives as coroutines, whose feeds are :class:`AsyncFeed`), under the
``libkv.aio.stores`` entry point. Without one its sync backend runs there on worker
threads (:class:`ThreadedBackend`); :class:`LocalBackend`, :class:`InlineBackend` and
:class:`Wakers` serve backends that live in this process.
"""

from libkv._async.backend import AsyncBackend
from libkv._async.watching import AsyncFeed
from libkv.aio.bridge import InlineBackend, LocalBackend, ThreadedBackend
from libkv.backend import Backend
from libkv.changes import BATCH_CHANGES, take_batch
from libkv.concurrency import Wakers
from libkv.errors import (
    AuthenticationError,
    HistoryLostError,
    InvalidArgumentError,
    InvalidKeyError,
    InvalidURLError,
    InvalidValueError,
    KeyExistsError,
    KeyModifiedError,
    KeyNotFoundError,
    KVError,
    LeaseNotFoundError,
    LockError,
    NotReachableError,
    NotSupportedError,
    StoreClosedError,
    UnknownOutcomeError,
    ValueTooLargeError,
)
from libkv.keys import in_prefix
from libkv.lease import Lease
from libkv.model import MAX_REVISION, Action, Capabilities, Event, KVPair
from libkv.ops import Op, OpKind, first_failure
from libkv.url import StoreURL, parse_bool, parse_positive_int, parse_seconds
from libkv.watching import Feed, FeedBatch

__all__ = [
    "BATCH_CHANGES",
    "MAX_REVISION",
    "Action",
    "AsyncBackend",
    "AsyncFeed",
    "AuthenticationError",
    "Backend",
    "Capabilities",
    "Event",
    "Feed",
    "FeedBatch",
    "HistoryLostError",
    "InlineBackend",
    "InvalidArgumentError",
    "InvalidKeyError",
    "InvalidURLError",
    "InvalidValueError",
    "KVError",
    "KVPair",
    "KeyExistsError",
    "KeyModifiedError",
    "KeyNotFoundError",
    "Lease",
    "LeaseNotFoundError",
    "LocalBackend",
    "LockError",
    "NotReachableError",
    "NotSupportedError",
    "Op",
    "OpKind",
    "StoreClosedError",
    "StoreURL",
    "ThreadedBackend",
    "UnknownOutcomeError",
    "ValueTooLargeError",
    "Wakers",
    "first_failure",
    "in_prefix",
    "parse_bool",
    "parse_positive_int",
    "parse_seconds",
    "take_batch",
]
