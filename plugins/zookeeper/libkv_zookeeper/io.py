"""How the sync ZooKeeper driver waits: for an answer (blocking on kazoo's result),
for the connection, for a watch's news, for the session to close; and its reaper, a
thread. Hand-written, as its async twin :mod:`libkv_zookeeper._async.io` is;
everything else of the driver is generated from the async source
(:mod:`libkv_zookeeper._async.driver`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kazoo.client import KazooClient
from kazoo.handlers.threading import KazooTimeoutError

from libkv.driver import FeedBatch
from libkv_zookeeper.common import REAP_INTERVAL
from libkv_zookeeper.connection import CANCEL_CHECK, CLOSE_WAIT, Cancelled
from libkv_zookeeper.feed import FeedBase

if TYPE_CHECKING:
    from libkv_zookeeper.connection import ZooKeeperSession
    from libkv_zookeeper.driver import ZooKeeperBackend

__all__ = ["Reaper", "WatchFeed", "connected", "finish_closing", "outcome", "pending_result"]


def pending_result(client: KazooClient) -> Any:
    """What kazoo completes a request into: its own AsyncResult, waited on by blocking."""
    return client.handler.async_result()


def outcome(store: ZooKeeperSession, pending: Any, deadline: float) -> Any:
    """The answer to a request sent with ``pending``, waiting until ``deadline``
    (KazooTimeoutError then); in a feed's read, Cancelled soon after the feed is closed."""
    cancel: threading.Event | None = getattr(store._reader, "cancel", None)
    if cancel is None:
        return pending.get(timeout=max(deadline - time.monotonic(), 0.001))
    while True:
        remaining = deadline - time.monotonic()
        try:
            return pending.get(timeout=max(min(remaining, CANCEL_CHECK), 0.001))
        except KazooTimeoutError:
            if cancel.is_set():
                raise Cancelled from None
            if remaining <= CANCEL_CHECK:
                raise


def connected(store: ZooKeeperSession, wait: float) -> bool:
    """Whether the session is connected, waiting up to ``wait`` s for it; in a feed's
    read, Cancelled once the feed is closed."""
    if store._connected.wait(wait):
        return True
    cancel: threading.Event | None = getattr(store._reader, "cancel", None)
    if cancel is not None and cancel.is_set():
        raise Cancelled
    return False


def finish_closing(closer: threading.Thread) -> None:
    """Wait up to CLOSE_WAIT for the session's closing thread."""
    closer.join(CLOSE_WAIT)


class Reaper:
    """A store's reaper: a thread that runs ``work()`` every REAP_INTERVAL from
    :meth:`start` until :meth:`stop` (which does not wait for it: it is a daemon)."""

    def __init__(self, work: Callable[[], None], name: str) -> None:
        self._work = work
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(REAP_INTERVAL):
            self._work()

    def stop(self, timeout: float) -> None:
        """Stop the work; ``timeout`` is the async twin's (this one waits for nothing)."""
        self._stopping.set()


class WatchFeed(FeedBase):
    """A feed whose poll blocks its thread on a condition (see :class:`FeedBase`); a
    read for a poll gives up (Cancelled) within CANCEL_CHECK of ``close()``."""

    store: ZooKeeperBackend

    def __init__(self, store: ZooKeeperBackend, root: str, generation: int) -> None:
        super().__init__(store, root, generation)
        self._condition = threading.Condition(self._lock)
        self._cancelled = threading.Event()  # set by close(): a read for poll gives up

    def _wake(self) -> None:
        self._condition.notify()

    def poll(self, timeout: float) -> FeedBatch | None:
        """See :class:`libkv.watching.Feed`."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while not self._ready():
                now = time.monotonic()
                check = self._contact(now)
                if now >= deadline:
                    break
                self._condition.wait(max(min(deadline, check) - now, 0.001))
            taken = self._take()
        if taken is None:
            return None
        full, paths = taken
        store = self.store
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
