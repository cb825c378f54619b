"""Watches and wait_for_change.

INIT snapshots, per-key and recursive changes, history properties under bursts,
resuming from a revision, closing, and wait_for_change.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable
from typing import cast

import pytest

import libkv
import libkv._async.sharing
import libkv.sharing
from libkv import Action, Event, KVPair, Store, ops
from libkv.testing.conformance.base import (
    CLOSE_BOUND,
    CONVERGENCE_BOUND,
    EVENT_TIMEOUT,
    JOIN_MARGIN,
    ConformanceBase,
    call_within,
    keys_of,
    run_concurrently,
)
from libkv.testing.history import (
    Change,
    WatchRecorder,
    assert_valid_history,
    changes_by_key,
    describe,
    replay,
)
from libkv.testing.polling import wait_until

__all__ = ["WatchConformance"]


def _is_subsequence(observed: list[Change], actual: list[Change]) -> bool:
    remaining = iter(actual)
    return all(change in remaining for change in observed)


class WatchConformance(ConformanceBase):
    """Watches and wait_for_change."""

    # -- watches --------------------------------------------------------------------

    def test_watch_of_an_existing_key_reports_init_then_changes(
        self, store: Store, other_store: Store
    ) -> None:
        """A single-key watch starts with INIT (the current pair at revision R), then
        UPDATE and DELETE with revisions > R; Watch.revision keeps up."""
        pair = store.put("k", b"1")
        with store.watch("/k/") as watch:
            init = self.first_event(watch)
            assert (init.key, init.pair) == ("k", pair)
            assert init.revision >= pair.version
            assert watch.revision >= init.revision
            updated = other_store.put("k", b"2")
            event = self.next_event(watch)
            assert (event.action, event.key, event.pair) == (Action.UPDATE, "k", updated)
            assert event.revision == updated.version
            other_store.delete("k")
            deleted = self.next_event(watch)
            assert (deleted.action, deleted.key, deleted.pair) == (Action.DELETE, "k", None)
            assert deleted.revision > updated.version
            assert watch.revision >= deleted.revision

    def test_watch_of_a_missing_key_reports_its_creation(
        self, store: Store, other_store: Store
    ) -> None:
        """Watching a key that does not exist is allowed: INIT with pair None, then UPDATE
        when it is created."""
        with store.watch("k") as watch:
            init = call_within(lambda: next(watch), EVENT_TIMEOUT, "next(watch)")
            assert (init.action, init.key, init.pair) == (Action.INIT, "k", None)
            created = other_store.create("k", b"1")
            event = self.next_event(watch)
            assert (event.action, event.key, event.pair) == (Action.UPDATE, "k", created)
            assert event.revision > init.revision
            assert watch.next_event(timeout=0.1) is None

    def test_recursive_watch_starts_with_a_complete_sorted_snapshot(self, store: Store) -> None:
        """A recursive INIT is a consistent snapshot of every pair under the prefix,
        sorted by key, at a revision no older than any of them; '' is everything."""
        for key in ["d/b/c", "d", "d/a", "d-x", "dx", "e"]:
            store.put(key, key)
        with store.watch("d/", recursive=True) as watch:
            init = self.first_event(watch)
        assert init.key == "d"
        assert list(init.snapshot) == store.list("d")
        assert keys_of(list(init.snapshot)) == ["d", "d/a", "d/b/c"]
        assert init.revision >= max(pair.version for pair in init.snapshot)
        with store.watch("", recursive=True) as watch:
            everything = self.first_event(watch)
        assert everything.key == ""
        assert list(everything.snapshot) == store.list("")
        with store.watch("missing", recursive=True) as watch:
            assert self.first_event(watch).snapshot == ()

    def test_recursive_watch_reports_changes_at_any_depth(
        self, store: Store, other_store: Store
    ) -> None:
        """A recursive watch reports every key under the prefix at any depth, deletes
        included, and nothing outside it ('dx', 'd-x')."""
        capabilities = store.capabilities
        store.put("d/a", b"0")
        with store.watch("d", recursive=True) as watch, WatchRecorder(watch) as recorder:
            init = self.recorded_init(recorder)
            expected: dict[str, list[Change]] = {}

            def record(key: str, pair: KVPair | None) -> None:
                change = (Action.UPDATE, pair.version) if pair else (Action.DELETE, None)
                expected.setdefault(key, []).append(change)

            record("d", other_store.put("d", b"1"))
            other_store.put("dx", b"outside")
            record("d/x/y/z", other_store.put("d/x/y/z", b"1"))
            other_store.put("d-x", b"outside")
            other_store.delete("d/a")
            record("d/a", None)
            record("d/x/y/z", other_store.put("d/x/y/z", b"2"))
            record("d/x/y", other_store.put("d/x/y", b"1"))
            assert other_store.delete_tree("d/x") == 2
            record("d/x/y", None)
            record("d/x/y/z", None)
            truth = {pair.key: pair for pair in other_store.list("d")}
            wait_until(
                lambda: replay(init, recorder.events[1:]) == truth,
                CONVERGENCE_BOUND,
                message=lambda: "\n".join(map(describe, recorder.events)),
            )
            assert recorder.error is None
        events = recorder.events[1:]
        assert_valid_history(
            init,
            events,
            watched="d",
            recursive=True,
            every_change=capabilities.watch_every_change,
        )
        if capabilities.watch_every_change:
            assert changes_by_key(events) == expected

    def test_watch_of_a_key_ignores_its_children(self, store: Store, other_store: Store) -> None:
        """A non-recursive watch reports only its key, not keys under it."""
        with store.watch("k") as watch:
            self.first_event(watch)
            other_store.put("k/child", b"1")
            other_store.put("k/child/deep", b"1")
            updated = other_store.put("k", b"1")
            event = self.next_event(watch)
            assert (event.action, event.key, event.pair) == (Action.UPDATE, "k", updated)
            other_store.delete("k/child")
            other_store.delete("k")
            event = self.next_event(watch)
            assert (event.action, event.key) == (Action.DELETE, "k")
            other_store.put("k/child", b"2")
            assert watch.next_event(timeout=0.2) is None

    def test_watch_delivers_every_change_of_a_key_or_converges(
        self, store: Store, other_store: Store
    ) -> None:
        """watch_every_change: every change after R, in revision order. Otherwise
        intermediate states may merge, but the watcher converges within 1 s."""
        capabilities = store.capabilities
        with store.watch("k") as watch, WatchRecorder(watch) as recorder:
            init = self.recorded_init(recorder)
            written = [other_store.put("k", str(index)) for index in range(50)]
            truth = {"k": written[-1]}
            wait_until(
                lambda: replay(init, recorder.events[1:]) == truth,
                CONVERGENCE_BOUND,
                message=lambda: "\n".join(map(describe, recorder.events)),
            )
        events = recorder.events[1:]
        assert_valid_history(
            init,
            events,
            watched="k",
            recursive=False,
            every_change=capabilities.watch_every_change,
        )
        observed = [event.pair for event in events]
        if capabilities.watch_every_change:
            assert observed == written
        else:
            assert all(pair in written for pair in observed)

    def test_watch_converges_under_bursts_from_several_clients(
        self, store: Store, open_client: Callable[[], Store]
    ) -> None:
        """Under bursts of puts, deletes, put_many, transactions and delete_tree from two
        clients, the history keeps every property (ordered per key, unique, no UPDATE
        without a version change, every change when watch_every_change) and INIT + events
        equals list(prefix) within 1 s of the writes stopping."""
        capabilities = store.capabilities
        writers = [open_client(), open_client()]
        expected: list[dict[str, list[Change]]] = [{}, {}]
        errors: list[BaseException] = []

        def burst(client: Store, prefix: str, seed: int, changes: dict[str, list[Change]]) -> None:
            try:
                self._write_burst(client, prefix, random.Random(seed), changes)
            except BaseException as error:
                errors.append(error)

        store.put("burst/w0/0", b"before")
        with store.watch("burst", recursive=True) as watch, WatchRecorder(watch) as recorder:
            init = self.recorded_init(recorder)
            run_concurrently(
                [
                    functools.partial(burst, client, f"burst/w{index}", index, changes)
                    for index, (client, changes) in enumerate(zip(writers, expected, strict=True))
                ],
                60,
                "writers",
            )
            assert not errors, errors
            truth = {pair.key: pair for pair in store.list("burst")}
            wait_until(
                lambda: replay(init, recorder.events[1:]) == truth,
                CONVERGENCE_BOUND,
                message=lambda: f"{len(recorder.events)} events, error {recorder.error!r}",
            )
            time.sleep(0.2)  # let any late, surplus event arrive before judging
            assert recorder.error is None
        events = recorder.events[1:]
        assert_valid_history(
            init,
            events,
            watched="burst",
            recursive=True,
            every_change=capabilities.watch_every_change,
        )
        assert replay(init, events) == truth
        observed = changes_by_key(events)
        actual = expected[0] | expected[1]
        if capabilities.watch_every_change:
            assert observed == actual
        else:
            for key, changes in observed.items():
                assert _is_subsequence(changes, actual.get(key, [])), f"{key}: invented changes"

    def test_a_watch_left_unread_does_not_hold_up_others_of_its_prefix(
        self, store: Store, other_store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Watches of one prefix share one feed of the store, each with a bounded buffer
        of its own (shrunk to 5 changes here). One left unread while 30 changes are made
        does not delay another; read later, it still gets every change
        (watch_every_change) or converges, in a valid history."""
        for module in (libkv.sharing, libkv._async.sharing):
            monkeypatch.setattr(module, "BUFFER_LIMIT", 5)
        capabilities = store.capabilities
        with store.watch("fan", recursive=True) as slow, store.watch("fan", recursive=True) as fast:
            slow_init = slow.next_event(EVENT_TIMEOUT)
            assert slow_init is not None and slow_init.action is Action.INIT
            with WatchRecorder(fast) as fast_recorder:
                fast_init = self.recorded_init(fast_recorder)
                written = [other_store.put(f"fan/{index % 3}", str(index)) for index in range(30)]
                truth = {pair.key: pair for pair in store.list("fan")}
                wait_until(
                    lambda: replay(fast_init, fast_recorder.events[1:]) == truth,
                    CONVERGENCE_BOUND,
                    message=lambda: "\n".join(map(describe, fast_recorder.events)),
                )
            with WatchRecorder(slow) as slow_recorder:
                wait_until(
                    lambda: replay(slow_init, slow_recorder.events) == truth,
                    CONVERGENCE_BOUND,
                    message=lambda: f"{slow_recorder.events}, error {slow_recorder.error!r}",
                )
                assert slow_recorder.error is None
        for init, events in (
            (fast_init, fast_recorder.events[1:]),
            (slow_init, slow_recorder.events),
        ):
            assert_valid_history(
                init,
                events,
                watched="fan",
                recursive=True,
                every_change=capabilities.watch_every_change,
            )
            if capabilities.watch_every_change:
                assert [event.pair for event in events] == written

    def test_many_watches_of_one_prefix_hold_no_more_threads_than_ten(
        self, store: Store, other_store: Store
    ) -> None:
        """No thread per watch: 200 watches of one prefix, each delivering a change,
        leave the process with the threads that 10 such watches had."""
        opened: list[libkv.Watch] = []

        def open_and_deliver(count: int, value: str) -> int:
            for _ in range(count):
                watch = store.watch("many", recursive=True)
                opened.append(watch)
                assert watch.next_event(EVENT_TIMEOUT) is not None  # INIT
            other_store.put("many/key", value)
            for watch in opened:
                event = watch.next_event(EVENT_TIMEOUT)
                assert event is not None and event.pair is not None
                assert event.pair.value == value.encode()
            return threading.active_count()

        try:
            few = open_and_deliver(10, "first")
            assert open_and_deliver(190, "second") <= few
        finally:
            for watch in opened:
                watch.close()

    @staticmethod
    def _write_burst(
        client: Store, prefix: str, rng: random.Random, changes: dict[str, list[Change]]
    ) -> None:
        """Random writes to keys under `prefix`, recording each key's real changes."""
        keys = [f"{prefix}/{index}" for index in range(6)]
        keys += [f"{prefix}/deep/{index}/leaf" for index in range(3)]
        present = {pair.key for pair in client.list(prefix)}

        def wrote(pair: KVPair) -> None:
            present.add(pair.key)
            changes.setdefault(pair.key, []).append((Action.UPDATE, pair.version))

        def deleted(key: str) -> None:
            present.discard(key)
            changes.setdefault(key, []).append((Action.DELETE, None))

        for step in range(150):
            choice = rng.random()
            key, other = rng.sample(keys, 2)
            if choice < 0.5:
                wrote(client.put(key, f"{step}"))
            elif choice < 0.7:
                if key in present:
                    client.delete(key)
                    deleted(key)
                else:
                    wrote(client.create(key, f"{step}"))
            elif choice < 0.82:
                for pair in client.put_many({key: f"{step}", other: f"{step}"}):
                    wrote(pair)
            elif choice < 0.94:
                second = ops.delete(other) if other in present else ops.put(other, f"{step}")
                results = client.transaction([ops.put(key, f"{step}"), second])
                wrote(cast(KVPair, results[0]))
                if results[1] is None:
                    deleted(other)
                else:
                    wrote(results[1])
            else:
                doomed = sorted(found for found in present if found.startswith(f"{prefix}/deep/"))
                assert client.delete_tree(f"{prefix}/deep") == len(doomed)
                for found in doomed:
                    deleted(found)

    def test_watch_resumes_from_a_revision(self, store: Store, other_store: Store) -> None:
        """With watch_resume, watch(since=REV) sends no INIT and every change with
        revision > REV; without it, since= raises NotSupportedError."""
        capabilities = store.capabilities
        first = store.put("a", b"1")
        since = store.put("b", b"1").version
        if not capabilities.watch_resume:
            with pytest.raises(libkv.NotSupportedError):
                store.watch("", recursive=True, since=since)
            with pytest.raises(libkv.NotSupportedError):
                store.watch("a", since=since)
            return
        state_at_since = {"a": first, "b": store.get("b")}
        updated = other_store.put("a", b"2")
        other_store.delete("b")
        created = other_store.create("c/d", b"1")
        truth = {pair.key: pair for pair in store.list("")}
        with store.watch("", recursive=True, since=since) as watch:
            with WatchRecorder(watch) as recorder:
                wait_until(
                    lambda: replay(state_at_since, recorder.events) == truth,
                    EVENT_TIMEOUT,
                    message=lambda: "\n".join(map(describe, recorder.events)),
                )
            assert recorder.error is None
        events = recorder.events
        assert_valid_history(
            state_at_since,
            events,
            watched="",
            recursive=True,
            every_change=capabilities.watch_every_change,
            since=since,
        )
        if capabilities.watch_every_change:
            assert changes_by_key(events) == {
                "a": [(Action.UPDATE, updated.version)],
                "b": [(Action.DELETE, None)],
                "c/d": [(Action.UPDATE, created.version)],
            }
        with store.watch("a", since=first.version) as single:
            event = self.next_event(single)
        assert (event.action, event.pair) == (Action.UPDATE, updated)

    def test_resuming_from_compacted_history_raises_history_lost(self, store: Store) -> None:
        """since=REV whose history is gone raises HistoryLostError (from watch() or the
        first event) instead of skipping; resuming from the compaction point works.
        Without watch_resume, compact() raises NotSupportedError."""
        early = store.put("a", b"1")
        store.put("b", b"1")
        latest = store.put("a", b"2")
        if not store.capabilities.watch_resume:
            with pytest.raises(libkv.NotSupportedError):
                store.compact(latest.version)
            return
        store.compact(latest.version)
        with pytest.raises(libkv.HistoryLostError):
            watch = store.watch("", recursive=True, since=early.version)
            with watch:
                event = watch.next_event(timeout=EVENT_TIMEOUT)
                raise AssertionError(
                    f"resumed over lost history: {describe(event) if event else 'no event'}"
                )
        with store.watch("", recursive=True, since=latest.version) as watch:
            created = store.put("c", b"1")
            event = self.next_event(watch)
        assert (event.action, event.pair) == (Action.UPDATE, created)

    def test_watches_on_one_prefix_each_converge_and_a_slow_one_holds_up_none(
        self, store: Store, other_store: Store
    ) -> None:
        """Many watches of one store on one prefix (a driver may serve them with one
        query): each converges to list(prefix); one that is not consumed holds up none
        of the others, and converges once it is read; a watch of the prefix's own key
        sees that key only; closing some of them leaves the others watching."""
        store.put("s/a", b"0")
        watches = [store.watch("s", recursive=True) for _ in range(12)]
        slow = store.watch("s", recursive=True)
        single = store.watch("s")
        recorders: list[WatchRecorder] = []

        def converge(recorder: WatchRecorder, truth: dict[str, KVPair]) -> None:
            init = self.recorded_init(recorder)
            wait_until(
                lambda: replay(init, recorder.events[1:]) == truth,
                CONVERGENCE_BOUND,
                message=lambda: "\n".join(map(describe, recorder.events)),
            )
            assert recorder.error is None

        try:
            recorders = [WatchRecorder(watch).__enter__() for watch in watches]
            for recorder in recorders:
                self.recorded_init(recorder)
            slow_init = self.first_event(slow)
            self.first_event(single)
            for index in range(20):
                other_store.put(f"s/k{index % 5}", str(index))
            other_store.delete("s/a")
            top = other_store.put("s", b"top")
            truth = {pair.key: pair for pair in other_store.list("s")}
            for recorder in recorders:
                converge(recorder, truth)
            # The slow watch held none of the others up; read now, it converges too.
            slow_events: list[Event] = []

            def slow_converged() -> bool:
                slow_events.extend(iter(lambda: slow.next_event(timeout=0.05), None))
                return replay(slow_init, slow_events) == truth

            wait_until(
                slow_converged,
                CONVERGENCE_BOUND,
                message=lambda: "\n".join(map(describe, slow_events)),
            )
            event = self.next_event(single)
            assert (event.action, event.key, event.pair) == (Action.UPDATE, "s", top)
            for watch in watches[6:]:
                watch.close()
            truth["s/late"] = other_store.put("s/late", b"1")
            for recorder in recorders[:6]:
                converge(recorder, truth)
            assert single.next_event(timeout=0.2) is None  # s/late is not its key
        finally:
            for recorder in recorders:
                recorder.stop()
            for watch in [*watches, slow, single]:
                watch.close()

    def test_watch_close_ends_a_blocked_iteration_within_one_second(self, store: Store) -> None:
        """close() from another thread ends iteration (StopIteration) within 1 s and
        unblocks next_event (None); after it, the watch yields nothing."""
        watch = store.watch("k", recursive=True)
        self.first_event(watch)
        ended: list[float] = []
        received: list[Event] = []

        def iterate() -> None:
            received.extend(watch)
            ended.append(time.monotonic())

        waiter_results: list[tuple[Event | None, float]] = []

        def wait_for_event() -> None:
            event = watch.next_event(timeout=30)
            waiter_results.append((event, time.monotonic()))

        threads = [
            threading.Thread(target=iterate, daemon=True),
            threading.Thread(target=wait_for_event, daemon=True),
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.2)  # let both threads block inside the watch
        closed = time.monotonic()
        watch.close()
        for thread in threads:
            thread.join(CLOSE_BOUND + JOIN_MARGIN)
        assert not any(thread.is_alive() for thread in threads), "close() did not unblock"
        assert received == []
        assert ended[0] - closed <= CLOSE_BOUND
        assert waiter_results[0][0] is None
        assert waiter_results[0][1] - closed <= CLOSE_BOUND
        assert watch.next_event(timeout=0.1) is None
        assert list(watch) == []

    def test_store_close_ends_its_watches(self, store: Store) -> None:
        """store.close() ends the store's watches: a blocked iteration stops."""
        watch = store.watch("", recursive=True)
        self.first_event(watch)
        ended: list[float] = []
        failures: list[BaseException] = []

        def iterate() -> None:
            try:
                for _ in watch:
                    pass
            except BaseException as error:
                failures.append(error)
            ended.append(time.monotonic())

        thread = threading.Thread(target=iterate, daemon=True)
        thread.start()
        time.sleep(0.2)  # let the thread block inside the watch
        store.close()
        closed = time.monotonic()
        thread.join(CLOSE_BOUND + JOIN_MARGIN)
        assert not thread.is_alive(), "the watch outlived its store"
        assert not failures, failures
        assert ended[0] - closed <= CLOSE_BOUND

    # -- wait_for_change ------------------------------------------------------------

    def test_wait_for_change_returns_the_new_pair(self, store: Store, other_store: Store) -> None:
        """wait_for_change returns once the version differs (at once if it already does)."""
        first = store.put("k", b"1")
        second = store.put("k", b"2")
        assert store.wait_for_change("k", first.version, timeout=EVENT_TIMEOUT) == second
        results: list[KVPair] = []

        def wait() -> None:
            results.append(store.wait_for_change("k", second.version))

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        changed = other_store.put("k", b"3")
        waiter.join(EVENT_TIMEOUT)
        assert not waiter.is_alive(), "wait_for_change missed the change"
        assert results == [changed]

    def test_wait_for_change_raises_key_not_found(self, store: Store, other_store: Store) -> None:
        """wait_for_change raises KeyNotFoundError if the key is absent or deleted meanwhile."""
        with pytest.raises(libkv.KeyNotFoundError):
            store.wait_for_change("missing", 1, timeout=EVENT_TIMEOUT)
        pair = store.put("k", b"1")
        outcome: list[BaseException] = []

        def wait() -> None:
            try:
                store.wait_for_change("k", pair.version, timeout=EVENT_TIMEOUT * 2)
            except BaseException as error:
                outcome.append(error)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        other_store.delete("k")
        waiter.join(EVENT_TIMEOUT)
        assert not waiter.is_alive(), "wait_for_change missed the delete"
        assert len(outcome) == 1 and isinstance(outcome[0], libkv.KeyNotFoundError), outcome

    def test_wait_for_change_times_out(self, store: Store) -> None:
        """Without a change, wait_for_change raises WaitTimeoutError (a TimeoutError) after
        the timeout, not before."""
        pair = store.put("k", b"1")
        started = time.monotonic()
        with pytest.raises(libkv.WaitTimeoutError) as caught:
            store.wait_for_change("k", pair.version, timeout=0.3)
        elapsed = time.monotonic() - started
        assert isinstance(caught.value, TimeoutError)
        assert isinstance(caught.value, libkv.KVError)
        assert 0.3 <= elapsed < 0.3 + EVENT_TIMEOUT
