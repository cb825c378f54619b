"""A watch's change feed, as both flavours keep it: the Store's persistent recursive
watch on one znode names the paths that changed, kazoo's reader thread offers them
here, and a poll takes them. How a poll waits for them, and reads the nodes, is each
flavour's (``WatchFeed`` in :mod:`libkv_zookeeper.io`, ``AsyncWatchFeed`` in
:mod:`libkv_zookeeper._async.io`)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from libkv.driver import NotReachableError

if TYPE_CHECKING:
    from libkv_zookeeper.connection import ZooKeeperSession

# A watch whose Store has heard nothing from the server for WATCH_STALL seconds (at most
# a quarter of the store's timeout) raises NotReachableError from its feed's poll, so the
# engine's unreachable clock starts then, not when kazoo notices the loss (two thirds of
# the session timeout later). Silence for half of it sends a probe (an exists request),
# whose answer is contact: an idle, healthy connection is never silent that long.
WATCH_STALL = 1.5


class FeedBase:
    """Changes under one znode, from the Store's persistent recursive watch on it.

    The first poll returns the whole subtree (read after the watch was added, so no
    change is missed); later polls return a partial snapshot of just the nodes the
    watch named since. A connection loss ends the feed (NotReachableError): the engine
    opens a new one, which adds the watch again and re-reads everything. So does a
    Store that has heard nothing from the server for ``WATCH_STALL`` (a frozen or
    partitioned server, which kazoo notices only two thirds of a session timeout later).

    The state below is guarded by ``_lock``: kazoo's threads offer paths and report
    losses (:meth:`offer`, :meth:`lose` must not block them), and each flavour's
    ``_wake()``, called with the lock held, tells a waiting poll.
    """

    def __init__(self, store: ZooKeeperSession, root: str, generation: int) -> None:
        self.store = store
        self.root = root
        self.generation = generation
        self._scope = "/" if root == "/" else root + "/"
        self._lock = threading.Lock()
        self._dirty: dict[str, None] = {}
        self._full = True
        self._lost = False
        self._closed = False
        self._stall = min(WATCH_STALL, store.timeout / 4)

    def _wake(self) -> None:
        """Tell a poll waiting for news (called with ``_lock`` held; must not block)."""
        raise NotImplementedError

    def offer(self, path: str) -> None:
        """A watch event's path (kazoo's reader thread: must not block)."""
        if path == self.root or path.startswith(self._scope):
            with self._lock:
                self._dirty[path] = None
                self._wake()

    def lose(self) -> None:
        """The connection was lost: the next poll raises NotReachableError."""
        with self._lock:
            self._lost = True
            self._wake()

    def _ready(self) -> bool:
        """Whether a poll has something to return (or raise) at once; under ``_lock``."""
        return bool(self._dirty) or self._full or self._lost or self._closed

    def _contact(self, now: float) -> float:
        """Raise NotReachableError if the store has heard nothing from the server for
        the stall bound; probe it after half of that; return when to look again.

        Returning None from a poll asserts contact: only while the server has answered
        within the stall bound, which a probe keeps true on an idle connection.
        """
        store = self.store
        silent = now - store._heard
        if silent > self._stall:
            raise NotReachableError(f"zookeeper at {store._hosts}: no answer for {silent:.1f} s")
        if silent > self._stall / 2:
            store._probe()
            return store._heard + self._stall
        return store._heard + self._stall / 2

    def _take(self) -> tuple[bool, list[str]] | None:
        """What the poll reads, under ``_lock``: (whether the whole subtree, the changed
        paths), or None if nothing (or closed); NotReachableError once lost."""
        if self._closed:
            return None
        if self._lost:
            raise NotReachableError(
                f"zookeeper at {self.store._hosts}: connection lost; the watch re-reads"
            )
        full, self._full = self._full, False
        paths = list(self._dirty)
        self._dirty.clear()
        if not full and not paths:
            return None
        return full, paths

    def _give_back(self, full: bool, paths: list[str]) -> None:
        """Put back what a poll took and did not return (its caller was cancelled)."""
        with self._lock:
            self._full = self._full or full
            for path in paths:
                self._dirty[path] = None
