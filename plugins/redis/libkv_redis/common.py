"""What the two flavours of the Redis driver share: everything but the I/O.

The sync backend (:mod:`libkv_redis.driver`) and the async one
(:mod:`libkv_redis._async.driver`, its source) send the same commands and read the same
replies; what they send and how they read it is here, once: the URL's options, the
physical key layout, the scripts' arguments and replies, the change log's entries,
and the translation of redis-py's exceptions (``redis.asyncio`` raises the same
classes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import ssl
from collections.abc import Iterator, Sequence
from typing import Any

import redis.exceptions
from redis.asyncio.sentinel import MasterNotFoundError as AsyncMasterNotFoundError
from redis.sentinel import MasterNotFoundError

from libkv.driver import (
    Action,
    AuthenticationError,
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
    UnknownOutcomeError,
    first_failure,
    in_prefix,
    parse_bool,
    parse_positive_int,
    parse_seconds,
)
from libkv_redis import scripts

__all__ = [
    "CAPABILITIES",
    "Layout",
    "LogReader",
    "Script",
    "Settings",
    "translate",
]

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
    native_async=True,  # libkv.aio runs the driver's own async backend
)

REAP_INTERVAL = 0.2  # seconds between two reaps by each open Store
FOLLOW_INTERVAL = 1.0  # seconds between two Sentinel look-ups of the master by each Store
FEED_BLOCK = 0.2  # longest XREAD BLOCK, so a closed feed returns promptly
# How long past its XREAD BLOCK a watch waits for Redis to answer (at most; a quarter
# of the store's timeout if less) before it takes the server as unreachable: short, so
# a frozen server is reported within the store's timeout plus about a second.
FEED_STALL = 0.75
FEED_BATCH = 1000  # log entries read per poll
FEED_READ_SIZE = 4096  # a feed connection's read buffer (hiredis keeps one per connection)
# In libkv.aio, fewer: redis-py parses a reply, and the feed and the watch engine decode
# it, in one callback of the loop, which must stay short. An entry is a revision, with
# up to max_transaction_ops changes: 100 entries of 64 changes took 52-66 ms of CPU on
# CI, 1000 entries over 50 ms on a busy machine.
ASYNC_FEED_BATCH = 10

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
    AsyncMasterNotFoundError,
)
# How redis-py words failures while connecting, or while sending a command (then the
# server got at most part of it, and Redis runs only complete commands).
_NOT_SENT_WORDS = ("connecting to", "while writing to socket", "Timeout writing to socket")


class Script:
    """A Lua script, run with EVALSHA and loaded on NOSCRIPT (after a restart or flush)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()


COMMIT = Script(scripts.COMMIT)
PUT = Script(scripts.PUT)
WRITE_ONE = Script(scripts.WRITE_ONE)
RANGE = Script(scripts.RANGE)
DELETE_RANGE = Script(scripts.DELETE_RANGE)
REAP = Script(scripts.REAP)
GRANT_LEASE = Script(scripts.GRANT_LEASE)
KEEPALIVE_LEASE = Script(scripts.KEEPALIVE_LEASE)
LEASE_TTL = Script(scripts.LEASE_TTL)
REVOKE_LEASE = Script(scripts.REVOKE_LEASE)


# -- options ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """A ``redis://`` or ``rediss://`` URL's options, checked; no client made yet.

    ``connection`` holds the keyword arguments of every redis-py connection (both
    flavours take the same), without ``retry``, whose class is the flavour's.
    """

    url: StoreURL
    namespace: str
    timeout: float
    hashtag: str
    history: int
    database: int
    connection: dict[str, Any]
    sentinel: str | None = None  # the master's name; the hosts are Sentinels
    cluster: bool = False

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """A Cluster's startup nodes."""
        return [(host, port or 6379) for host, port in self.url.hosts] or [("localhost", 6379)]

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [(host, port or 26379) for host, port in self.url.hosts]

    @property
    def sentinel_connection(self) -> dict[str, Any]:
        """The connection arguments of a Sentinel (no database, no credentials)."""
        return {
            key: value
            for key, value in self.connection.items()
            if key not in ("db", "username", "password")
        }

    @property
    def host(self) -> tuple[str, int]:
        """The one server's address (neither Sentinel nor Cluster)."""
        host, port = self.url.hosts[0] if self.url.hosts else ("localhost", None)
        return host, port or 6379


def read_settings(url: StoreURL) -> Settings:
    """Check the URL's options; InvalidURLError for anything wrong. No I/O."""
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
    }
    if tls:
        connection["ssl"] = True
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
            if name in options:
                connection[name] = options[name]
    sentinel = options.get("sentinel")
    cluster = bool(options.get("cluster"))
    if cluster:
        if sentinel is not None or database:
            raise InvalidURLError(f"cluster=true takes neither sentinel= nor a database: {url}")
        del connection["db"]
    elif sentinel is not None:
        if not url.hosts:
            raise InvalidURLError(f"sentinel= needs the Sentinel hosts in the URL: {url}")
    elif len(url.hosts) > 1:
        raise InvalidURLError(f"redis:// takes one host (several only with sentinel=): {url}")
    return Settings(
        url=url,
        namespace=options.get("prefix", ""),
        timeout=timeout,
        hashtag=options.get("hashtag", "libkv"),
        history=options.get("history", 100_000),
        database=database,
        connection=connection,
        sentinel=sentinel,
        cluster=cluster,
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


# -- the key layout, the scripts' arguments and replies --------------------------------


class Layout:
    """The physical keys of one hash tag, and the scripts' arguments and replies."""

    def __init__(self, hashtag: str, history: int) -> None:
        physical = "{" + hashtag + "}:"
        self.data = physical + "v:"
        self.log_key = physical + "log"
        # Constant arguments are encoded once: redis-py then only copies them.
        self.script_keys: list[Argument] = [(physical + "revision").encode()]
        self.arguments: list[Argument] = [physical.encode(), str(history).encode()]

    def select(self, prefix: str, recursive: bool) -> list[Argument]:
        """Script arguments selecting a key or prefix: exact key, then ZRANGEBYLEX bounds."""
        if not recursive:
            return [*self.arguments, prefix, "", ""]
        if not prefix:
            return [*self.arguments, "", "-", "+"]
        if prefix.endswith("/"):
            return [*self.arguments, "", "[" + prefix, "(" + prefix[:-1] + "0"]
        return [*self.arguments, prefix, "[" + prefix + "/", "(" + prefix + "0"]

    def commit(self, ops: Sequence[Op]) -> tuple[Script, list[Argument]]:
        """The script and arguments applying ``ops``: PUT for one plain put, WRITE_ONE
        for any other write without ttl, else COMMIT."""
        if len(ops) == 1 and ops[0].ttl is None and ops[0].kind is not OpKind.CHECK:
            op = ops[0]
            if op.kind is OpKind.PUT and op.lease is None:
                return PUT, [*self.arguments, op.key, op.value]
            return WRITE_ONE, [
                *self.arguments,
                _KIND_CODES[op.kind],
                "" if op.version is None else str(op.version),
                "" if op.lease is None else str(op.lease.id),
                op.key,
                op.value,
            ]
        arguments: list[Argument] = [*self.arguments]
        for op in ops:
            header = "|".join(
                (
                    _KIND_CODES[op.kind],
                    "" if op.version is None else str(op.version),
                    "" if op.ttl is None else str(milliseconds(op.ttl)),
                    "" if op.lease is None else str(op.lease.id),
                )
            )
            arguments += [header, op.key, op.value]
        return COMMIT, arguments

    def lease(self, lease_id: int) -> list[Argument]:
        return [*self.arguments, lease_id]

    def grant(self, ttl: float) -> list[Argument]:
        return [*self.arguments, milliseconds(ttl)]


def pair_of(key: str, data: bytes | None) -> KVPair | None:
    """The pair stored at ``key`` as ``[~]<version>:<value>``, or None."""
    if data is None:
        return None
    version, _, value = data.partition(b":")
    return KVPair(key, value, int(version.lstrip(b"~")))


def pairs_of(keys: Sequence[str], found: Sequence[bytes | None]) -> list[KVPair | None]:
    """MGET's reply for ``keys``."""
    return [pair_of(key, data) for key, data in zip(keys, found, strict=True)]


def range_result(reply: Any) -> tuple[list[KVPair], int]:
    """The RANGE script's reply ``{revision, key, data, ...}``."""
    pairs = []
    for index in range(1, len(reply), 2):
        version, _, value = reply[index + 1].partition(b":")
        pairs.append(KVPair(reply[index].decode("utf-8"), value, int(version.lstrip(b"~"))))
    return pairs, int(reply[0])


def commit_result(ops: Sequence[Op], script: Script, reply: Any) -> list[KVPair | None]:
    """The new pairs of a commit, or its failure raised (see the COMMIT script)."""
    if script is PUT:
        op = ops[0]
        return [KVPair(op.key, op.value, int(reply))]
    status = int(reply[0])
    if status == 0:
        current = [
            None if version == 0 else KVPair(op.key, b"", int(version))
            for op, version in zip(ops, reply[1:], strict=True)
        ]
        failure = first_failure(ops, current)
        if failure is None:  # cannot happen: the script and first_failure agree
            raise RuntimeError("the commit script reported a failure first_failure does not see")
        raise failure
    if status == -1:
        failed = ops[int(reply[1])].lease
        raise LeaseNotFoundError(f"lease {failed.id if failed else '?'} has expired or was revoked")
    if status == -2:
        refused = ops[int(reply[1])]
        raise InvalidArgumentError(
            f"the deadline of {refused.key!r} (ttl {refused.ttl} s) is beyond what Redis "
            f"can keep exactly (2**53 ms); nothing was written"
        )
    return [KVPair(op.key, op.value, status) if op.kind.writes else None for op in ops]


def grant_result(ttl: float, reply: Any) -> int:
    """The GRANT_LEASE script's reply: the lease id, or its refusal raised."""
    lease_id = int(reply)
    if lease_id == -2:
        raise InvalidArgumentError(
            f"the deadline of a lease of {ttl} s is beyond what Redis can keep exactly "
            "(2**53 ms); no lease was granted"
        )
    return lease_id


def lease_ttl_result(reply: Any) -> float | None:
    milliseconds_left = int(reply)
    return None if milliseconds_left < 0 else milliseconds_left / 1000


def milliseconds(seconds: float) -> int:
    """A ttl in whole milliseconds, rounded up past the server clock's truncation to ms."""
    return math.ceil(seconds * 1000) + 1


def revision_and_epoch(reply: Any) -> tuple[int, str | None]:
    """The reap script's reply; the epoch is None while Redis could not record one."""
    revision, epoch = reply[0], reply[1] if len(reply) > 1 else None
    if epoch is None:
        return int(revision), None
    return int(revision), epoch.decode("ascii") if isinstance(epoch, bytes) else str(epoch)


def compact_bound(revision: int) -> str | None:
    """XTRIM's MINID discarding the log before ``revision``; None: nothing to discard."""
    return None if revision <= 1 else f"{revision}-0"


# -- the change log -----------------------------------------------------------------


class LogReader:
    """A feed's position in the log and the batches its replies make (no I/O).

    The first batch is the one the feed opened with (carrying the epoch of its
    history); each later one comes from a reap script's reply and an XREAD's.
    """

    def __init__(self, prefix: str, after: int, epoch: str | None) -> None:
        self.prefix = prefix
        self.after = after
        # Returned by the first poll, so the watch learns the epoch the feed opened in.
        self._opened: FeedBatch | None = FeedBatch(after, epoch=epoch)

    def opened(self) -> FeedBatch | None:
        """The opening batch, once; then None."""
        opened, self._opened = self._opened, None
        return opened

    @property
    def position(self) -> str:
        """The stream ID to read after."""
        return f"{self.after}-0"

    def batch(self, reap_reply: Any, reply: Any) -> FeedBatch:
        """The batch of the log entries in ``reply``; HistoryLostError for a gap."""
        revision, epoch = revision_and_epoch(reap_reply)
        entries = _stream_entries(reply)
        if not entries:
            if revision > self.after:
                raise HistoryLostError(
                    f"changes after revision {self.after} were discarded from the log"
                )
            # Caught up, or the store has not reached the revision asked for yet (the
            # feed waits for it, as on every backend): consistent with self.after.
            return FeedBatch(self.after, epoch=epoch)
        changes: list[Event] = []
        expected = self.after + 1
        for entry_id, fields in entries:
            revision = _entry_revision(entry_id)
            if revision != expected and not (expected == 1 and _first_of_history(fields)):
                raise HistoryLostError(
                    f"changes after revision {expected - 1} were discarded (next is {revision})"
                )
            expected = revision + 1
            changes += _decode_changes(_payload(fields), revision, self.prefix)
        self.after = expected - 1
        return FeedBatch(self.after, changes, epoch=epoch)


def feed_wait(timeout: float) -> float:
    """The socket timeout of a feed's connection: its block plus the stall allowance."""
    return FEED_BLOCK + min(FEED_STALL, timeout / 4)


def feed_block(timeout: float) -> int:
    """XREAD's BLOCK in ms for a poll of ``timeout`` s (never 0, which blocks forever)."""
    return max(1, int(min(timeout, FEED_BLOCK) * 1000))


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


# -- errors -------------------------------------------------------------------------


def translate(
    error: Exception, url: StoreURL, database: int, *, outcome_unknown: bool
) -> KVError | None:
    """The KVError for a redis-py exception (None for programming errors).

    ``outcome_unknown``: the call was a write, so a connection lost after the command
    may have gone out is UnknownOutcomeError.
    """
    if isinstance(
        error,
        (
            redis.exceptions.AuthenticationError,
            redis.exceptions.AuthorizationError,
            redis.exceptions.NoPermissionError,
            redis.exceptions.AuthenticationWrongNumberOfArgsError,
        ),
    ):
        return AuthenticationError(f"{url} refused our credentials: {error}")
    if isinstance(error, redis.exceptions.RedisClusterException):
        # A Cluster client that reaches no node (at its first command, or after a
        # topology refresh found none) says so with this class: judge by its cause.
        lost = next((cause for cause in _causes(error) if _is_connection_error(cause)), None)
        if isinstance(lost, Exception):
            return translate(lost, url, database, outcome_unknown=outcome_unknown)
        return NotReachableError(f"cannot reach the Redis Cluster at {url}: {error}")
    if _is_connection_error(error):
        causes = list(_causes(error))
        if any(_refuses_certificate(cause) for cause in causes):
            # TLS 1.3 reports a rejected client certificate at the first read, after
            # the command was sent, but the server never ran it.
            return AuthenticationError(f"{url} refused our TLS client certificate: {error}")
        refused = any(isinstance(cause, redis.exceptions.ReadOnlyError) for cause in causes)
        sent = (
            not isinstance(error, _NOT_SENT)
            and not any(words in str(error) for words in _NOT_SENT_WORDS)
            and not refused  # redis-py's Sentinel client re-raises READONLY this way
        )
        if outcome_unknown and sent:
            return UnknownOutcomeError(f"write to {url} may or may not have been applied: {error}")
        return NotReachableError(f"cannot reach {url}: {error}")
    if isinstance(
        error,
        (
            redis.exceptions.ReadOnlyError,
            redis.exceptions.ClusterDownError,
            redis.exceptions.TryAgainError,
            redis.exceptions.BusyLoadingError,
        ),
    ):
        return NotReachableError(f"{url} cannot serve requests now: {error}")
    if isinstance(error, redis.exceptions.ResponseError):
        message = str(error)
        if isinstance(error, redis.exceptions.OutOfMemoryError) or "maxmemory" in message:
            # Every script writes its log entry first, and Redis refuses only that first
            # write: nothing of the refused call was applied.
            return KVError(
                f"{url} is out of memory (maxmemory reached); nothing was written: {message}"
            )
        if "DB index is out of range" in message or "invalid DB index" in message:
            return InvalidURLError(f"{url}: the server has no database {database}: {message}")
        return KVError(f"{url} refused the request: {message}")
    return None


def _is_connection_error(error: BaseException) -> bool:
    return isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError))


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
