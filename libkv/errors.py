"""The libkv error hierarchy.

Every error libkv raises derives from :class:`KVError`. Drivers translate their
backend client's exceptions into these at one boundary and chain the original as
``__cause__``; a backend exception never escapes untranslated.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "HistoryLostError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "InvalidURLError",
    "InvalidValueError",
    "KVError",
    "KeyExistsError",
    "KeyModifiedError",
    "KeyNotFoundError",
    "LeaseNotFoundError",
    "LockError",
    "NotReachableError",
    "NotSupportedError",
    "StoreClosedError",
    "UnknownOutcomeError",
    "UnknownSchemeError",
    "ValueTooLargeError",
    "WaitTimeoutError",
]


class KVError(Exception):
    """Base class of every error raised by libkv."""


class _ConditionError(KVError):
    """A write's condition did not hold.

    ``key`` is the key (relative to the store's namespace) whose condition failed and
    ``index`` the position of the failing operation in its transaction (0 for a
    single-operation call).
    """

    def __init__(self, key: str, message: str | None = None, *, index: int = 0) -> None:
        self.key = key
        self.index = index
        super().__init__(message or self._describe(key))

    def _describe(self, key: str) -> str:
        raise NotImplementedError

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_condition_error, (type(self), self.key, str(self), self.index))

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _rebuild_condition_error(
    cls: type[_ConditionError], key: str, message: str, index: int
) -> _ConditionError:
    return cls(key, message, index=index)


class KeyNotFoundError(_ConditionError, KeyError):
    """The key does not exist."""

    def _describe(self, key: str) -> str:
        return f"key not found: {key!r}"


class KeyExistsError(_ConditionError):
    """The key exists already (``create``, or ``check`` with version 0)."""

    def _describe(self, key: str) -> str:
        return f"key exists: {key!r}"


class KeyModifiedError(_ConditionError):
    """The key's current version is not the one the write was conditioned on."""

    def _describe(self, key: str) -> str:
        return f"key modified: {key!r} is not at the expected version"


class InvalidArgumentError(KVError, ValueError):
    """An argument is out of range or malformed; nothing was sent.

    A ttl that is not finite or outside ``capabilities.ttl_min``..``ttl_max``, a
    version or revision that is not an int in 0..2**63-1, a malformed glob pattern, a
    transaction with two operations on one key or more than
    ``capabilities.max_transaction_ops``, a lease from another store.
    """


class InvalidKeyError(KVError, ValueError):
    """A key or prefix is malformed; nothing was sent."""


class InvalidValueError(KVError, TypeError, ValueError):
    """A value is neither bytes-like nor ``str``; nothing was sent."""


class ValueTooLargeError(KVError, ValueError):
    """A value exceeds ``capabilities.max_value_size``; nothing was written."""


class InvalidURLError(KVError, ValueError):
    """A store URL, or one of its options, is malformed or unknown."""


class UnknownSchemeError(InvalidURLError):
    """No driver is installed or registered for the URL's scheme."""


class NotReachableError(KVError, ConnectionError):
    """The backend could not be reached within the store's timeout."""


class AuthenticationError(KVError, PermissionError):
    """The backend refused our credentials or denied permission (not retried)."""


class UnknownOutcomeError(NotReachableError):
    """A write timed out: it may or may not have been applied."""


class HistoryLostError(KVError):
    """The change history a watch needs is gone (compacted, trimmed, or reset)."""


class NotSupportedError(KVError):
    """This driver cannot provide the requested feature (see its capabilities)."""


class LockError(KVError):
    """A lock operation is invalid in the lock's state (e.g. releasing a lock not held)."""


class LeaseNotFoundError(KVError):
    """The lease has expired or been revoked."""


class StoreClosedError(KVError):
    """The store has been closed."""


class WaitTimeoutError(KVError, TimeoutError):
    """A bounded wait ended before the awaited change happened."""
