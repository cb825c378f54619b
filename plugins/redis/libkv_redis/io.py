"""The sync Redis driver's I/O that is not the async one's renamed: the store's
background thread and the watch feed; and a Cluster client made at its first
command, for ``libkv.aio`` (see ``open_redis_async``).
Hand-written, as its async twin :mod:`libkv_redis._async.io` is; the logic both
share is in :mod:`libkv_redis.common`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis.exceptions

from libkv.driver import FeedBatch
from libkv_redis import common

if TYPE_CHECKING:
    from libkv_redis.driver import RedisBackend

__all__ = ["Background", "RedisFeed"]

log = logging.getLogger(__name__)


class Background:
    """A store's background thread: ``tick(n)`` every REAP_INTERVAL from
    :meth:`start` until :meth:`stop`."""

    def __init__(self, tick: Callable[[int], None], name: str) -> None:
        self._tick = tick
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        ticks = 0
        while not self._stopping.wait(common.REAP_INTERVAL):
            ticks += 1
            self._tick(ticks)

    def stop(self, timeout: float) -> None:
        """Stop the ticks; wait up to ``timeout`` s for one in progress."""
        self._stopping.set()
        if self._thread is not threading.current_thread() and self._thread.ident is not None:
            self._thread.join(timeout)


class RedisFeed:
    """Reads the log stream after a revision with short blocking XREADs.

    Each poll is one round trip (reap, then XREAD BLOCK) on a connection of the feed's
    own, which ``close()`` shuts from any thread, so a poll blocked on a frozen server
    ends at once. A poll that got an answer returns a batch even without news: it
    proves contact with the server (and carries the epoch of its history).
    """

    def __init__(self, store: RedisBackend, prefix: str, after: int, epoch: str | None) -> None:
        self._store = store
        self._reader = common.LogReader(prefix, after, epoch)
        self._closed = threading.Event()
        self._lock = threading.Lock()  # guards _connection (close() runs in any thread)
        self._polling = threading.Lock()  # one poll at a time on the one connection
        # Made now (no I/O): what a watch holds is there from its start, read buffer
        # included, not first allocated by a later poll.
        self._connection: Any = None if store._cluster else store._feed_connection()

    def poll(self, timeout: float) -> FeedBatch | None:
        # Several threads may iterate one watch: they take turns on the connection.
        if not self._polling.acquire(timeout=max(timeout, 0.0)):
            return None
        try:
            return self._poll(timeout)
        finally:
            self._polling.release()

    def _poll(self, timeout: float) -> FeedBatch | None:
        if self._closed.is_set():
            return None
        opened = self._reader.opened()
        if opened is not None:
            return opened
        # Block within the socket timeout (FEED_BLOCK plus the stall allowance).
        try:
            reap_reply, reply = self._read(common.feed_block(timeout))
        except redis.exceptions.NoScriptError:
            self._store._reap()  # loads the script; the next poll reads the log
            return None
        except Exception:
            self._disconnect()
            if self._closed.is_set() or self._store._background.stopping:
                return None  # closed under this poll
            raise
        if self._closed.is_set():
            return None
        return self._reader.batch(reap_reply, reply)

    def _read(self, block: int) -> tuple[Any, Any]:
        """Reap, then read the log after the reader's position: the two replies."""
        store = self._store
        connection = None if store._cluster else self._connect()
        return store._read_log(connection, self._reader.position, block, common.FEED_BATCH)

    def _connect(self) -> Any:
        with self._lock:
            if self._closed.is_set():
                raise redis.exceptions.ConnectionError("the feed is closed")
            if self._connection is None:
                # Not from the pool: close() shuts it while another thread may read it.
                self._connection = self._store._feed_connection()
            connection = self._connection
        if self._store._master_moved(connection):
            connection.disconnect()
        connection.connect()
        return connection

    def _disconnect(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.disconnect()  # shuts the socket down: a blocked read returns
            except Exception:
                log.debug("error closing a watch connection", exc_info=True)

    def close(self) -> None:
        self._closed.set()
        self._disconnect()
