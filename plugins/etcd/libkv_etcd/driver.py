"""``etcd://``: libkv over etcd v3, through gRPC (the stubs of etcd-sdk-python).

URL: ``etcd://[user:password@]host[:2379][,host[:port]...][/prefix][?options]``.
Options: ``timeout`` (seconds per operation, default 10), ``tls`` (use TLS with the
system roots), ``ca`` (CA bundle file; implies TLS), ``cert`` and ``key`` (client
certificate and its key), ``prefix`` (namespace; also the URL path).

Guarantees: versions are etcd mod_revisions; every read is linearizable; a
transaction is one etcd Txn whose failure branch reads the keys, so a failed
condition is explained from the state it failed on. With several hosts, a request
that could not reach one member (or found it without a leader) moves to the next;
a write is retried elsewhere only when it was certainly not applied, otherwise it
raises UnknownOutcomeError. A ttl is a lease of whole seconds (rounded up; etcd's
minimum is 2 s with its default election timeout).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from pyetcd import etcdrpc

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
    StoreClosedError,
    StoreURL,
    UnknownOutcomeError,
    ValueTooLargeError,
    first_failure,
    in_prefix,
    parse_bool,
    parse_seconds,
)

__all__ = ["EtcdBackend", "open_etcd"]

log = logging.getLogger(__name__)
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
)

_ALL_KEYS = b"\0"  # as key and range_end: the whole keyspace
_PUT = 0  # mvccpb.Event.PUT
_CHANNEL_OPTIONS = [
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
_LEADER = (("hasleader", "true"),)
_OUTCOME_UNKNOWN_NOTE = "libkv: the write was sent; its outcome is unknown"
_AUTH_MESSAGES = ("authentication failed", "user name is empty", "authentication is not enabled")


# A watch stream silent for STREAM_STALL (at most; a quarter of the store's timeout
# if less) is taken as unreachable, so a frozen member is reported within the store's
# timeout plus about a second; one silent for half of that is asked for a progress
# report, which etcd answers at once.
STREAM_STALL = 0.9


@dataclass(frozen=True, slots=True)
class _TLS:
    ca: bytes | None
    cert: bytes | None
    key: bytes | None


class _Endpoint:
    """One member's address and its gRPC channel and stubs."""

    def __init__(self, address: str, tls: _TLS | None) -> None:
        self.address = address
        if tls is None:
            self.channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
        else:
            credentials = grpc.ssl_channel_credentials(tls.ca, tls.key, tls.cert)
            self.channel = grpc.secure_channel(address, credentials, options=_CHANNEL_OPTIONS)
        self.kv = etcdrpc.KVStub(self.channel)
        self.lease = etcdrpc.LeaseStub(self.channel)
        self.watch = etcdrpc.WatchStub(self.channel)
        self.auth = etcdrpc.AuthStub(self.channel)


class EtcdBackend(Backend):
    """A store in an etcd v3 cluster; see the module docstring."""

    capabilities = CAPABILITIES

    def __init__(
        self,
        url: StoreURL,
        addresses: Sequence[str],
        *,
        namespace: str,
        timeout: float,
        tls: _TLS | None,
    ) -> None:
        super().__init__(url, namespace=namespace, timeout=timeout)
        self.closed = False  # set first by close(): a request retrying meanwhile gives up
        self._endpoints = [_Endpoint(address, tls) for address in addresses]
        self._current = 0
        self._credentials = (
            (url.username or "", url.password or "")
            if url.username is not None or url.password is not None
            else None
        )
        self._metadata: tuple[tuple[str, str], ...] | None = None
        self._auth_lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        """``host:port`` of the member requests currently go to."""
        return self._endpoints[self._current].address

    # -- the request loop -------------------------------------------------------------

    def _request(self, send: Callable[[_Endpoint, float, Any], T], *, write: bool) -> T:
        """Send one request, moving to the next member while it certainly was not applied.

        ``send(endpoint, timeout, metadata)`` makes the call. A write whose request may
        have been applied is not retried; its error is noted as of unknown outcome.
        """
        deadline = time.monotonic() + self.timeout
        attempt = 0
        reauthenticated = False
        while True:
            index = self._current
            endpoint = self._endpoints[index]
            try:
                metadata = self._authenticate(endpoint, deadline) if self._credentials else _LEADER
                return send(endpoint, max(deadline - time.monotonic(), 0.001), metadata)
            except grpc.RpcError as error:
                code = error.code()
                details = (error.details() or "").lower()
                if (
                    code is grpc.StatusCode.UNAUTHENTICATED
                    and self._credentials
                    and not reauthenticated
                ):
                    reauthenticated = True  # the token expired: a new one, once
                    self._metadata = None
                    continue
                if code is not grpc.StatusCode.UNAVAILABLE:
                    if write and code is grpc.StatusCode.DEADLINE_EXCEEDED:
                        error.add_note(_OUTCOME_UNKNOWN_NOTE)
                    raise
                self._failed(index, details)
                if write and not any(reason in details for reason in _NOT_SENT):
                    error.add_note(_OUTCOME_UNKNOWN_NOTE)
                    raise
                attempt += 1
                pause = 0.0 if attempt % len(self._endpoints) else min(0.05 * attempt, 0.5)
                if self.closed or time.monotonic() + pause >= deadline:
                    raise
                if pause:
                    time.sleep(pause)

    def _failed(self, index: int, details: str) -> None:
        """Move to the next member after ``index`` could not serve a request."""
        if len(self._endpoints) > 1 and self._current == index:
            self._current = (index + 1) % len(self._endpoints)
            log.info(
                "etcd member %s unavailable (%s); trying %s",
                self._endpoints[index].address,
                details,
                self.endpoint,
            )

    def _authenticate(self, endpoint: _Endpoint, deadline: float) -> Any:
        metadata = self._metadata
        if metadata is not None:
            return metadata
        with self._auth_lock:
            if self._metadata is None:
                assert self._credentials is not None
                user, password = self._credentials
                response = endpoint.auth.Authenticate(
                    etcdrpc.AuthenticateRequest(name=user, password=password),
                    timeout=max(deadline - time.monotonic(), 0.001),
                )
                self._metadata = (("token", response.token), *_LEADER)
            return self._metadata

    def _range_request(self, request: Any) -> Any:
        return self._request(
            lambda endpoint, timeout, metadata: endpoint.kv.Range(
                request, timeout=timeout, metadata=metadata
            ),
            write=False,
        )

    def _txn(self, request: Any, *, write: bool) -> Any:
        return self._request(
            lambda endpoint, timeout, metadata: endpoint.kv.Txn(
                request, timeout=timeout, metadata=metadata
            ),
            write=write,
        )

    # -- reading ------------------------------------------------------------------------

    def get(self, key: str) -> KVPair | None:
        response = self._range_request(etcdrpc.RangeRequest(key=key.encode()))
        if not response.kvs:
            return None
        return KVPair(key, response.kvs[0].value, response.kvs[0].mod_revision)

    def get_many(self, keys: Sequence[str]) -> list[KVPair | None]:
        results: list[KVPair | None] = []
        step = self.capabilities.max_transaction_ops
        for start in range(0, len(keys), step):
            chunk = keys[start : start + step]
            request = etcdrpc.TxnRequest(
                success=[
                    etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key.encode()))
                    for key in chunk
                ]
            )
            response = self._txn(request, write=False)
            for key, reply in zip(chunk, response.responses, strict=True):
                kvs = reply.response_range.kvs
                results.append(KVPair(key, kvs[0].value, kvs[0].mod_revision) if kvs else None)
        return results

    def range(self, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
        if not recursive or (prefix and prefix[-1] != "/"):
            # The key itself; for a recursive read also its descendants, in one Txn.
            ranges = [etcdrpc.RangeRequest(key=prefix.encode())]
            if recursive:
                ranges.append(_range_of(prefix + "/", etcdrpc.RangeRequest))
            if len(ranges) == 1:
                response = self._range_request(ranges[0])
                return _pairs(response.kvs), response.header.revision
            response = self._txn(
                etcdrpc.TxnRequest(success=[etcdrpc.RequestOp(request_range=r) for r in ranges]),
                write=False,
            )
            pairs = [
                pair for reply in response.responses for pair in _pairs(reply.response_range.kvs)
            ]
            return pairs, response.header.revision
        response = self._range_request(_range_of(prefix, etcdrpc.RangeRequest))
        return _pairs(response.kvs), response.header.revision

    # -- writing ------------------------------------------------------------------------

    def commit(self, ops: Sequence[Op]) -> list[KVPair | None]:
        # The conditions first: a version etcd cannot represent is refused before a
        # lease is granted for the transaction.
        conditions = [_conditions(op, op.key.encode()) for op in ops]
        leases = self._ttl_leases(ops)
        if len(ops) == 1 and ops[0].kind is OpKind.PUT:
            op = ops[0]
            put = etcdrpc.PutRequest(
                key=op.key.encode(), value=op.value, lease=_lease_of(op, leases)
            )
            response = self._request(
                lambda endpoint, timeout, metadata: endpoint.kv.Put(
                    put, timeout=timeout, metadata=metadata
                ),
                write=True,
            )
            return [KVPair(op.key, op.value, response.header.revision)]
        compare: list[Any] = []
        success: list[Any] = []
        failure: list[Any] = []
        for op, condition in zip(ops, conditions, strict=True):
            key = op.key.encode()
            compare.extend(condition)
            if op.kind is OpKind.DELETE:
                request = etcdrpc.DeleteRangeRequest(key=key)
                success.append(etcdrpc.RequestOp(request_delete_range=request))
            elif op.kind is not OpKind.CHECK:
                request = etcdrpc.PutRequest(key=key, value=op.value, lease=_lease_of(op, leases))
                success.append(etcdrpc.RequestOp(request_put=request))
            failure.append(etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key)))
        request = etcdrpc.TxnRequest(
            compare=compare, success=success, failure=failure if compare else []
        )
        response = self._txn(request, write=bool(success))
        if not response.succeeded:
            current: list[KVPair | None] = [
                next(iter(_pairs(reply.response_range.kvs)), None) for reply in response.responses
            ]
            error = first_failure(ops, current)
            for lease_id in leases.values():
                self._revoke_quietly(lease_id)
            if error is None:
                raise KVError("etcd refused a transaction whose conditions hold")
            raise error
        revision = response.header.revision
        return [KVPair(op.key, op.value, revision) if op.kind.writes else None for op in ops]

    def _ttl_leases(self, ops: Sequence[Op]) -> dict[int, int]:
        """A new lease for each distinct ttl (whole seconds, rounded up) among ``ops``."""
        leases: dict[int, int] = {}
        for op in ops:
            if op.ttl is not None:
                seconds = math.ceil(op.ttl)
                if seconds not in leases:
                    leases[seconds] = self.grant_lease(seconds)
        return leases

    def _revoke_quietly(self, lease_id: int) -> None:
        try:
            self.revoke_lease(lease_id)
        except grpc.RpcError:
            log.debug("could not revoke unused lease %x", lease_id, exc_info=True)

    def delete_range(self, prefix: str) -> int:
        if prefix and prefix[-1] != "/":
            requests = [
                etcdrpc.DeleteRangeRequest(key=prefix.encode()),
                _range_of(prefix + "/", etcdrpc.DeleteRangeRequest),
            ]
            response = self._txn(
                etcdrpc.TxnRequest(
                    success=[etcdrpc.RequestOp(request_delete_range=r) for r in requests]
                ),
                write=True,
            )
            return sum(reply.response_delete_range.deleted for reply in response.responses)
        request = _range_of(prefix, etcdrpc.DeleteRangeRequest)
        reply = self._request(
            lambda endpoint, timeout, metadata: endpoint.kv.DeleteRange(
                request, timeout=timeout, metadata=metadata
            ),
            write=True,
        )
        return int(reply.deleted)

    # -- leases -------------------------------------------------------------------------

    def grant_lease(self, ttl: float) -> int:
        request = etcdrpc.LeaseGrantRequest(TTL=math.ceil(ttl))
        response = self._request(
            lambda endpoint, timeout, metadata: endpoint.lease.LeaseGrant(
                request, timeout=timeout, metadata=metadata
            ),
            write=True,
        )
        if response.error:
            raise KVError(f"etcd refused a lease: {response.error}")
        return int(response.ID)

    def keepalive_lease(self, lease_id: int) -> bool:
        request = etcdrpc.LeaseKeepAliveRequest(ID=lease_id)

        def send(endpoint: _Endpoint, timeout: float, metadata: Any) -> Any:
            call = endpoint.lease.LeaseKeepAlive(
                iter([request]), timeout=timeout, metadata=metadata
            )
            try:
                return next(call, None)
            finally:
                call.cancel()

        response = self._request(send, write=False)  # refreshing twice is harmless
        return response is not None and response.TTL > 0

    def lease_ttl(self, lease_id: int) -> float | None:
        request = etcdrpc.LeaseTimeToLiveRequest(ID=lease_id)
        try:
            response = self._request(
                lambda endpoint, timeout, metadata: endpoint.lease.LeaseTimeToLive(
                    request, timeout=timeout, metadata=metadata
                ),
                write=False,
            )
        except grpc.RpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return None if response.TTL < 0 else float(response.TTL)

    def revoke_lease(self, lease_id: int) -> None:
        request = etcdrpc.LeaseRevokeRequest(ID=lease_id)
        try:
            self._request(
                lambda endpoint, timeout, metadata: endpoint.lease.LeaseRevoke(
                    request, timeout=timeout, metadata=metadata
                ),
                write=False,  # revoking twice is harmless
            )
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.NOT_FOUND:
                raise

    # -- watching and history -------------------------------------------------------------

    def open_feed(self, prefix: str, after: int | None) -> _EtcdFeed:
        index = self._current
        endpoint = self._endpoints[index]
        metadata = (
            self._authenticate(endpoint, time.monotonic() + self.timeout)
            if self._credentials
            else _LEADER
        )
        create = _range_of(prefix, etcdrpc.WatchCreateRequest)
        create.start_revision = 0 if after is None else after + 1
        create.progress_notify = True
        return _EtcdFeed(self, index, endpoint, prefix, create, metadata, after or 0)

    def compact(self, revision: int) -> None:
        current = self._range_request(
            etcdrpc.RangeRequest(key=_ALL_KEYS, limit=1, keys_only=True)
        ).header.revision
        request = etcdrpc.CompactionRequest(revision=min(revision, current), physical=True)
        try:
            self._request(
                lambda endpoint, timeout, metadata: endpoint.kv.Compact(
                    request, timeout=timeout, metadata=metadata
                ),
                write=False,  # compacting twice is harmless
            )
        except grpc.RpcError as error:
            if "compacted" not in (error.details() or ""):
                raise  # compacted at or beyond this revision already: nothing to do

    # -- errors and closing -----------------------------------------------------------

    def translate_error(self, error: Exception) -> KVError | None:
        if isinstance(error, ValueError) and "closed channel" in str(error):
            return StoreClosedError(f"store is closed: {self.url}")
        if isinstance(error, (ValueError, OverflowError)) and "out of range" in str(error):
            # protobuf refusing a number its int64 field cannot hold: nothing was sent.
            return InvalidArgumentError(f"a number is out of etcd's range: {error}")
        if not isinstance(error, grpc.RpcError):
            return None
        code = error.code()
        details = error.details() or ""
        where = f"etcd at {self.endpoint}"
        if _OUTCOME_UNKNOWN_NOTE in getattr(error, "__notes__", ()):
            return UnknownOutcomeError(f"{where}: write may or may not be applied: {details}")
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return NotReachableError(f"{where} not reachable within {self.timeout} s: {details}")
        if code is grpc.StatusCode.CANCELLED:
            if self.closed:
                return StoreClosedError(f"store is closed: {self.url}")
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
            return AuthenticationError(f"{where} refused user {self.url.username!r}: {details}")
        return KVError(f"{where}: {code.name}: {details}")

    def close(self) -> None:
        self.closed = True
        for endpoint in self._endpoints:
            endpoint.channel.close()


class _EtcdFeed:
    """An etcd watch stream, read into a queue by a thread so ``close()`` is prompt.

    Opening sends nothing by itself, so the feed proves contact instead: every poll
    that got an answer from etcd (the stream's creation, events, a progress report)
    returns a batch, a stream silent for half of ``STREAM_STALL`` is asked for a
    progress report, and one silent for ``STREAM_STALL`` (or that broke) raises
    NotReachableError. So a killed or frozen member is reported, not waited on forever.
    """

    def __init__(
        self,
        store: EtcdBackend,
        index: int,
        endpoint: _Endpoint,
        prefix: str,
        create: Any,
        metadata: Any,
        after: int,
    ) -> None:
        self._store = store
        self._index = index
        self._address = endpoint.address
        self._prefix = prefix
        self._filter = bool(prefix) and prefix[-1] != "/"  # the range also holds p-x, p.x
        self._revision = after  # the revision this feed is known consistent with
        self._stall = min(STREAM_STALL, store.timeout / 4)
        self._probe_after = self._stall / 2
        self._opened = time.monotonic()
        self._contact: float | None = None  # when etcd last answered on this stream
        self._probed: float | None = None
        self._responses: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._requests.put(etcdrpc.WatchRequest(create_request=create))
        self._error: BaseException | None = None
        self._closed = False
        self._call = endpoint.watch.Watch(self._send(), metadata=metadata)
        self._thread = threading.Thread(target=self._read, name="libkv-etcd-watch", daemon=True)
        self._thread.start()

    def _send(self) -> Iterator[Any]:
        while (request := self._requests.get()) is not None:
            yield request

    def _read(self) -> None:
        try:
            for response in self._call:
                self._contact = time.monotonic()
                self._responses.put(response)
            self._responses.put(NotReachableError("etcd ended the watch stream"))
        except grpc.RpcError as error:
            if error.code() is grpc.StatusCode.UNAVAILABLE:
                self._store._failed(self._index, (error.details() or "").lower())
            self._responses.put(error)
        except Exception as error:  # delivered to the consumer by poll()
            self._responses.put(error)
        finally:
            self._requests.put(None)

    def poll(self, timeout: float) -> FeedBatch | None:
        """Changes after the last batch; see :class:`libkv.watching.Feed`."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        now = time.monotonic()
        heard = self._contact or self._opened
        if now - heard > self._stall:
            raise NotReachableError(
                f"etcd at {self._address} did not answer on a watch stream for {now - heard:.1f} s"
            )
        if now - heard > self._probe_after and (self._probed is None or self._probed < heard):
            self._probed = now
            self._requests.put(
                etcdrpc.WatchRequest(progress_request=etcdrpc.WatchProgressRequest())
            )
        try:
            # Return by the stall deadline, so the next poll can report it.
            item = self._responses.get(timeout=max(0.0, min(timeout, heard + self._stall - now)))
        except queue.Empty:
            return None
        changes: list[Event] = []
        answered = False
        while True:
            if self._closed:
                return None
            try:
                if isinstance(item, BaseException):
                    raise item
                self._revision = max(self._revision, self._accept(item, changes))
                answered = True
            except BaseException as error:
                if not answered:
                    raise
                self._error = error  # raised by the next poll, after these changes
                break
            try:
                item = self._responses.get_nowait()
            except queue.Empty:
                break
        # Even without news, an answer proves contact: a batch at the known revision.
        return FeedBatch(self._revision, changes)

    def _accept(self, response: Any, changes: list[Event]) -> int:
        """Add a response's changes; return the revision it proves consistency to (or 0)."""
        if response.compact_revision:
            raise HistoryLostError(
                f"etcd compacted its history to revision {response.compact_revision}; "
                f"the changes this watch needs are gone"
            )
        if response.canceled:
            raise NotReachableError(f"etcd cancelled the watch: {response.cancel_reason}")
        if response.created or response.watch_id < 0:
            # Creation, or the answer to a progress request: contact, but the header
            # revision may run ahead of events still to come.
            return 0
        if not response.events:
            return int(response.header.revision)  # progress notification: caught up
        prefix, check = self._prefix, self._filter
        for event in response.events:
            kv = event.kv
            key = kv.key.decode()
            if check and not in_prefix(key, prefix):
                continue
            revision = kv.mod_revision
            if event.type == _PUT:
                changes.append(Event(Action.UPDATE, key, KVPair(key, kv.value, revision), revision))
            else:
                changes.append(Event(Action.DELETE, key, None, revision))
        return int(response.events[-1].kv.mod_revision)

    def close(self) -> None:
        """End the stream; a blocked poll returns None promptly."""
        self._closed = True
        self._call.cancel()
        self._requests.put(None)
        self._responses.put(None)


def _range_of(prefix: str, message: Callable[..., T]) -> T:
    """A request over every key starting with ``prefix`` (``""``: every key)."""
    if not prefix:
        return message(key=_ALL_KEYS, range_end=_ALL_KEYS)
    start = prefix.encode()
    return message(key=start, range_end=start[:-1] + bytes([start[-1] + 1]))


def _pairs(kvs: Any) -> list[KVPair]:
    return [KVPair(kv.key.decode(), kv.value, kv.mod_revision) for kv in kvs]


def _lease_of(op: Op, leases: dict[int, int]) -> int:
    if op.lease is not None:
        return op.lease.id
    if op.ttl is not None:
        return leases[math.ceil(op.ttl)]
    return 0


def _conditions(op: Op, key: bytes) -> list[Any]:
    """The Txn compares that hold exactly when ``first_failure`` finds nothing wrong."""
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


def _read_file(option: str, path: object) -> bytes:
    try:
        with open(str(path), "rb") as file:
            return file.read()
    except OSError as error:
        raise InvalidURLError(f"cannot read the {option}= file {path!r}: {error}") from error


def open_etcd(url: StoreURL) -> EtcdBackend:
    """The ``etcd`` scheme's initializer."""
    options = url.read_options(
        {"timeout": parse_seconds, "tls": parse_bool, "ca": str, "cert": str, "key": str}
    )
    if ("cert" in options) != ("key" in options):
        raise InvalidURLError("etcd:// client certificates need both cert= and key=")
    tls = None
    if options.get("tls") or "ca" in options or "cert" in options:
        if options.get("tls") is False:
            raise InvalidURLError("tls=false contradicts ca=/cert=")
        tls = _TLS(
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
    return EtcdBackend(
        url, addresses, namespace=namespace, timeout=options.get("timeout", 10.0), tls=tls
    )
