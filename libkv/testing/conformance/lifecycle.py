"""Life cycle: closing, capabilities and errors.

A closed store refuses every call; capabilities are a sane frozen dataclass; the
error classes have the bases the contract names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

import libkv
from libkv import Store, ops
from libkv.testing.conformance.base import (
    ConformanceBase,
    expect_all_raise,
)

__all__ = ["LifecycleConformance"]


class LifecycleConformance(ConformanceBase):
    """Life cycle: closing, capabilities and errors."""

    # -- closing --------------------------------------------------------------------

    def test_closed_store_rejects_every_call(
        self, url: str, store: Store, other_store: Store
    ) -> None:
        """After close(), every call raises StoreClosedError; the data stays for other
        clients, and a store used as a context manager is closed on exit."""
        pair = store.put("k", b"1")
        store.close()
        calls: dict[str, Callable[[], object]] = {}
        if store.capabilities.watch_resume:
            # Without it compact() is NotSupportedError whatever the store's state.
            calls["compact"] = lambda: store.compact(pair.version)
        expect_all_raise(
            calls
            | {
                "get": lambda: store.get("k"),
                "exists": lambda: store.exists("k"),
                "put": lambda: store.put("k", b"2"),
                "create": lambda: store.create("new", b"2"),
                "update": lambda: store.update("k", b"2", version=pair.version),
                "delete": lambda: store.delete("k"),
                "list": lambda: store.list(""),
                "keys": lambda: list(store.keys()),
                "delete_tree": lambda: store.delete_tree(""),
                "get_many": lambda: store.get_many(["k"]),
                "put_many": lambda: store.put_many({"new": b"2"}),
                "transaction": lambda: store.transaction([ops.put("new", b"2")]),
                "watch": lambda: store.watch("k"),
                "wait_for_change": lambda: store.wait_for_change("k", pair.version, timeout=0.1),
                "lease": lambda: store.lease(self.ttl_for(other_store)),
                "lock": lambda: store.lock("lock"),
            },
            libkv.StoreClosedError,
        )
        assert other_store.get("k") == pair
        with libkv.open(url) as scoped:
            scoped.put("scoped", b"1")
        with pytest.raises(libkv.StoreClosedError):
            scoped.get("scoped")
        assert other_store.get("scoped").value == b"1"

    # -- capabilities and errors ----------------------------------------------------

    def test_capabilities_are_a_frozen_dataclass_with_sane_values(
        self, store: Store, other_store: Store
    ) -> None:
        """capabilities is a frozen Capabilities dataclass with the contract's fields."""
        capabilities = store.capabilities
        assert isinstance(capabilities, libkv.Capabilities)
        assert dataclasses.is_dataclass(capabilities)
        with pytest.raises(dataclasses.FrozenInstanceError):
            capabilities.ttl_min = 1.0  # type: ignore[misc]
        assert isinstance(capabilities.watch_every_change, bool)
        assert isinstance(capabilities.watch_resume, bool)
        assert isinstance(capabilities.ttl_min, (int, float))
        assert isinstance(capabilities.ttl_slack, (int, float))
        assert 0 <= capabilities.ttl_min <= 60
        assert 0 <= capabilities.ttl_slack <= 60
        assert isinstance(capabilities.max_value_size, int)
        assert capabilities.max_value_size >= 1024
        assert isinstance(capabilities.max_transaction_ops, int)
        assert capabilities.max_transaction_ops >= 8
        assert other_store.capabilities == capabilities

    def test_error_hierarchy(self) -> None:
        """Every error derives from KVError, with the builtin bases the contract names."""
        expected_bases: dict[type[BaseException], tuple[type[BaseException], ...]] = {
            libkv.KeyNotFoundError: (KeyError,),
            libkv.KeyExistsError: (),
            libkv.KeyModifiedError: (),
            libkv.InvalidKeyError: (ValueError,),
            libkv.InvalidURLError: (ValueError,),
            libkv.UnknownSchemeError: (libkv.InvalidURLError,),
            libkv.ValueTooLargeError: (ValueError,),
            libkv.InvalidValueError: (TypeError, ValueError),
            libkv.NotReachableError: (ConnectionError,),
            libkv.UnknownOutcomeError: (libkv.NotReachableError,),
            libkv.HistoryLostError: (),
            libkv.NotSupportedError: (),
            libkv.LockError: (),
            libkv.StoreClosedError: (),
            libkv.WaitTimeoutError: (TimeoutError,),
            libkv.LeaseNotFoundError: (),
        }
        for error, bases in expected_bases.items():
            assert issubclass(error, libkv.KVError), error.__name__
            for base in bases:
                assert issubclass(error, base), f"{error.__name__} is not a {base.__name__}"
