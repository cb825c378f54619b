"""A watch's change feed: the Store's persistent recursive watch on one znode."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from libkv.driver import FeedBatch, NotReachableError
from libkv_zookeeper.connection import Cancelled

if TYPE_CHECKING:
    from libkv_zookeeper.driver import ZooKeeperBackend

# A watch whose Store has heard nothing from the server for WATCH_STALL seconds (at most
# a quarter of the store's timeout) raises NotReachableError from its feed's poll, so the
# engine's unreachable clock starts then, not when kazoo notices the loss (two thirds of
# the session timeout later). Silence for half of it sends a probe (an exists request),
# whose answer is contact: an idle, healthy connection is never silent that long.
WATCH_STALL = 1.5


class WatchFeed:
    """Changes under one znode, from the Store's persistent recursive watch on it.

    The first poll returns the whole subtree (read after the watch was added, so no
    change is missed); later polls return a partial snapshot of just the nodes the
    watch named since. A connection loss ends the feed (NotReachableError): the engine
    opens a new one, which adds the watch again and re-reads everything. So does a
    Store that has heard nothing from the server for ``WATCH_STALL`` (a frozen or
    partitioned server, which kazoo notices only two thirds of a session timeout later).
    """

    def __init__(self, store: ZooKeeperBackend, root: str, generation: int) -> None:
        self.store = store
        self.root = root
        self.generation = generation
        self._scope = "/" if root == "/" else root + "/"
        self._condition = threading.Condition()
        self._dirty: dict[str, None] = {}
        self._full = True
        self._lost = False
        self._closed = False
        self._stall = min(WATCH_STALL, store.timeout / 4)
        self._cancelled = threading.Event()  # set by close(): a read for poll gives up

    def offer(self, path: str) -> None:
        """A watch event's path (kazoo's reader thread: must not block)."""
        if path == self.root or path.startswith(self._scope):
            with self._condition:
                self._dirty[path] = None
                self._condition.notify()

    def lose(self) -> None:
        with self._condition:
            self._lost = True
            self._condition.notify()

    def poll(self, timeout: float) -> FeedBatch | None:
        """See :class:`libkv.watching.Feed`."""
        store = self.store
        deadline = time.monotonic() + timeout
        with self._condition:
            while not (self._dirty or self._full or self._lost or self._closed):
                # Returning None asserts contact: only while the server has answered
                # within the stall bound, which a probe keeps true on an idle connection.
                now = time.monotonic()
                silent = now - store._heard
                if silent > self._stall:
                    raise NotReachableError(
                        f"zookeeper at {store._hosts}: no answer for {silent:.1f} s"
                    )
                if silent > self._stall / 2:
                    store._probe()
                    check = store._heard + self._stall
                else:
                    check = store._heard + self._stall / 2
                if now >= deadline:
                    break
                self._condition.wait(max(min(deadline, check) - now, 0.001))
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
        store._reader.cancel = self._cancelled
        try:
            return store._full_snapshot(self.root) if full else store._read_changes(paths)
        except Cancelled:
            return None  # closed meanwhile: what was read no longer matters
        finally:
            store._reader.cancel = None

    def close(self) -> None:
        self._cancelled.set()
        with self._condition:
            self._closed = True
            self._condition.notify()
        self.store._forget(self)
