"""The session with the ensemble, shared by both flavours: the kazoo client, its log,
its state, the watch events it routes to the feeds, the contact (any message from the
server) that a watch's feed relies on, and error translation.
:class:`ZooKeeperSession` is a base of each flavour's backend; it never waits for an
answer (the backends do, each its own way: see the ``io`` modules) and knows nothing
of how libkv lays its keys out in znodes."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
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
from kazoo.protocol.serialization import Sync as KazooSync
from kazoo.protocol.serialization import Watch as WatchMessage
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry

from libkv.driver import (
    AuthenticationError,
    KVError,
    NotReachableError,
    StoreClosedError,
    StoreURL,
    Wakers,
)
from libkv_zookeeper import protocol

if TYPE_CHECKING:
    from libkv_zookeeper.feed import FeedBase

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


class ZooKeeperSession:
    """A backend's session with ZooKeeper: a base of both flavours' backends, which set
    ``url`` and ``timeout`` (``Backend.__init__``) before :meth:`_open_session`.

    kazoo's threads (its connection's, its handler's) are the session's only threads:
    they call :meth:`_on_state` and route watch events to the feeds, which must not
    block them.
    """

    url: StoreURL
    timeout: float

    def _open_session(self, *, hosts: str, session_timeout: float, tls: dict[str, Any]) -> None:
        """Make the kazoo client and start connecting, in the background."""
        url = self.url
        self.closed = False  # set first by close(): a call waiting for the server gives up
        self._hosts = hosts
        self._credentials = url.username is not None or url.password is not None
        self._connected = threading.Event()
        # Run on every change of the connection's state (kazoo's thread): how an async
        # call waiting for the connection hears of it without a thread of its own.
        self._state_wakers = Wakers()
        self._watch_lock = threading.Lock()
        self._feeds: tuple[FeedBase, ...] = ()
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
        # Per thread (sync flavour): the event that cancels the reads this thread sends
        # (set by a feed while it reads for its poll, so that close() never waits for a
        # read). The async flavour cancels the read's task instead.
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
            self._state_wakers.wake()
            return
        if self._connected.is_set():
            self._disconnected_since = time.monotonic()
        self._connected.clear()
        self._state_wakers.wake()
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

    def _sync_before_reads(self) -> None:
        """Queue a sync ahead of the reads that follow, without waiting for it.

        A member answers a session's requests in order, so reads queued after a sync
        wait until the member has caught up with the leader: a list, or a watch's INIT
        snapshot, then holds every write acknowledged (to any client, through any
        member) before it was asked for. Pipelined, it costs no round trip of the
        client's; its own outcome does not matter (a lost connection fails the reads).
        """
        self._client._call(KazooSync("/"), self._client.handler.async_result())

    def _forget(self, feed: FeedBase) -> None:
        """Drop a closed feed; remove the path's watch with the last feed on it."""
        with self._watch_lock:
            if feed not in self._feeds:
                return
            self._feeds = tuple(other for other in self._feeds if other is not feed)
            if feed.generation != self._generation:
                return
            count = self._watched.get(feed.root, 0) - 1
            if count > 0:
                self._watched[feed.root] = count
                return
            self._watched.pop(feed.root, None)
            if self._connected.is_set() and not self.closed:
                # Fire and forget: a watch left behind only costs ignored events.
                self._client._call(
                    protocol.RemoveWatches(feed.root, 3), self._client.handler.async_result()
                )

    def _refused(self) -> str:
        user = f" user {self.url.username!r}" if self.url.username is not None else ""
        return f"zookeeper at {self._hosts} refused access to{user}"

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

    def _start_closing(self) -> threading.Thread:
        """Mark the session closed and end it in a thread of its own, started here:
        kazoo's stop() waits for its connection thread, which may be stuck connecting to
        a frozen server for seconds. The caller waits for it up to CLOSE_WAIT, and lets
        it finish on its own after that."""
        self.closed = True
        closer = threading.Thread(target=self._stop_client, name="libkv-zookeeper-close")
        closer.daemon = True
        closer.start()
        return closer

    def _stop_client(self) -> None:
        try:
            self._client.stop()
            self._client.close()
        except Exception:
            log.debug("error stopping the kazoo client", exc_info=True)
