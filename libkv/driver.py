"""Everything a driver needs, in one import.

A driver subclasses :class:`Store`, implements its primitives (see :mod:`libkv.api`)
and declares its :class:`Capabilities`; its watch feed returns :class:`FeedBatch`
objects. Nothing a driver uses lives anywhere else::

    from libkv.driver import Capabilities, FeedBatch, KVPair, Store, StoreURL
"""

from libkv.api import Store, in_prefix
from libkv.errors import (
    AuthenticationError,
    HistoryLostError,
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
from libkv.model import Action, Capabilities, Event, KVPair
from libkv.ops import Op, OpKind, first_failure
from libkv.url import StoreURL, parse_bool, parse_positive_int, parse_seconds
from libkv.watching import Feed, FeedBatch

__all__ = [
    "Action",
    "AuthenticationError",
    "Capabilities",
    "Event",
    "Feed",
    "FeedBatch",
    "HistoryLostError",
    "InvalidKeyError",
    "InvalidURLError",
    "InvalidValueError",
    "KVError",
    "KVPair",
    "KeyExistsError",
    "KeyModifiedError",
    "KeyNotFoundError",
    "LeaseNotFoundError",
    "LockError",
    "NotReachableError",
    "NotSupportedError",
    "Op",
    "OpKind",
    "Store",
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
