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
"""

from libkv.backend import Backend
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
    "MAX_REVISION",
    "Action",
    "AuthenticationError",
    "Backend",
    "Capabilities",
    "Event",
    "Feed",
    "FeedBatch",
    "HistoryLostError",
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
    "LockError",
    "NotReachableError",
    "NotSupportedError",
    "Op",
    "OpKind",
    "StoreClosedError",
    "StoreURL",
    "UnknownOutcomeError",
    "ValueTooLargeError",
    "first_failure",
    "in_prefix",
    "parse_bool",
    "parse_positive_int",
    "parse_seconds",
]
