"""``consul://``: libkv over Consul's KV store, through its HTTP API.

URL: ``consul://[token@]host[:8500][,host[:port]...][/prefix][?options]``;
``consuls://`` is the same over HTTPS (port 8501 by default). Options: ``timeout``
(seconds per request, default 10), ``consistency`` (``consistent``, the default,
``default`` or ``stale``), ``dc`` (datacenter), ``session_ttl_min`` (the agents'
``session_ttl_min``, default 10 s), ``prefix``; on ``consuls://`` also ``ca``,
``cert`` and ``key``. The ACL token comes from the URL only, never from the
environment, and is never shown.

Guarantees: versions are ModifyIndex values. Every write is one request to the
transaction endpoint, so it is atomic on the server and answers with the new
ModifyIndex; a write deletes the key before setting it, so that a write always gets
a new version (Consul ignores a write of an identical value) and drops an earlier
ttl or lease (Consul keeps the session of a key on a plain write). A ttl or a lease
is a Consul session (``Behavior=delete``, no lock delay, no node checks) whose TTL is
half the libkv ttl, since Consul invalidates a session twice its TTL after its last
renewal. Watches are blocking queries on the prefix, diffed by the watch engine; the
watches of a store on one prefix share one query (:class:`AsyncBlockingQuery`).

One implementation in two flavours: the sync backend is generated from this async
one by ``scripts/unasync.py``; what is not I/O is in :mod:`libkv_consul.common`, and
the HTTP client (urllib3 or aiohttp) with the query's thread or task is in the
``http`` module of each flavour.
"""

from __future__ import annotations

import asyncio  # async-only
import logging
import threading
import time
from collections.abc import Sequence

from libkv.driver import (
    AsyncBackend,
    FeedBatch,
    HistoryLostError,
    KVError,
    KVPair,
    NotReachableError,
    Op,
    StoreURL,
    first_failure,
)
from libkv_consul import common
from libkv_consul._async.http import (
    AsyncBackground,  # async-only
    AsyncBlockingConnection,
    AsyncConsulHTTP,
    AsyncSignal,
    AsyncWorker,
)
from libkv_consul.common import (
    CAPABILITIES,
    CONSISTENCY,
    READ_MARGIN,
    Settings,
    Subscription,
    capabilities_for,
    key_path,
)

__all__ = [
    "CAPABILITIES",
    "AsyncConsulBackend",
    "capabilities_for",
    "open_consul_async",
    "open_consuls_async",
]

log = logging.getLogger(__name__)


class AsyncConsulBackend(AsyncBackend):
    """A store in Consul's KV store; see the module docstring."""

    def __init__(self, settings: Settings, client: AsyncConsulHTTP) -> None:
        super().__init__(settings.url, namespace=settings.namespace, timeout=settings.timeout)
        self.capabilities = capabilities_for(settings.session_ttl_min)
        self.client = client
        self._read_query = CONSISTENCY[settings.consistency]
        self._leases = common.LeaseClock()
        self._queries: dict[str, AsyncBlockingQuery] = {}  # by prefix: shared by its watches
        self._queries_lock = threading.Lock()
        self._background = AsyncBackground("libkv-consul-clean-up")  # async-only

    @property
    def endpoint(self) -> str:
        """``host:port`` of the agent requests currently go to."""
        return self.client.endpoint

    # -- reading ------------------------------------------------------------------------

    async def get(self, key: str) -> KVPair | None:
        reply = await self.client.request("GET", key_path(key), self._read_query, write=False)
        return common.get_result(reply)

    async def range(self, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
        reply = await self.client.request(
            "GET", key_path(prefix), ("recurse", *self._read_query), write=False
        )
        return await self._snapshot(reply, prefix, recursive)

    async def _snapshot(
        self, reply: common.Reply, prefix: str, recursive: bool
    ) -> tuple[list[KVPair], int]:
        """The pairs of a listing and its index (see :func:`common.snapshot`)."""
        # async-only: begin
        if len(reply.data) > common.DECODE_INLINE_LIMIT:
            return await asyncio.to_thread(common.snapshot, reply, prefix, recursive)
        # async-only: end
        return common.snapshot(reply, prefix, recursive)

    # -- writing ------------------------------------------------------------------------

    async def commit(self, ops: Sequence[Op]) -> list[KVPair | None]:
        sessions = await self._ttl_sessions(ops)
        try:
            txn = common.transaction(ops, sessions)
            reply = await self.client.request("PUT", "/v1/txn", body=txn.body, write=True)
            if reply.status == 409:
                failure = common.transaction_failure(ops, txn, reply, self.client)
                if failure is None:
                    # Not a condition of ours: explain from the current state if it can be.
                    current = [await self.get(operation.key) for operation in ops]
                    failure = first_failure(ops, current) or common.unexplained(reply, self.client)
                raise failure
            if reply.status != 200:
                raise KVError(f"Consul answered {reply.status} to a transaction")
        except BaseException as error:
            if not isinstance(error, NotReachableError):  # unknown outcome: keep them
                for session in sessions.values():
                    self._forget_session(session)
            raise
        return common.commit_result(ops, reply)

    async def _ttl_sessions(self, ops: Sequence[Op]) -> dict[float, str]:
        """A new session for each distinct ttl among ``ops``."""
        sessions: dict[float, str] = {}
        try:
            for op in ops:
                if op.ttl is not None and op.ttl not in sessions:
                    sessions[op.ttl] = await self._new_session(op.ttl)
        except BaseException:
            for session in sessions.values():
                self._forget_session(session)
            raise
        return sessions

    async def delete_range(self, prefix: str) -> int:
        if prefix:
            return len(await self._tree_transaction(common.tree_verbs(prefix), prefix))
        reply = await self.client.request("GET", key_path(""), ("keys",), write=False)
        deleted: set[str] = set()
        for verbs in common.keyspace_tree_verbs(reply):
            deleted.update(await self._tree_transaction(verbs, ""))
        return len(deleted)

    async def _tree_transaction(self, verbs: list[dict[str, str]], prefix: str) -> set[str]:
        """Run get-tree/delete verbs in one transaction; the keys under prefix it deleted."""
        body = common.tree_body(verbs)
        reply = await self.client.request("PUT", "/v1/txn", body=body, write=True)
        return common.tree_result(reply, prefix)

    # -- leases (Consul sessions) ---------------------------------------------------------

    async def _new_session(self, ttl: float) -> str:
        """A new session for ``ttl``; one created for a cancelled call is destroyed."""
        # async-only: begin
        return await self._background.unless_cancelled(
            self._create_session(ttl), self._destroy_quietly
        )
        # async-only: end
        # sync-only: return self._create_session(ttl)

    async def _create_session(self, ttl: float) -> str:
        body = common.session_body(ttl)
        reply = await self.client.request("PUT", "/v1/session/create", body=body, write=True)
        return common.session_created(reply)

    async def grant_lease(self, ttl: float) -> int:
        lease_id = common.lease_id_of(await self._new_session(ttl))
        self._leases.granted(lease_id, ttl)
        return lease_id

    async def keepalive_lease(self, lease_id: int) -> bool:
        session = common.session_id(lease_id)
        # Renewing twice is harmless.
        reply = await self.client.request("PUT", f"/v1/session/renew/{session}", write=False)
        alive = reply.status == 200 and bool(common.entries(reply))
        self._leases.renewed(lease_id)
        return alive

    async def lease_ttl(self, lease_id: int) -> float | None:
        session = common.session_id(lease_id)
        reply = await self.client.request(
            "GET", f"/v1/session/info/{session}", self._read_query, write=False
        )
        if not common.entries(reply):
            return None
        # Consul does not say how long a session has left: our own estimate.
        return self._leases.left(lease_id)

    async def revoke_lease(self, lease_id: int) -> None:
        self._leases.forget(lease_id)
        # Destroying twice is harmless; its keys go in the same raft entry. One attempt
        # per agent: a revoke often follows a failure (a lock wait that found the agent
        # gone), and the session expires by its TTL anyway, so it need not wait out the
        # timeout again for an agent known to be down.
        await self._destroy(common.session_id(lease_id))

    async def _destroy(self, session: str) -> None:
        path = f"/v1/session/destroy/{session}"
        await self.client.request("PUT", path, write=False, persist=False)

    async def _destroy_quietly(self, session: str) -> None:
        try:
            await self._destroy(session)
        except KVError:
            log.debug("could not destroy unused session %s", session, exc_info=True)

    def _forget_session(self, session: str) -> None:
        """Destroy a session the call that made it will not use (a failed or cancelled
        commit): in a clean-up task (async), at once (sync)."""
        self._background.spawn(self._destroy_quietly(session))  # async-only
        # sync-only: self._destroy_quietly(session)

    # -- watching ---------------------------------------------------------------------

    async def open_feed(self, prefix: str, after: int | None) -> AsyncConsulFeed:
        return AsyncConsulFeed(self, prefix, after or 0)

    def _join(self, prefix: str, feed: AsyncConsulFeed) -> AsyncBlockingQuery:
        """The query on ``prefix`` that ``feed`` now shares (a new one if none runs)."""
        with self._queries_lock:
            query = self._queries.get(prefix)
            if query is None or query.ended or query.worker.foreign():
                query = self._queries[prefix] = AsyncBlockingQuery(self, prefix)
            query.join(feed)
            return query

    def _leave(self, query: AsyncBlockingQuery, feed: AsyncConsulFeed) -> None:
        with self._queries_lock:
            if not query.leave(feed):
                return
            if self._queries.get(query.prefix) is query:
                del self._queries[query.prefix]
        query.stop()

    def _ended(self, query: AsyncBlockingQuery) -> None:
        with self._queries_lock:
            if self._queries.get(query.prefix) is query:
                del self._queries[query.prefix]

    def last_contact(self) -> float | None:
        """When an agent last answered any request of this store (0: never)."""
        return self.client.last_contact or None

    async def _kv_index(self) -> int:
        """The KV table's index: only a snapshot restore or a new cluster lowers it.

        (A single-key read answers with it, whether or not the key exists.)
        """
        reply = await self.client.request("GET", key_path("_"), self._read_query, write=False)
        return reply.index

    # -- closing ----------------------------------------------------------------------

    def translate_error(self, error: Exception) -> KVError | None:
        """None: every HTTP failure is translated where the request is made
        (:meth:`~libkv_consul.common.Agents.failure`), where it is known whether a
        write was sent."""
        return None

    async def close(self) -> None:
        await self._background.stop()  # async-only
        await self.client.close()


class AsyncBlockingQuery:
    """One blocking query on a prefix, shared by every watch (feed) of the store on it.

    It runs in one worker (a thread, or a task in the async flavour) on one connection
    of its own, started by the first poll, and ended when the last feed leaves. Each
    answer with a new ``X-Consul-Index`` becomes a snapshot offered to every feed's
    :class:`~libkv_consul.common.Subscription` (a buffer of one: the latest snapshot
    supersedes an older one not yet taken, since the engine diffs snapshots), so a
    slow consumer never holds the query or the other watches. Answers with the same
    index (the wait ran out, spurious wake-ups) are dropped.

    An index that goes backwards is reset as Consul's documentation prescribes; it is
    HistoryLostError for every feed only when the whole KV table's index went back
    too (a snapshot restore), not when Consul merely reaped the prefix's tombstones.
    A failed query (NotReachableError: an agent killed or frozen past the wait, plus
    Consul's jitter and READ_MARGIN) fails every feed, and leaves the store's table:
    the engines' reconnections then share a new one.

    Contact: every answer, new index or not, is contact (``heard``). The query waits
    ``blocking_wait(timeout)`` (a quarter of the store's timeout, 0.25 to 1 s), so a
    live agent answers at least that often.
    """

    def __init__(self, store: AsyncConsulBackend, prefix: str) -> None:
        self._store = store
        self.prefix = prefix
        self._index = 1  # Consul: never block on index 0
        self._revision = 0
        self._latest: tuple[list[KVPair], int] | None = None  # the last snapshot, its index
        self._feeds: dict[AsyncConsulFeed, None] = {}
        self._lock = threading.Lock()
        self.ended = False
        self.heard = time.monotonic()
        self._connection: AsyncBlockingConnection = store.client.blocking_connection()
        self.worker = AsyncWorker(self._run, "libkv-consul-watch")

    def join(self, feed: AsyncConsulFeed) -> None:
        """Add ``feed``; it gets the latest snapshot at once if that is news to it."""
        with self._lock:
            after = feed.subscription.revision
            if not self._feeds and self._latest is None:
                self._index = max(after, 1)
                self._revision = after
            self._feeds[feed] = None
            if self._latest is not None:
                pairs, index = self._latest
                if feed.subscription.offer(pairs, index, reset=False):
                    feed.signal.notify()
            elif after < self._index:
                # The query waits for changes after a later index than the feed read at
                # (its first feed read later): the changes in between would reach this
                # feed only with the next one. Its first poll reads the prefix itself.
                feed.catch_up = True

    def leave(self, feed: AsyncConsulFeed) -> bool:
        """Remove ``feed``; whether it was the last (the query is then ended)."""
        with self._lock:
            self._feeds.pop(feed, None)
            if self._feeds or self.ended:
                return False
            self.ended = True
            return True

    def stop(self) -> None:
        """End the query: a blocking read in flight is aborted."""
        self._connection.abort()
        self.worker.stop()

    async def _run(self) -> None:
        store = self._store
        wait = common.blocking_wait(store.timeout)
        query_base = ("recurse", *store._read_query, f"wait={wait * 1000:.0f}ms")
        # Consul adds up to wait/16 of jitter; beyond that the agent is not answering.
        read_timeout = wait * 17 / 16 + READ_MARGIN
        path = key_path(self.prefix)
        while not self.ended:
            try:
                reply = await self._connection.get(
                    path, (*query_base, f"index={self._index}"), read_timeout
                )
                self.heard = time.monotonic()
                if reply.index == self._index:
                    continue  # the wait ran out, or a wake-up with nothing new
                pairs, index = await store._snapshot(reply, self.prefix, True)
                reset = index < self._index
                if reset:
                    await self._check_went_back(index)
                self._index = max(index, 1)
                self._revision = max(index, self._revision)
            except Exception as error:
                self._fail(error)
                return
            self._publish(pairs, index, reset)

    def _publish(self, pairs: list[KVPair], index: int, reset: bool) -> None:
        with self._lock:
            self._latest = (pairs, index)
            feeds = list(self._feeds)
        for feed in feeds:
            if feed.subscription.offer(pairs, index, reset):
                feed.signal.notify()

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            self.ended = True
            feeds = list(self._feeds)
        self._store._ended(self)
        for feed in feeds:
            feed.subscription.fail(error)
            feed.signal.notify()

    async def _check_went_back(self, index: int) -> None:
        """The prefix's index went back to ``index``: fine if Consul only reaped the
        prefix's tombstones; HistoryLostError if the whole KV table's index went back
        (a snapshot restore), since the changes in between are gone."""
        table = await self._store._kv_index()
        if table >= self._revision:
            log.info("Consul index of %r went back to %d (tombstones reaped)", self.prefix, index)
            return
        log.warning("Consul's KV index went back from %d to %d", self._revision, table)
        raise HistoryLostError(
            f"Consul's KV index went back from {self._revision} to {table} (a snapshot restore)"
        )


class AsyncConsulFeed:
    """One watch's feed: its share of the store's query on the prefix.

    Contact (the engine's rule for ``poll``): a poll returns a batch when the query
    offered one; None otherwise, and NotReachableError once the query failed or nothing
    was heard for the store's timeout. The engine then fails the watch once its
    reconnects have failed for the store's timeout too, counted from the store's latest
    answer from any agent if that is later (``last_contact``: while other requests of
    the store are answered, the watch keeps reconnecting). A reconnection's re-read that
    an agent does not answer moves to the next agent after ``first_read_wait(timeout)``.
    With no other traffic, a frozen agent ends a watch within timeout + wait * 17/16 +
    READ_MARGIN (plus a reconnect interval), a dead one (connection refused) within
    about the timeout.
    """

    def __init__(self, store: AsyncConsulBackend, prefix: str, after: int) -> None:
        self._store = store
        self.subscription = Subscription(after)
        self.signal = AsyncSignal()
        # Opening contacts nothing (the engine reads the prefix just before), so opening
        # counts as contact. The engine restarts its unreachable clock only when a poll
        # returns: so the first poll returns even if the query already failed, and a
        # watch reconnected after an agent's restart is not failed by a clock that
        # started when the agent went down.
        self._opened = time.monotonic()
        self._first_poll = True
        self._prefix = prefix
        self.catch_up = False  # set by the query: the first poll reads the prefix
        self._query = store._join(prefix, self)

    async def poll(self, timeout: float) -> FeedBatch | None:
        """The next snapshot with a new index, or None; see :class:`libkv.driver.Feed`."""
        subscription = self.subscription
        if subscription.is_closed():
            return None
        self._query.worker.start()  # the first poll starts the query: none if unpolled
        if self.catch_up:
            self.catch_up = False
            pairs, index = await self._store.range(self._prefix, True)
            subscription.offer(pairs, index, reset=False)
        if not subscription.ready():
            await self.signal.wait(timeout)
        if subscription.is_closed():
            return None
        batch, error = subscription.take()
        first, self._first_poll = self._first_poll, False
        if batch is not None or first:
            return batch
        if error is not None:
            raise error
        silent = time.monotonic() - max(self._opened, self._query.heard)
        if silent > self._store.timeout:
            raise NotReachableError(f"Consul sent nothing to a watch for {silent:.1f} s")
        return None

    def close(self) -> None:
        """Leave the query (the last feed to leave ends it); a poll waiting returns."""
        if not self.subscription.close():
            return
        self.signal.notify()
        self._store._leave(self._query, self)


def open_consul_async(url: StoreURL) -> AsyncConsulBackend:
    """The ``consul`` scheme's initializer (HTTP)."""
    return _open(common.read_settings(url, tls=False))


def open_consuls_async(url: StoreURL) -> AsyncConsulBackend:
    """The ``consuls`` scheme's initializer (HTTPS)."""
    return _open(common.read_settings(url, tls=True))


def _open(settings: Settings) -> AsyncConsulBackend:
    return AsyncConsulBackend(settings, AsyncConsulHTTP(settings))
