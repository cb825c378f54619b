# Generated from plugins/redis/libkv_redis/_async/driver.py by scripts/unasync.py:
# edit that file, then run `python scripts/unasync.py`. CI fails if this is stale.
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

import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from libkv.driver import Backend, KVError, KVPair, Op, StoreURL
from libkv_redis import common
from libkv_redis.common import (
    CAPABILITIES,
    FOLLOW_INTERVAL,
    REAP_INTERVAL,
    Argument,
    Layout,
    Script,
    Settings,
)
from libkv_redis.io import Background, RedisFeed

__all__ = ["CAPABILITIES", "RedisBackend", "open_redis"]

log = logging.getLogger(__name__)


class RedisBackend(Backend):
    """A store in one Redis database; see the module docstring."""

    capabilities = CAPABILITIES

    def __init__(self, settings: Settings, client: redis.Redis | RedisCluster) -> None:
        super().__init__(settings.url, namespace=settings.namespace, timeout=settings.timeout)
        self._client = client
        self._cluster = settings.cluster
        self._database = settings.database
        self._layout = Layout(settings.hashtag, settings.history)
        self._execute: Callable[..., Any] = client.execute_command
        # A cluster client has no connection pool of its own.
        pool = None if settings.cluster else cast(Any, client).connection_pool
        self._sentinel_pool = pool if isinstance(pool, SentinelConnectionPool) else None
        self._failing = False  # whether the last background reap failed (logged once)
        self._ticks_per_follow = max(1, round(FOLLOW_INTERVAL / REAP_INTERVAL))
        # The reaper: a thread started now (sync), a task started by the first call (async).
        self._background = Background(self._tick, "libkv-redis-reaper")
        self._background.start()

    # -- reading ------------------------------------------------------------------

    def get(self, key: str) -> KVPair | None:
        return common.pair_of(key, self._command("GET", self._layout.data + key))

    def get_many(self, keys: Sequence[str]) -> list[KVPair | None]:
        if not keys:
            return []
        data = self._layout.data
        return common.pairs_of(keys, self._command("MGET", *[data + key for key in keys]))

    def range(self, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
        reply = self._run_script(common.RANGE, self._layout.select(prefix, recursive))
        return common.range_result(reply)

    # -- writing ------------------------------------------------------------------

    def commit(self, ops: Sequence[Op]) -> list[KVPair | None]:
        script, arguments = self._layout.commit(ops)
        return common.commit_result(ops, script, self._run_write(script, arguments))

    def delete_range(self, prefix: str) -> int:
        return int(self._run_write(common.DELETE_RANGE, self._layout.select(prefix, True)))

    # -- leases -------------------------------------------------------------------

    def grant_lease(self, ttl: float) -> int:
        return self._grant(ttl)

    def _grant(self, ttl: float) -> int:
        reply = self._run_write(common.GRANT_LEASE, self._layout.grant(ttl))
        return common.grant_result(ttl, reply)

    def keepalive_lease(self, lease_id: int) -> bool:
        reply = self._run_script(common.KEEPALIVE_LEASE, self._layout.lease(lease_id))
        return bool(int(reply))

    def lease_ttl(self, lease_id: int) -> float | None:
        reply = self._run_script(common.LEASE_TTL, self._layout.lease(lease_id))
        return common.lease_ttl_result(reply)

    def revoke_lease(self, lease_id: int) -> None:
        self._run_write(common.REVOKE_LEASE, self._layout.lease(lease_id))

    # -- watching -----------------------------------------------------------------

    def open_feed(self, prefix: str, after: int | None) -> RedisFeed:
        """A feed from ``after``, with the epoch of the history it belongs to.

        The epoch is read here, one round trip, so that a watch knows it before its
        first poll: a restart that wipes Redis while that poll is blocked would
        otherwise hand the watch the new history's epoch as its own, and the lost
        data would go unnoticed. Whether the changes after ``after`` are still in the
        log, or ``after`` is ahead of the store (the feed then waits for it, as every
        backend does), is found by reading the log from there.
        """
        revision, epoch = self._reap()
        return RedisFeed(self, prefix, revision if after is None else after, epoch)

    def _read_log(self, connection: Any, position: str, block: int, count: int) -> tuple[Any, Any]:
        """A feed's poll: reap, then read at most ``count`` log entries after ``position``
        with XREAD BLOCK ``block`` ms; the two replies. One round trip on the feed's
        ``connection``; a Cluster client routes commands itself (``connection`` is
        None): two."""
        layout = self._layout
        if connection is None:
            reap_reply = self._run_script(common.REAP, layout.arguments)
            streams: dict[Any, Any] = {layout.log_key: position}
            reply = self._client.xread(streams, count=count, block=block)
            return reap_reply, reply
        reap = ("EVALSHA", common.REAP.sha, len(layout.script_keys))
        xread = ("XREAD", "COUNT", count, "BLOCK", block, "STREAMS")
        connection.send_packed_command(
            connection.pack_commands(
                [
                    (*reap, *layout.script_keys, *layout.arguments),
                    (*xread, layout.log_key, position),
                ]
            )
        )
        try:
            reap_reply = connection.read_response()
        except redis.exceptions.ResponseError:
            connection.read_response()  # the XREAD's reply: keep the connection in step
            raise
        return reap_reply, connection.read_response()

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

    def compact(self, revision: int) -> None:
        bound = common.compact_bound(revision)
        if bound is not None:  # else nothing comes before the first revision
            self._command("XTRIM", self._layout.log_key, "MINID", bound)

    # -- calling Redis --------------------------------------------------------------

    def _command(self, *arguments: Argument) -> Any:
        return self._execute(*arguments)

    def _run_script(self, script: Script, arguments: Sequence[Argument]) -> Any:
        return self._evalsha(script, arguments)

    def _evalsha(self, script: Script, arguments: Sequence[Argument]) -> Any:
        """Run ``script`` with EVALSHA; load it on NOSCRIPT (after a restart or flush)."""
        keys = self._layout.script_keys
        execute = self._execute
        try:
            return execute("EVALSHA", script.sha, len(keys), *keys, *arguments)
        except redis.exceptions.NoScriptError:
            self._client.script_load(script.source)
            return execute("EVALSHA", script.sha, len(keys), *keys, *arguments)

    def _run_write(self, script: Script, arguments: Sequence[Argument]) -> Any:
        """Run a writing script; a failure after it may have been sent is UnknownOutcome."""
        try:
            return self._run_script(script, arguments)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            translated = common.translate(error, self.url, self._database, outcome_unknown=True)
            raise (translated or error) from error

    def _reap(self) -> tuple[int, str | None]:
        """Expire what is due; return the revision and the epoch of this history."""
        return common.revision_and_epoch(self._run_script(common.REAP, self._layout.arguments))

    def _follow_master(self) -> None:
        """Ask the Sentinels for the master; if it moved, drop the connections to the old one.

        redis-py looks the master up only when it opens a connection, so a pooled one
        would go on writing to a replaced master until Sentinel demotes it (8 s or more
        after the failover) and those writes would be lost; this bounds that window to
        about ``FOLLOW_INTERVAL``.
        """
        if self._sentinel_pool is not None:
            # Through Any: redis-py types this call in some supported releases, not others.
            cast(Any, self._sentinel_pool).get_master_address()

    def _tick(self, tick: int) -> None:
        """The background's work every REAP_INTERVAL: reap, and follow the master."""
        if self._sentinel_pool is not None and tick % self._ticks_per_follow == 0:
            try:
                self._follow_master()
            except Exception as error:
                if self._background.stopping:
                    return
                log.info("cannot ask the Sentinels of %s for the master: %s", self.url, error)
        try:
            self._reap()
        except Exception as error:
            if self._background.stopping:
                return
            if not self._failing:
                log.info("cannot reap expired keys on %s: %s", self.url, error)
            self._failing = True
        else:
            self._failing = False

    # -- errors, closing ----------------------------------------------------------

    def translate_error(self, error: Exception) -> KVError | None:
        return common.translate(error, self.url, self._database, outcome_unknown=False)

    def close(self) -> None:
        self._background.stop(self.timeout)
        self._client.close()


def open_redis(url: StoreURL) -> Backend:
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
        try:  # reads the slot map
            cluster = RedisCluster(startup_nodes=nodes, **connection)
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as error:
            raise common.translate(error, url, 0, outcome_unknown=False) or error from error
        return RedisBackend(settings, cluster)
    client: redis.Redis
    if settings.sentinel is not None:
        # Through Any: redis-py types Sentinel and master_for from 8.2 on, not before.
        sentinels = cast(Any, Sentinel)(
            settings.sentinels,
            sentinel_kwargs={**settings.sentinel_connection, "retry": Retry(NoBackoff(), 0)},
            **connection,
        )
        client = sentinels.master_for(settings.sentinel, redis_class=redis.Redis, **connection)
    else:
        host, port = settings.host
        client = redis.Redis(host=host, port=port, **connection)
    return RedisBackend(settings, client)
