"""The sync Consul driver's I/O: its HTTP client on urllib3, and the thread and wake-up
of a shared blocking query. Hand-written, as its async twin
:mod:`libkv_consul._async.http` (aiohttp, tasks) is; the rules both follow (which
failure is retried where, which is an unknown outcome, the error messages) are
:class:`libkv_consul.common.Agents` and :class:`~libkv_consul.common.Attempts`.

Plain calls go through a keep-alive pool per agent address; each shared blocking
query through a :class:`BlockingConnection` of its own (same TLS context and token),
so that ending a query can abort it at once. This is the driver's error boundary:
urllib3 failures and HTTP error statuses become libkv errors here, with the original
chained as ``__cause__`` and the ACL token scrubbed from every message.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.response import BaseHTTPResponse

from libkv_consul.common import (
    Agents,
    Failure,
    Reply,
    Settings,
    first_read_wait,
    key_path,
    reply_of,
)

# key_path and first_read_wait: where the benchmark and older tests import them from.
__all__ = [
    "BlockingConnection",
    "ConsulHTTP",
    "Signal",
    "Worker",
    "first_read_wait",
    "key_path",
]

_POOL_SIZE = 16  # concurrent requests per agent kept alive; more are made and dropped


class ConsulHTTP(Agents):
    """Requests to a list of Consul agents (HTTP or HTTPS), with the ACL token; see
    :class:`~libkv_consul.common.Attempts` for how a request moves between agents."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._pools: list[urllib3.HTTPConnectionPool] = [
            urllib3.HTTPSConnectionPool(
                host, port, maxsize=_POOL_SIZE, retries=False, ssl_context=self._tls
            )
            if self._tls is not None
            else urllib3.HTTPConnectionPool(host, port, maxsize=_POOL_SIZE, retries=False)
            for host, port in self.addresses
        ]

    def request(
        self,
        method: str,
        path: str,
        query: Sequence[str] = (),
        body: bytes | None = None,
        *,
        write: bool,
        persist: bool = True,
    ) -> Reply:
        """Send one request; return the reply if its status is 200, 404 or 409.

        With ``persist=False`` each agent is tried once (for cleanup that may fail
        fast, such as destroying a session that expires anyway).

        Raises NotReachableError when no agent answers within the timeout,
        UnknownOutcomeError when a write was sent but its answer was lost,
        AuthenticationError on 403, ValueTooLargeError on 413, KVError otherwise.
        """
        url = self.url_of(path, query)
        attempts = self.attempts(write=write, persist=persist)
        while True:
            agent, connect, read = attempts.next()
            try:
                response = self._pools[agent].urlopen(
                    method,
                    url,
                    body=body,
                    headers=self._headers,
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    timeout=urllib3.Timeout(connect=connect, read=read),
                )
            except HTTPError as error:
                attempts.failed(_kind(error), error)
            else:
                reply = attempts.reply(_reply(response))
                if reply is not None:
                    return reply
            time.sleep(attempts.pause)

    def blocking_connection(self) -> BlockingConnection:
        """A connection of its own to the current agent, for one query's blocking reads."""
        return BlockingConnection(self, self._current)

    def close(self) -> None:
        """Close every pooled connection; later requests raise StoreClosedError."""
        self._closed = True
        for pool in self._pools:
            pool.close()


class BlockingConnection:
    """One kept-alive connection for blocking queries; :meth:`abort` ends one in flight."""

    def __init__(self, client: ConsulHTTP, index: int) -> None:
        self._client = client
        self._agent = index
        host, port = client.addresses[index]
        self.endpoint = f"{host}:{port}"
        self._connection: HTTPConnection = (
            HTTPSConnection(host, port, ssl_context=client._tls)
            if client._tls is not None
            else HTTPConnection(host, port)
        )
        self._aborted = False

    def get(self, path: str, query: Sequence[str], timeout: float) -> Reply:
        """GET ``path``; NotReachableError if no answer comes within ``timeout`` seconds."""
        client = self._client
        connection = self._connection
        try:
            if self._aborted:
                raise ConnectionAbortedError("watch closed")
            connection.timeout = timeout
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            connection.request("GET", client.url_of(path, query), headers=client._headers)
            if self._aborted:
                # abort() ran while request() was connecting, before the socket
                # existed to be shut down: the query would wait out its whole timeout.
                raise ConnectionAbortedError("watch closed")
            reply = _reply(connection.getresponse())
        except (HTTPError, OSError) as error:
            connection.close()
            kind = _kind(error)
            raise client.watch_failure(kind, error, self._agent, aborted=self._aborted) from error
        return client.watch_reply(reply)

    def abort(self) -> None:
        """Close the connection; a query blocked in another thread fails at once."""
        self._aborted = True
        sock = self._connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)
        self._connection.close()


class Signal:
    """Wakes a watch's poll when its query offers a snapshot or ends (from any thread).
    A notify that comes before the wait is not lost: the next wait returns at once."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._set = False

    def notify(self) -> None:
        with self._condition:
            self._set = True
            self._condition.notify_all()

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a notify (one since the last wait counts)."""
        with self._condition:
            if not self._set:
                self._condition.wait(timeout)
            self._set = False


class Worker:
    """A shared blocking query's loop, in a daemon thread (its async twin: a task)."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._started = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the loop, once."""
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()

    def foreign(self) -> bool:
        """Whether the loop belongs to another event loop (never, in threads)."""
        return False

    def stop(self) -> None:
        """Nothing to do: aborting the query's connection ends the loop."""


def _kind(error: BaseException) -> Failure:
    if isinstance(error, (SSLError, ssl.SSLError)):
        return Failure.TLS
    if isinstance(error, (NewConnectionError, ConnectTimeoutError, ConnectionRefusedError)):
        return Failure.NOT_SENT
    if isinstance(error, (ReadTimeoutError, TimeoutError)):
        return Failure.READ_TIMEOUT
    return Failure.LOST


def _reply(response: BaseHTTPResponse) -> Reply:
    headers = response.headers
    return reply_of(
        response.status,
        response.data,
        headers.get("X-Consul-Index"),
        headers.get("X-Consul-Results-Filtered-By-ACLs"),
    )
