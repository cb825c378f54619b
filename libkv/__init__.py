"""libkv: one key-value Store interface over many backends.

``store = libkv.open("etcd://127.0.0.1:2379/myapp")``; the same contract holds on
every backend, and what a backend cannot do is declared in ``store.capabilities``.
"""

import logging

from libkv import ops
from libkv.api import Store
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
    UnknownSchemeError,
    ValueTooLargeError,
    WaitTimeoutError,
)
from libkv.lease import Lease
from libkv.lock import Lock
from libkv.model import Action, Capabilities, Event, KVPair
from libkv.registry import open, register, schemes  # noqa: A004
from libkv.url import StoreURL
from libkv.watching import Watch

__version__ = "0.1.0"

# A library logs; the application decides where it goes. Without a handler of our own,
# Python's last-resort handler would print our warnings to stderr.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "Action",
    "AuthenticationError",
    "Capabilities",
    "Event",
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
    "Lock",
    "LockError",
    "NotReachableError",
    "NotSupportedError",
    "Store",
    "StoreClosedError",
    "StoreURL",
    "UnknownOutcomeError",
    "UnknownSchemeError",
    "ValueTooLargeError",
    "WaitTimeoutError",
    "Watch",
    "open",
    "ops",
    "register",
    "schemes",
]
