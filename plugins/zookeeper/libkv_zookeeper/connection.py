"""The session with the ensemble: the kazoo client, its log, sending requests and
waiting for their answers, and the contact (any message from the server) that a
watch's feed relies on. :class:`ZooKeeperConnection` is the base of the backend; it
knows nothing of how libkv lays its keys out in znodes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    EXCEPTIONS,
    AuthFailedError,
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    OperationTimeoutError,
    SessionClosedRequireSaslError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.serialization import Auth as KazooAuth
from kazoo.protocol.serialization import Connect as KazooConnect
from kazoo.protocol.serialization import Exists
from kazoo.protocol.serialization import Watch as WatchMessage
from kazoo.protocol.states import KazooState, KeeperState
from kazoo.retry import KazooRetry

from libkv.driver import (
    AuthenticationError,
    Backend,
    KVError,
    NotReachableError,
    StoreClosedError,
    StoreURL,
    UnknownOutcomeError,
    ValueTooLargeError,
)
from libkv_zookeeper import protocol
from libkv_zookeeper.nodes import NO_NODE
from libkv_zookeeper.protocol import Multi, MultiRead, ReadData, WriteOp

if TYPE_CHECKING:
    from libkv_zookeeper.feed import WatchFeed

log = logging.getLogger(__name__)

JUTE_MAXBUFFER = 1_048_575  # ZooKeeper's default: a longer request makes it drop the connection
REQUEST_LIMIT = JUTE_MAXBUFFER - 1024  # what the driver sends at most, with room to spare
READ_LIMIT = REQUEST_LIMIT - 4096  # a larger multiRead is split (and loses its atomicity)
CLOSE_WAIT = 1.0  # longest close() waits for kazoo to end its session
CANCEL_CHECK = 0.05  # how often a feed's pending read looks whether the feed was closed
# kazoo waits up to a whole session timeout (per host) for the answer to a connection's
# handshake. A server still starting can take the connection and never answer it; that
# one attempt then holds the reconnection for the session timeout, and the restarted
# server expires the session meanwhile (it restores sessions with a fresh timeout, which
# runs out while the client waits on the dead attempt): the watch is unreachable past the
# store's timeout although the server answers. A server answers a handshake in
# milliseconds, so an attempt gives up after CONNECT_WAIT seconds and kazoo tries again;
# each consecutive attempt that times out waits twice as long (up to kazoo's own bound),
# so a server that is merely slow is still reached.
CONNECT_WAIT = 2.0

_CREATED, _DELETED, _CHANGED = 1, 2, 3  # watch event types


class _KazooLogFilter(logging.Filter):
    """Drop kazoo's below-DEBUG records (whole responses) and its records of the requests
    that carry credentials: kazoo 2.11 logs every request at DEBUG, the digest ``Auth``
    with its password and ``Connect`` with the session's password."""

    def filter(self, record: logging.LogRecord) -> bool:
        arguments = record.args if isinstance(record.args, tuple) else ()
        secret = any(isinstance(argument, KazooAuth | KazooConnect) for argument in arguments)
        return record.levelno >= logging.DEBUG and not secret


class _KazooLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """One client's kazoo logger: remembers why its last connection attempt failed
    (kazoo only logs it), so that NotReachableError can say so (a TLS handshake refused,
    a certificate not trusted)."""

    def __init__(self) -> None:
        super().__init__(_kazoo_log, {})
        self.last_failure: Exception | None = None

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if msg in ("Connection dropped: %s", "Connection time-out: %s") and args:
            failure = args[0]
            self.last_failure = failure if isinstance(failure, Exception) else None
        super().log(level, msg, *args, **kwargs)


_kazoo_log = logging.getLogger("libkv_zookeeper.kazoo")
_kazoo_log.addFilter(_KazooLogFilter())


class Cancelled(Exception):
    """A feed's read given up because the feed was closed (see ``WatchFeed.poll``)."""


class ZooKeeperConnection(Backend):
    """A backend's session with ZooKeeper (the driver's backend derives from it)."""

    def __init__(
        self,
        url: StoreURL,
        *,
        hosts: str,
        namespace: str,
        timeout: float,
        session_timeout: float,
        tls: dict[str, Any],
    ) -> None:
        super().__init__(url, namespace=namespace, timeout=timeout)
        self.closed = False  # set first by close(): a call waiting for the server gives up
        self._hosts = hosts
        self._credentials = url.username is not None or url.password is not None
        self._connected = threading.Event()
        self._watch_lock = threading.Lock()
        self._feeds: tuple[WatchFeed, ...] = ()
        self._watched: dict[str, int] = {}  # path -> open feeds on it (this connection)
        self._generation = 0  # bumped on every connection loss: watches are gone then
        self._kazoo_log = _KazooLog()
        self._client = KazooClient(
            hosts=hosts,
            # Members are tried in the order the URL lists them, as on etcd and Consul.
            randomize_hosts=False,
            timeout=session_timeout,
            auth_data=(
                [("digest", f"{url.username or ''}:{url.password or ''}")]
                if self._credentials
                else None
            ),
            connection_retry=KazooRetry(max_tries=-1, delay=0.05, backoff=1.5, max_delay=1.0),
            command_retry=None,
            logger=self._kazoo_log,
            **tls,
        )
        connection = self._client._connection
        self._read_watch_event = connection._read_watch_event
        connection._read_watch_event = self._on_watch_event
        self._heard = time.monotonic()  # when the server last answered (pings included)
        # Set once a server that enforces authentication closed the session for want of
        # it: the Store's credentials cannot change, so every later call is refused too
        # (rather than failing as a lost connection, or a write of unknown outcome).
        self._unauthenticated = False
        # When an established connection was lost (None while connected, and while the
        # first connection is being made): see _await_connection.
        self._disconnected_since: float | None = None
        # Per thread: the event that cancels the reads this thread sends (set by a
        # feed while it reads for its poll, so that close() never waits for a read).
        self._reader = threading.local()
        self._probed = 0.0  # when the last contact probe was sent
        self._read_socket = connection._read_socket
        connection._read_socket = self._on_read_socket
        self._handshake_timeouts = 0  # consecutive handshakes left unanswered (see CONNECT_WAIT)
        self._invoke = connection._invoke
        connection._invoke = self._on_invoke
        self._client.add_listener(self._on_state)
        self._client.start_async()

    @property
    def endpoint(self) -> str | None:
        """``host:port`` of the member this Store is connected to (None while it is not)."""
        try:
            address = self._client._connection._socket.getpeername()
        except (AttributeError, OSError):
            return None
        return f"{address[0]}:{address[1]}"

    # -- the connection -------------------------------------------------------------------

    def _on_state(self, state: str) -> None:
        """kazoo's state listener (its own thread: must not block)."""
        if state == KazooState.CONNECTED:
            self._heard = time.monotonic()
            self._disconnected_since = None
            self._connected.set()
            return
        if self._connected.is_set():
            self._disconnected_since = time.monotonic()
        self._connected.clear()
        with self._watch_lock:
            self._generation += 1
            self._watched.clear()  # the server dropped this connection's watches
            feeds = self._feeds
        for feed in feeds:
            feed.lose()

    def _on_invoke(self, timeout: float, request: Any, xid: int | None = None) -> Any:
        """Send a handshake request (connect, auth) and read its answer, waiting at most
        CONNECT_WAIT seconds, doubled per attempt timed out before (kazoo's connection
        thread, while it connects)."""
        wait = min(timeout, CONNECT_WAIT * 2**self._handshake_timeouts)
        try:
            result = self._invoke(wait, request, xid)
        except KazooTimeoutError:
            self._handshake_timeouts = min(self._handshake_timeouts + 1, 8)
            raise
        self._handshake_timeouts = 0
        return result

    def _on_read_socket(self, read_timeout: float) -> Any:
        """Note each message read from the server (kazoo's reader thread) as contact."""
        result = self._read_socket(read_timeout)
        self._heard = time.monotonic()
        return result

    def _probe(self) -> None:
        """Ask the server for a cheap answer, unless a probe is on its way already: the
        answer (like any message) proves contact for the watches (see WATCH_STALL)."""
        if self._probed > self._heard or not self._connected.is_set() or self.closed:
            return
        self._probed = time.monotonic()
        self._client._call(Exists("/", None), self._client.handler.async_result())

    def _on_watch_event(self, buffer: bytes, offset: int) -> Any:
        """Route a watch event to the feeds (kazoo's reader only knows one-shot watches)."""
        message, _ = WatchMessage.deserialize(buffer, offset)
        if message.type in (_CREATED, _DELETED, _CHANGED):
            for feed in self._feeds:
                feed.offer(message.path)
        return self._read_watch_event(buffer, offset)

    def _await_connection(self, deadline: float) -> None:
        if self._unauthenticated:
            raise AuthenticationError(self._refused())
        if self._connected.is_set():
            return
        cancel: threading.Event | None = getattr(self._reader, "cancel", None)
        # A Store that has been without its server for a whole timeout already says so
        # at once (kazoo keeps reconnecting meanwhile, at least once a second), rather
        # than making each call wait a timeout of its own: a watch that just raised
        # NotReachableError is not followed by a lease revocation blocking as long again.
        since = self._disconnected_since
        if since is not None:
            deadline = min(deadline, max(since + self.timeout, time.monotonic()))
        while not self._connected.wait(max(min(0.05, deadline - time.monotonic()), 0.0)):
            if self.closed:
                raise StoreClosedError(f"store is closed: {self.url}")
            if cancel is not None and cancel.is_set():
                raise Cancelled
            if self._client.client_state == KeeperState.AUTH_FAILED:
                raise AuthenticationError(self._refused())
            if time.monotonic() >= deadline:
                failure = self._kazoo_log.last_failure
                raise NotReachableError(
                    f"zookeeper at {self._hosts} not reachable within {self.timeout} s"
                    + (f": {failure}" if failure is not None else "")
                ) from failure

    def _refused(self) -> str:
        user = f" user {self.url.username!r}" if self.url.username is not None else ""
        return f"zookeeper at {self._hosts} refused access to{user}"

    def _send(self, request: Any, *, write: bool, timeout: float | None = None) -> Any:
        """Send one request, waiting for the connection; retry a read until the timeout.

        A write whose connection fails after it may have been sent raises
        UnknownOutcomeError; it is never sent twice.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            self._await_connection(deadline)
            result = self._client.handler.async_result()
            self._client._call(request, result)
            try:
                return self._wait(result, deadline)
            except SessionClosedRequireSaslError:
                self._unauthenticated = True
                raise
            except (ConnectionLoss, SessionExpiredError, KazooTimeoutError) as error:
                if self._unauthenticated:
                    raise AuthenticationError(self._refused()) from error
                if write:
                    raise UnknownOutcomeError(
                        f"zookeeper at {self._hosts}: the connection failed after a write "
                        f"was sent; it may or may not be applied ({type(error).__name__})"
                    ) from error
                if time.monotonic() >= deadline or isinstance(error, KazooTimeoutError):
                    raise NotReachableError(
                        f"zookeeper at {self._hosts} not reachable within {self.timeout} s"
                    ) from error

    def _wait(self, result: Any, deadline: float) -> Any:
        """The result of a request, waiting until ``deadline``; in a feed's read,
        Cancelled soon after the feed is closed."""
        cancel: threading.Event | None = getattr(self._reader, "cancel", None)
        if cancel is None:
            return result.get(timeout=max(deadline - time.monotonic(), 0.001))
        while True:
            remaining = deadline - time.monotonic()
            try:
                return result.get(timeout=max(min(remaining, CANCEL_CHECK), 0.001))
            except KazooTimeoutError:
                if cancel.is_set():
                    raise Cancelled from None
                if remaining <= CANCEL_CHECK:
                    raise

    def _multi_read(
        self, reads: Sequence[tuple[str, str]], *, timeout: float | None = None
    ) -> tuple[list[ReadData | list[str] | None], int, bool]:
        """Results of ``reads`` (None for a missing node), the zxid they were read at,
        and whether they were read at one point (one request)."""
        chunks: list[list[tuple[str, str]]] = [[]]
        size = 0
        for read in reads:
            length = len(read[1]) + 24
            if chunks[-1] and size + length > READ_LIMIT:
                chunks.append([])
                size = 0
            chunks[-1].append(read)
            size += length
        results: list[ReadData | list[str] | None] = []
        zxid = 0
        for chunk in chunks:
            if not chunk:
                continue
            request = MultiRead(chunk)
            for result in self._send(request, write=False, timeout=timeout):
                if isinstance(result, int):
                    if result != NO_NODE:  # the only error a read of many nodes expects
                        raise EXCEPTIONS[result]()
                    results.append(None)
                else:
                    results.append(result)
            zxid = max(zxid, request.zxid)
        return results, zxid, len(chunks) == 1

    def _read_nodes(self, paths: Sequence[str]) -> tuple[dict[str, ReadData | None], int]:
        results, zxid, _ = self._multi_read([("data", path) for path in paths])
        return {
            path: result if isinstance(result, ReadData) else None
            for path, result in zip(paths, results, strict=True)
        }, zxid

    def _send_multi(self, operations: list[WriteOp]) -> list[Any]:
        size = protocol.request_size(operations)
        if size > REQUEST_LIMIT:
            raise ValueTooLargeError(
                f"the request of {size} bytes exceeds ZooKeeper's jute.maxbuffer "
                f"({JUTE_MAXBUFFER} bytes)"
            )
        request = Multi(operations)
        results: list[Any] = self._send(request, write=True)
        return results

    # -- errors and closing ---------------------------------------------------------------------

    def translate_error(self, error: Exception) -> KVError | None:
        if isinstance(error, (NoAuthError, AuthFailedError, SessionClosedRequireSaslError)):
            if isinstance(error, SessionClosedRequireSaslError):
                self._unauthenticated = True
            return AuthenticationError(self._refused())
        if isinstance(error, ConnectionClosedError) and self.closed:
            return StoreClosedError(f"store is closed: {self.url}")
        if isinstance(
            error,
            (
                ConnectionLoss,
                SessionExpiredError,
                ConnectionClosedError,
                KazooTimeoutError,
                OperationTimeoutError,
            ),
        ):
            return NotReachableError(f"zookeeper at {self._hosts} not reachable: {error!r}")
        if isinstance(error, KazooException):
            return KVError(f"zookeeper at {self._hosts}: {type(error).__name__}: {error}")
        return None

    def close(self) -> None:
        self.closed = True
        # kazoo's stop() waits for its connection thread, which may be stuck connecting
        # to a frozen server for seconds: let it finish on its own.
        closer = threading.Thread(target=self._stop_client, name="libkv-zookeeper-close")
        closer.daemon = True
        closer.start()
        closer.join(CLOSE_WAIT)

    def _stop_client(self) -> None:
        try:
            self._client.stop()
            self._client.close()
        except Exception:
            log.debug("error stopping the kazoo client", exc_info=True)
