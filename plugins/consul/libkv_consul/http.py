"""The one HTTP client of the Consul driver: urllib3 connection pools, one per agent.

Every request of the driver goes through :class:`ConsulHTTP`: plain calls through a
keep-alive pool per agent address, blocking queries of watches through a
:class:`BlockingConnection` of their own (made by the same client, with the same TLS
context and token), so that closing a watch can abort its query at once.

This is also the driver's error boundary: urllib3 failures and HTTP error statuses
become libkv errors here, with the original chained as ``__cause__`` and the ACL
token scrubbed from every message.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

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

from libkv.driver import (
    AuthenticationError,
    KVError,
    NotReachableError,
    StoreClosedError,
    UnknownOutcomeError,
    ValueTooLargeError,
)

__all__ = ["BlockingConnection", "ConsulHTTP", "Reply", "first_read_wait", "key_path"]

log = logging.getLogger(__name__)

ANSWERED = (200, 404, 409)
"""Statuses handed back to the caller: success, no such key or session, failed txn."""
_LEADERLESS = ("No cluster leader", "no leader", "rpc error: No path to datacenter")
_POOL_SIZE = 16  # concurrent requests per agent kept alive; more are made and dropped
# A read's first attempt waits for its answer a quarter of the timeout, within these
# bounds (seconds), then goes to the next agent; see ConsulHTTP.request.
_SHORTEST_READ_WAIT = 0.5
_LONGEST_READ_WAIT = 2.0


@dataclass(frozen=True, slots=True)
class Reply:
    """An answered request: status, body, ``X-Consul-Index`` (0 if absent), and whether
    Consul left out results the ACL token may not read."""

    status: int
    data: bytes
    index: int
    filtered: bool = False


def key_path(key: str) -> str:
    """``/v1/kv/<key>`` with every character but ``/`` percent-encoded (UTF-8)."""
    return "/v1/kv/" + quote(key, safe="/")


class ConsulHTTP:
    """Requests to a list of Consul agents (HTTP or HTTPS), with the ACL token.

    A request goes to the current agent; when the agent cannot be reached or has no
    leader (so the request was certainly not applied), it moves to the next one and
    retries until ``timeout`` seconds have passed. A write that may have reached the
    server raises UnknownOutcomeError rather than being sent twice. A read unanswered
    after ``first_read_wait(timeout)`` is sent again to the next agent, each such retry
    waiting twice as long, so that neither a frozen agent nor a follower holding the
    read until it learns a new leader takes the whole timeout.

    ``last_contact`` is the ``time.monotonic()`` of the latest answer from any agent to
    any request of this client (blocking queries included), 0.0 before the first.
    """

    def __init__(
        self,
        addresses: Sequence[tuple[str, int]],
        *,
        tls: ssl.SSLContext | None,
        token: str | None,
        datacenter: str | None,
        timeout: float,
    ) -> None:
        self.addresses = list(addresses)
        self.timeout = timeout
        self._tls = tls
        self._token = token
        self._headers = {"X-Consul-Token": token} if token else {}
        self._datacenter = datacenter
        self._current = 0
        self._closed = False
        self.last_contact = 0.0
        self._lock = threading.Lock()
        self._pools: list[urllib3.HTTPConnectionPool] = [
            urllib3.HTTPSConnectionPool(
                host, port, maxsize=_POOL_SIZE, retries=False, ssl_context=tls
            )
            if tls is not None
            else urllib3.HTTPConnectionPool(host, port, maxsize=_POOL_SIZE, retries=False)
            for host, port in self.addresses
        ]

    @property
    def endpoint(self) -> str:
        """``host:port`` of the agent requests currently go to."""
        host, port = self.addresses[self._current]
        return f"{host}:{port}"

    def url_of(self, path: str, query: Sequence[str]) -> str:
        """``path?query`` with the datacenter added when one was chosen."""
        parameters = list(query)
        if self._datacenter:
            parameters.append("dc=" + quote(self._datacenter, safe=""))
        return path + ("?" + "&".join(parameters) if parameters else "")

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
        deadline = time.monotonic() + self.timeout
        attempt = 0
        # A write waits for its answer until the deadline (sending it again could apply
        # it twice); a read gives up on an agent sooner and asks the next one.
        read_wait = math.inf if write else first_read_wait(self.timeout)
        while True:
            if self._closed:
                raise StoreClosedError("store is closed")
            index = self._current
            remaining = max(deadline - time.monotonic(), 0.001)
            cause: BaseException | None = None
            try:
                response = self._pools[index].urlopen(
                    method,
                    url,
                    body=body,
                    headers=self._headers,
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    timeout=urllib3.Timeout(connect=remaining, read=min(remaining, read_wait)),
                )
            except HTTPError as error:
                sent = not isinstance(error, (NewConnectionError, ConnectTimeoutError))
                if isinstance(error, SSLError) or (sent and write):
                    raise self.failure(error, write=write) from error
                if isinstance(error, ReadTimeoutError):
                    read_wait *= 2  # a read that is merely slow still gets its answer
                cause, failure = error, self.failure(error, write=False)
            else:
                reply = _reply(response)
                if reply.status in ANSWERED:
                    self.last_contact = time.monotonic()
                if reply.status in ANSWERED and not reply.filtered:
                    return reply
                failure = self.status_error(reply, write=write)
                if type(failure) is not NotReachableError:
                    raise failure
            self._next_agent(index, str(failure))
            attempt += 1
            pause = 0.0 if attempt % len(self._pools) else min(0.05 * attempt, 0.5)
            # Give up only once the whole timeout has passed (a last attempt at the
            # deadline), so that "unreachable for the timeout" is true when raised: the
            # watch engine fails a watch only after that long without the agent.
            now = time.monotonic()
            if now >= deadline or (not persist and attempt >= len(self._pools)):
                raise failure from cause
            time.sleep(min(pause, deadline - now))

    def status_error(self, reply: Reply, *, write: bool) -> KVError:
        """The libkv error for an HTTP status other than 200, 404 and 409."""
        text = self.scrub(reply.data.decode("utf-8", "replace").strip())
        where = f"Consul at {self.endpoint}"
        if reply.filtered:
            # A listing without the keys the token may not read would be a false answer.
            return AuthenticationError(f"{where}: the ACL token may not read every key asked for")
        if reply.status in (401, 403):
            return AuthenticationError(f"{where} refused the ACL token: {text}")
        if reply.status == 413:
            return ValueTooLargeError(f"{where}: request too large: {text}")
        if reply.status == 429 or any(reason in text for reason in _LEADERLESS):
            # Refused before being applied (rate limit, no leader): safe to retry.
            return NotReachableError(f"{where} cannot serve requests now: {text}")
        if reply.status >= 500 and not text.startswith("Invalid"):
            if write:
                return UnknownOutcomeError(
                    f"{where}: write may or may not be applied: {reply.status} {text}"
                )
            return NotReachableError(f"{where}: {reply.status} {text}")
        return KVError(f"{where}: {reply.status} {text}")

    def failure(self, error: BaseException, *, write: bool) -> KVError:
        """The libkv error for a request that got no answer."""
        where = f"Consul at {self.endpoint}"
        text = self.scrub(str(error))
        if self._closed:
            return StoreClosedError("store is closed")
        if isinstance(error, SSLError):
            # TLS failed, so Consul's HTTP server never read the request: not applied.
            if "alert" in text and "certificate" in text:
                return AuthenticationError(f"{where} refused our client certificate: {text}")
            return NotReachableError(f"{where}: TLS handshake failed: {text}")
        if write:
            return UnknownOutcomeError(f"{where}: write may or may not be applied: {text}")
        return NotReachableError(f"{where} not reachable within {self.timeout} s: {text}")

    def scrub(self, text: str) -> str:
        """``text`` with the ACL token replaced by ``***``."""
        return text.replace(self._token, "***") if self._token else text

    def _next_agent(self, index: int, reason: str) -> None:
        with self._lock:
            if len(self._pools) > 1 and self._current == index:
                self._current = (index + 1) % len(self._pools)
                log.info(
                    "Consul agent %s:%s unavailable (%s); trying %s",
                    *self.addresses[index],
                    reason,
                    self.endpoint,
                )

    def blocking_connection(self) -> BlockingConnection:
        """A connection of its own to the current agent, for one watch's blocking queries."""
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
            if reply.status in ANSWERED:
                client.last_contact = time.monotonic()
        except (HTTPError, OSError) as error:
            connection.close()
            if isinstance(error, SSLError):
                raise client.failure(error, write=False) from error
            if not self._aborted:  # the next watch connection goes to the next agent
                client._next_agent(self._agent, str(error))
            raise NotReachableError(
                f"Consul at {self.endpoint}: blocking query failed: {client.scrub(str(error))}"
            ) from error
        if reply.status not in ANSWERED or reply.filtered:
            raise client.status_error(reply, write=False)
        return reply

    def abort(self) -> None:
        """Close the connection; a query blocked in another thread fails at once."""
        self._aborted = True
        sock = self._connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)
        self._connection.close()


def first_read_wait(timeout: float) -> float:
    """How long the first attempt of a read waits for its answer (seconds): a quarter
    of the store's timeout, 0.5 to 2 s. Consul answers a read at once unless the agent is
    frozen or, without a leader, holds it (up to its rpc_hold_timeout of 7 s, answering
    it only some time after a new leader is known); a new attempt is answered as soon
    as there is a leader."""
    return min(max(timeout / 4, _SHORTEST_READ_WAIT), _LONGEST_READ_WAIT)


def _reply(response: BaseHTTPResponse) -> Reply:
    headers = response.headers
    return Reply(
        response.status,
        response.data,
        _index(headers.get("X-Consul-Index")),
        headers.get("X-Consul-Results-Filtered-By-ACLs") == "true",
    )


def _index(header: str | None) -> int:
    try:
        return int(header) if header else 0
    except ValueError:
        return 0
