"""The async Consul driver's I/O: its HTTP client on aiohttp, the task and wake-up of
a shared blocking query, and the store's clean-up tasks. Hand-written, as its sync
twin :mod:`libkv_consul.http` (urllib3, threads) is; the rules both follow are
:class:`libkv_consul.common.Agents` and :class:`~libkv_consul.common.Attempts`.

No thread anywhere: requests are coroutines on one ``aiohttp.ClientSession`` per
event loop (made at the first request: opening a store does no I/O), a shared
blocking query is one task, and a cancelled call's clean-up (destroying a session
created after its caller gave up) is a task the store's ``close()`` waits for, briefly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import aiohttp

from libkv.driver import StoreClosedError
from libkv_consul.common import Agents, Failure, Reply, Settings, reply_of

__all__ = ["AsyncBackground", "AsyncBlockingConnection", "AsyncConsulHTTP", "AsyncSignal"]

log = logging.getLogger(__name__)

T = TypeVar("T")
CLOSE_WAIT = 0.5
"""Seconds ``close()`` waits for clean-up tasks (destroying sessions) before it
cancels them: the sessions then end by their TTL."""


class AsyncConsulHTTP(Agents):
    """Requests to a list of Consul agents (HTTP or HTTPS), with the ACL token; see
    :class:`~libkv_consul.common.Attempts` for how a request moves between agents."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        scheme = "https" if self._tls is not None else "http"
        self._bases = [f"{scheme}://{host}:{port}" for host, port in self.addresses]
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def session(self) -> aiohttp.ClientSession:
        """The running loop's HTTP session, made at its first request."""
        if self._closed:
            raise StoreClosedError("store is closed")
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop:
            # A store used by one loop after another (asyncio.run twice): the old
            # session's connections belonged to the loop gone, and go with it.
            self._loop = loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0,  # blocking queries hold one each: never queue behind them
                    ssl=self._tls if self._tls is not None else True,
                    enable_cleanup_closed=False,
                ),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        query: Sequence[str] = (),
        body: bytes | None = None,
        *,
        write: bool,
        persist: bool = True,
    ) -> Reply:
        """Send one request: see :meth:`libkv_consul.http.ConsulHTTP.request`."""
        url = self.url_of(path, query)
        attempts = self.attempts(write=write, persist=persist)
        while True:
            agent, connect, read = attempts.next()
            try:
                answer = await self.send(agent, method, url, body, connect, read)
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                attempts.failed(_kind(error), error)
            else:
                reply = attempts.reply(answer)
                if reply is not None:
                    return reply
            await asyncio.sleep(attempts.pause)

    async def send(
        self,
        agent: int,
        method: str,
        url: str,
        body: bytes | None,
        connect: float,
        read: float,
    ) -> Reply:
        """One attempt on agent number ``agent``: its reply, or the client's error."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
        async with self.session().request(
            method,
            self._bases[agent] + url,
            data=body,
            headers=self._headers,
            timeout=timeout,
            allow_redirects=False,
        ) as response:
            data = await response.read()
            headers = response.headers
            return reply_of(
                response.status,
                data,
                headers.get("X-Consul-Index"),
                headers.get("X-Consul-Results-Filtered-By-ACLs"),
            )

    def blocking_connection(self) -> AsyncBlockingConnection:
        """The current agent, for one query's blocking reads (cancelling the query's
        task ends a read in flight, and aiohttp then drops its connection)."""
        return AsyncBlockingConnection(self, self._current)

    async def close(self) -> None:
        """Close every connection; later requests raise StoreClosedError."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._loop is asyncio.get_running_loop():
            await session.close()


class AsyncBlockingConnection:
    """A shared blocking query's reads, on one agent; a read in flight ends when its
    task is cancelled (:meth:`abort` marks the connection ended first)."""

    def __init__(self, client: AsyncConsulHTTP, index: int) -> None:
        self._client = client
        self._agent = index
        host, port = client.addresses[index]
        self.endpoint = f"{host}:{port}"
        self._aborted = False

    async def get(self, path: str, query: Sequence[str], timeout: float) -> Reply:
        """GET ``path``; NotReachableError if no answer comes within ``timeout`` seconds."""
        client = self._client
        try:
            if self._aborted:
                raise ConnectionAbortedError("watch closed")
            url = client.url_of(path, query)
            reply = await client.send(self._agent, "GET", url, None, timeout, timeout)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            kind = _kind(error)
            raise client.watch_failure(kind, error, self._agent, aborted=self._aborted) from error
        return client.watch_reply(reply)

    def abort(self) -> None:
        """Mark the connection ended; the query's task is cancelled by its worker."""
        self._aborted = True


class AsyncSignal:
    """Wakes a watch's poll when its query offers a snapshot or ends (notify from any
    thread). A notify that comes before the wait is not lost: the next wait returns
    at once."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def notify(self) -> None:
        if _on_loop(self._loop):
            self._event.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a notify (one since the last wait counts)."""
        if not self._event.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._event.wait()
        self._event.clear()


class AsyncWorker:
    """A shared blocking query's loop, in a task of the loop that started it (its sync
    twin: a thread). :meth:`stop` cancels it, from any thread."""

    def __init__(self, target: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._target = target
        self._name = name
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def start(self) -> None:
        """Start the loop, once (on the running loop, which is the worker's)."""
        if self._task is None and not self._stopped:
            self._task = self._loop.create_task(self._target(), name=self._name)

    def foreign(self) -> bool:
        """Whether the loop belongs to an event loop other than the running one."""
        return not _on_loop(self._loop)

    def stop(self) -> None:
        """Cancel the loop's task (a blocking read in flight ends at once)."""
        self._stopped = True
        if _on_loop(self._loop):
            self._cancel()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()


class AsyncBackground:
    """A store's clean-up tasks (destroying the sessions of cancelled calls)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stopping = False

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in a task that :meth:`stop` waits for (briefly)."""
        if self.stopping:
            work.close()
            return
        try:
            task = asyncio.get_running_loop().create_task(work, name=self._name)
        except RuntimeError:  # the loop is closing: the session's TTL ends it
            work.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def unless_cancelled(
        self, work: Coroutine[Any, Any, T], undo: Callable[[T], Coroutine[Any, Any, None]]
    ) -> T:
        """``await work``; if the caller is cancelled meanwhile, ``work`` still runs to
        its end, and what it made is undone by ``undo(result)`` in a clean-up task."""
        task = asyncio.ensure_future(work)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(lambda done: self._undo(done, undo))
            raise

    def _undo(
        self, done: asyncio.Future[T], undo: Callable[[T], Coroutine[Any, Any, None]]
    ) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        self.spawn(undo(done.result()))

    async def stop(self) -> None:
        """Wait up to CLOSE_WAIT for the clean-up tasks, then cancel what is left."""
        self.stopping = True
        tasks = set(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_WAIT)
            for task in pending:
                task.cancel()


def _kind(error: BaseException) -> Failure:
    if isinstance(error, aiohttp.ClientSSLError) or isinstance(
        getattr(error, "os_error", None) or error.__cause__, ssl.SSLError
    ):
        return Failure.TLS
    if isinstance(error, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return Failure.NOT_SENT
    if isinstance(error, TimeoutError):
        return Failure.READ_TIMEOUT
    return Failure.LOST


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
