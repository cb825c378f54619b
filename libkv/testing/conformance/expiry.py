"""Expiry: TTLs and leases.

Keys written with a ttl or a lease stay until ttl and are gone by
`Capabilities.latest_expiry(ttl)`, reported as DELETE; leases are revoked, kept alive
or lost. Every such check goes through `ConformanceBase.assert_expiry`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import pytest

import libkv
from libkv import Action, KVPair, Store, ops
from libkv.testing.conformance.base import (
    EVENT_TIMEOUT,
    LOST_MARGIN,
    ConformanceBase,
    ExpiryWindow,
    expect_all_raise,
    keys_of,
)
from libkv.testing.history import (
    WatchRecorder,
)
from libkv.testing.polling import assert_holds_until, wait_until

__all__ = ["ExpiryConformance"]


class ExpiryConformance(ConformanceBase):
    """Expiry: TTLs and leases."""

    def test_write_without_ttl_or_lease_detaches_the_key_from_its_lease(self, store: Store) -> None:
        """A write without ttl/lease clears earlier expiry: revoking the old lease spares it."""
        lease = store.lease(self.ttl_for(store))
        store.put("put", b"1", lease=lease)
        store.put("put", b"2")
        leased = store.put("update", b"1", lease=lease)
        store.update("update", b"2", version=leased.version)
        store.put("control", b"1", lease=lease)
        lease.revoke()
        assert store.get("put").value == b"2"
        assert store.get("update").value == b"2"
        assert not store.exists("control")

    def test_watch_reports_expiry_and_lease_revocation_as_delete(
        self, store: Store, other_store: Store
    ) -> None:
        """A key that expires or whose lease is revoked is reported as DELETE."""
        ttl = self.ttl_for(store)
        with store.watch("w", recursive=True) as watch, WatchRecorder(watch) as recorder:
            self.recorded_init(recorder)
            written: list[KVPair] = []
            window = self.write_expiring(
                other_store,
                ttl,
                ["w/ttl"],
                lambda: written.append(other_store.put("w/ttl", b"1", ttl=ttl)),
            )
            lease = other_store.lease(ttl * 10)
            written.append(other_store.put("w/lease", b"1", lease=lease))
            wait_until(lambda: len(recorder.events) >= 3, EVENT_TIMEOUT, message="no UPDATEs")
            assert [event.pair for event in recorder.events[1:]] == written
            lease.revoke()
            self.assert_expiry(other_store, [window], recorder)
        assert [(event.action, event.key) for event in recorder.events[1:]] == [
            (Action.UPDATE, "w/ttl"),
            (Action.UPDATE, "w/lease"),
            (Action.DELETE, "w/lease"),
            (Action.DELETE, "w/ttl"),
        ]

    # -- TTL ------------------------------------------------------------------------

    def test_ttl_key_lives_at_least_ttl_and_is_gone_by_ttl_plus_slack(
        self, open_client: Callable[[], Store], other_store: Store
    ) -> None:
        """put(ttl=S): the key stays for S seconds and is gone (get, exists, a DELETE
        event) by S + ttl_slack, whether or not the writer is still running."""
        ttl = self.ttl_for(other_store)
        writer = open_client()
        with other_store.watch("k") as watch, WatchRecorder(watch) as recorder:
            self.recorded_init(recorder)
            window = self.write_expiring(
                other_store, ttl, ["k"], lambda: writer.put("k", b"v", ttl=ttl)
            )
            writer.close()
            self.assert_expiry(other_store, [window], recorder)
        with pytest.raises(libkv.KeyNotFoundError):
            other_store.get("k")
        assert not other_store.exists("k")
        assert other_store.list("") == []

    def test_every_expiry_is_reported_between_ttl_and_ttl_plus_slack(
        self, store: Store, other_store: Store
    ) -> None:
        """Keys with staggered TTLs (so expiry machinery running on a period cannot line up
        with all of them) are each reported as DELETE no sooner than their ttl and no later
        than ttl + ttl_slack after their write."""
        ttl = self.ttl_for(store)
        with store.watch("expiring", recursive=True) as watch, WatchRecorder(watch) as recorder:
            self.recorded_init(recorder)
            windows = []
            for index, offset in enumerate([0.0, 0.25, 0.5, 0.75]):
                key, key_ttl = f"expiring/{index}", ttl + offset
                write = functools.partial(other_store.put, key, b"v", ttl=key_ttl)
                windows.append(self.write_expiring(other_store, key_ttl, [key], write))
            self.assert_expiry(store, windows, recorder)
        deleted = [event.key for event in recorder.events if event.action is Action.DELETE]
        assert sorted(deleted) == sorted(key for window in windows for key in window.keys)

    def test_ttl_applies_to_every_write_and_a_plain_write_clears_it(self, store: Store) -> None:
        """ttl works on create, update, put_many and transaction ops too; a later write
        without ttl (put or update) clears the expiry."""
        ttl = self.ttl_for(store)
        expiring_keys = [
            "create",
            "put_many/a",
            "put_many/b",
            "transaction/create",
            "transaction/put",
            "update",
        ]

        def write() -> None:
            store.create("create", b"1", ttl=ttl)
            plain = store.put("update", b"1")
            store.update("update", b"2", version=plain.version, ttl=ttl)
            store.put_many({"put_many/a": b"1", "put_many/b": b"1"}, ttl=ttl)
            store.transaction(
                [
                    ops.put("transaction/put", b"1", ttl=ttl),
                    ops.create("transaction/create", b"1", ttl=ttl),
                ]
            )
            store.put("cleared/put", b"1", ttl=ttl)
            store.put("cleared/put", b"2")
            expiring = store.put("cleared/update", b"1", ttl=ttl)
            store.update("cleared/update", b"2", version=expiring.version)

        with store.watch("", recursive=True) as watch, WatchRecorder(watch) as recorder:
            self.recorded_init(recorder)
            window = self.write_expiring(store, ttl, expiring_keys, write)
            self.assert_expiry(store, [window], recorder)
        assert keys_of(store.list("")) == ["cleared/put", "cleared/update"]

    def test_ttl_below_ttl_min_is_rejected(self, store: Store) -> None:
        """ttl below capabilities.ttl_min (or negative) raises ValueError; nothing written."""
        existing = store.put("existing", b"1")
        ttl_min = store.capabilities.ttl_min
        for ttl in [-1.0, ttl_min / 2] if ttl_min > 0 else [-1.0]:
            expect_all_raise(self._writes_with_ttl(store, existing, ttl), ValueError)
        assert store.list("") == [existing]

    @staticmethod
    def _writes_with_ttl(
        store: Store, existing: KVPair, ttl: float
    ) -> dict[str, Callable[[], object]]:
        return {
            "put": lambda: store.put("new", b"v", ttl=ttl),
            "create": lambda: store.create("new", b"v", ttl=ttl),
            "update": lambda: store.update("existing", b"v", version=existing.version, ttl=ttl),
            "put_many": lambda: store.put_many({"new": b"v"}, ttl=ttl),
            "transaction": lambda: store.transaction([ops.put("new", b"v", ttl=ttl)]),
        }

    # -- leases ---------------------------------------------------------------------

    def test_lease_revoke_deletes_its_keys_now(self, store: Store, other_store: Store) -> None:
        """A Lease has an id and a ttl; revoke() deletes every key written with it at once,
        and writing with a revoked lease raises LeaseNotFoundError."""
        ttl = self.ttl_for(store)
        lease = store.lease(ttl)
        assert lease.id is not None
        assert lease.ttl >= ttl
        store.put("svc/put", b"1", lease=lease)
        store.create("svc/create", b"1", lease=lease)
        plain = store.put("svc/update", b"1")
        store.update("svc/update", b"2", version=plain.version, lease=lease)
        store.put_many({"svc/put_many": b"1"}, lease=lease)
        store.transaction([ops.put("svc/transaction", b"1", lease=lease)])
        store.put("svc/plain", b"1")
        lease.revoke()
        assert keys_of(store.list("")) == ["svc/plain"]
        assert keys_of(other_store.list("")) == ["svc/plain"]
        assert not lease.lost.is_set(), "revoking is not losing"
        with pytest.raises(libkv.LeaseNotFoundError):
            store.put("svc/late", b"1", lease=lease)
        assert issubclass(libkv.LeaseNotFoundError, libkv.KVError)
        assert keys_of(store.list("")) == ["svc/plain"]

    def test_lease_context_manager_revokes_on_exit(self, store: Store) -> None:
        """Leaving a Lease's with-block revokes it: its keys are gone."""
        with store.lease(self.ttl_for(store)) as lease:
            store.put("svc", b"1", lease=lease)
            assert store.exists("svc")
        assert not store.exists("svc")

    def test_kept_alive_lease_outlives_its_ttl_and_dies_with_its_holder(
        self, open_client: Callable[[], Store], other_store: Store
    ) -> None:
        """keepalive=True refreshes the lease while the holder runs; once the holder stops
        (store.close() stops keep-alives) its keys vanish within ttl + ttl_slack."""
        holder = open_client()
        ttl = self.ttl_for(holder)
        lease = holder.lease(ttl)
        holder.put("svc", b"up", lease=lease)
        assert_holds_until(
            lambda: other_store.exists("svc") and not lease.lost.is_set(),
            time.monotonic() + ttl + holder.capabilities.ttl_slack + 0.5,
            message="a kept-alive lease expired",
        )
        holder.close()
        stopped = time.monotonic()
        self.assert_expiry(
            other_store,
            [ExpiryWindow(("svc",), stopped, stopped + self.expiry_bound(other_store, ttl))],
        )

    def test_lease_without_keepalive_expires_and_is_reported_lost(
        self, store: Store, other_store: Store
    ) -> None:
        """lease(ttl, keepalive=False) is not refreshed: after ttl (+ ttl_slack) its keys
        vanish, watchers get DELETE, and lost is set."""
        ttl = self.ttl_for(store)
        with other_store.watch("svc") as watch, WatchRecorder(watch) as recorder:
            self.recorded_init(recorder)
            started = time.monotonic()
            lease = store.lease(ttl, keepalive=False)
            granted = time.monotonic()
            store.put("svc", b"up", lease=lease)
            window = self.expiry_window(store, ttl, ["svc"], started, granted)
            self.assert_expiry(other_store, [window], recorder)
        wait_until(
            lease.lost.is_set,
            granted + ttl + store.capabilities.ttl_slack + LOST_MARGIN - time.monotonic(),
            message="lease.lost not set after expiry",
        )
        with pytest.raises(libkv.LeaseNotFoundError):
            store.put("svc", b"again", lease=lease)
