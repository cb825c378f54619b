"""``redis://`` and ``rediss://``: libkv on Redis (6.2 or later; tested on 7.0).

``redis://[user:password@]host:port[/db][?option=value&...]``; ``rediss://`` is the
same over TLS. Options: ``prefix`` (namespace), ``timeout`` (seconds, default 10),
``history`` (log entries kept for ``watch(since=)``, default 100000), ``hashtag``
(default ``libkv``: every physical key is under ``{hashtag}`` so one Redis Cluster
slot holds them all), ``sentinel`` (master name; the hosts are then Sentinels),
``cluster`` (true: the hosts are Redis Cluster startup nodes), and for rediss
``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``.

Every write is one Lua script (see :mod:`libkv_redis.scripts`) that checks the
conditions, bumps a revision counter and appends the changes to a log stream, so
watches see every change and can resume. A read is one plain GET. Expiry is done
by the scripts themselves ("reaping") on every call and every 0.2 s by each open
Store, so a DELETE is logged within ``ttl_slack`` of the deadline as long as some
libkv client is connected; a per-key PEXPIREAT makes reads exact meanwhile.

One implementation in two flavours: the sync backend is generated from the async one
by ``scripts/unasync.py`` (renaming ``await``, ``Async...`` and the client's module);
what is not I/O is in :mod:`libkv_redis.common`, once, and what differs beyond
renaming (the watch feed, the background reaper) is in the ``io`` module of each
flavour.
"""

from __future__ import annotations

import asyncio  # async-only
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import redis.asyncio
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from libkv.driver import AsyncBackend, KVError, KVPair, Op, StoreURL
from libkv_redis import common
from libkv_redis._async.io import AsyncBackground, AsyncRedisFeed, cancellable
from libkv_redis.common import (
    CAPABILITIES,
    FOLLOW_INTERVAL,
    REAP_INTERVAL,
    Argument,
    Layout,
    Script,
    Settings,
)

__all__ = ["CAPABILITIES", "AsyncRedisBackend", "open_redis_async"]

log = logging.getLogger(__name__)


class AsyncRedisBackend(AsyncBackend):
    """A store in one Redis database; see the module docstring."""

    capabilities = CAPABILITIES

    def __init__(self, settings: Settings, client: redis.asyncio.Redis | RedisCluster) -> None:
        super().__init__(settings.url, namespace=settings.namespace, timeout=settings.timeout)
        self._client = client
        self._cluster = settings.cluster
        self._database = settings.database
        self._layout = Layout(settings.hashtag, settings.history)
        self._execute: Callable[..., Awaitable[Any]] = client.execute_command
        # A cluster client has no connection pool of its own.
        pool = None if settings.cluster else cast(Any, client).connection_pool
        self._sentinel_pool = pool if isinstance(pool, SentinelConnectionPool) else None
        self._failing = False  # whether the last background reap failed (logged once)
        self._ticks_per_follow = max(1, round(FOLLOW_INTERVAL / REAP_INTERVAL))
        # The reaper: a thread started now (sync), a task started by the first call (async).
        self._background = AsyncBackground(self._tick, "libkv-redis-reaper")
        self._background.moved = self._forget_connections  # async-only
        # async-only: begin
        self._tls_template = _tls_template(pool)  # None: no TLS, or built already
        self._pool = pool
        self._tls_building: asyncio.Future[Any] | None = None
        self._tls_context: Any = None  # held, so redis-py keeps sharing it
        # async-only: end
        # sync-only: self._background.start()

    # -- reading ------------------------------------------------------------------

    async def get(self, key: str) -> KVPair | None:
        return common.pair_of(key, await self._command("GET", self._layout.data + key))

    async def get_many(self, keys: Sequence[str]) -> list[KVPair | None]:
        if not keys:
            return []
        data = self._layout.data
        return common.pairs_of(keys, await self._command("MGET", *[data + key for key in keys]))

    async def range(self, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
        reply = await self._run_script(common.RANGE, self._layout.select(prefix, recursive))
        return common.range_result(reply)

    # -- writing ------------------------------------------------------------------

    async def commit(self, ops: Sequence[Op]) -> list[KVPair | None]:
        script, arguments = self._layout.commit(ops)
        return common.commit_result(ops, script, await self._run_write(script, arguments))

    async def delete_range(self, prefix: str) -> int:
        return int(await self._run_write(common.DELETE_RANGE, self._layout.select(prefix, True)))

    # -- leases -------------------------------------------------------------------

    async def grant_lease(self, ttl: float) -> int:
        # async-only: begin
        # A grant cancelled after it was sent may still be applied: the background
        # revokes such a lease once it is granted, so a cancelled call leaves none.
        return await self._background.unless_cancelled(self._grant(ttl), self._revoke_quietly)
        # async-only: end
        # sync-only: return self._grant(ttl)

    async def _grant(self, ttl: float) -> int:
        reply = await self._run_write(common.GRANT_LEASE, self._layout.grant(ttl))
        return common.grant_result(ttl, reply)

    async def keepalive_lease(self, lease_id: int) -> bool:
        reply = await self._run_script(common.KEEPALIVE_LEASE, self._layout.lease(lease_id))
        return bool(int(reply))

    async def lease_ttl(self, lease_id: int) -> float | None:
        reply = await self._run_script(common.LEASE_TTL, self._layout.lease(lease_id))
        return common.lease_ttl_result(reply)

    async def revoke_lease(self, lease_id: int) -> None:
        await self._run_write(common.REVOKE_LEASE, self._layout.lease(lease_id))

    # async-only: begin
    async def _revoke_quietly(self, lease_id: int) -> None:
        try:
            await self.revoke_lease(lease_id)
        except Exception as error:  # best effort: the ttl ends it anyway
            log.info("cannot revoke lease %d of a cancelled grant: %s", lease_id, error)

    # async-only: end

    # -- watching -----------------------------------------------------------------

    async def open_feed(self, prefix: str, after: int | None) -> AsyncRedisFeed:
        """A feed from ``after``, with the epoch of the history it belongs to.

        The epoch is read here, one round trip, so that a watch knows it before its
        first poll: a restart that wipes Redis while that poll is blocked would
        otherwise hand the watch the new history's epoch as its own, and the lost
        data would go unnoticed. Whether the changes after ``after`` are still in the
        log, or ``after`` is ahead of the store (the feed then waits for it, as every
        backend does), is found by reading the log from there.
        """
        revision, epoch = await self._reap()
        return AsyncRedisFeed(self, prefix, revision if after is None else after, epoch)

    async def _read_log(
        self, connection: Any, position: str, block: int, count: int
    ) -> tuple[Any, Any]:
        """A feed's poll: reap, then read at most ``count`` log entries after ``position``
        with XREAD BLOCK ``block`` ms; the two replies. One round trip on the feed's
        ``connection``; a Cluster client routes commands itself (``connection`` is
        None): two."""
        layout = self._layout
        if connection is None:
            reap_reply = await self._run_script(common.REAP, layout.arguments)
            streams: dict[Any, Any] = {layout.log_key: position}
            reply = await self._client.xread(streams, count=count, block=block)
            return reap_reply, reply
        reap = ("EVALSHA", common.REAP.sha, len(layout.script_keys))
        xread = ("XREAD", "COUNT", count, "BLOCK", block, "STREAMS")
        await connection.send_packed_command(
            connection.pack_commands(
                [
                    (*reap, *layout.script_keys, *layout.arguments),
                    (*xread, layout.log_key, position),
                ]
            )
        )
        try:
            reap_reply = await connection.read_response()
        except redis.exceptions.ResponseError:
            await connection.read_response()  # the XREAD's reply: keep the connection in step
            raise
        return reap_reply, await connection.read_response()

    def _feed_connection(self) -> Any:
        """A connection for a feed, not from the pool: its socket timeout is its own (see
        ``common.feed_wait``); None on a Cluster, whose client routes the feed's commands."""
        if self._cluster:
            return None
        pool: Any = cast(Any, self._client).connection_pool
        wait = common.feed_wait(self.timeout)
        return pool.connection_class(
            **{
                **pool.connection_kwargs,
                "socket_timeout": wait,
                "socket_connect_timeout": wait,
                "socket_read_size": common.FEED_READ_SIZE,
            }
        )

    def _master_moved(self, connection: Any) -> bool:
        """Whether the Store found a new master (see _follow_master) that ``connection``
        is not connected to: the feed leaves the old one."""
        sentinel = self._sentinel_pool
        return sentinel is not None and sentinel.master_address not in (
            None,
            (connection.host, connection.port),
        )

    async def compact(self, revision: int) -> None:
        bound = common.compact_bound(revision)
        if bound is not None:  # else nothing comes before the first revision
            await self._command("XTRIM", self._layout.log_key, "MINID", bound)

    # -- calling Redis --------------------------------------------------------------

    async def _command(self, *arguments: Argument) -> Any:
        if self._tls_template is not None:  # async-only
            await self._prepare_tls()  # async-only
        self._background.start()  # async-only
        return await cancellable(self._execute(*arguments))  # async-only
        # sync-only: return self._execute(*arguments)

    async def _run_script(self, script: Script, arguments: Sequence[Argument]) -> Any:
        if self._tls_template is not None:  # async-only
            await self._prepare_tls()  # async-only
        self._background.start()  # async-only
        return await cancellable(self._evalsha(script, arguments))  # async-only
        # sync-only: return self._evalsha(script, arguments)

    async def _evalsha(self, script: Script, arguments: Sequence[Argument]) -> Any:
        """Run ``script`` with EVALSHA; load it on NOSCRIPT (after a restart or flush)."""
        keys = self._layout.script_keys
        execute = self._execute
        if _payload(arguments) > SEND_SLICE:  # async-only
            execute = self._execute_in_slices  # async-only
        try:
            return await execute("EVALSHA", script.sha, len(keys), *keys, *arguments)
        except redis.exceptions.NoScriptError:
            await self._client.script_load(script.source)
            return await execute("EVALSHA", script.sha, len(keys), *keys, *arguments)

    async def _run_write(self, script: Script, arguments: Sequence[Argument]) -> Any:
        """Run a writing script; a failure after it may have been sent is UnknownOutcome."""
        try:
            return await self._run_script(script, arguments)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            translated = common.translate(error, self.url, self._database, outcome_unknown=True)
            raise (translated or error) from error

    async def _reap(self) -> tuple[int, str | None]:
        """Expire what is due; return the revision and the epoch of this history."""
        return common.revision_and_epoch(
            await self._run_script(common.REAP, self._layout.arguments)
        )

    async def _follow_master(self) -> None:
        """Ask the Sentinels for the master; if it moved, drop the connections to the old one.

        redis-py looks the master up only when it opens a connection, so a pooled one
        would go on writing to a replaced master until Sentinel demotes it (8 s or more
        after the failover) and those writes would be lost; this bounds that window to
        about ``FOLLOW_INTERVAL``.
        """
        if self._sentinel_pool is not None:
            # Through Any: redis-py types this call in some supported releases, not others.
            await cast(Any, self._sentinel_pool).get_master_address()

    async def _tick(self, tick: int) -> None:
        """The background's work every REAP_INTERVAL: reap, and follow the master."""
        if self._sentinel_pool is not None and tick % self._ticks_per_follow == 0:
            try:
                await self._follow_master()
            except Exception as error:
                if self._background.stopping:
                    return
                log.info("cannot ask the Sentinels of %s for the master: %s", self.url, error)
        try:
            await self._reap()
        except Exception as error:
            if self._background.stopping:
                return
            if not self._failing:
                log.info("cannot reap expired keys on %s: %s", self.url, error)
            self._failing = True
        else:
            self._failing = False

    # async-only: begin
    async def _execute_in_slices(self, *arguments: Argument) -> Any:
        """Run a command of over ``SEND_SLICE`` bytes, sent a slice per step of the loop.

        asyncio copies (over TLS: encrypts) all it is handed to write in one callback,
        which for a 16 MiB value held the loop 60-90 ms; here a step copies
        ``SEND_SLICE`` bytes at most. A failure or cancellation part-way drops the
        connection, so the server never runs a command cut short: a write cancelled
        while it is sent is not applied.
        """
        pool: Any = self._pool
        node: Any = None
        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        if pool is None:  # a Cluster: a connection to the node serving the store's slot
            cluster: Any = self._client
            await cluster.initialize()  # reads the slot map, the first time only
            node = cluster.get_node_from_key(self._layout.script_keys[0])
            connection = node.acquire_connection()
        else:
            connection = await pool.get_connection()
        try:
            # A memoryview is packed as a piece of its own, not copied into one string.
            pieces = connection.pack_command(
                *(
                    memoryview(argument)
                    if isinstance(argument, bytes) and len(argument) > SEND_SLICE
                    else argument
                    for argument in arguments
                )
            )
            for piece in pieces:
                view = memoryview(piece)
                for start in range(0, len(view), SEND_SLICE):
                    chunk = view[start : start + SEND_SLICE]
                    await connection.send_packed_command([chunk], check_health=False)
                    if task is not None and task.cancelling() > cancelling:
                        raise asyncio.CancelledError  # redis-py may swallow it (see cancellable)
            return await connection.read_response()
        except redis.exceptions.AskError:
            pass  # MOVED or ASK: not run; the Cluster client follows the redirection
        except BaseException:
            await connection.disconnect()
            raise
        finally:
            if node is None:
                await pool.release(connection)
            else:
                node.release(connection)
        return await self._execute(*arguments)

    async def _prepare_tls(self) -> None:
        """Build the TLS context on a worker thread, once, before the first connection.

        Loading the CA bundle and a certificate chain takes tens of ms of CPU, too long
        to hold the event loop; redis-py shares one context among the connections with
        the same settings while one is held, and the backend holds it for its life.
        """
        template = self._tls_template
        if template is None:
            return
        if self._tls_building is None or self._tls_building.get_loop().is_closed():
            self._tls_building = asyncio.ensure_future(asyncio.to_thread(template.ssl_context.get))
        self._tls_context = await asyncio.shield(self._tls_building)
        self._tls_template = None

    def _forget_connections(self) -> None:
        """The store's calls moved to another loop (``asyncio.run`` after
        ``asyncio.run``): the pooled connections belonged to the loop gone."""
        if not self._cluster:
            cast(Any, self._client).connection_pool.reset()

    # async-only: end
    # -- errors, closing ----------------------------------------------------------

    def translate_error(self, error: Exception) -> KVError | None:
        return common.translate(error, self.url, self._database, outcome_unknown=False)

    async def close(self) -> None:
        await self._background.stop(self.timeout)
        await self._client.aclose()


# async-only: begin
SEND_SLICE = 256 * 1024
"""Bytes of a command the async backend writes per step of the event loop at most."""


def _payload(arguments: Sequence[Argument]) -> int:
    """The bytes of ``arguments`` given as bytes (a value's)."""
    return sum(len(argument) for argument in arguments if isinstance(argument, bytes))


def _tls_template(pool: Any) -> Any:
    """A connection of ``pool``, never connected, whose TLS context is built off the
    loop before the first (see ``_prepare_tls``); None without TLS."""
    if pool is None or not issubclass(pool.connection_class, redis.asyncio.SSLConnection):
        return None
    try:
        return pool.connection_class(**pool.connection_kwargs)
    except Exception:  # a pool whose connections need more: they build it themselves
        log.debug("no TLS context built ahead for %r", pool, exc_info=True)
        return None


# async-only: end
def open_redis_async(url: StoreURL) -> AsyncBackend:
    """The initializer of the ``redis`` and ``rediss`` schemes.

    It contacts no server, except that with ``cluster=true`` the sync flavour reads the
    Cluster's slot map at once (NotReachableError if it cannot); the async flavour
    (``libkv.aio.open`` does no I/O) reads it at the first call.
    """
    settings = common.read_settings(url)
    connection = {**settings.connection, "retry": Retry(NoBackoff(), 0)}
    if settings.cluster:
        # Through Any: redis-py types ClusterNode from 8.2 on, not before.
        nodes = [cast(Any, ClusterNode)(host, port) for host, port in settings.nodes]
        # async-only: begin
        # Reads the slot map at the first command (open does no I/O). With hiredis the
        # COMMAND table it parses then holds the loop about 10 ms (without: 0.1-0.3 s).
        return AsyncRedisBackend(settings, RedisCluster(startup_nodes=nodes, **connection))
        # async-only: end
        # sync-only: begin
        # try:  # reads the slot map
        #     cluster = RedisCluster(startup_nodes=nodes, **connection)
        # except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as error:
        #     raise common.translate(error, url, 0, outcome_unknown=False) or error from error
        # return RedisBackend(settings, cluster)
        # sync-only: end
    client: redis.asyncio.Redis
    if settings.sentinel is not None:
        # Through Any: redis-py types Sentinel and master_for from 8.2 on, not before.
        sentinels = cast(Any, Sentinel)(
            settings.sentinels,
            sentinel_kwargs={**settings.sentinel_connection, "retry": Retry(NoBackoff(), 0)},
            **connection,
        )
        client = sentinels.master_for(
            settings.sentinel, redis_class=redis.asyncio.Redis, **connection
        )
    else:
        host, port = settings.host
        client = redis.asyncio.Redis(host=host, port=port, **connection)
    return AsyncRedisBackend(settings, client)
