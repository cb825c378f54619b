"""``zookeeper://``: libkv on ZooKeeper 3.6+ (tested on 3.8), through kazoo.

URL: ``zookeeper://[user:password@]host[:2181][,host[:port]...][/chroot][?options]``.
Options: ``prefix`` (namespace), ``timeout`` (seconds per operation, default 10),
``session_timeout`` (seconds, default 10), ``tls`` (true: TLS with the system roots),
``ca``, ``cert``, ``key`` (PEM files; ``ca`` or ``cert`` imply TLS), ``verify``
(default true: check the server's certificate), ``check_interval`` (seconds, default
0.5: the server's ``znode.container.checkIntervalMs``, which ``ttl_slack`` depends on).

Layout: a key is the znode at its path (segments percent-encoded where ZooKeeper
refuses characters, see :mod:`libkv_zookeeper.paths`). A libkv value's data starts
with a two-byte marker (``\\0k``, or ``\\0l`` plus an 8-byte lease id); a znode with
no data is an implicit parent, not a key; any other data is a foreign znode's value.
Versions are mzxids. Every write is one multi whose ops carry the data-version checks
of the state its conditions were evaluated on; ttl= and leases are TTL znodes under
``%libkv/leases`` whose keys any open Store deletes once the server has reaped them.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from kazoo.client import KazooClient  # type: ignore[import-untyped]
from kazoo.exceptions import (  # type: ignore[import-untyped]
    EXCEPTIONS,
    AuthFailedError,
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    NoNodeError,
    OperationTimeoutError,
    SessionClosedRequireSaslError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError  # type: ignore[import-untyped]
from kazoo.protocol.serialization import Auth as KazooAuth  # type: ignore[import-untyped]
from kazoo.protocol.serialization import Connect as KazooConnect
from kazoo.protocol.serialization import Exists, GetData
from kazoo.protocol.serialization import SetData as KazooSetData
from kazoo.protocol.serialization import Sync as KazooSync
from kazoo.protocol.serialization import Watch as WatchMessage
from kazoo.protocol.states import KazooState, KeeperState  # type: ignore[import-untyped]
from kazoo.retry import KazooRetry  # type: ignore[import-untyped]
from kazoo.security import make_digest_acl_credential  # type: ignore[import-untyped]

from libkv.driver import (
    AuthenticationError,
    Capabilities,
    FeedBatch,
    InvalidURLError,
    KVError,
    KVPair,
    LeaseNotFoundError,
    NotReachableError,
    NotSupportedError,
    Op,
    OpKind,
    Store,
    StoreClosedError,
    StoreURL,
    UnknownOutcomeError,
    ValueTooLargeError,
    first_failure,
    parse_bool,
    parse_seconds,
)
from libkv_zookeeper import protocol
from libkv_zookeeper.paths import decode_segment, encode_segment, flatten, unflatten
from libkv_zookeeper.protocol import (
    Check,
    Create,
    CreateTTL,
    Delete,
    Multi,
    MultiRead,
    ReadData,
    SetData,
    Stat,
    WriteOp,
)

__all__ = ["CAPABILITIES", "ZooKeeperStore", "open_zookeeper"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 2181
JUTE_MAXBUFFER = 1_048_575  # ZooKeeper's default: a longer request makes it drop the connection
REQUEST_LIMIT = JUTE_MAXBUFFER - 1024  # what the driver sends at most, with room to spare
READ_LIMIT = REQUEST_LIMIT - 4096  # a larger multiRead is split (and loses its atomicity)
REAP_INTERVAL = 0.2  # seconds between two looks for dead leases by each open Store
OPEN_FEED_WAIT = 0.5  # longest a watch waits for the connection when (re)opening its feed
MAX_WRITE_OPS = 1000
CHECK_INTERVAL = 0.5  # the server's znode.container.checkIntervalMs assumed (check_interval=)
CLOSE_WAIT = 1.0  # longest close() waits for kazoo to end its session
# A watch whose Store has heard nothing from the server for WATCH_STALL seconds (at most
# a quarter of the store's timeout) raises NotReachableError from its feed's poll, so the
# engine's unreachable clock starts then, not when kazoo notices the loss (two thirds of
# the session timeout later). Silence for half of it sends a probe (an exists request),
# whose answer is contact: an idle, healthy connection is never silent that long.
WATCH_STALL = 1.5
CANCEL_CHECK = 0.05  # how often a feed's pending read looks whether the feed was closed

CAPABILITIES = Capabilities(
    watch_every_change=False,  # a persistent watch says what changed, not every value
    watch_resume=False,  # ZooKeeper keeps no change history
    ttl_min=0.5,
    ttl_max=1e9,  # TTL znodes hold up to 2**40 ms
    # The server reaps a TTL znode up to znode.container.checkIntervalMs (500 ms in the
    # documented setting) after its ttl; an open Store notices within REAP_INTERVAL and
    # deletes its keys in one multi.
    ttl_slack=1.5,  # CHECK_INTERVAL + 1 s
    max_value_size=1_000_000,  # one value with the longest key stays under jute.maxbuffer
    max_transaction_ops=MAX_WRITE_OPS,
)

PLAIN = b"\x00k"  # data marker of a libkv value
LEASED = b"\x00l"  # data marker of a libkv value under a lease: 8-byte lease id follows
_LEASE_HEADER = len(LEASED) + 8

# ZooKeeper error codes (KeeperException.Code)
NO_NODE = -101
NO_AUTH = -102
UNIMPLEMENTED = -6
BAD_ARGUMENTS = -8
NO_CHILDREN_FOR_EPHEMERALS = -108
ROLLED_BACK = 0
RUNTIME_INCONSISTENCY = -2

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


class _Cancelled(Exception):
    """A feed's read given up because the feed was closed (see ``_Feed.poll``)."""


def _parent(path: str) -> str:
    """The parent path ("" for a top-level node, whose parent is the root)."""
    return path[: path.rfind("/")]


def _lineage(path: str) -> list[str]:
    """``path`` and its ancestors below the root, top-down."""
    parts = path.split("/")[1:]
    return ["/" + "/".join(parts[: index + 1]) for index in range(len(parts))]


def _depth(path: str) -> int:
    return path.count("/")


def _decode(data: bytes) -> tuple[bytes, int] | None:
    """(value, lease id or 0) of a znode's data; None for an implicit parent."""
    if not data:
        return None
    marker = data[:2]
    if marker == PLAIN:
        return data[2:], 0
    if marker == LEASED and len(data) >= _LEASE_HEADER:
        return data[_LEASE_HEADER:], int.from_bytes(data[2:_LEASE_HEADER], "big")
    return data, 0  # a foreign znode: its data is its value


def _encode(value: bytes, lease_id: int) -> bytes:
    if lease_id:
        return LEASED + lease_id.to_bytes(8, "big") + value
    return PLAIN + value


class ZooKeeperStore(Store):
    """A store in a ZooKeeper ensemble (or under a chroot of it); see the module docstring."""

    capabilities = CAPABILITIES

    def __init__(
        self,
        url: StoreURL,
        *,
        hosts: str,
        chroot: str,
        namespace: str,
        timeout: float,
        session_timeout: float,
        tls: dict[str, Any],
        check_interval: float = CHECK_INTERVAL,
    ) -> None:
        super().__init__(url, namespace=namespace, timeout=timeout)
        if check_interval != CHECK_INTERVAL:
            # Expiry waits for the server's TTL check: declare the slack it implies.
            self.capabilities = dataclasses.replace(
                CAPABILITIES, ttl_slack=CAPABILITIES.ttl_slack - CHECK_INTERVAL + check_interval
            )
        self._hosts = hosts
        self._base = chroot  # "" or "/a/b": every path of this Store starts with it
        self._bookkeeping = self._base + "/%libkv"
        self._lease_root = self._bookkeeping + "/leases"
        self._attached_root = self._bookkeeping + "/attached"
        credentials = url.username is not None or url.password is not None
        # With credentials every znode the driver creates belongs to that digest user alone
        # (not to the session's other identities, such as its TLS certificate's).
        self._acl: tuple[tuple[int, str, str], ...] = (
            (
                (
                    31,
                    "digest",
                    make_digest_acl_credential(url.username or "", url.password or ""),
                ),
            )
            if credentials
            else protocol.OPEN_ACL_UNSAFE
        )
        self._connected = threading.Event()
        self._watch_lock = threading.Lock()
        self._feeds: tuple[_Feed, ...] = ()
        self._watched: dict[str, int] = {}  # path -> open feeds on it (this connection)
        self._generation = 0  # bumped on every connection loss: watches are gone then
        self._lease_clock: dict[int, tuple[float, float]] = {}  # id -> (refreshed, ttl)
        self._kazoo_log = _KazooLog()
        self._client = KazooClient(
            hosts=hosts,
            # Members are tried in the order the URL lists them, as on etcd and Consul.
            randomize_hosts=False,
            timeout=session_timeout,
            auth_data=(
                [("digest", f"{url.username or ''}:{url.password or ''}")] if credentials else None
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
        # Per thread: the event that cancels the reads this thread sends (set by a
        # feed while it reads for its poll, so that close() never waits for a read).
        self._reader = threading.local()
        self._probed = 0.0  # when the last contact probe was sent
        self._read_socket = connection._read_socket
        connection._read_socket = self._on_read_socket
        self._client.add_listener(self._on_state)
        self._client.start_async()
        self._stopping = threading.Event()
        self._reaper = threading.Thread(
            target=self._reap_loop, name="libkv-zookeeper-reaper", daemon=True
        )
        self._reaper.start()

    @property
    def endpoint(self) -> str | None:
        """``host:port`` of the member this Store is connected to (None while it is not)."""
        try:
            address = self._client._connection._socket.getpeername()
        except (AttributeError, OSError):
            return None
        return f"{address[0]}:{address[1]}"

    # -- paths --------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return self._base + "/" + "/".join(encode_segment(part) for part in key.split("/"))

    def _key(self, path: str) -> str | None:
        """The key at ``path``, or None if no key is there (bookkeeping, foreign names)."""
        if not path.startswith(self._base + "/"):
            return None
        segments = []
        for name in path[len(self._base) + 1 :].split("/"):
            segment = decode_segment(name)
            if segment is None or not segment:
                return None
            segments.append(segment)
        if not self._base and segments[0] == "zookeeper":
            return None  # ZooKeeper's own subtree
        return "/".join(segments)

    def _below_base(self, path: str) -> bool:
        return len(path) > len(self._base) + 1 and path.startswith(self._base + "/")

    def _lease_path(self, lease_id: int) -> str:
        return f"{self._lease_root}/{lease_id:016x}"

    def _entry_path(self, lease_id: int, path: str) -> str:
        return f"{self._attached_root}/{lease_id:016x}/{flatten(path[len(self._base) + 1 :])}"

    def _pair(self, key: str, node: ReadData | None) -> KVPair | None:
        if node is None:
            return None
        decoded = _decode(node.data)
        if decoded is None:
            return None
        return KVPair(key, decoded[0], node.stat.mzxid)

    # -- the connection -------------------------------------------------------------------

    def _on_state(self, state: str) -> None:
        """kazoo's state listener (its own thread: must not block)."""
        if state == KazooState.CONNECTED:
            self._heard = time.monotonic()
            self._disconnected_since = None
            self._connected.set()
            return
        if self._connected.is_set():
            self._disconnected_since = time.monotonic()
        self._connected.clear()
        with self._watch_lock:
            self._generation += 1
            self._watched.clear()  # the server dropped this connection's watches
            feeds = self._feeds
        for feed in feeds:
            feed.lose()

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

    def _await_connection(self, deadline: float) -> None:
        if self._unauthenticated:
            raise AuthenticationError(self._refused())
        if self._connected.is_set():
            return
        cancel: threading.Event | None = getattr(self._reader, "cancel", None)
        # A Store that has been without its server for a whole timeout already says so
        # at once (kazoo keeps reconnecting meanwhile, at least once a second), rather
        # than making each call wait a timeout of its own: a watch that just raised
        # NotReachableError is not followed by a lease revocation blocking as long again.
        since = self._disconnected_since
        if since is not None:
            deadline = min(deadline, max(since + self.timeout, time.monotonic()))
        while not self._connected.wait(max(min(0.05, deadline - time.monotonic()), 0.0)):
            if self.closed:
                self._raise_closed()
            if cancel is not None and cancel.is_set():
                raise _Cancelled
            if self._client.client_state == KeeperState.AUTH_FAILED:
                raise AuthenticationError(self._refused())
            if time.monotonic() >= deadline:
                failure = self._kazoo_log.last_failure
                raise NotReachableError(
                    f"zookeeper at {self._hosts} not reachable within {self.timeout} s"
                    + (f": {failure}" if failure is not None else "")
                ) from failure

    def _refused(self) -> str:
        user = f" user {self.url.username!r}" if self.url.username is not None else ""
        return f"zookeeper at {self._hosts} refused access to{user}"

    def _send(self, request: Any, *, write: bool, timeout: float | None = None) -> Any:
        """Send one request, waiting for the connection; retry a read until the timeout.

        A write whose connection fails after it may have been sent raises
        UnknownOutcomeError; it is never sent twice.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            self._await_connection(deadline)
            result = self._client.handler.async_result()
            self._client._call(request, result)
            try:
                return self._wait(result, deadline)
            except SessionClosedRequireSaslError:
                self._unauthenticated = True
                raise
            except (ConnectionLoss, SessionExpiredError, KazooTimeoutError) as error:
                if self._unauthenticated:
                    raise AuthenticationError(self._refused()) from error
                if write:
                    raise UnknownOutcomeError(
                        f"zookeeper at {self._hosts}: the connection failed after a write "
                        f"was sent; it may or may not be applied ({type(error).__name__})"
                    ) from error
                if time.monotonic() >= deadline or isinstance(error, KazooTimeoutError):
                    raise NotReachableError(
                        f"zookeeper at {self._hosts} not reachable within {self.timeout} s"
                    ) from error

    def _wait(self, result: Any, deadline: float) -> Any:
        """The result of a request, waiting until ``deadline``; in a feed's read,
        _Cancelled soon after the feed is closed."""
        cancel: threading.Event | None = getattr(self._reader, "cancel", None)
        if cancel is None:
            return result.get(timeout=max(deadline - time.monotonic(), 0.001))
        while True:
            remaining = deadline - time.monotonic()
            try:
                return result.get(timeout=max(min(remaining, CANCEL_CHECK), 0.001))
            except KazooTimeoutError:
                if cancel.is_set():
                    raise _Cancelled from None
                if remaining <= CANCEL_CHECK:
                    raise

    def _multi_read(
        self, reads: Sequence[tuple[str, str]], *, timeout: float | None = None
    ) -> tuple[list[ReadData | list[str] | None], int, bool]:
        """Results of ``reads`` (None for a missing node), the zxid they were read at,
        and whether they were read at one point (one request)."""
        chunks: list[list[tuple[str, str]]] = [[]]
        size = 0
        for read in reads:
            length = len(read[1]) + 24
            if chunks[-1] and size + length > READ_LIMIT:
                chunks.append([])
                size = 0
            chunks[-1].append(read)
            size += length
        results: list[ReadData | list[str] | None] = []
        zxid = 0
        for chunk in chunks:
            if not chunk:
                continue
            request = MultiRead(chunk)
            for result in self._send(request, write=False, timeout=timeout):
                if isinstance(result, int):
                    if result != NO_NODE:  # the only error a read of many nodes expects
                        raise EXCEPTIONS[result]()
                    results.append(None)
                else:
                    results.append(result)
            zxid = max(zxid, request.zxid)
        return results, zxid, len(chunks) == 1

    def _read_nodes(self, paths: Sequence[str]) -> tuple[dict[str, ReadData | None], int]:
        results, zxid, _ = self._multi_read([("data", path) for path in paths])
        return {
            path: result if isinstance(result, ReadData) else None
            for path, result in zip(paths, results, strict=True)
        }, zxid

    def _send_multi(self, operations: list[WriteOp]) -> list[Any]:
        size = protocol.request_size(operations)
        if size > REQUEST_LIMIT:
            raise ValueTooLargeError(
                f"the request of {size} bytes exceeds ZooKeeper's jute.maxbuffer "
                f"({JUTE_MAXBUFFER} bytes)"
            )
        request = Multi(operations)
        results: list[Any] = self._send(request, write=True)
        return results

    # -- reading --------------------------------------------------------------------------

    def _get(self, key: str) -> KVPair | None:
        try:
            data, stat = self._send(GetData(self._path(key), None), write=False)
        except NoNodeError:
            return None
        decoded = _decode(data)
        return None if decoded is None else KVPair(key, decoded[0], stat.mzxid)

    def _sync_before_reads(self) -> None:
        """Queue a sync ahead of the reads that follow, without waiting for it.

        A member answers a session's requests in order, so reads queued after a sync
        wait until the member has caught up with the leader: a list, or a watch's INIT
        snapshot, then holds every write acknowledged (to any client, through any
        member) before it was asked for. Pipelined, it costs no round trip of the
        client's; its own outcome does not matter (a lost connection fails the reads).
        """
        self._client._call(KazooSync("/"), self._client.handler.async_result())

    def _get_many(self, keys: Sequence[str]) -> list[KVPair | None]:
        if not keys:
            return []
        nodes, _ = self._read_nodes([self._path(key) for key in keys])
        return [self._pair(key, nodes[self._path(key)]) for key in keys]

    def _range(self, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
        self._sync_before_reads()
        if not recursive:
            read, revision = self._read_nodes([self._path(prefix)])
            pair = self._pair(prefix, read[self._path(prefix)])
            return ([pair] if pair is not None else []), revision
        root, include_root = self._range_root(prefix)
        nodes, zxid = self._snapshot(root)
        pairs = []
        for path, node in nodes.items():
            if path == root and not include_root:
                continue
            key = self._key(path)
            pair = None if key is None else self._pair(key, node)
            if pair is not None:
                pairs.append(pair)
        pairs.sort(key=lambda pair: pair.key)
        return pairs, zxid

    def _range_root(self, prefix: str) -> tuple[str, bool]:
        """The znode a driver prefix starts at, and whether that znode is in the range."""
        if not prefix:
            return self._base or "/", False
        if prefix[-1] == "/":
            return self._path(prefix[:-1]), False
        return self._path(prefix), True

    def _snapshot(self, root: str) -> tuple[dict[str, ReadData], int]:
        """Every node of the subtree at ``root`` (keys' subtrees only), as of one zxid.

        ZooKeeper has no subtree read, so this lists children and then reads every node's
        data in one multiRead, which the server answers from one state. The children lists
        are right for that state when each listed node's pzxid and child count are what
        they were when it was listed (pzxid changes with every child created or deleted);
        otherwise the changed nodes are listed again. When the subtree needs several
        requests, a second pass must find every mzxid and pzxid unchanged.
        """
        deadline = time.monotonic() + self.timeout
        listed: dict[str, tuple[int, int, list[str]]] = {}  # path -> (pzxid, count, children)
        while True:
            members = self._members(root, listed)
            results, zxid, atomic = self._multi_read([("data", path) for path in members])
            nodes = {
                path: result
                for path, result in zip(members, results, strict=True)
                if isinstance(result, ReadData)
            }
            stale = [
                path
                for path, node in nodes.items()
                if (node.stat.num_children > 0 or path in listed)
                and listed.get(path, (-1, -1, []))[:2] != (node.stat.pzxid, node.stat.num_children)
            ]
            vanished = len(nodes) < len(members) - (root not in nodes)
            if not stale and not vanished and (atomic or self._unchanged(nodes)):
                return nodes, zxid
            if time.monotonic() > deadline:
                raise KVError(f"the subtree at {root!r} kept changing while it was read")
            self._list(stale or list(listed), listed)

    def _members(self, root: str, listed: dict[str, tuple[int, int, list[str]]]) -> list[str]:
        members = [root]
        index = 0
        while index < len(members):
            path = members[index]
            index += 1
            entry = listed.get(path)
            if entry is None:
                continue
            prefix = "" if path == "/" else path
            for name in entry[2]:
                child = f"{prefix}/{name}"
                if self._key(child) is not None:
                    members.append(child)
        return members

    def _list(self, paths: Sequence[str], listed: dict[str, tuple[int, int, list[str]]]) -> None:
        """(Re)list ``paths``' children, each with the pzxid it was listed at."""
        reads = [read for path in paths for read in (("data", path), ("children", path))]
        results, _, _ = self._multi_read(reads)
        for index, path in enumerate(paths):
            node, children = results[2 * index], results[2 * index + 1]
            if isinstance(node, ReadData) and isinstance(children, list):
                listed[path] = (node.stat.pzxid, node.stat.num_children, children)
            else:
                listed.pop(path, None)

    def _unchanged(self, nodes: dict[str, ReadData]) -> bool:
        """Whether every node still has the mzxid and pzxid it was read with."""
        again, _ = self._read_nodes(list(nodes))
        return all(
            (node := again[path]) is not None
            and (node.stat.mzxid, node.stat.pzxid) == (old.stat.mzxid, old.stat.pzxid)
            for path, old in nodes.items()
        )

    # -- writing ------------------------------------------------------------------------

    def _commit(self, ops: Sequence[Op]) -> list[KVPair | None]:
        if len(ops) == 1:
            op = ops[0]
            if op.kind is OpKind.PUT and op.ttl is None and op.lease is None:
                # One setData when the node exists: a put costs what a raw set costs.
                try:
                    stat = self._send(
                        protocol_set_data(self._path(op.key), PLAIN + op.value), write=True
                    )
                except NoNodeError:
                    pass
                else:
                    return [KVPair(op.key, op.value, stat.mzxid)]
        deadline = time.monotonic() + self.timeout
        synced = False
        while True:
            plan = _Plan(self, ops)
            nodes, _ = self._read_nodes(plan.reads)
            error = first_failure(ops, [self._pair(op.key, nodes[path]) for op, path in plan.ops])
            if error is not None:
                if synced:
                    raise error
                # A follower may not have applied the write that makes the condition
                # hold yet: catch up with the leader before refusing.
                self._send(KazooSync(self._base or "/"), write=False)
                synced = True
                continue
            operations = plan.build(nodes)
            results = self._send_multi(operations)
            failed = next(
                (
                    (slot, result)
                    for slot, result in enumerate(results)
                    if _failed(result) and result not in (ROLLED_BACK, RUNTIME_INCONSISTENCY)
                ),
                None,
            )
            if failed is None:
                zxid = next((result.mzxid for result in results if isinstance(result, Stat)), 0)
                self._remove_empty_parents(plan.deleted)
                return [KVPair(op.key, op.value, zxid) if op.kind.writes else None for op in ops]
            slot, code = failed
            role, index = plan.roles[slot]
            if code == NO_AUTH:
                raise AuthenticationError(self._refused())
            if role == "lease" and code == NO_NODE:
                lease = ops[index].lease
                raise LeaseNotFoundError(f"lease {lease.id if lease else '?'} has expired")
            if role == "ttl" and code in (UNIMPLEMENTED, BAD_ARGUMENTS):
                raise NotSupportedError(
                    "ttl= and leases need TTL znodes: run ZooKeeper with "
                    "-Dzookeeper.extendedTypesEnabled=true"
                )
            if code == NO_CHILDREN_FOR_EPHEMERALS:
                raise KVError(
                    f"a parent of {ops[index].key!r} is an ephemeral znode of another "
                    f"client, which cannot have children"
                )
            # The state the conditions were checked on changed meanwhile: check again.
            if time.monotonic() > deadline:
                raise KVError(
                    f"keys kept changing during a transaction ({EXCEPTIONS[code].__name__})"
                )

    def _delete_range(self, prefix: str) -> int:
        root, include_root = self._range_root(prefix)
        deadline = time.monotonic() + self.timeout
        count = 0
        while True:
            nodes, _ = self._snapshot(root)
            doomed = sorted(
                (path for path in nodes if path != root or include_root), key=_depth, reverse=True
            )
            if not doomed:
                break
            done = True
            for start in range(0, len(doomed), MAX_WRITE_OPS):
                chunk = doomed[start : start + MAX_WRITE_OPS]
                results = self._send_multi([Delete(path, -1) for path in chunk])
                if any(_failed(result) for result in results):
                    done = False  # changed meanwhile: read again
                    break
                count += sum(1 for path in chunk if _decode(nodes[path].data) is not None)
            if done:
                break
            if time.monotonic() > deadline:
                raise KVError(f"the subtree at {root!r} kept changing while it was deleted")
        # The range's implicit ancestors (or its root, when only descendants went) may be empty.
        self._remove_empty_parents([root] if include_root else [root + "/x"])
        return count

    def _remove_empty_parents(self, paths: Iterable[str]) -> None:
        """Delete the implicit parents (no data) that ``paths``' deletion left childless."""
        pending = {_parent(path) for path in paths}
        while pending:
            candidates = sorted((path for path in pending if self._below_base(path)), key=_depth)
            pending = set()
            if not candidates:
                return
            try:
                nodes, _ = self._read_nodes(candidates)
                for path in reversed(candidates):
                    node = nodes[path]
                    if node is None or node.data or node.stat.num_children:
                        continue
                    results = self._send_multi([Delete(path, node.stat.version)])
                    if not any(_failed(result) for result in results):
                        pending.add(_parent(path))
            except KVError:
                log.debug("could not remove empty parents of %s", candidates, exc_info=True)
                return

    # -- leases -------------------------------------------------------------------------------

    def _grant_lease(self, ttl: float) -> int:
        deadline = time.monotonic() + self.timeout
        while True:
            lease_id = _new_lease_id()
            bookkeeping = [*_lineage(self._bookkeeping), self._lease_root, self._attached_root]
            nodes, _ = self._read_nodes(bookkeeping)
            operations: list[WriteOp] = [
                Create(path, b"", self._acl) for path in bookkeeping if nodes[path] is None
            ]
            operations += [
                CreateTTL(self._lease_path(lease_id), b"", self._acl, _milliseconds(ttl)),
                Create(f"{self._attached_root}/{lease_id:016x}", b"", self._acl),
            ]
            results = self._send_multi(operations)
            errors = [result for result in results if _failed(result)]
            if not errors:
                self._lease_clock[lease_id] = (time.monotonic(), ttl)
                return lease_id
            if UNIMPLEMENTED in errors or BAD_ARGUMENTS in errors:
                raise NotSupportedError(
                    "leases need TTL znodes: run ZooKeeper with "
                    "-Dzookeeper.extendedTypesEnabled=true"
                )
            if NO_AUTH in errors:
                raise AuthenticationError(self._refused())
            if time.monotonic() > deadline:
                raise KVError("could not create a lease znode")

    def _keepalive_lease(self, lease_id: int) -> bool:
        try:
            self._send(protocol_set_data(self._lease_path(lease_id), b""), write=False)
        except NoNodeError:
            return False
        clock = self._lease_clock.get(lease_id)
        if clock is not None:
            self._lease_clock[lease_id] = (time.monotonic(), clock[1])
        return True

    def _lease_ttl(self, lease_id: int) -> float | None:
        nodes, _ = self._read_nodes([self._lease_path(lease_id)])
        if nodes[self._lease_path(lease_id)] is None:
            self._lease_clock.pop(lease_id, None)
            return None
        refreshed, ttl = self._lease_clock.get(lease_id, (time.monotonic(), 0.0))
        # Until the server reaps it the znode is there; ask again soon after the ttl.
        return max(ttl - (time.monotonic() - refreshed), 0.0)

    def _revoke_lease(self, lease_id: int) -> None:
        self._lease_clock.pop(lease_id, None)
        self._send_multi([Delete(self._lease_path(lease_id), -1)])  # absent already: fine
        deadline = time.monotonic() + self.timeout
        while not self._reap_lease(f"{lease_id:016x}"):
            if time.monotonic() > deadline:
                raise KVError(f"could not delete the keys of lease {lease_id}")

    def _reap_loop(self) -> None:
        while not self._stopping.wait(REAP_INTERVAL):
            if not self._connected.is_set() or self.closed:
                continue
            try:
                results, _, _ = self._multi_read(
                    [("children", self._attached_root), ("children", self._lease_root)],
                    timeout=1.0,
                )
                attached, live = results
                if not isinstance(attached, list):
                    continue
                alive = set(live) if isinstance(live, list) else set()
                for name in attached:
                    if name not in alive:
                        self._reap_lease(name)
            except (KVError, KazooException):
                log.debug("reaping expired leases failed; trying again", exc_info=True)

    def _reap_lease(self, name: str) -> bool:
        """Delete the keys still attached to the dead lease ``name``; True once done."""
        directory = f"{self._attached_root}/{name}"
        try:
            lease_id = int(name, 16)
        except ValueError:
            return True
        results, _, _ = self._multi_read([("children", directory)])
        entries = results[0]
        if not isinstance(entries, list):
            return True
        paths = [self._base + "/" + unflatten(entry) for entry in entries]
        nodes, _ = self._read_nodes(paths) if paths else ({}, 0)
        operations: list[WriteOp] = []
        deleted = []
        for entry, path in zip(entries, paths, strict=True):
            node = nodes[path]
            decoded = None if node is None else _decode(node.data)
            if node is not None and decoded is not None and decoded[1] == lease_id:
                if node.stat.num_children == 0:
                    operations.append(Delete(path, node.stat.version))
                    deleted.append(path)
                else:  # its children stay: it becomes their implicit parent
                    operations.append(SetData(path, b"", node.stat.version))
            operations.append(Delete(f"{directory}/{entry}", -1))
        operations.append(Delete(directory, -1))
        if any(_failed(result) for result in self._send_multi(operations)):
            return False
        self._remove_empty_parents(deleted)
        return True

    # -- watching -------------------------------------------------------------------------------

    def _open_feed(self, prefix: str, after: int | None) -> _Feed:
        root = self._range_root(prefix)[0]
        deadline = time.monotonic() + OPEN_FEED_WAIT
        self._await_connection(deadline)
        with self._watch_lock:
            # Requests leave in the order they are queued: adding and removing a path's
            # watch are queued under the lock, so a removal never overtakes an addition.
            feed = _Feed(self, root, self._generation)
            self._feeds = (*self._feeds, feed)
            count = self._watched.get(root, 0)
            self._watched[root] = count + 1
            added = self._client.handler.async_result()
            # The watch on root exists already on this connection: an exists request
            # proves the connection still answers (a feed opened on a frozen server
            # would let the engine's re-read block for a whole timeout).
            request = (
                protocol.AddWatch(root, protocol.WATCH_PERSISTENT_RECURSIVE)
                if count == 0
                else Exists("/", None)
            )
            self._client._call(request, added)
        try:
            added.get(timeout=max(deadline - time.monotonic(), OPEN_FEED_WAIT))
        except BaseException as error:
            self._forget(feed)
            if isinstance(error, (ConnectionLoss, SessionExpiredError, KazooTimeoutError)):
                raise NotReachableError(
                    f"zookeeper at {self._hosts}: could not open a watch: {error!r}"
                ) from error
            raise
        with self._watch_lock:
            if feed.generation != self._generation:
                feed.lose()
        return feed

    def _forget(self, feed: _Feed) -> None:
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

    def _read_changes(self, paths: Sequence[str]) -> FeedBatch | None:
        keys: list[str] = []
        reads: list[str] = []
        for path in paths:
            key = self._key(path)
            if key is not None:
                keys.append(key)
                reads.append(path)
        if not keys:
            return None
        nodes, zxid = self._read_nodes(reads)
        pairs = [
            pair
            for key, path in zip(keys, reads, strict=True)
            if (pair := self._pair(key, nodes[path])) is not None
        ]
        return FeedBatch(zxid, snapshot=pairs, keys=keys)

    def _full_snapshot(self, root: str) -> FeedBatch:
        nodes, zxid = self._snapshot(root)
        pairs = []
        for path, node in nodes.items():
            key = self._key(path)
            pair = None if key is None else self._pair(key, node)
            if pair is not None:
                pairs.append(pair)
        pairs.sort(key=lambda pair: pair.key)
        return FeedBatch(zxid, snapshot=pairs)

    # -- errors and closing ---------------------------------------------------------------------

    def _translate_error(self, error: Exception) -> KVError | None:
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

    def _close(self) -> None:
        self._stopping.set()
        # kazoo's stop() waits for its connection thread, which may be stuck connecting
        # to a frozen server for seconds: let it finish on its own.
        closer = threading.Thread(target=self._stop_client, name="libkv-zookeeper-close")
        closer.daemon = True
        closer.start()
        closer.join(CLOSE_WAIT)

    def _stop_client(self) -> None:
        try:
            self._client.stop()
            self._client.close()
        except Exception:
            log.debug("error stopping the kazoo client", exc_info=True)


class _Plan:
    """One attempt at a commit: what to read, and the multi built from what was read.

    Conditions are evaluated (``first_failure``) on the nodes read; the multi then
    carries a check for each of them, so it applies only if they still hold:

    * a node that exists is written with ``setData(version=the data version read)``
      (put: any version), deleted with ``delete(version=...)``, or checked with
      ``check(version=...)``. The condition was on the mzxid read with that data
      version, and the data version only changes with a write that also changes the
      mzxid. A delete and re-create between the read and the multi restarts the data
      version at 0: it fools the check only if the new node is rewritten to exactly the
      data version read, within one round trip.
    * a node that does not exist is created (``create`` fails if it exists by then);
      absence alone (``check(key, 0)``) is checked by creating and deleting the highest
      missing node on its path.
    """

    def __init__(self, store: ZooKeeperStore, ops: Sequence[Op]) -> None:
        self.store = store
        self.source = ops
        self.ops = [(op, store._path(op.key)) for op in ops]
        self.ttl_leases: dict[float, int] = {}
        self.deleted: list[str] = []
        self.roles: list[tuple[str, int]] = []
        reads: dict[str, None] = {}
        leased = False
        for op, path in self.ops:
            reads[path] = None
            parent = _parent(path)
            while parent:
                reads[parent] = None
                parent = _parent(parent)
            lease_id = self._lease_id(op)
            if lease_id:
                leased = True
                entry = store._entry_path(lease_id, path)
                reads[_parent(entry)] = None
                reads[entry] = None
        if leased:
            for path in (store._bookkeeping, store._lease_root, store._attached_root):
                reads[path] = None
        self.reads = list(reads)

    def _lease_id(self, op: Op) -> int:
        if op.lease is not None:
            return op.lease.id
        if op.ttl is not None:
            if op.ttl not in self.ttl_leases:
                self.ttl_leases[op.ttl] = _new_lease_id()
            return self.ttl_leases[op.ttl]
        return 0

    def build(self, nodes: dict[str, ReadData | None]) -> list[WriteOp]:
        store = self.store
        acl = store._acl
        operations: list[WriteOp] = []
        roles = self.roles
        exists = {path for path, node in nodes.items() if node is not None}

        def add(operation: WriteOp, role: str, index: int) -> None:
            operations.append(operation)
            roles.append((role, index))

        def ensure(path: str, index: int) -> None:
            missing = []
            parent = _parent(path)
            while parent and parent not in exists:
                missing.append(parent)
                parent = _parent(parent)
            for ancestor in reversed(missing):
                add(Create(ancestor, b"", acl), "parent", index)
                exists.add(ancestor)

        for index, (op, path) in enumerate(self.ops):  # absence checks come first
            if op.kind is OpKind.CHECK and op.version == 0 and nodes[path] is None:
                highest = path
                while _parent(highest) and nodes.get(_parent(highest)) is None:
                    highest = _parent(highest)
                add(Create(highest, b"", acl), "guard", index)
                add(Delete(highest, 0), "guard", index)
        for index, (op, _path) in enumerate(self.ops):
            if op.lease is not None:
                add(Check(store._lease_path(op.lease.id), -1), "lease", index)
        for ttl, lease_id in self.ttl_leases.items():
            index = next(i for i, (op, _) in enumerate(self.ops) if op.ttl == ttl)
            ensure(store._attached_root + "/x", index)
            ensure(store._lease_root + "/x", index)
            add(CreateTTL(store._lease_path(lease_id), b"", acl, _milliseconds(ttl)), "ttl", index)
            directory = f"{store._attached_root}/{lease_id:016x}"
            add(Create(directory, b"", acl), "ttl", index)
            exists.add(directory)
        # Nodes this multi writes a child under: a deleted key among them stays their
        # implicit parent instead of being deleted, whatever the order of the ops.
        parents = {
            ancestor for op, path in self.ops if op.kind.writes for ancestor in _lineage(path)[:-1]
        }
        for index, (op, path) in enumerate(self.ops):
            node = nodes[path]
            kind = op.kind
            if kind.writes:
                lease_id = op.lease.id if op.lease is not None else self._lease_id(op)
                data = _encode(op.value, lease_id)
                if node is not None:
                    version = -1 if kind is OpKind.PUT else node.stat.version
                    add(SetData(path, data, version), "op", index)
                elif path in exists:
                    # An earlier op of this multi created it as the implicit parent of
                    # its key (data version 0): it becomes a value, its children stay.
                    add(SetData(path, data, 0), "op", index)
                else:
                    ensure(path, index)
                    add(Create(path, b"", acl), "op", index)
                    add(SetData(path, data, 0), "op", index)  # its stat carries the zxid
                    exists.add(path)
                if lease_id:
                    entry = store._entry_path(lease_id, path)
                    if entry not in exists:
                        ensure(entry, index)
                        add(Create(entry, b"", acl), "entry", index)
                        exists.add(entry)
            elif kind is OpKind.DELETE:
                assert node is not None  # first_failure saw the key
                if node.stat.num_children == 0 and path not in parents:
                    add(Delete(path, node.stat.version), "op", index)
                    self.deleted.append(path)
                else:  # its children stay readable: it becomes their implicit parent
                    add(SetData(path, b"", node.stat.version), "op", index)
            elif node is not None:  # a check of an existing node (absence: see above)
                add(Check(path, node.stat.version), "op", index)
        return operations


def protocol_set_data(path: str, data: bytes) -> Any:
    """A plain setData request (any version) as kazoo sends it; it answers the stat."""
    return KazooSetData(path, data, -1)


def _failed(result: object) -> bool:
    """Whether a multi slot holds an error code (successes are stats, paths or True)."""
    return type(result) is int


def _new_lease_id() -> int:
    return random.getrandbits(63) or 1


def _milliseconds(ttl: float) -> int:
    return max(int(ttl * 1000 + 0.999), 1)


class _Feed:
    """Changes under one znode, from the Store's persistent recursive watch on it.

    The first poll returns the whole subtree (read after the watch was added, so no
    change is missed); later polls return a partial snapshot of just the nodes the
    watch named since. A connection loss ends the feed (NotReachableError): the engine
    opens a new one, which adds the watch again and re-reads everything. So does a
    Store that has heard nothing from the server for ``WATCH_STALL`` (a frozen or
    partitioned server, which kazoo notices only two thirds of a session timeout later).
    """

    def __init__(self, store: ZooKeeperStore, root: str, generation: int) -> None:
        self.store = store
        self.root = root
        self.generation = generation
        self._scope = "/" if root == "/" else root + "/"
        self._condition = threading.Condition()
        self._dirty: dict[str, None] = {}
        self._full = True
        self._lost = False
        self._closed = False
        self._stall = min(WATCH_STALL, store.timeout / 4)
        self._cancelled = threading.Event()  # set by close(): a read for poll gives up

    def offer(self, path: str) -> None:
        """A watch event's path (kazoo's reader thread: must not block)."""
        if path == self.root or path.startswith(self._scope):
            with self._condition:
                self._dirty[path] = None
                self._condition.notify()

    def lose(self) -> None:
        with self._condition:
            self._lost = True
            self._condition.notify()

    def poll(self, timeout: float) -> FeedBatch | None:
        """See :class:`libkv.watching.Feed`."""
        store = self.store
        deadline = time.monotonic() + timeout
        with self._condition:
            while not (self._dirty or self._full or self._lost or self._closed):
                # Returning None asserts contact: only while the server has answered
                # within the stall bound, which a probe keeps true on an idle connection.
                now = time.monotonic()
                silent = now - store._heard
                if silent > self._stall:
                    raise NotReachableError(
                        f"zookeeper at {store._hosts}: no answer for {silent:.1f} s"
                    )
                if silent > self._stall / 2:
                    store._probe()
                    check = store._heard + self._stall
                else:
                    check = store._heard + self._stall / 2
                if now >= deadline:
                    break
                self._condition.wait(max(min(deadline, check) - now, 0.001))
            if self._closed:
                return None
            if self._lost:
                raise NotReachableError(
                    f"zookeeper at {self.store._hosts}: connection lost; the watch re-reads"
                )
            full, self._full = self._full, False
            paths = list(self._dirty)
            self._dirty.clear()
        if not full and not paths:
            return None
        store._reader.cancel = self._cancelled
        try:
            return store._full_snapshot(self.root) if full else store._read_changes(paths)
        except _Cancelled:
            return None  # closed meanwhile: what was read no longer matters
        finally:
            store._reader.cancel = None

    def close(self) -> None:
        self._cancelled.set()
        with self._condition:
            self._closed = True
            self._condition.notify()
        self.store._forget(self)


def _read_file(option: str, path: object) -> str:
    try:
        with open(str(path), "rb"):
            pass
    except OSError as error:
        raise InvalidURLError(f"cannot read the {option}= file {path!r}: {error}") from error
    return str(path)


def _chroot(path: str) -> str:
    chroot = path.rstrip("/")
    if not chroot:
        return ""
    segments = chroot.split("/")[1:]
    if any(segment in ("", ".", "..") for segment in segments):
        raise InvalidURLError(f"invalid ZooKeeper chroot {path!r}")
    return "/" + "/".join(encode_segment(segment) for segment in segments)


def open_zookeeper(url: StoreURL) -> ZooKeeperStore:
    """The ``zookeeper`` scheme's initializer."""
    options = url.read_options(
        {
            "timeout": parse_seconds,
            "session_timeout": parse_seconds,
            "tls": parse_bool,
            "ca": str,
            "cert": str,
            "key": str,
            "verify": parse_bool,
            "check_interval": parse_seconds,
        }
    )
    if ("cert" in options) != ("key" in options):
        raise InvalidURLError("zookeeper:// client certificates need both cert= and key=")
    tls: dict[str, Any] = {}
    if options.get("tls") or "ca" in options or "cert" in options:
        if options.get("tls") is False:
            raise InvalidURLError("tls=false contradicts ca=/cert=")
        tls["use_ssl"] = True
        tls["verify_certs"] = options.get("verify", True)
        if "ca" in options:
            tls["ca"] = _read_file("ca", options["ca"])
        if "cert" in options:
            tls["certfile"] = _read_file("cert", options["cert"])
            tls["keyfile"] = _read_file("key", options["key"])
    elif "verify" in options:
        raise InvalidURLError("verify= applies to TLS only (tls=true, ca= or cert=)")
    hosts = url.hosts or (("127.0.0.1", None),)
    addresses = ",".join(
        f"[{host}]:{port or DEFAULT_PORT}" if ":" in host else f"{host}:{port or DEFAULT_PORT}"
        for host, port in hosts
    )
    return ZooKeeperStore(
        url,
        hosts=addresses,
        chroot=_chroot(url.path),
        namespace=options.get("prefix", ""),
        timeout=options.get("timeout", 10.0),
        session_timeout=options.get("session_timeout", 10.0),
        check_interval=options.get("check_interval", CHECK_INTERVAL),
        tls=tls,
    )
