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
from typing import Any

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from libkv.driver import (
    Action,
    AuthenticationError,
    Capabilities,
    Event,
    FeedBatch,
    HistoryLostError,
    InvalidURLError,
    KVError,
    KVPair,
    LeaseNotFoundError,
    NotReachableError,
    Op,
    OpKind,
    Store,
    StoreURL,
    UnknownOutcomeError,
    first_failure,
    in_prefix,
    parse_bool,
    parse_positive_int,
    parse_seconds,
)
from libkv_redis import scripts

__all__ = ["CAPABILITIES", "RedisStore", "open_redis"]

log = logging.getLogger(__name__)

CAPABILITIES = Capabilities(
    watch_every_change=True,
    watch_resume=True,
    ttl_min=0.01,
    ttl_max=1e9,  # about 31 years; every backend represents it
    ttl_slack=0.5,
    max_value_size=16 * 1024 * 1024,
    max_transaction_ops=1024,
)

REAP_INTERVAL = 0.2  # seconds between two reaps by each open Store
FOLLOW_INTERVAL = 1.0  # seconds between two Sentinel look-ups of the master by each Store
FEED_BLOCK = 0.2  # longest XREAD BLOCK, so a closed feed returns promptly
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


class RedisStore(Store):
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
        self._cluster = isinstance(client, RedisCluster)
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
        pool = getattr(client, "connection_pool", None)
        self._sentinel_pool = pool if isinstance(pool, SentinelConnectionPool) else None
        self._stopping = threading.Event()
        self._reaper = threading.Thread(
            target=self._reap_loop, name="libkv-redis-reaper", daemon=True
        )
        self._reaper.start()

    # -- reading ------------------------------------------------------------------

    def _get(self, key: str) -> KVPair | None:
        data = self._execute("GET", self._data + key)
        if data is None:
            return None
        version, _, value = data.partition(b":")
        return KVPair(key, value, int(version.lstrip(b"~")))

    def _get_many(self, keys: Sequence[str]) -> list[KVPair | None]:
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

    def _range(self, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
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

    def _commit(self, ops: Sequence[Op]) -> list[KVPair | None]:
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
        return [KVPair(op.key, op.value, status) if op.kind.writes else None for op in ops]

    def _delete_range(self, prefix: str) -> int:
        return int(self._run_write(self._delete_range_script, self._select(prefix, True)))

    def _run_write(self, script: _Script, arguments: Sequence[Argument]) -> Any:
        """Run a writing script; a failure after it may have been sent is UnknownOutcome."""
        try:
            return script(self._client, self._script_keys, arguments)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            translated = self._translate(error, outcome_unknown=True)
            raise (translated or error) from error

    # -- leases -------------------------------------------------------------------

    def _grant_lease(self, ttl: float) -> int:
        arguments = [*self._arguments, _milliseconds(ttl)]
        return int(self._run_write(self._grant_script, arguments))

    def _keepalive_lease(self, lease_id: int) -> bool:
        reply = self._keepalive_script(
            self._client, self._script_keys, [*self._arguments, lease_id]
        )
        return bool(int(reply))

    def _lease_ttl(self, lease_id: int) -> float | None:
        reply = int(
            self._lease_ttl_script(self._client, self._script_keys, [*self._arguments, lease_id])
        )
        return None if reply < 0 else reply / 1000

    def _revoke_lease(self, lease_id: int) -> None:
        self._run_write(self._revoke_script, [*self._arguments, lease_id])

    def _reap(self) -> tuple[int, str]:
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
            self._sentinel_pool.get_master_address()  # type: ignore[no-untyped-call]

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

    def _open_feed(self, prefix: str, after: int | None) -> _RedisFeed:
        revision_text = self._execute("GET", self._physical + "revision")
        first: Any = self._client.xrange(self._log_key, "-", "+", count=1)
        revision = int(revision_text or 0)
        start = revision if after is None else after
        if revision < start:
            raise HistoryLostError(
                f"store revision went back from {start} to {revision} (Redis lost its data)"
            )
        if revision > start:
            oldest = _entry_revision(first[0][0]) if first else revision + 1
            if oldest > start + 1:
                raise HistoryLostError(
                    f"changes after revision {start} were discarded (log starts at {oldest})"
                )
        return _RedisFeed(self, prefix, start)

    def _compact(self, revision: int) -> None:
        self._client.xtrim(self._log_key, minid=f"{revision}-0", approximate=False)

    # -- errors, closing ----------------------------------------------------------

    def _translate_error(self, error: Exception) -> KVError | None:
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
        return None

    def _close(self) -> None:
        self._stopping.set()
        if self._reaper is not threading.current_thread():
            self._reaper.join(self.timeout)
        self._client.close()


class _RedisFeed:
    """Reads the log stream after a revision with short blocking XREADs."""

    def __init__(self, store: RedisStore, prefix: str, after: int) -> None:
        self._store = store
        self._prefix = prefix
        self._after = after
        self._closed = threading.Event()
        self._epoch_reported = False

    def poll(self, timeout: float) -> FeedBatch | None:
        if self._closed.is_set():
            return None
        store = self._store
        # Block well within the socket timeout (the store's), or the read would time out.
        block = max(1, int(min(timeout, FEED_BLOCK, store.timeout / 2) * 1000))
        streams: dict[Any, Any] = {store._log_key: f"{self._after}-0"}
        try:
            if store._cluster:
                revision, epoch = store._reap()
                reply = store._client.xread(streams, count=FEED_BATCH, block=block)
            else:  # one round trip
                pipeline = store._client.pipeline(transaction=False)
                pipeline.evalsha(
                    store._reap_script.sha,
                    len(store._script_keys),
                    *store._script_keys,
                    *store._arguments,
                )
                pipeline.xread(streams, count=FEED_BATCH, block=block)
                reap_reply, reply = pipeline.execute()
                revision, epoch = _revision_and_epoch(reap_reply)
        except redis.exceptions.NoScriptError:
            store._reap()  # loads the script; the next poll reads the log
            return None
        except Exception:
            if self._closed.is_set() or store.closed:
                return None  # the store closed its connections under this poll
            raise
        if self._closed.is_set():
            return None
        entries = _stream_entries(reply)
        if not entries:
            if revision > self._after:
                raise HistoryLostError(
                    f"changes after revision {self._after} were discarded from the log"
                )
            if revision < self._after or not self._epoch_reported:
                # Always report the epoch once, so even an idle watch notices a reset.
                self._epoch_reported = True
                return FeedBatch(revision, epoch=epoch)
            return None
        changes: list[Event] = []
        expected = self._after + 1
        for entry_id, fields in entries:
            revision = _entry_revision(entry_id)
            if revision != expected:
                raise HistoryLostError(
                    f"changes after revision {expected - 1} were discarded (next is {revision})"
                )
            expected += 1
            changes += _decode_changes(fields[b"c"], revision, self._prefix)
        self._after = expected - 1
        return FeedBatch(self._after, changes, epoch=epoch)

    def close(self) -> None:
        self._closed.set()


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


def _revision_and_epoch(reply: Any) -> tuple[int, str]:
    revision, epoch = reply
    return int(revision), epoch.decode("ascii") if isinstance(epoch, bytes) else str(epoch)


def _entry_revision(entry_id: bytes | str) -> int:
    text = entry_id.decode("ascii") if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


def _stream_entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of XREAD's one stream, in either of redis-py's reply shapes."""
    if not reply:
        return []
    if isinstance(reply, dict):
        for value in reply.values():
            entries = value[0] if value and isinstance(value[0], list) else value
            return list(entries)
        return []
    return list(reply[0][1])


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


def open_redis(url: StoreURL) -> RedisStore:
    """The initializer of the ``redis`` and ``rediss`` schemes."""
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
        try:
            nodes = [(host, port or 6379) for host, port in url.hosts] or [("localhost", 6379)]
            client = RedisCluster(
                startup_nodes=[
                    ClusterNode(host, port)  # type: ignore[no-untyped-call]
                    for host, port in nodes
                ],
                **connection,
            )
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as error:
            raise NotReachableError(f"cannot reach the Redis Cluster at {url}: {error}") from error
    elif sentinel is not None:
        if not url.hosts:
            raise InvalidURLError(f"sentinel= needs the Sentinel hosts in the URL: {url}")
        sentinels = Sentinel(  # type: ignore[no-untyped-call]
            [(host, port or 26379) for host, port in url.hosts],
            sentinel_kwargs={
                key: value
                for key, value in connection.items()
                if key not in ("db", "username", "password")
            },
            **connection,
        )
        client = sentinels.master_for(  # type: ignore[no-untyped-call]
            sentinel, redis_class=redis.Redis, **connection
        )
    else:
        if len(url.hosts) > 1:
            raise InvalidURLError(f"redis:// takes one host (several only with sentinel=): {url}")
        host, port = url.hosts[0] if url.hosts else ("localhost", None)
        client = redis.Redis(host=host, port=port or 6379, **connection)
    return RedisStore(
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
