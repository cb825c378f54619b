"""Watch guarantees checked as properties of a recorded history.

In the manner of etcd's robustness tests (`tests/robustness/validate/watch.go`): rather
than comparing a watch with one expected list of events, record what it delivered and
check the properties the contract promises: events are well formed, ordered per key,
unique, come after the snapshot, never report an UPDATE without a version change, and
replaying them over the INIT snapshot rebuilds the store's state.

Each `check_*` function returns the violations it found as readable strings (empty
when the property holds); `assert_valid_history` runs them all and fails with every
violation at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence

from libkv import Action, Event, KVPair, Watch

__all__ = [
    "Change",
    "WatchRecorder",
    "assert_valid_history",
    "changes_by_key",
    "check_after_revision",
    "check_global_order",
    "check_in_scope",
    "check_per_key_order",
    "check_shapes",
    "check_state_transitions",
    "check_unique",
    "describe",
    "in_scope",
    "replay",
    "snapshot_state",
]

Change = tuple[Action, int | None]
"""One change of one key as a watcher sees it: the action and the new version (None for DELETE)."""


def describe(event: Event) -> str:
    """A short readable form of an event, for failure messages."""
    version = event.pair.version if event.pair is not None else None
    return f"{event.action.name} {event.key!r} revision={event.revision} version={version}"


def snapshot_state(init: Event) -> dict[str, KVPair]:
    """The state an INIT event describes: its snapshot, plus its pair for a single-key watch."""
    if init.action is not Action.INIT:
        raise ValueError(f"not an INIT event: {describe(init)}")
    state = {pair.key: pair for pair in init.snapshot}
    if init.pair is not None:
        state[init.pair.key] = init.pair
    return state


def replay(init: Event | Mapping[str, KVPair], events: Iterable[Event]) -> dict[str, KVPair]:
    """The state a consumer rebuilds from a starting point and the events after it.

    `init` is the watch's INIT event, or for a watch resumed with `since=` the state
    the consumer already had at that revision. UPDATE sets a key's pair, DELETE removes
    it. A second INIT in the stream is not allowed by the contract: ValueError.
    """
    state = snapshot_state(init) if isinstance(init, Event) else dict(init)
    for event in events:
        if event.action is Action.UPDATE:
            if event.pair is None:
                raise ValueError(f"UPDATE without a pair: {describe(event)}")
            state[event.key] = event.pair
        elif event.action is Action.DELETE:
            state.pop(event.key, None)
        else:
            raise ValueError(f"INIT in the middle of a stream: {describe(event)}")
    return state


def changes_by_key(events: Iterable[Event]) -> dict[str, list[Change]]:
    """Per key, the (action, version) sequence the events report, for exact comparisons."""
    changes: dict[str, list[Change]] = {}
    for event in events:
        version = event.pair.version if event.pair is not None else None
        changes.setdefault(event.key, []).append((event.action, version))
    return changes


def check_shapes(events: Iterable[Event]) -> list[str]:
    """UPDATE carries the new pair of its key at its revision; DELETE carries none; no INIT."""
    violations = []
    for position, event in enumerate(events):
        where = f"event {position} ({describe(event)})"
        if event.action is Action.INIT:
            violations.append(f"{where}: INIT after the first event")
        elif event.action is Action.UPDATE:
            pair = event.pair
            if pair is None:
                violations.append(f"{where}: UPDATE without a pair")
            else:
                if pair.key != event.key:
                    violations.append(f"{where}: pair is for key {pair.key!r}")
                if pair.version != event.revision:
                    violations.append(f"{where}: pair version differs from the event revision")
                if type(pair.value) is not bytes:
                    violations.append(f"{where}: value is {type(pair.value).__name__}, not bytes")
        elif event.pair is not None:
            violations.append(f"{where}: DELETE with a pair")
        if event.revision <= 0:
            violations.append(f"{where}: revision is not positive")
    return violations


def check_after_revision(events: Iterable[Event], revision: int) -> list[str]:
    """Every event is newer than the snapshot (or the `since=` revision) it follows."""
    return [
        f"event {position} ({describe(event)}) is not after revision {revision}"
        for position, event in enumerate(events)
        if event.revision <= revision
    ]


def check_per_key_order(events: Iterable[Event]) -> list[str]:
    """Per key, revisions strictly increase."""
    violations = []
    last: dict[str, int] = {}
    for position, event in enumerate(events):
        previous = last.get(event.key)
        if previous is not None and event.revision <= previous:
            violations.append(
                f"event {position} ({describe(event)}) follows revision {previous} of that key"
            )
        last[event.key] = event.revision
    return violations


def check_unique(events: Iterable[Event]) -> list[str]:
    """No change (key, revision) is delivered twice."""
    violations = []
    seen: dict[tuple[str, int], int] = {}
    for position, event in enumerate(events):
        identity = (event.key, event.revision)
        if identity in seen:
            violations.append(
                f"event {position} ({describe(event)}) repeats event {seen[identity]}"
            )
        else:
            seen[identity] = position
    return violations


def check_global_order(events: Iterable[Event]) -> list[str]:
    """Events come in revision order (several keys may share one revision: a transaction)."""
    violations = []
    highest = 0
    for position, event in enumerate(events):
        if event.revision < highest:
            violations.append(
                f"event {position} ({describe(event)}) comes after revision {highest}"
            )
        highest = max(highest, event.revision)
    return violations


def check_state_transitions(start: Mapping[str, KVPair], events: Iterable[Event]) -> list[str]:
    """Every event changes the consumer's view: no UPDATE that repeats the known version
    (a spurious wake-up) and no DELETE of a key the view does not hold."""
    violations = []
    state = dict(start)
    for position, event in enumerate(events):
        where = f"event {position} ({describe(event)})"
        known = state.get(event.key)
        if event.action is Action.UPDATE and event.pair is not None:
            if known is not None and known.version == event.pair.version:
                violations.append(f"{where}: UPDATE without a version change")
            state[event.key] = event.pair
        elif event.action is Action.DELETE:
            if known is None:
                violations.append(f"{where}: DELETE of a key the consumer does not hold")
            state.pop(event.key, None)
    return violations


def in_scope(key: str, watched: str, *, recursive: bool) -> bool:
    """Whether `key` is watched by a watch on `watched`: the key itself, or under the prefix."""
    if not recursive:
        return key == watched
    return watched == "" or key == watched or key.startswith(watched + "/")


def check_in_scope(events: Iterable[Event], watched: str, *, recursive: bool) -> list[str]:
    """Only keys the watch covers appear."""
    return [
        f"event {position} ({describe(event)}) is outside the watch on {watched!r}"
        for position, event in enumerate(events)
        if not in_scope(event.key, watched, recursive=recursive)
    ]


def assert_valid_history(
    start: Event | Mapping[str, KVPair],
    events: Sequence[Event],
    *,
    watched: str,
    recursive: bool,
    every_change: bool,
    since: int | None = None,
) -> None:
    """Check every property of a recorded history; fail with all violations at once.

    `start` is the INIT event, or for a `since=` watch the state at revision `since`.
    `every_change` adds the global revision order required of drivers with
    `capabilities.watch_every_change`.
    """
    if isinstance(start, Event):
        after = start.revision
        state = snapshot_state(start)
        violations = [
            f"snapshot holds {pair.key!r}, outside the watch on {watched!r}"
            for pair in start.snapshot
            if not in_scope(pair.key, watched, recursive=recursive)
        ]
    else:
        if since is None:
            raise ValueError("a history without INIT needs the since= revision")
        after = since
        state = dict(start)
        violations = []
    violations += check_shapes(events)
    violations += check_after_revision(events, after)
    violations += check_per_key_order(events)
    violations += check_unique(events)
    violations += check_state_transitions(state, events)
    violations += check_in_scope(events, watched, recursive=recursive)
    if every_change:
        violations += check_global_order(events)
    if violations:
        listing = "\n  ".join(violations)
        raise AssertionError(f"watch history violates the contract:\n  {listing}")


class WatchRecorder:
    """Consume a watch on a background thread, keeping every event in arrival order.

    Use as a context manager; leaving it stops the thread (the watch itself stays open,
    its owner closes it). An exception raised by the watch ends the recording and is
    kept in `error`; `ended` is set when the watch stopped producing (closed or failed).
    """

    def __init__(self, watch: Watch, *, poll_interval: float = 0.05) -> None:
        self.watch = watch
        self.error: BaseException | None = None
        self.ended = threading.Event()
        self._poll_interval = poll_interval
        self._events: list[Event] = []
        self._arrivals: list[float] = []
        self._guard = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch-recorder", daemon=True)

    def __enter__(self) -> WatchRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def events(self) -> list[Event]:
        """A copy of the events received so far."""
        with self._guard:
            return list(self._events)

    @property
    def arrivals(self) -> list[tuple[float, Event]]:
        """The events received so far, each with its `time.monotonic()` arrival time."""
        with self._guard:
            return list(zip(self._arrivals, self._events, strict=True))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop consuming; the thread must end within `timeout` seconds."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"watch consumer still running {timeout} s after stop")

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                asked = time.monotonic()
                event = self.watch.next_event(timeout=self._poll_interval)
                if event is not None:
                    with self._guard:
                        self._arrivals.append(time.monotonic())
                        self._events.append(event)
                elif time.monotonic() - asked < self._poll_interval / 2:
                    # None long before the timeout means the watch is closed.
                    break
        except BaseException as error:
            self.error = error
        finally:
            self.ended.set()
