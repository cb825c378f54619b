"""Transactions and the atomicity of batches.

Atomic batches (put_many and transactions seen whole), transaction results and
failures, limits, and linearizable conditional writes under contention.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import cast

import pytest

import libkv
from libkv import KVPair, Store, ops
from libkv.ops import Op
from libkv.testing.conformance.base import (
    EVENT_TIMEOUT,
    LARGEST_TESTABLE_TRANSACTION,
    TRANSACTION_FAILURES,
    ConformanceBase,
    keys_of,
    run_concurrently,
)

__all__ = ["TransactionConformance"]


class TransactionConformance(ConformanceBase):
    """Transactions and the atomicity of batches."""

    def test_put_many_and_transactions_are_seen_whole_by_snapshots(
        self, store: Store, other_store: Store
    ) -> None:
        """put_many and transactions are atomic: a consistent snapshot (a watch's INIT)
        taken while they run shows every key of a batch at one generation."""
        keys = [f"batch/{index}" for index in range(10)]
        stop = threading.Event()
        errors: list[BaseException] = []

        def write_generations() -> None:
            try:
                generation = 0
                while not stop.is_set() and generation < 2000:
                    generation += 1
                    value = str(generation).encode()
                    if generation % 2:
                        other_store.put_many({key: value for key in keys})
                    else:
                        other_store.transaction([ops.put(key, value) for key in keys])
            except BaseException as error:
                errors.append(error)

        store.put_many({key: b"0" for key in keys})
        writer = threading.Thread(target=write_generations, daemon=True)
        writer.start()
        try:
            for _ in range(10):
                with store.watch("batch", recursive=True) as watch:
                    snapshot = self.first_event(watch).snapshot
                values = {pair.value for pair in snapshot}
                assert keys_of(list(snapshot)) == keys
                assert len(values) == 1, f"snapshot mixes generations {sorted(values)}"
        finally:
            stop.set()
            writer.join(EVENT_TIMEOUT)
        assert not errors, errors

    # -- transactions ---------------------------------------------------------------

    def test_transaction_applies_every_op_and_returns_results(self, store: Store) -> None:
        """A transaction applies all ops; results are the new pair for writes and None
        for deletes and checks; check(key, 0) means the key must not exist."""
        to_update = store.put("t/update", b"0")
        store.put("t/delete", b"0")
        to_delete_versioned = store.put("t/delete-versioned", b"0")
        checked = store.put("t/check", b"0")
        results = store.transaction(
            [
                ops.create("t/create", b"1"),
                ops.put("/t/put/", b"2"),
                ops.update("t/update", b"3", to_update.version),
                ops.delete("t/delete"),
                ops.delete("t/delete-versioned", to_delete_versioned.version),
                ops.check("t/check", checked.version),
                ops.check("t/absent", 0),
            ]
        )
        assert len(results) == 7
        writes = cast(list[KVPair], results[:3])
        assert keys_of(writes) == ["t/create", "t/put", "t/update"]
        assert [pair.value for pair in writes] == [b"1", b"2", b"3"]
        for pair in writes:
            assert pair.version > checked.version
            assert store.get(pair.key) == pair
        assert results[3:] == [None, None, None, None]
        assert keys_of(store.list("t")) == ["t/check", "t/create", "t/put", "t/update"]
        assert store.get("t/check") == checked

    @pytest.mark.parametrize("position", [0, 1, 2])
    @pytest.mark.parametrize("failure", list(TRANSACTION_FAILURES))
    def test_failed_transaction_writes_nothing_and_names_the_op(
        self, store: Store, failure: str, position: int
    ) -> None:
        """On a failed condition nothing is applied, and the error is the one the single op
        would raise, with .index = the op's position and .key = its key."""
        stale = store.put("present", b"1")
        current = store.put("present", b"2")
        build, expected = TRANSACTION_FAILURES[failure]
        failing = build(stale, current)
        transaction = [ops.put("filler/a", b"x"), ops.create("filler/b", b"x")]
        transaction.insert(position, failing)
        before = store.list("")
        with pytest.raises(expected) as caught:
            store.transaction(transaction)
        assert caught.value.index == position
        assert caught.value.key in {"present", "absent"}
        assert store.list("") == before

    def test_transaction_reports_the_first_failing_op(self, store: Store) -> None:
        """With several failing ops, .index is the first one's position."""
        store.put("present", b"1")
        with pytest.raises(libkv.KeyExistsError) as caught:
            store.transaction(
                [ops.put("fresh", b"x"), ops.create("present", b"x"), ops.delete("absent")]
            )
        assert (caught.value.index, caught.value.key) == (1, "present")
        assert not store.exists("fresh")

    @pytest.mark.parametrize(
        "second",
        [
            pytest.param(lambda: ops.delete("a"), id="same-key"),
            pytest.param(lambda: ops.check("/a/", 0), id="same-key-after-normalisation"),
        ],
    )
    def test_transaction_rejects_two_ops_on_one_key(
        self, store: Store, second: Callable[[], Op]
    ) -> None:
        """Two ops on one key raise ValueError and nothing is written."""
        with pytest.raises(ValueError):
            store.transaction([ops.put("other", b"x"), ops.put("a", b"x"), second()])
        assert store.list("") == []

    def test_transaction_over_max_ops_is_rejected(self, store: Store) -> None:
        """More ops than capabilities.max_transaction_ops raise ValueError before anything
        is sent; exactly that many succeed."""
        limit = store.capabilities.max_transaction_ops
        assert limit <= LARGEST_TESTABLE_TRANSACTION, (
            f"max_transaction_ops {limit} is too large for the suite to exercise; declare "
            "the real limit of the backend"
        )
        transaction = [ops.put(f"many/{index}", b"v") for index in range(limit + 1)]
        with pytest.raises(ValueError):
            store.transaction(transaction)
        assert store.list("") == []
        assert len(store.transaction(transaction[:limit])) == limit
        assert len(store.list("many")) == limit

    def test_compare_and_swap_counter_under_contention(
        self, open_client: Callable[[], Store]
    ) -> None:
        """Conditional updates are linearizable: 4 clients x 25 CAS increments end at 100."""
        threads_count, increments = 4, 25
        clients = [open_client() for _ in range(threads_count)]
        clients[0].create("counter", b"0")
        versions: list[int] = []
        errors: list[BaseException] = []
        guard = threading.Lock()

        def increment(client: Store) -> None:
            try:
                for _ in range(increments):
                    for _attempt in range(10_000):
                        pair = client.get("counter")
                        try:
                            updated = client.update(
                                "counter", str(int(pair.value) + 1), version=pair.version
                            )
                        except libkv.KeyModifiedError:
                            continue
                        with guard:
                            versions.append(updated.version)
                        break
                    else:
                        raise AssertionError("no increment succeeded in 10000 attempts")
            except BaseException as error:
                errors.append(error)

        run_concurrently(
            [functools.partial(increment, client) for client in clients], 60, "increments"
        )
        assert not errors, errors
        assert clients[0].get("counter").value == str(threads_count * increments).encode()
        assert len(set(versions)) == threads_count * increments

    def test_only_one_concurrent_create_wins(self, open_client: Callable[[], Store]) -> None:
        """create is atomic: of several clients creating one key, exactly one succeeds."""
        clients = [open_client() for _ in range(4)]
        outcomes: list[str] = []
        guard = threading.Lock()
        start = threading.Barrier(len(clients))

        def create(client: Store, name: str) -> None:
            start.wait()
            try:
                client.create("contested", name)
                outcome = "won"
            except libkv.KeyExistsError:
                outcome = "lost"
            with guard:
                outcomes.append(outcome)

        run_concurrently(
            [
                functools.partial(create, client, f"client-{index}")
                for index, client in enumerate(clients)
            ],
            EVENT_TIMEOUT,
            "creates",
        )
        assert sorted(outcomes) == ["lost", "lost", "lost", "won"]
