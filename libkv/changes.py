"""The watch engine's parts that do no I/O, shared by both flavours.

:class:`FeedBatch` is what a driver's feed returns from one poll; :class:`ChangeDedup`
and :class:`SnapshotDiff` are the engine's per-watch bookkeeping for change feeds
and snapshot feeds. Both hold memory bounded by the live keys watched plus a
constant, however many keys have come and gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from libkv.errors import HistoryLostError
from libkv.model import Action, Event, KVPair

__all__ = ["BATCH_CHANGES", "ChangeDedup", "FeedBatch", "SnapshotDiff", "take_batch"]

T = TypeVar("T")

BATCH_CHANGES = 1024
"""How many changes a feed's batch should hold at most (but one revision's, whole).
A watch handles one batch per step, so however far behind it reads, a step's work
(an async watch's time holding its event loop) stays bounded."""


@dataclass(frozen=True, slots=True)
class FeedBatch:
    """What a feed returns from one poll.

    ``revision``: the store revision the feed is now consistent with (>= every change
    in the batch). ``changes``: UPDATE/DELETE events on full keys, in revision order.
    ``snapshot``: for snapshot feeds, every pair under the prefix at ``revision``.
    ``keys``: when set, ``snapshot`` is partial: it holds the present pairs among
    ``keys`` only (a key of ``keys`` missing from it was deleted) and every other key
    keeps its state, so a feed that knows which keys changed re-reads just those.
    ``epoch``: optional identity of the backend's history; revisions are comparable only
    within one epoch, so a watch that sees it change (a wiped and rewritten database)
    raises HistoryLostError even when the revision did not go backwards.
    """

    revision: int
    changes: Sequence[Event] = ()
    snapshot: Sequence[KVPair] | None = None
    epoch: str | None = None
    keys: Sequence[str] | None = None


def take_batch(
    changes: Iterable[T], revision_of: Callable[[T], int], limit: int = BATCH_CHANGES
) -> tuple[list[T], bool]:
    """The leading changes of ``changes`` (in revision order) that make one batch, and
    whether any is left: ``limit`` changes, and then the rest of the last one's
    revision (a batch never splits a revision). Reads no further than one change past
    the batch, so ``changes`` may be a lazy cursor over a long history."""
    taken: list[T] = []
    for change in changes:
        if len(taken) >= limit and revision_of(change) != revision_of(taken[-1]):
            return taken, True
        taken.append(change)
    return taken, False


class ChangeDedup:
    """Change-feed bookkeeping: which changes the watch has delivered already.

    A change feed delivers in revision order, so one watermark tells them apart:
    every change below ``revision`` was delivered, and at ``revision`` the changes to
    ``keys`` were (a transaction gives several keys one revision). After a reconnect
    the new feed may replay changes; those are dropped. Memory: the keys of one
    revision, whatever the number of keys seen over the watch's life.
    """

    def __init__(self, after: int) -> None:
        self.revision = after + 1
        self.keys: set[str] | None = None  # made by the first change (an idle watch: none)

    def fresh(self, changes: Sequence[Event]) -> list[Event]:
        """The changes not delivered before, which count as delivered from now on."""
        fresh: list[Event] = []
        for event in changes:
            revision = event.revision
            if revision <= 0 or revision < self.revision:
                continue  # delivered already (a replay after reconnect)
            if revision > self.revision:
                self.revision = revision
                self.keys = None
            elif self.keys is not None and event.key in self.keys:
                continue
            if self.keys is None:
                self.keys = {event.key}
            else:
                self.keys.add(event.key)
            fresh.append(event)
        return fresh


class SnapshotDiff:
    """Snapshot-feed bookkeeping: the state the watch has shown its consumer.

    Each snapshot is diffed against it: a changed version is an UPDATE, a missing key
    a DELETE at the snapshot's revision, an unchanged pair nothing (a spurious
    wake-up). Memory: the live keys under the prefix.
    """

    def __init__(self, pairs: Sequence[KVPair]) -> None:
        self.state = {pair.key: pair for pair in pairs}

    def diff(
        self, snapshot: Sequence[KVPair], revision: int, keys: Sequence[str] | None = None
    ) -> list[Event]:
        """The events that turn the state into ``snapshot``, ordered by revision, key.

        With ``keys``, the snapshot is partial (see :class:`FeedBatch`): only those keys
        are compared, at a cost of len(keys). Raises HistoryLostError if a key's version
        went backwards.
        """
        current = {pair.key: pair for pair in snapshot}
        compared = self.state.keys() | current.keys() if keys is None else dict.fromkeys(keys)
        events: list[Event] = []
        for key in compared:
            pair, previous = current.get(key), self.state.get(key)
            if pair is not None:
                if previous is None or previous.version != pair.version:
                    if previous is not None and pair.version < previous.version:
                        raise HistoryLostError(f"version of {key!r} went backwards")
                    events.append(Event(Action.UPDATE, key, pair, pair.version))
            elif previous is not None:
                events.append(Event(Action.DELETE, key, None, max(revision, previous.version)))
        if keys is None:
            self.state = current
        else:
            for event in events:
                if event.pair is None:
                    del self.state[event.key]
                else:
                    self.state[event.key] = event.pair
        events.sort(key=lambda event: (event.revision, event.key))
        return events
