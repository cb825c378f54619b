"""The sync etcd driver's I/O that is not the async one's renamed: the watch stream
and a lease keep-alive's one exchange. Hand-written, as its async twin
:mod:`libkv_etcd._async.io` is; the logic both share is in :mod:`libkv_etcd.common`.

A store's watches share one gRPC stream: one thread reads it (gRPC sends its
requests from a thread of its own), however many watches it carries.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from libkv.driver import FeedBatch, NotReachableError
from libkv_etcd import common

__all__ = ["EtcdFeed", "WatchStream", "keepalive_once"]

log = logging.getLogger(__name__)


class WatchStream(common.Stream):
    """A store's one Watch stream: a gRPC call fed from a queue, read by a thread."""

    def __init__(
        self,
        stub: Any,
        address: str,
        timeout: float,
        metadata: Any,
        failed: Callable[[str], None],
    ) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        super().__init__(address, timeout, threading.Lock(), self._queue, None)
        self._failed = failed
        self.call = stub.Watch(self._send(), metadata=metadata)
        self._reader = threading.Thread(target=self._read, name="libkv-etcd-watch", daemon=True)
        self._reader.start()

    def _send(self) -> Iterator[Any]:
        while (request := self._queue.get()) is not None:
            yield request

    def _read(self) -> None:
        error: BaseException
        try:
            for response in self.call:
                self.deliver(response, time.monotonic())
            error = NotReachableError(f"etcd at {self.address} ended the watch stream")
        except grpc.RpcError as raised:
            if raised.code() is grpc.StatusCode.UNAVAILABLE:
                self._failed((raised.details() or "").lower())
            error = common.stream_error(raised, self.address)
        except Exception as raised:  # delivered to the watches by their polls
            error = raised
        self.fail(error)

    def close(self) -> None:
        """End the stream; its reader ends with it."""
        self.fail(NotReachableError(f"the watch stream to etcd at {self.address} ended"))


class EtcdFeed(common.WatchState):
    """A watch on the store's shared stream; see :class:`libkv_etcd.common.Stream`.

    A poll that got an answer from etcd for this watch (its creation, events, a
    progress report) returns a batch, even without news: it proves contact.
    """

    def __init__(self, stream: WatchStream, prefix: str, after: int | None) -> None:
        super().__init__(prefix, after, threading.Event())
        self._stream = stream
        stream.add(self)

    def poll(self, timeout: float) -> FeedBatch | None:
        if self.closed:
            return None
        batch, wait = self._stream.ready(self, timeout)
        if batch is not None:
            return batch
        self.news.wait(wait)
        return None if self._ended() else self._stream.take(self)

    def _ended(self) -> bool:
        return self.closed

    def close(self) -> None:
        """End the watch on the stream (from any thread); a blocked poll returns None."""
        if self.closed:
            return
        self._stream.remove(self)
        self.news.set()


def keepalive_once(stub: Any, request: Any, timeout: float, metadata: Any) -> Any:
    """One LeaseKeepAlive exchange: the answer to ``request``, or None."""
    call = stub.LeaseKeepAlive(iter([request]), timeout=timeout, metadata=metadata)
    try:
        return next(call, None)
    finally:
        call.cancel()
