"""Watch properties beyond the event stream: resume point, zero timeout, memory.

A mixin of `StoreConformance` (every driver inherits it); it uses only the suite's
fixtures (`store`, `other_store`) and chooses expectations from `store.capabilities`:

* `Watch.revision` is a safe resume point after partial consumption: it stays below
  every event not yet returned, and (where `watch_resume`) `watch(since=revision)`
  delivers every event the first watch had not yet returned;
* `next_event(0)` returns an event that has arrived, without waiting;
* a recursive watch's own memory stays bounded by the live keys (plus a constant),
  however many short-lived keys came and went under its prefix.

The memory test measures `watch_footprint`: the bytes of every object reachable from
the watch that its store does not also reach. It sees whatever the engine or the
driver's feed keeps for the watch, in any attribute, so it cannot be satisfied by
moving bookkeeping elsewhere in the watch; the test first proves it sees the pairs of
a pending INIT, so it cannot pass by measuring nothing.
"""

from __future__ import annotations

import gc
import sys
import time
import types
from collections.abc import Callable, Iterable

from libkv import Action, Event, Store, Watch, ops
from libkv.aio import AsyncWatch
from libkv.testing.conformance.base import EVENT_TIMEOUT, ConformanceBase
from libkv.testing.history import describe, replay

__all__ = ["WatchPropertyConformance", "watch_footprint"]

ZERO_TIMEOUT_SPAN = 0.1
"""How long back-to-back next_event(0) calls may take to return an arrived event: a
change that reached one watch reaches another's connection a little later (each etcd
watch is a stream of its own, read by a thread), a few milliseconds on loopback."""
LIVE_KEYS = 128
"""Keys alive when the memory test opens its watch (their INIT proves the measure works)."""
SHORT_LIVED_KEYS = 4096
"""Keys created and deleted under the watched prefix in the memory test."""
ALLOWED_GROWTH = 16 * 1024
"""Bytes the memory test lets a watch grow by: a constant, while even 8 bytes per key
seen (one pointer) would be 33 KiB for the keys it creates."""

# Shared code and metadata, not state: never counted, never walked through.
_SHARED_TYPES = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.CodeType,
    types.FrameType,
)


def _reachable(roots: Iterable[object], stop: Callable[[object], bool]) -> dict[int, object]:
    """Objects reachable from `roots` through `gc.get_referents`, by id.

    Shared code (classes, modules, functions) is neither included nor walked through,
    and neither is any object for which `stop` is true.
    """
    found: dict[int, object] = {}
    pending = [root for root in roots if not stop(root)]
    while pending:
        item = pending.pop()
        if id(item) in found or isinstance(item, _SHARED_TYPES):
            continue
        found[id(item)] = item
        pending.extend(
            referent
            for referent in gc.get_referents(item)
            if id(referent) not in found and not stop(referent)
        )
    return found


def watch_footprint(watch: Watch, store: Store) -> int:
    """Bytes held for `watch` alone: everything reachable from it but not from `store`.

    What the store reaches (its connections, its data, a memory store's history) is
    the store's, shared by all its watches; no watch, of either flavour, is walked
    into from the store (the store holds its open watches).
    """
    shared = _reachable([store], lambda item: isinstance(item, (Watch, AsyncWatch)))
    own = _reachable([watch], lambda item: id(item) in shared)
    return sum(sys.getsizeof(item) for item in own.values())


class WatchPropertyConformance(ConformanceBase):
    """Watch.revision as a resume point, next_event(0), and a watch's memory."""

    def test_watch_revision_is_a_safe_resume_point_after_partial_consumption(
        self, store: Store, other_store: Store
    ) -> None:
        """After some events are consumed, Watch.revision is below every event not yet
        returned (a transaction's keys share a revision, so consuming part of one keeps
        it below that revision), never beyond what was returned, and where resuming is
        supported `watch(since=revision)` delivers every event not yet returned."""
        capabilities = store.capabilities
        with store.watch("r", recursive=True) as watch:
            init = watch.next_event(EVENT_TIMEOUT)
            assert init is not None and init.action is Action.INIT, "no INIT event"
            assert watch.revision == init.revision, "revision is not INIT's snapshot revision"
            other_store.put("r/a", b"1")
            other_store.put("r/b", b"1")
            other_store.transaction([ops.put(f"r/t{index}", b"1") for index in range(4)])
            for key in ("r/c", "r/d", "r/e", "r/f"):
                other_store.put(key, b"1")
            expected = {pair.key: pair for pair in other_store.list("r")}
            returned = [_next(watch) for _ in range(3)]
            resume = watch.revision
            assert resume >= init.revision
            if not capabilities.watch_resume:
                assert resume <= returned[-1].revision, (
                    f"revision {resume} is beyond the last event returned, {describe(returned[-1])}"
                )
            rest: list[Event] = []
            while replay(init, [*returned, *rest]) != expected:
                rest.append(_next(watch))
            assert rest, "every change was returned in 3 events; the test proves nothing"
            early = [event for event in rest if event.revision <= resume]
            assert not early, (
                f"revision {resume} (after {len(returned)} events) is not below the events "
                f"still to come: {[describe(event) for event in early]}"
            )
            if not capabilities.watch_resume:
                return
            with other_store.watch("r", recursive=True, since=resume) as resumed:
                missing = {_identity(event) for event in rest}
                seen: list[Event] = []
                while missing:
                    event = resumed.next_event(EVENT_TIMEOUT)
                    assert event is not None, (
                        f"watch(since={resume}) never delivered "
                        f"{sorted(missing, key=lambda item: item[2])}"
                    )
                    seen.append(event)
                    missing.discard(_identity(event))

    def test_next_event_with_zero_timeout_returns_an_arrived_event(
        self, store: Store, other_store: Store
    ) -> None:
        """Once a change has reached a second watch of the same client, next_event(0)
        on the first returns it at once: calls with no wait in between find it (the
        first watch's own stream gets ZERO_TIMEOUT_SPAN to catch up)."""
        with store.watch("z", recursive=True) as first, store.watch("z", recursive=True) as second:
            for watch in (first, second):
                init = watch.next_event(EVENT_TIMEOUT)
                assert init is not None and init.action is Action.INIT, "no INIT event"
            written = other_store.put("z/a", b"1")
            arrived = _next(second)
            assert (arrived.key, arrived.revision) == ("z/a", written.version)
            calls, started = 0, time.monotonic()
            while True:  # no sleeping: only next_event(0) can bring the event in
                calls += 1
                event = first.next_event(0)
                if event is not None or time.monotonic() - started > ZERO_TIMEOUT_SPAN:
                    break
            assert event is not None, (
                f"{calls} calls of next_event(0) over {ZERO_TIMEOUT_SPAN} s returned None"
            )
            assert (event.action, event.key, event.pair) == (Action.UPDATE, "z/a", written)

    def test_recursive_watch_memory_is_bounded_by_the_live_keys(
        self, store: Store, other_store: Store
    ) -> None:
        """After thousands of keys were created and deleted under its prefix, and every
        key that was live when it opened is gone too, a recursive watch holds no more
        memory than it did with those keys live, plus a constant."""
        batch = min(64, store.capabilities.max_transaction_ops)
        live = [f"m/live/{index:04}" for index in range(LIVE_KEYS)]
        for start in range(0, len(live), batch):
            store.transaction([ops.put(key, b"live") for key in live[start : start + batch]])
        with store.watch("m", recursive=True) as watch:
            with_init = watch_footprint(watch, store)
            init = watch.next_event(EVENT_TIMEOUT)
            assert init is not None and init.action is Action.INIT, "no INIT event"
            assert len(init.snapshot) == LIVE_KEYS
            baseline = watch_footprint(watch, store)
            assert with_init - baseline >= 8 * LIVE_KEYS, (
                f"the measure saw {with_init - baseline} bytes for a pending INIT of "
                f"{LIVE_KEYS} pairs: it does not see what the watch holds"
            )
            for start in range(0, SHORT_LIVED_KEYS, batch):
                keys = [f"m/short/{index:05}" for index in range(start, start + batch)]
                other_store.transaction([ops.put(key, b"short") for key in keys])
                other_store.transaction([ops.delete(key) for key in keys])
            for start in range(0, len(live), batch):
                other_store.transaction([ops.delete(key) for key in live[start : start + batch]])
            last = other_store.put("m/last", b"last")
            while True:
                event = _next(watch)
                if event.key == "m/last" and event.pair == last:
                    break
            grown = watch_footprint(watch, store) - baseline
            assert grown <= ALLOWED_GROWTH, (
                f"after {SHORT_LIVED_KEYS + LIVE_KEYS} keys came and went, the watch holds "
                f"{grown} bytes more than with {LIVE_KEYS} live keys (allowed {ALLOWED_GROWTH})"
            )


def _next(watch: Watch) -> Event:
    event = watch.next_event(EVENT_TIMEOUT)
    assert event is not None, f"no event within {EVENT_TIMEOUT} s"
    return event


def _identity(event: Event) -> tuple[Action, str, int]:
    return (event.action, event.key, event.revision)
