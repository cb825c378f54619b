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
"""

from __future__ import annotations

import hashlib
import logging
import math
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from libkv.driver import (
    Action,
    AuthenticationError,
    Backend,
    Capabilities,
    Event,
    FeedBatch,
    HistoryLostError,
    InvalidArgumentError,
    InvalidURLError,
    KVError,
    KVPair,
    LeaseNotFoundError,
    NotReachableError,
    Op,
    OpKind,
    StoreURL,
    ThreadedBackend,
    UnknownOutcomeError,
    first_failure,
    in_prefix,
    parse_bool,
    parse_positive_int,
    parse_seconds,
)
from libkv_redis import scripts

__all__ = ["CAPABILITIES", "RedisBackend", "open_redis"]

log = logging.getLogger(__name__)

# Deadlines are kept in milliseconds as ZSET scores (doubles, exact up to 2**53 ms, in
# the year 287,396); with room for the current time, a ttl up to 9e12 s (~285,000
# years) has an exact deadline until the year 2198.
TTL_MAX = 9e12

CAPABILITIES = Capabilities(
    watch_every_change=True,
    watch_resume=True,
    ttl_min=0.01,
    ttl_max=TTL_MAX,
    ttl_slack=0.5,
    max_value_size=16 * 1024 * 1024,
    max_transaction_ops=1024,
)

REAP_INTERVAL = 0.2  # seconds between two reaps by each open Store
FOLLOW_INTERVAL = 1.0  # seconds between two Sentinel look-ups of the master by each Store
FEED_BLOCK = 0.2  # longest XREAD BLOCK, so a closed feed returns promptly
# How long past its XREAD BLOCK a watch waits for Redis to answer (at most; a quarter
# of the store's timeout if less) before it takes the server as unreachable: short, so
# a frozen server is reported within the store's timeout plus about a second.
FEED_STALL = 0.75
FEED_BATCH = 1000  # log entries read per poll

_KIND_CODES = {
    OpKind.PUT: "p",
    OpKind.CREATE: "c",
    OpKind.UPDATE: "u",
    OpKind.DELETE: "d",
    OpKind.CHECK: "k",
}
_CERT_REQUIREMENTS = ("none", "optional", "required")

Argument = str | bytes | int | float

# Connection failures that happen before a command is sent (redis-py words the
# others it raises while connecting as "Error ... connecting to host:port").
_NOT_SENT = (
    redis.exceptions.MaxConnectionsError,
    MasterNotFoundError,
)
# How redis-py words failures while connecting, or while sending a command (then the
# server got at most part of it, and Redis runs only complete commands).
_NOT_SENT_WORDS = ("connecting to", "while writing to socket", "Timeout writing to socket")


class _Script:
    """A Lua script run with EVALSHA, loaded on NOSCRIPT (after a restart or flush)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()

    def __call__(self, client: Any, keys: Sequence[Argument], arguments: Sequence[Argument]) -> Any:
        try:
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *arguments)
        except redis.exceptions.NoScriptError:
            client.script_load(self.source)
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *arguments)


class RedisBackend(Backend):
    """A store in one Redis database; see the module docstring."""

    capabilities = CAPABILITIES

    def __init__(
        self,
        url: StoreURL,
        client: redis.Redis | RedisCluster,
        *,
        namespace: str,
        timeout: float,
        hashtag: str,
        history: int,
    ) -> None:
        super().__init__(url, namespace=namespace, timeout=timeout)
        self._client = client
        self._cluster = isinstance(client, (RedisCluster, _ClusterClient))
        # A cluster client has no connection_pool (and _ClusterClient makes no client
        # before its first command): read neither.
        pool = None if self._cluster else getattr(client, "connection_pool", None)
        self._database = pool.connection_kwargs.get("db", 0) if pool is not None else 0
        self._execute: Callable[..., Any] = client.execute_command
        self._physical = "{" + hashtag + "}:"
        self._data = self._physical + "v:"
        # Constant arguments are encoded once: redis-py then only copies them.
        self._script_keys: list[Argument] = [(self._physical + "revision").encode()]
        self._log_key = self._physical + "log"
        self._arguments: list[Argument] = [self._physical.encode(), str(history).encode()]
        self._commit_script = _Script(scripts.COMMIT)
        self._put_script = _Script(scripts.PUT)
        self._range_script = _Script(scripts.RANGE)
        self._delete_range_script = _Script(scripts.DELETE_RANGE)
        self._reap_script = _Script(scripts.REAP)
        self._grant_script = _Script(scripts.GRANT_LEASE)
        self._keepalive_script = _Script(scripts.KEEPALIVE_LEASE)
        self._lease_ttl_script = _Script(scripts.LEASE_TTL)
        self._revoke_script = _Script(scripts.REVOKE_LEASE)
        self._sentinel_pool = pool if isinstance(pool, SentinelConnectionPool) else None
        self._stopping = threading.Event()
        self._reaper = threading.Thread(
            target=self._reap_loop, name="libkv-redis-reaper", daemon=True
        )
        self._reaper.start()

    # -- reading ------------------------------------------------------------------

    def get(self, key: str) -> KVPair | None:
        data = self._execute("GET", self._data + key)
        if data is None:
            return None
        version, _, value = data.partition(b":")
        return KVPair(key, value, int(version.lstrip(b"~")))

    def get_many(self, keys: Sequence[str]) -> list[KVPair | None]:
        if not keys:
            return []
        found = self._execute("MGET", *[self._data + key for key in keys])
        pairs: list[KVPair | None] = []
        for key, data in zip(keys, found, strict=True):
            if data is None:
                pairs.append(None)
            else:
                version, _, value = data.partition(b":")
                pairs.append(KVPair(key, value, int(version.lstrip(b"~"))))
        return pairs

    def range(self, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
        reply = self._range_script(self._client, self._script_keys, self._select(prefix, recursive))
        pairs = []
        for index in range(1, len(reply), 2):
            version, _, value = reply[index + 1].partition(b":")
            pairs.append(KVPair(reply[index].decode("utf-8"), value, int(version.lstrip(b"~"))))
        return pairs, int(reply[0])

    def _select(self, prefix: str, recursive: bool) -> list[Argument]:
        """Script arguments selecting a key or prefix: exact key, then ZRANGEBYLEX bounds."""
        if not recursive:
            return [*self._arguments, prefix, "", ""]
        if not prefix:
            return [*self._arguments, "", "-", "+"]
        if prefix.endswith("/"):
            return [*self._arguments, "", "[" + prefix, "(" + prefix[:-1] + "0"]
        return [*self._arguments, prefix, "[" + prefix + "/", "(" + prefix + "0"]

    # -- writing ------------------------------------------------------------------

    def commit(self, ops: Sequence[Op]) -> list[KVPair | None]:
        if len(ops) == 1:
            op = ops[0]
            if op.kind is OpKind.PUT and op.ttl is None and op.lease is None:
                single = [*self._arguments, op.key, op.value]
                revision = int(self._run_write(self._put_script, single))
                return [KVPair(op.key, op.value, revision)]
        arguments: list[Argument] = [*self._arguments]
        for op in ops:
            header = "|".join(
                (
                    _KIND_CODES[op.kind],
                    "" if op.version is None else str(op.version),
                    "" if op.ttl is None else str(_milliseconds(op.ttl)),
                    "" if op.lease is None else str(op.lease.id),
                )
            )
            arguments += [header, op.key, op.value]
        reply = self._run_write(self._commit_script, arguments)
        status = int(reply[0])
        if status == 0:
            current = [
                None if version == 0 else KVPair(op.key, b"", int(version))
                for op, version in zip(ops, reply[1:], strict=True)
            ]
            failure = first_failure(ops, current)
            if failure is None:  # cannot happen: the script and first_failure agree
                raise RuntimeError(
                    "the commit script reported a failure first_failure does not see"
                )
            raise failure
        if status == -1:
            failed = ops[int(reply[1])].lease
            raise LeaseNotFoundError(
                f"lease {failed.id if failed else '?'} has expired or was revoked"
            )
        if status == -2:
            refused = ops[int(reply[1])]
            raise InvalidArgumentError(
                f"the deadline of {refused.key!r} (ttl {refused.ttl} s) is beyond what Redis "
                f"can keep exactly (2**53 ms); nothing was written"
            )
        return [KVPair(op.key, op.value, status) if op.kind.writes else None for op in ops]

    def delete_range(self, prefix: str) -> int:
        return int(self._run_write(self._delete_range_script, self._select(prefix, True)))

    def _run_write(self, script: _Script, arguments: Sequence[Argument]) -> Any:
        """Run a writing script; a failure after it may have been sent is UnknownOutcome."""
        try:
            return script(self._client, self._script_keys, arguments)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            translated = self._translate(error, outcome_unknown=True)
            raise (translated or error) from error

    # -- leases -------------------------------------------------------------------

    def grant_lease(self, ttl: float) -> int:
        arguments = [*self._arguments, _milliseconds(ttl)]
        lease_id = int(self._run_write(self._grant_script, arguments))
        if lease_id == -2:
            raise InvalidArgumentError(
                f"the deadline of a lease of {ttl} s is beyond what Redis can keep exactly "
                "(2**53 ms); no lease was granted"
            )
        return lease_id

    def keepalive_lease(self, lease_id: int) -> bool:
        reply = self._keepalive_script(
            self._client, self._script_keys, [*self._arguments, lease_id]
        )
        return bool(int(reply))

    def lease_ttl(self, lease_id: int) -> float | None:
        reply = int(
            self._lease_ttl_script(self._client, self._script_keys, [*self._arguments, lease_id])
        )
        return None if reply < 0 else reply / 1000

    def revoke_lease(self, lease_id: int) -> None:
        self._run_write(self._revoke_script, [*self._arguments, lease_id])

    def _reap(self) -> tuple[int, str | None]:
        """Expire what is due; return the revision and the epoch of this history."""
        return _revision_and_epoch(
            self._reap_script(self._client, self._script_keys, self._arguments)
        )

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

    def _reap_loop(self) -> None:
        failing = False
        ticks_per_follow = max(1, round(FOLLOW_INTERVAL / REAP_INTERVAL))
        ticks = 0
        while not self._stopping.wait(REAP_INTERVAL):
            ticks += 1
            if self._sentinel_pool is not None and ticks % ticks_per_follow == 0:
                try:
                    self._follow_master()
                except Exception as error:
                    if self._stopping.is_set():
                        return
                    log.info("cannot ask the Sentinels of %s for the master: %s", self.url, error)
            try:
                self._reap()
            except Exception as error:
                if self._stopping.is_set():
                    return
                if not failing:
                    log.info("cannot reap expired keys on %s: %s", self.url, error)
                failing = True
            else:
                failing = False

    # -- watching -----------------------------------------------------------------

    def open_feed(self, prefix: str, after: int | None) -> _RedisFeed:
        """A feed from ``after``, with the epoch of the history it belongs to.

        The epoch is read here, one round trip, so that a watch knows it before its
        first poll: a restart that wipes Redis while that poll is blocked would
        otherwise hand the watch the new history's epoch as its own, and the lost
        data would go unnoticed. Whether the changes after ``after`` are still in the
        log, or ``after`` is ahead of the store (the feed then waits for it, as every
        backend does), is found by reading the log from there.
        """
        revision, epoch = self._reap()
        return _RedisFeed(self, prefix, revision if after is None else after, epoch)

    def compact(self, revision: int) -> None:
        if revision <= 1:
            return  # nothing comes before the first revision
        self._client.xtrim(self._log_key, minid=f"{revision}-0", approximate=False)

    # -- errors, closing ----------------------------------------------------------

    def translate_error(self, error: Exception) -> KVError | None:
        return self._translate(error, outcome_unknown=False)

    def _translate(self, error: Exception, *, outcome_unknown: bool) -> KVError | None:
        """The KVError for a redis-py exception (None for programming errors)."""
        if isinstance(
            error,
            (
                redis.exceptions.AuthenticationError,
                redis.exceptions.AuthorizationError,
                redis.exceptions.NoPermissionError,
                redis.exceptions.AuthenticationWrongNumberOfArgsError,
            ),
        ):
            return AuthenticationError(f"{self.url} refused our credentials: {error}")
        if isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            causes = list(_causes(error))
            if any(_refuses_certificate(cause) for cause in causes):
                # TLS 1.3 reports a rejected client certificate at the first read, after
                # the command was sent, but the server never ran it.
                return AuthenticationError(
                    f"{self.url} refused our TLS client certificate: {error}"
                )
            refused = any(isinstance(cause, redis.exceptions.ReadOnlyError) for cause in causes)
            sent = (
                not isinstance(error, _NOT_SENT)
                and not any(words in str(error) for words in _NOT_SENT_WORDS)
                and not refused  # redis-py's Sentinel client re-raises READONLY this way
            )
            if outcome_unknown and sent:
                return UnknownOutcomeError(
                    f"write to {self.url} may or may not have been applied: {error}"
                )
            return NotReachableError(f"cannot reach {self.url}: {error}")
        if isinstance(
            error,
            (
                redis.exceptions.ReadOnlyError,
                redis.exceptions.ClusterDownError,
                redis.exceptions.TryAgainError,
                redis.exceptions.BusyLoadingError,
            ),
        ):
            return NotReachableError(f"{self.url} cannot serve requests now: {error}")
        if isinstance(error, redis.exceptions.ResponseError):
            message = str(error)
            if isinstance(error, redis.exceptions.OutOfMemoryError) or "maxmemory" in message:
                # Every script writes its log entry first, and Redis refuses only that first
                # write: nothing of the refused call was applied.
                return KVError(
                    f"{self.url} is out of memory (maxmemory reached); nothing was written: "
                    f"{message}"
                )
            if "DB index is out of range" in message or "invalid DB index" in message:
                return InvalidURLError(
                    f"{self.url}: the server has no database {self._database}: {message}"
                )
            return KVError(f"{self.url} refused the request: {message}")
        return None

    def close(self) -> None:
        self._stopping.set()
        if self._reaper is not threading.current_thread():
            self._reaper.join(self.timeout)
        self._client.close()


class _RedisFeed:
    """Reads the log stream after a revision with short blocking XREADs.

    Each poll is one round trip (reap, then XREAD BLOCK) on a connection of the feed's
    own, which ``close()`` shuts from any thread, so a poll blocked on a frozen server
    ends at once. A poll that got an answer returns a batch even without news: it
    proves contact with the server (and carries the epoch of its history).
    """

    def __init__(self, store: RedisBackend, prefix: str, after: int, epoch: str | None) -> None:
        self._store = store
        self._prefix = prefix
        self._after = after
        # Returned by the first poll, so the watch learns the epoch the feed opened in.
        self._opened: FeedBatch | None = FeedBatch(after, epoch=epoch)
        self._closed = threading.Event()
        self._lock = threading.Lock()  # guards _connection (close() runs in any thread)
        self._polling = threading.Lock()  # one poll at a time on the one connection
        self._connection: Any = None

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
        opened, self._opened = self._opened, None
        if opened is not None:
            return opened
        store = self._store
        # Block within the socket timeout (FEED_BLOCK plus the stall allowance).
        block = max(1, int(min(timeout, FEED_BLOCK) * 1000))
        try:
            reap_reply, reply = self._read(block)
        except redis.exceptions.NoScriptError:
            store._reap()  # loads the script; the next poll reads the log
            return None
        except Exception:
            self._disconnect()
            if self._closed.is_set() or store._stopping.is_set():
                return None  # closed under this poll
            raise
        if self._closed.is_set():
            return None
        revision, epoch = _revision_and_epoch(reap_reply)
        entries = _stream_entries(reply)
        if not entries:
            if revision > self._after:
                raise HistoryLostError(
                    f"changes after revision {self._after} were discarded from the log"
                )
            # Caught up, or the store has not reached the revision asked for yet (the
            # feed waits for it, as on every backend): consistent with self._after.
            return FeedBatch(self._after, epoch=epoch)
        changes: list[Event] = []
        expected = self._after + 1
        for entry_id, fields in entries:
            revision = _entry_revision(entry_id)
            if revision != expected and not (expected == 1 and _first_of_history(fields)):
                raise HistoryLostError(
                    f"changes after revision {expected - 1} were discarded (next is {revision})"
                )
            expected = revision + 1
            changes += _decode_changes(_payload(fields), revision, self._prefix)
        self._after = expected - 1
        return FeedBatch(self._after, changes, epoch=epoch)

    def _read(self, block: int) -> tuple[Any, Any]:
        """Reap, then read the log after ``self._after``: the two replies."""
        store = self._store
        position = f"{self._after}-0"
        if store._cluster:  # a Cluster routes commands itself; two round trips
            reap_reply = store._reap_script(store._client, store._script_keys, store._arguments)
            streams: dict[Any, Any] = {store._log_key: position}
            return reap_reply, store._client.xread(streams, count=FEED_BATCH, block=block)
        connection = self._connect()
        reap = ("EVALSHA", store._reap_script.sha, len(store._script_keys))
        xread = ("XREAD", "COUNT", FEED_BATCH, "BLOCK", block, "STREAMS")
        connection.send_packed_command(
            connection.pack_commands(
                [
                    (*reap, *store._script_keys, *store._arguments),
                    (*xread, store._log_key, position),
                ]
            )
        )
        try:
            reap_reply = connection.read_response()
        except redis.exceptions.ResponseError:
            connection.read_response()  # the XREAD's reply: keep the connection in step
            raise
        return reap_reply, connection.read_response()

    def _connect(self) -> Any:
        with self._lock:
            if self._closed.is_set():
                raise redis.exceptions.ConnectionError("the feed is closed")
            if self._connection is None:
                # Not from the pool: close() shuts it while another thread may read it.
                # Through Any: RedisCluster declares no connection_pool in some releases.
                pool: Any = cast(Any, self._store._client).connection_pool
                wait = FEED_BLOCK + min(FEED_STALL, self._store.timeout / 4)
                self._connection = pool.connection_class(
                    **{
                        **pool.connection_kwargs,
                        "socket_timeout": wait,
                        "socket_connect_timeout": wait,
                    }
                )
            connection = self._connection
        sentinel = self._store._sentinel_pool
        if sentinel is not None and sentinel.master_address not in (
            None,
            (connection.host, connection.port),
        ):
            # The Store found a new master (see _follow_master): leave the old one.
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


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _refuses_certificate(error: BaseException) -> bool:
    """Whether ``error`` is the server's TLS alert refusing our client certificate."""
    reason = getattr(error, "reason", None) if isinstance(error, ssl.SSLError) else None
    return (
        isinstance(reason, str)
        and "_ALERT_" in reason
        and any(word in reason for word in ("CERTIFICATE", "UNKNOWN_CA", "ACCESS_DENIED"))
    )


def _milliseconds(seconds: float) -> int:
    """A ttl in whole milliseconds, rounded up past the server clock's truncation to ms."""
    return math.ceil(seconds * 1000) + 1


def _revision_and_epoch(reply: Any) -> tuple[int, str | None]:
    """The reap script's reply; the epoch is None while Redis could not record one."""
    revision, epoch = reply[0], reply[1] if len(reply) > 1 else None
    if epoch is None:
        return int(revision), None
    return int(revision), epoch.decode("ascii") if isinstance(epoch, bytes) else str(epoch)


def _entry_revision(entry_id: bytes | str) -> int:
    text = entry_id.decode("ascii") if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


def _stream_entries(reply: Any) -> list[tuple[bytes, Any]]:
    """The entries of XREAD's one stream: raw, or in either of redis-py's parsed shapes."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3: {stream: entries}, or {stream: [entries]} parsed
        for value in reply.values():
            nested = value and isinstance(value[0], list) and isinstance(value[0][0], list)
            return list(value[0] if nested else value)
        return []
    return list(reply[0][1])


def _payload(fields: Any) -> bytes:
    """An entry's packed changes: its one field ``c``, as a dict or a raw list."""
    return bytes(fields[b"c"] if isinstance(fields, dict) else fields[1])


def _first_of_history(fields: Any) -> bool:
    """Whether an entry is the first revision of its key space (nothing comes before)."""
    if isinstance(fields, dict):
        return b"f" in fields
    return len(fields) > 2


def _decode_changes(payload: bytes, revision: int, prefix: str) -> list[Event]:
    """Decode a log entry's packed changes, keeping those under ``prefix``."""
    changes: list[Event] = []
    position, end = 0, len(payload)
    while position < end:
        action = payload[position : position + 1]
        colon = payload.index(b":", position + 1)
        length = int(payload[position + 1 : colon])
        key = payload[colon + 1 : colon + 1 + length].decode("utf-8")
        position = colon + 1 + length
        colon = payload.index(b":", position)
        length = int(payload[position:colon])
        value = payload[colon + 1 : colon + 1 + length]
        position = colon + 1 + length
        if not in_prefix(key, prefix):
            continue
        if action == b"u":
            changes.append(Event(Action.UPDATE, key, KVPair(key, value, revision), revision))
        else:
            changes.append(Event(Action.DELETE, key, None, revision))
    return changes


# -- opening ------------------------------------------------------------------------


class _ClusterClient:
    """A RedisCluster made at its first command: its constructor connects (to discover
    the nodes), and an initializer does no I/O (``libkv.aio.open`` runs it on the
    event loop). Until the cluster answers, each command raises NotReachableError."""

    def __init__(self, url: StoreURL, make: Callable[[], RedisCluster]) -> None:
        self._url = url
        self._make = make
        self._client: RedisCluster | None = None
        self._lock = threading.Lock()

    def _connected(self) -> RedisCluster:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = self._make()
                    except (
                        redis.exceptions.RedisError,
                        redis.exceptions.RedisClusterException,
                    ) as error:
                        raise NotReachableError(
                            f"cannot reach the Redis Cluster at {self._url}: {error}"
                        ) from error
                client = self._client
        return client

    def execute_command(self, *args: Any, **options: Any) -> Any:
        return cast(Any, self._connected()).execute_command(*args, **options)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._connected(), name)


def open_redis(url: StoreURL) -> RedisBackend:
    """The initializer of the ``redis`` and ``rediss`` schemes.

    With ``cluster=true`` it reads the Cluster's slot map at once (NotReachableError if
    it cannot); otherwise it contacts no server.
    """
    backend = _backend(url)
    if isinstance(backend._client, _ClusterClient):
        backend._client._connected()
    return backend


def open_redis_async(url: StoreURL) -> ThreadedBackend:
    """The initializer of the ``redis`` and ``rediss`` schemes in :mod:`libkv.aio`: the
    sync backend on the store's worker threads, contacting no server before the first
    call (a Cluster's slot map included), as ``libkv.aio.open`` promises."""
    return ThreadedBackend(_backend(url))


def _backend(url: StoreURL) -> RedisBackend:
    tls = url.scheme == "rediss"
    spec: dict[str, Any] = {
        "timeout": parse_seconds,
        "history": parse_positive_int,
        "hashtag": _hashtag,
        "sentinel": _nonempty,
        "cluster": parse_bool,
    }
    if tls:
        spec |= {
            "ssl_ca_certs": _nonempty,
            "ssl_certfile": _nonempty,
            "ssl_keyfile": _nonempty,
            "ssl_cert_reqs": _cert_requirements,
        }
    try:
        options = url.read_options(spec)
    except InvalidURLError as error:
        if not tls and any(name.startswith("ssl_") for name in url.options):
            raise InvalidURLError(f"{error}; TLS options need a rediss:// URL") from None
        raise
    timeout = options.get("timeout", 10.0)
    database = _database(url.path)
    connection: dict[str, Any] = {
        "db": database,
        "username": url.username or None,
        "password": url.password,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if tls:
        connection["ssl"] = True
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
            if name in options:
                connection[name] = options[name]
    sentinel = options.get("sentinel")
    client: redis.Redis | RedisCluster
    if options.get("cluster"):
        if sentinel is not None or database:
            raise InvalidURLError(f"cluster=true takes neither sentinel= nor a database: {url}")
        del connection["db"]
        nodes = [(host, port or 6379) for host, port in url.hosts] or [("localhost", 6379)]
        client = cast(
            RedisCluster,
            _ClusterClient(
                url,
                lambda: RedisCluster(
                    # Through Any: redis-py types ClusterNode from 8.2 on, not before.
                    startup_nodes=[cast(Any, ClusterNode)(host, port) for host, port in nodes],
                    **connection,
                ),
            ),
        )
    elif sentinel is not None:
        if not url.hosts:
            raise InvalidURLError(f"sentinel= needs the Sentinel hosts in the URL: {url}")
        # Through Any: redis-py types Sentinel and master_for from 8.2 on, not before.
        sentinels = cast(Any, Sentinel)(
            [(host, port or 26379) for host, port in url.hosts],
            sentinel_kwargs={
                key: value
                for key, value in connection.items()
                if key not in ("db", "username", "password")
            },
            **connection,
        )
        client = sentinels.master_for(sentinel, redis_class=redis.Redis, **connection)
    else:
        if len(url.hosts) > 1:
            raise InvalidURLError(f"redis:// takes one host (several only with sentinel=): {url}")
        host, port = url.hosts[0] if url.hosts else ("localhost", None)
        client = redis.Redis(host=host, port=port or 6379, **connection)
    return RedisBackend(
        url,
        client,
        namespace=options.get("prefix", ""),
        timeout=timeout,
        hashtag=options.get("hashtag", "libkv"),
        history=options.get("history", 100_000),
    )


def _database(path: str) -> int:
    text = path.strip("/")
    if not text:
        return 0
    if not text.isdigit():
        raise InvalidURLError(
            f"the path of a redis:// URL is the database number, not {path!r} "
            "(use ?prefix= for a namespace)"
        )
    return int(text)


def _nonempty(value: object) -> str:
    text = str(value)
    if not text:
        raise ValueError("expected a non-empty value")
    return text


def _hashtag(value: object) -> str:
    text = _nonempty(value)
    if "{" in text or "}" in text:
        raise ValueError("a hash tag cannot contain braces")
    return text


def _cert_requirements(value: object) -> str:
    text = str(value).lower()
    if text not in _CERT_REQUIREMENTS:
        raise ValueError(f"expected one of {', '.join(_CERT_REQUIREMENTS)}")
    return text
