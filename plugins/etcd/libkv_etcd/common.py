"""What the two flavours of the etcd driver share: everything but the I/O.

The sync backend (:mod:`libkv_etcd.driver`) and the async one
(:mod:`libkv_etcd._async.driver`, its source) send the same gRPC requests on the same
stubs (a ``grpc.aio`` channel makes them awaitable) and read the same replies; what is
sent and how a reply or an error is read is here, once: the URL's settings, the
requests, the Txn conditions, the translation of gRPC errors, and the routing of one
watch stream's responses to the watches it carries (:class:`Router`).
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpc
from pyetcd import etcdrpc

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
    StoreClosedError,
    StoreURL,
    UnknownOutcomeError,
    ValueTooLargeError,
    first_failure,
    in_prefix,
    parse_bool,
    parse_seconds,
)

__all__ = ["CAPABILITIES", "Router", "Settings", "WatchState", "read_settings", "translate"]

T = TypeVar("T")

DEFAULT_PORT = 2379
MAX_REQUEST_BYTES = 1536 * 1024  # etcd's default --max-request-bytes

CAPABILITIES = Capabilities(
    watch_every_change=True,
    watch_resume=True,
    # etcd raises shorter leases to 3/2 election timeouts (1.5 s, so 2 s) by default.
    ttl_min=2.0,
    ttl_max=9e9,  # etcd's MaxLeaseTTL (9,000,000,000 s); longer leases: "too large lease TTL"
    # ttl rounded up to whole seconds (< 1 s), the leader's 500 ms expiry scan, raft.
    ttl_slack=2.0,
    max_value_size=MAX_REQUEST_BYTES - 8 * 1024,  # room for the key and the Txn around it
    max_transaction_ops=128,  # etcd's default --max-txn-ops
    native_async=True,  # libkv.aio runs the driver's own async backend
)

ALL_KEYS = b"\0"  # as key and range_end: the whole keyspace
_PUT = 0  # mvccpb.Event.PUT
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.keepalive_time_ms", 10_000),  # etcd refuses pings more often than every 5 s
    ("grpc.keepalive_timeout_ms", 5_000),  # a hung member ends its watch streams in ~15 s
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]
# Details of an UNAVAILABLE error meaning that the request was certainly not applied.
_NOT_SENT = (
    "failed to connect",
    "connection refused",
    "etcdserver: no leader",
    "etcdserver: too many requests",
    "name resolution",
)
# Sent with every request: a member without a leader refuses it at once ("no leader",
# certainly not applied, so we try the next member) and cancels such watches, rather
# than letting a write wait for its deadline or a watch sit on a stale member.
LEADER = (("hasleader", "true"),)
_OUTCOME_UNKNOWN_NOTE = "libkv: the write was sent; its outcome is unknown"
# A create refused for these cancel reasons may succeed on a stream with a new token.
_STALE_TOKEN = ("invalid auth token", "auth store is old", "user name is empty")
_AUTH_MESSAGES = ("authentication failed", "user name is empty", "authentication is not enabled")

# A watch stream silent for STREAM_STALL (at most; a quarter of the store's timeout
# if less) is taken as unreachable, so a frozen member is reported within the store's
# timeout plus about a second; one silent for half of that is asked for a progress
# report, which etcd answers at once (for every watch of the stream).
STREAM_STALL = 0.9
# Events a watch holds for its consumer. A watch whose consumer lags further is
# cancelled on the stream (the others carry on) and created again from its last held
# revision once the consumer has taken what it holds: etcd's history fills the gap.
WATCH_BUFFER = 1000
# Events an async poll decodes at most (whole revisions), so that a callback of the
# loop stays short (and the garbage collection its allocations may trigger).
ASYNC_POLL_EVENTS = 100


@dataclass(frozen=True, slots=True)
class TLS:
    ca: bytes | None
    cert: bytes | None
    key: bytes | None


@dataclass(frozen=True, slots=True)
class Settings:
    """A store's URL, read: the members' addresses and the connection's options."""

    url: StoreURL
    addresses: list[str]
    namespace: str
    timeout: float
    tls: TLS | None

    @property
    def credentials(self) -> tuple[str, str] | None:
        url = self.url
        if url.username is None and url.password is None:
            return None
        return (url.username or "", url.password or "")


def read_settings(url: StoreURL) -> Settings:
    """The settings of an ``etcd://`` URL; InvalidURLError for a bad option."""
    options = url.read_options(
        {"timeout": parse_seconds, "tls": parse_bool, "ca": str, "cert": str, "key": str}
    )
    if ("cert" in options) != ("key" in options):
        raise InvalidURLError("etcd:// client certificates need both cert= and key=")
    tls = None
    if options.get("tls") or "ca" in options or "cert" in options:
        if options.get("tls") is False:
            raise InvalidURLError("tls=false contradicts ca=/cert=")
        tls = TLS(
            _read_file("ca", options["ca"]) if "ca" in options else None,
            _read_file("cert", options["cert"]) if "cert" in options else None,
            _read_file("key", options["key"]) if "key" in options else None,
        )
    hosts = url.hosts or (("127.0.0.1", None),)
    addresses = [
        f"[{host}]:{port or DEFAULT_PORT}" if ":" in host else f"{host}:{port or DEFAULT_PORT}"
        for host, port in hosts
    ]
    namespace = options.get("prefix", url.path.strip("/"))
    return Settings(url, addresses, namespace, options.get("timeout", 10.0), tls)


def _read_file(option: str, path: object) -> bytes:
    try:
        with open(str(path), "rb") as file:
            return file.read()
    except OSError as error:
        raise InvalidURLError(f"cannot read the {option}= file {path!r}: {error}") from error


# -- requests and replies --------------------------------------------------------------


def range_of(prefix: str, message: Callable[..., T]) -> T:
    """A request over every key starting with ``prefix`` (``""``: every key)."""
    if not prefix:
        return message(key=ALL_KEYS, range_end=ALL_KEYS)
    start = prefix.encode()
    return message(key=start, range_end=start[:-1] + bytes([start[-1] + 1]))


def pairs(kvs: Any) -> list[KVPair]:
    return [KVPair(kv.key.decode(), kv.value, kv.mod_revision) for kv in kvs]


def get_many_request(keys: Sequence[str]) -> Any:
    """One Txn reading ``keys``."""
    return etcdrpc.TxnRequest(
        success=[
            etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key.encode())) for key in keys
        ]
    )


def get_many_result(keys: Sequence[str], response: Any) -> list[KVPair | None]:
    results: list[KVPair | None] = []
    for key, reply in zip(keys, response.responses, strict=True):
        kvs = reply.response_range.kvs
        results.append(KVPair(key, kvs[0].value, kvs[0].mod_revision) if kvs else None)
    return results


def select(prefix: str, recursive: bool, message: Callable[..., T]) -> list[T]:
    """The ranges of the key ``prefix`` (and, ``recursive``, of its descendants)."""
    if recursive and (not prefix or prefix[-1] == "/"):
        return [range_of(prefix, message)]
    ranges = [message(key=prefix.encode())]
    if recursive:
        ranges.append(range_of(prefix + "/", message))
    return ranges


def lease_of(op: Op, leases: dict[int, int]) -> int:
    if op.lease is not None:
        return op.lease.id
    if op.ttl is not None:
        return leases[math.ceil(op.ttl)]
    return 0


def ttl_seconds(ops: Sequence[Op]) -> list[int]:
    """The distinct ttls among ``ops``, in whole seconds (rounded up): a lease each."""
    return list(dict.fromkeys(math.ceil(op.ttl) for op in ops if op.ttl is not None))


def conditions(op: Op) -> list[Any]:
    """The Txn compares that hold exactly when ``first_failure`` finds nothing wrong."""
    key = op.key.encode()
    kind, version = op.kind, op.version
    if kind is OpKind.PUT:
        return []
    if kind is OpKind.CREATE or (kind is OpKind.CHECK and version == 0):
        return [etcdrpc.Compare(key=key, target=etcdrpc.Compare.CREATE, create_revision=0)]
    exists = etcdrpc.Compare(
        key=key, target=etcdrpc.Compare.CREATE, result=etcdrpc.Compare.GREATER, create_revision=0
    )
    if version is None:
        return [exists]
    at_version = etcdrpc.Compare(key=key, target=etcdrpc.Compare.MOD, mod_revision=version)
    return [at_version] if version > 0 else [exists, at_version]


def commit_request(ops: Sequence[Op], compares: list[list[Any]], leases: dict[int, int]) -> Any:
    """The Txn applying ``ops`` under ``compares``; its failure branch reads the keys."""
    compare: list[Any] = []
    success: list[Any] = []
    failure: list[Any] = []
    for op, condition in zip(ops, compares, strict=True):
        key = op.key.encode()
        compare.extend(condition)
        if op.kind is OpKind.DELETE:
            request = etcdrpc.DeleteRangeRequest(key=key)
            success.append(etcdrpc.RequestOp(request_delete_range=request))
        elif op.kind is not OpKind.CHECK:
            request = etcdrpc.PutRequest(key=key, value=op.value, lease=lease_of(op, leases))
            success.append(etcdrpc.RequestOp(request_put=request))
        failure.append(etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key)))
    return etcdrpc.TxnRequest(compare=compare, success=success, failure=failure if compare else [])


def commit_failure(ops: Sequence[Op], response: Any) -> KVError:
    """The error of a Txn whose conditions failed, explained from the keys it read."""
    current: list[KVPair | None] = [
        next(iter(pairs(reply.response_range.kvs)), None) for reply in response.responses
    ]
    return first_failure(ops, current) or KVError(
        "etcd refused a transaction whose conditions hold"
    )


def grant_result(response: Any) -> int:
    if response.error:
        raise KVError(f"etcd refused a lease: {response.error}")
    return int(response.ID)


def watch_request(prefix: str, start: int) -> Any:
    """The request creating a watch of ``prefix`` from revision ``start`` (0: now)."""
    create = range_of(prefix, etcdrpc.WatchCreateRequest)
    create.start_revision = start
    create.progress_notify = True
    return etcdrpc.WatchRequest(create_request=create)


CANCEL = etcdrpc.WatchCancelRequest
PROGRESS_REQUEST = etcdrpc.WatchRequest(progress_request=etcdrpc.WatchProgressRequest())


# -- errors --------------------------------------------------------------------------


class Retry:
    """What the request loop does with a gRPC error (the I/O-free half of that loop)."""

    UNAUTHENTICATED = "reauthenticate"
    NEXT = "next member"
    RAISE = "raise"


def judge(error: grpc.RpcError, *, write: bool, reauthenticate: bool) -> str:
    """Whether a request that failed with ``error`` is sent again: once with a new
    token, elsewhere if certainly not applied, else raised (a write that may have been
    applied is noted as of unknown outcome)."""
    code = error.code()
    details = (error.details() or "").lower()
    if code is grpc.StatusCode.UNAUTHENTICATED and reauthenticate:
        return Retry.UNAUTHENTICATED  # the token expired: a new one, once
    if code is not grpc.StatusCode.UNAVAILABLE:
        if write and code is grpc.StatusCode.DEADLINE_EXCEEDED:
            error.add_note(_OUTCOME_UNKNOWN_NOTE)
        return Retry.RAISE
    if write and not any(reason in details for reason in _NOT_SENT):
        error.add_note(_OUTCOME_UNKNOWN_NOTE)
        return Retry.RAISE
    return Retry.NEXT


def translate(
    error: Exception, url: StoreURL, endpoint: str, timeout: float, *, closed: bool
) -> KVError | None:
    """The KVError for an exception of gRPC (either flavour) or protobuf, else None."""
    if isinstance(error, ValueError) and "closed channel" in str(error):
        return StoreClosedError(f"store is closed: {url}")
    if isinstance(error, (ValueError, OverflowError)) and "out of range" in str(error):
        # protobuf refusing a number its int64 field cannot hold: nothing was sent.
        return InvalidArgumentError(f"a number is out of etcd's range: {error}")
    if not isinstance(error, grpc.RpcError):
        return None
    code = error.code()
    details = error.details() or ""
    where = f"etcd at {endpoint}"
    if _OUTCOME_UNKNOWN_NOTE in getattr(error, "__notes__", ()):
        return UnknownOutcomeError(f"{where}: write may or may not be applied: {details}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return NotReachableError(f"{where} not reachable within {timeout} s: {details}")
    if code is grpc.StatusCode.CANCELLED:
        if closed:
            return StoreClosedError(f"store is closed: {url}")
        return NotReachableError(f"{where}: request cancelled: {details}")
    if code is grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
        return HistoryLostError(f"{where}: {details}")
    if "too large lease ttl" in details.lower():
        return InvalidArgumentError(
            f"{where}: a ttl above etcd's maximum of {CAPABILITIES.ttl_max:g} s: {details}"
        )
    if code is grpc.StatusCode.NOT_FOUND and "lease" in details:
        return LeaseNotFoundError(f"{where}: lease has expired or was revoked")
    if "request is too large" in details:
        return ValueTooLargeError(
            f"{where}: request exceeds the server's --max-request-bytes: {details}"
        )
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) or any(
        message in details for message in _AUTH_MESSAGES
    ):
        return AuthenticationError(f"{where} refused user {url.username!r}: {details}")
    return KVError(f"{where}: {code.name}: {details}")


def stream_error(error: BaseException, address: str) -> BaseException:
    """What the watches of a stream that broke with ``error`` raise: the error itself
    if it says why etcd refused them (authentication, compaction), else
    NotReachableError (a member killed or cut off; grpc.aio then reports a failed
    write as INTERNAL)."""
    if not isinstance(error, grpc.RpcError):
        return error
    code = error.code()
    refused = code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    if refused or (code is grpc.StatusCode.OUT_OF_RANGE and is_compacted(error)):
        return cast(BaseException, error)
    return NotReachableError(
        f"the watch stream to etcd at {address} broke: {code.name}: {error.details()}"
    )


def is_compacted(error: grpc.RpcError) -> bool:
    return "compacted" in (error.details() or "")


# -- the watch stream -------------------------------------------------------------------


class WatchState:
    """One watch carried by a shared stream: what its consumer has not taken yet.

    The stream's reader adds responses (at most ``WATCH_BUFFER`` events, one response
    over that when it was empty); the feed's poll takes them. ``revision`` is the last
    revision held or taken: the watch is consistent up to it. ``news`` (an asyncio or
    threading Event, the flavour's) is set when there is news for the poller.
    """

    def __init__(self, prefix: str, after: int | None, news: Any) -> None:
        self.news = news
        self.opened = time.monotonic()
        self.prefix = prefix
        self.filter = bool(prefix) and prefix[-1] != "/"  # the range also holds p-x, p.x
        self.revision = after or 0
        self.now = after is None  # created from "now": its creation gives the revision
        self.watch_id: int | None = None  # on the stream; None while created or suspended
        self.held: collections.deque[Any] = collections.deque()
        self.size = 0  # events held
        self._offset = 0  # events of the first held response already taken
        self.suspended = False  # cancelled on the stream while its consumer lags
        self.answered = False  # heard from etcd since the last batch
        self.error: BaseException | None = None
        self.closed = False

    def wake(self) -> None:
        """Tell the poller there is news."""
        self.news.set()

    def hold(self, response: Any) -> bool:
        """Add a response for the consumer; False if the buffer is full (not added)."""
        count = len(response.events)
        if self.held and self.size + count > WATCH_BUFFER:
            return False
        self.held.append(response)
        self.size += count
        if response.events:
            self.revision = max(self.revision, int(response.events[-1].kv.mod_revision))
        else:  # a progress notification: caught up to the header's revision
            self.revision = max(self.revision, int(response.header.revision))
        return True

    def take(self, limit: int | None) -> FeedBatch | None:
        """What the watch holds, as one batch (None if it heard nothing), at most
        ``limit`` events but whole revisions; raises its error once the held changes
        are taken."""
        if not self.held and not self.answered:
            if self.error is not None:
                error, self.error = self.error, None
                raise error
            return None
        changes: list[Event] = []
        taken = 0
        revision = 0  # the last revision taken whole
        while self.held and (limit is None or taken < limit):
            response = self.held[0]
            events = response.events
            if not events:  # a progress notification
                revision = max(revision, int(response.header.revision))
                self.held.popleft()
                continue
            start = self._offset
            end = len(events) if limit is None else min(len(events), start + limit - taken)
            while (
                end < len(events) and events[end].kv.mod_revision == events[end - 1].kv.mod_revision
            ):
                end += 1  # a revision is never split
            self._decode(events[start:end], changes)
            revision = max(revision, int(events[end - 1].kv.mod_revision))
            taken += end - start
            self.size -= end - start
            if end == len(events):
                self.held.popleft()
                self._offset = 0
            else:
                self._offset = end
        self.answered = False
        return FeedBatch(revision if self.held else self.revision, changes)

    def _decode(self, events: Any, changes: list[Event]) -> None:
        prefix, check = self.prefix, self.filter
        for event in events:
            kv = event.kv
            key = kv.key.decode()
            if check and not in_prefix(key, prefix):
                continue
            revision = kv.mod_revision
            if event.type == _PUT:
                changes.append(Event(Action.UPDATE, key, KVPair(key, kv.value, revision), revision))
            else:
                changes.append(Event(Action.DELETE, key, None, revision))

    def create_request(self) -> Any:
        return watch_request(self.prefix, 0 if self.now else self.revision + 1)


class Router:
    """The watches of one gRPC Watch stream, and the routing of its responses.

    etcd (3.4) answers the create requests of a stream in order, each with a
    ``created`` response naming the new watch id, so creates wait in a queue; events
    and progress notifications carry their watch id, and the answer to a progress
    request (watch id -1) is for every watch. Each method returns the requests to
    send on the stream; the flavour's stream sends them and wakes the watches.
    Not thread-safe: the sync stream calls it under a lock.
    """

    def __init__(self) -> None:
        self.creating: collections.deque[WatchState] = collections.deque()
        self.watches: dict[int, WatchState] = {}
        self.failed: BaseException | None = None
        self.stale_token = False  # etcd refused a create for the stream's token

    def __len__(self) -> int:
        return len(self.creating) + len(self.watches)

    def add(self, watch: WatchState) -> Any:
        """The request creating ``watch`` on the stream."""
        self.creating.append(watch)
        return watch.create_request()

    def remove(self, watch: WatchState) -> Any | None:
        """End ``watch``: the request cancelling it on the stream, if it is there."""
        watch.closed = True
        if watch.watch_id is None:
            return None  # still being created: cancelled when its creation is answered
        watch_id, watch.watch_id = watch.watch_id, None
        del self.watches[watch_id]
        return etcdrpc.WatchRequest(cancel_request=CANCEL(watch_id=watch_id))

    def resume(self, watch: WatchState) -> Any | None:
        """Once a suspended watch's consumer took what it held: create it again after
        its last revision (etcd's history has what came meanwhile)."""
        if not watch.suspended or watch.held or watch.closed:
            return None
        watch.suspended = False
        return self.add(watch)

    def route(self, response: Any, woken: list[WatchState]) -> list[Any]:
        """Take one response from etcd; add the watches to wake to ``woken``."""
        watch_id = int(response.watch_id)
        if response.created:
            if not self.creating:
                return []
            created = self.creating.popleft()
            if response.canceled or watch_id < 0:
                # The stream's token (its metadata, sent once) expired: the store's next
                # watches go on a new stream, with a new token.
                reason = response.cancel_reason
                self.stale_token |= any(stale in reason for stale in _STALE_TOKEN)
                created.error = _cancelled(response)
                woken.append(created)
                return []
            if created.closed:
                return [etcdrpc.WatchRequest(cancel_request=CANCEL(watch_id=watch_id))]
            created.watch_id = watch_id
            self.watches[watch_id] = created
            if created.now:
                created.now = False
                created.revision = max(created.revision, int(response.header.revision))
            created.answered = True
            woken.append(created)
            return []
        if watch_id < 0:  # a progress request's answer: contact, for every watch
            for each in self.watches.values():
                each.answered = True
                woken.append(each)
            return []
        watch = self.watches.get(watch_id)
        if watch is None:
            return []  # a watch cancelled meanwhile
        if response.canceled or response.compact_revision:
            del self.watches[watch_id]
            watch.watch_id = None
            watch.error = _cancelled(response)
        elif not watch.hold(response):
            # The consumer lags: this watch alone stops; resume() creates it again.
            del self.watches[watch_id]
            watch.watch_id = None
            watch.suspended = True
            woken.append(watch)
            return [etcdrpc.WatchRequest(cancel_request=CANCEL(watch_id=watch_id))]
        watch.answered = True
        woken.append(watch)
        return []

    def fail(self, error: BaseException) -> list[WatchState]:
        """The stream broke: every watch gets ``error``; the watches to wake."""
        self.failed = error
        watches = [*self.creating, *self.watches.values()]
        self.creating.clear()
        self.watches.clear()
        for watch in watches:
            watch.error = error
            watch.watch_id = None
        return watches


def _cancelled(response: Any) -> KVError:
    if response.compact_revision:
        return HistoryLostError(
            f"etcd compacted its history to revision {response.compact_revision}; "
            f"the changes this watch needs are gone"
        )
    return NotReachableError(f"etcd cancelled the watch: {response.cancel_reason}")


class Stream:
    """One gRPC Watch stream of a store and the watches it carries; the flavour's
    stream subclasses it with the call, the reader and the request queue.

    Contact is the stream's: a watch polling on a stream etcd has said nothing on for
    half of ``stall`` seconds (since the watch opened, if later) asks for a progress
    report (answered for every watch), and finds the stream stalled if that goes
    unanswered for the other half; a stalled stream fails every watch on it with
    NotReachableError, and the next feed the store opens gets a new stream. Silence
    alone fails nothing: a stream nobody polled for a minute is asked first.
    """

    def __init__(
        self, address: str, timeout: float, lock: Any, requests: Any, limit: int | None
    ) -> None:
        self.address = address
        self._limit = limit  # events a poll decodes at most (async: the loop's time)
        self.router = Router()
        self.stall = min(STREAM_STALL, timeout / 4)
        self.contact: float | None = None  # when etcd last answered on this stream
        self._probed: float | None = None
        self._lock = lock  # threading.Lock (sync) or a null context (async)
        self._requests = requests  # what the call sends: put_nowait(request); None ends it
        self.ended = False
        self.call: Any = None

    @property
    def accepting(self) -> bool:
        """Whether new watches may go on this stream (it is up, its token valid)."""
        return not self.ended and not self.router.stale_token

    @property
    def idle(self) -> bool:
        """Whether the stream carries no watch any longer and takes no new one."""
        return not self.accepting and not len(self.router)

    def add(self, watch: WatchState) -> None:
        with self._lock:
            if self.router.failed is not None:
                watch.error = self.router.failed
            else:
                self._requests.put_nowait(self.router.add(watch))

    def remove(self, watch: WatchState) -> None:
        with self._lock:
            request = self.router.remove(watch)
            if request is not None and not self.ended:
                self._requests.put_nowait(request)

    def take(self, watch: WatchState) -> FeedBatch | None:
        """What ``watch`` holds (see :meth:`WatchState.take`); a watch suspended for
        lagging is created again once it is emptied."""
        with self._lock:
            batch = watch.take(self._limit)
            if watch.suspended and not watch.held:
                if self.router.failed is not None:
                    watch.suspended = False
                    watch.error = self.router.failed
                else:
                    request = self.router.resume(watch)
                    if request is not None:
                        self._requests.put_nowait(request)
            return batch

    def ready(self, watch: WatchState, timeout: float) -> tuple[FeedBatch | None, float]:
        """A poll's first step: what ``watch`` holds, else (None, how long it may wait
        for news). Raises NotReachableError (and fails the stream) if etcd has been
        silent on it too long."""
        watch.news.clear()
        batch = self.take(watch)
        if batch is not None:
            return batch, 0.0
        return None, self._wait_bound(watch.opened, timeout, time.monotonic())

    def _wait_bound(self, opened: float, timeout: float, now: float) -> float:
        """How long a poll may wait for news; asks etcd for a progress report once it
        has been silent (since ``opened``, if later) for half of ``stall``, and fails
        the stream if that goes unanswered for the other half. A stream nobody polled
        for a while is asked first, never failed on its silence alone."""
        heard = max(self.contact or 0.0, opened)
        probed = self._probed
        if probed is None or probed < heard:  # no request since etcd last answered
            if now - heard <= self.stall / 2:
                return max(0.0, min(timeout, heard + self.stall / 2 - now))
            self._probed = probed = now
            with self._lock:
                if not self.ended:
                    self._requests.put_nowait(PROGRESS_REQUEST)
        unanswered = now - probed
        if unanswered > self.stall / 2:
            error = NotReachableError(
                f"etcd at {self.address} did not answer on a watch stream for "
                f"{now - heard:.1f} s ({unanswered:.1f} s after a progress request)"
            )
            self.fail(error)
            raise error
        # Return by the stall deadline, so the next poll can report it.
        return max(0.0, min(timeout, probed + self.stall / 2 - now))

    def deliver(self, response: Any, now: float) -> None:
        """A response read from the stream: route it, wake its watches."""
        woken: list[WatchState] = []
        with self._lock:
            self.contact = now
            for request in self.router.route(response, woken):
                self._requests.put_nowait(request)
        for watch in woken:
            watch.wake()

    def fail(self, error: BaseException) -> None:
        """End the stream: every watch on it gets ``error``."""
        with self._lock:
            if self.ended:
                return
            self.ended = True
            woken = self.router.fail(error)
            self._requests.put_nowait(None)
        if self.call is not None:
            self.call.cancel()
        for watch in woken:
            watch.wake()


def ttl_seconds_of(ttl: float) -> int:
    """A lease's ttl in etcd's whole seconds (rounded up)."""
    return math.ceil(ttl)
