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
minimum is 2 s with its default election timeout). Every watch of a store shares
one gRPC Watch stream (see :class:`libkv_etcd.common.Stream`).

One implementation in two flavours: the sync backend is generated from the async one
(on ``grpc.aio``) by ``scripts/unasync.py``; what is not I/O is in
:mod:`libkv_etcd.common`, and the watch stream, which differs beyond renaming, is in
the ``io`` module of each flavour.
"""

from __future__ import annotations

import asyncio  # async-only
import logging

# sync-only: import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio  # async-only
from pyetcd import etcdrpc

from libkv.driver import AsyncBackend, KVError, KVPair, Op, OpKind, StoreURL
from libkv_etcd import common
from libkv_etcd._async.io import AsyncCleanup, AsyncEtcdFeed, AsyncWatchStream, keepalive_once
from libkv_etcd.common import CAPABILITIES, LEADER, TLS, Retry, Settings

__all__ = ["CAPABILITIES", "AsyncEtcdBackend", "open_etcd_async"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Endpoint:
    """One member's address and its gRPC channel and stubs (async: made in the
    running loop at first use, and again in the next loop after ``asyncio.run``)."""

    def __init__(self, address: str, tls: TLS | None) -> None:
        self.address = address
        self._tls = tls
        self._loop: asyncio.AbstractEventLoop | None = None  # async-only
        self.channel: Any = None
        # sync-only: self._connect()

    def open(self) -> _Endpoint:
        """The endpoint, its channel open (async: in the running loop)."""
        # async-only: begin
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._connect()
        # async-only: end
        return self

    def _connect(self) -> None:
        tls = self._tls
        if tls is None:
            self.channel = grpc.aio.insecure_channel(self.address, options=common.CHANNEL_OPTIONS)
        else:
            credentials = grpc.ssl_channel_credentials(tls.ca, tls.key, tls.cert)
            self.channel = grpc.aio.secure_channel(
                self.address, credentials, options=common.CHANNEL_OPTIONS
            )
        self.kv = etcdrpc.KVStub(self.channel)
        self.lease = etcdrpc.LeaseStub(self.channel)
        self.watch = etcdrpc.WatchStub(self.channel)
        self.auth = etcdrpc.AuthStub(self.channel)

    async def close(self) -> None:
        # async-only: begin
        if self._loop is not asyncio.get_running_loop():
            return  # its loop has ended, and its channel with it
        # async-only: end
        if self.channel is not None:
            await self.channel.close()


class AsyncEtcdBackend(AsyncBackend):
    """A store in an etcd v3 cluster; see the module docstring."""

    capabilities = CAPABILITIES

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.url, namespace=settings.namespace, timeout=settings.timeout)
        self.closed = False  # set first by close(): a request retrying meanwhile gives up
        self._endpoints = [_Endpoint(address, settings.tls) for address in settings.addresses]
        self._current = 0
        self._contact: float | None = None  # when a member last answered a request
        self._credentials = settings.credentials
        self._metadata: tuple[tuple[str, str], ...] | None = None
        self._auth_lock = asyncio.Lock()  # async-only
        # sync-only: self._auth_lock = threading.Lock()
        # The last carries every new watch; an earlier one, its watches until they end.
        self._streams: list[AsyncWatchStream] = []
        self._streams_lock = asyncio.Lock()  # async-only
        # sync-only: self._streams_lock = threading.Lock()
        self._cleanup = AsyncCleanup()  # async-only

    @property
    def endpoint(self) -> str:
        """``host:port`` of the member requests currently go to."""
        return self._endpoints[self._current].address

    # -- the request loop -------------------------------------------------------------

    async def _request(
        self, send: Callable[[_Endpoint, float, Any], Awaitable[T]], *, write: bool
    ) -> T:
        """Send one request, moving to the next member while it certainly was not applied.

        ``send(endpoint, timeout, metadata)`` makes the call. A write whose request may
        have been applied is not retried; its error is noted as of unknown outcome.
        """
        deadline = time.monotonic() + self.timeout
        attempt = 0
        reauthenticated = False
        while True:
            index = self._current
            endpoint = self._endpoints[index].open()
            try:
                metadata = await self._authenticate(endpoint, deadline)
                result = await send(endpoint, max(deadline - time.monotonic(), 0.001), metadata)
                self._contact = time.monotonic()
                return result
            except grpc.RpcError as error:
                retry = common.judge(
                    error,
                    write=write,
                    reauthenticate=bool(self._credentials) and not reauthenticated,
                )
                if retry is Retry.UNAUTHENTICATED:
                    reauthenticated = True
                    self._metadata = None
                    continue
                if retry is Retry.RAISE:
                    if error.code() is grpc.StatusCode.UNAVAILABLE:
                        self._failed(index, (error.details() or "").lower())
                    raise
                self._failed(index, (error.details() or "").lower())
                attempt += 1
                pause = 0.0 if attempt % len(self._endpoints) else min(0.05 * attempt, 0.5)
                if self.closed or time.monotonic() + pause >= deadline:
                    raise
                if pause:
                    await asyncio.sleep(pause)  # async-only
                    # sync-only: time.sleep(pause)

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

    async def _authenticate(self, endpoint: _Endpoint, deadline: float) -> Any:
        """The metadata of a request: a token (fetched once, and after it expired)."""
        if not self._credentials:
            return LEADER
        metadata = self._metadata
        if metadata is not None:
            return metadata
        async with self._auth_lock:
            if self._metadata is None:
                user, password = self._credentials
                response = await endpoint.auth.Authenticate(
                    etcdrpc.AuthenticateRequest(name=user, password=password),
                    timeout=max(deadline - time.monotonic(), 0.001),
                )
                self._metadata = (("token", response.token), *LEADER)
            return self._metadata

    async def _range_request(self, request: Any) -> Any:
        return await self._request(
            lambda endpoint, timeout, metadata: endpoint.kv.Range(
                request, timeout=timeout, metadata=metadata
            ),
            write=False,
        )

    async def _txn(self, request: Any, *, write: bool) -> Any:
        return await self._request(
            lambda endpoint, timeout, metadata: endpoint.kv.Txn(
                request, timeout=timeout, metadata=metadata
            ),
            write=write,
        )

    # -- reading ------------------------------------------------------------------------

    async def get(self, key: str) -> KVPair | None:
        response = await self._range_request(etcdrpc.RangeRequest(key=key.encode()))
        if not response.kvs:
            return None
        return KVPair(key, response.kvs[0].value, response.kvs[0].mod_revision)

    async def get_many(self, keys: Sequence[str]) -> list[KVPair | None]:
        results: list[KVPair | None] = []
        step = self.capabilities.max_transaction_ops
        for start in range(0, len(keys), step):
            chunk = keys[start : start + step]
            response = await self._txn(common.get_many_request(chunk), write=False)
            results.extend(common.get_many_result(chunk, response))
        return results

    async def range(self, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
        ranges = common.select(prefix, recursive, etcdrpc.RangeRequest)
        if len(ranges) == 1:
            response = await self._range_request(ranges[0])
            return common.pairs(response.kvs), response.header.revision
        # The key itself and its descendants, in one Txn.
        response = await self._txn(
            etcdrpc.TxnRequest(success=[etcdrpc.RequestOp(request_range=r) for r in ranges]),
            write=False,
        )
        pairs = [
            pair for reply in response.responses for pair in common.pairs(reply.response_range.kvs)
        ]
        return pairs, response.header.revision

    # -- writing ------------------------------------------------------------------------

    async def commit(self, ops: Sequence[Op]) -> list[KVPair | None]:
        # The conditions first: a version etcd cannot represent is refused before a
        # lease is granted for the transaction.
        compares = [common.conditions(op) for op in ops]
        leases = {seconds: await self.grant_lease(seconds) for seconds in common.ttl_seconds(ops)}
        if len(ops) == 1 and ops[0].kind is OpKind.PUT:
            op = ops[0]
            put = etcdrpc.PutRequest(
                key=op.key.encode(), value=op.value, lease=common.lease_of(op, leases)
            )
            response = await self._request(
                lambda endpoint, timeout, metadata: endpoint.kv.Put(
                    put, timeout=timeout, metadata=metadata
                ),
                write=True,
            )
            return [KVPair(op.key, op.value, response.header.revision)]
        request = common.commit_request(ops, compares, leases)
        response = await self._txn(request, write=bool(request.success))
        if not response.succeeded:
            for lease_id in leases.values():
                await self._revoke_quietly(lease_id)
            raise common.commit_failure(ops, response)
        revision = response.header.revision
        return [KVPair(op.key, op.value, revision) if op.kind.writes else None for op in ops]

    async def _revoke_quietly(self, lease_id: int) -> None:
        try:
            await self.revoke_lease(lease_id)
        except grpc.RpcError:
            log.debug("could not revoke unused lease %x", lease_id, exc_info=True)

    async def delete_range(self, prefix: str) -> int:
        requests = common.select(prefix, True, etcdrpc.DeleteRangeRequest)
        if len(requests) == 1:
            request = requests[0]
            reply = await self._request(
                lambda endpoint, timeout, metadata: endpoint.kv.DeleteRange(
                    request, timeout=timeout, metadata=metadata
                ),
                write=True,
            )
            return int(reply.deleted)
        response = await self._txn(
            etcdrpc.TxnRequest(
                success=[etcdrpc.RequestOp(request_delete_range=r) for r in requests]
            ),
            write=True,
        )
        return sum(reply.response_delete_range.deleted for reply in response.responses)

    # -- leases -------------------------------------------------------------------------

    async def grant_lease(self, ttl: float) -> int:
        # async-only: begin
        # grpc.aio cancels the call of a cancelled task, but a grant already sent may be
        # applied: it runs on, and a lease it granted is revoked (close() waits for that).
        return await self._cleanup.unless_cancelled(self._grant(ttl), self._revoke_quietly)
        # async-only: end
        # sync-only: return self._grant(ttl)

    async def _grant(self, ttl: float) -> int:
        request = etcdrpc.LeaseGrantRequest(TTL=common.ttl_seconds_of(ttl))
        response = await self._request(
            lambda endpoint, timeout, metadata: endpoint.lease.LeaseGrant(
                request, timeout=timeout, metadata=metadata
            ),
            write=True,
        )
        return common.grant_result(response)

    async def keepalive_lease(self, lease_id: int) -> bool:
        request = etcdrpc.LeaseKeepAliveRequest(ID=lease_id)
        response = await self._request(  # refreshing twice is harmless
            lambda endpoint, timeout, metadata: keepalive_once(
                endpoint.lease, request, timeout, metadata
            ),
            write=False,
        )
        return response is not None and response.TTL > 0

    async def lease_ttl(self, lease_id: int) -> float | None:
        request = etcdrpc.LeaseTimeToLiveRequest(ID=lease_id)
        try:
            response = await self._request(
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

    async def revoke_lease(self, lease_id: int) -> None:
        request = etcdrpc.LeaseRevokeRequest(ID=lease_id)
        try:
            await self._request(
                lambda endpoint, timeout, metadata: endpoint.lease.LeaseRevoke(
                    request, timeout=timeout, metadata=metadata
                ),
                write=False,  # revoking twice is harmless
            )
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.NOT_FOUND:
                raise

    # -- watching and history -------------------------------------------------------------

    async def open_feed(self, prefix: str, after: int | None) -> AsyncEtcdFeed:
        async with self._streams_lock:
            return AsyncEtcdFeed(await self._watch_stream(), prefix, after)

    async def _watch_stream(self) -> AsyncWatchStream:
        """The stream new watches go on: the last one, or a new one (on the member
        requests go to) if it broke or its token expired; those left idle are closed."""
        # A stream of an earlier loop ended with it.
        self._streams = [stream for stream in self._streams if _current_loop(stream)]
        for idle in [stream for stream in self._streams if stream.idle]:
            self._streams.remove(idle)
            await idle.close()
        last = self._streams[-1] if self._streams else None
        if last is not None and last.accepting:
            return last
        if last is not None and last.router.stale_token:
            self._metadata = None  # authenticate again
        index = self._current
        endpoint = self._endpoints[index].open()
        metadata = await self._authenticate(endpoint, time.monotonic() + self.timeout)
        stream = AsyncWatchStream(
            endpoint.watch,
            endpoint.address,
            self.timeout,
            metadata,
            lambda details: self._failed(index, details),
        )
        self._streams.append(stream)
        return stream

    async def compact(self, revision: int) -> None:
        current = (
            await self._range_request(
                etcdrpc.RangeRequest(key=common.ALL_KEYS, limit=1, keys_only=True)
            )
        ).header.revision
        request = etcdrpc.CompactionRequest(revision=min(revision, current), physical=True)
        try:
            await self._request(
                lambda endpoint, timeout, metadata: endpoint.kv.Compact(
                    request, timeout=timeout, metadata=metadata
                ),
                write=False,  # compacting twice is harmless
            )
        except grpc.RpcError as error:
            if not common.is_compacted(error):
                raise  # compacted at or beyond this revision already: nothing to do

    def last_contact(self) -> float | None:
        """When etcd last answered this store: a request, or on a watch stream."""
        heard = [stream.contact for stream in self._streams if stream.contact is not None]
        if self._contact is not None:
            heard.append(self._contact)
        return max(heard, default=None)

    # -- errors and closing -----------------------------------------------------------

    def translate_error(self, error: Exception) -> KVError | None:
        return common.translate(error, self.url, self.endpoint, self.timeout, closed=self.closed)

    async def close(self) -> None:
        self.closed = True
        streams, self._streams = self._streams, []
        for stream in streams:
            if _current_loop(stream):
                await stream.close()
        await self._cleanup.wait()  # async-only
        for endpoint in self._endpoints:
            await endpoint.close()


def _current_loop(stream: AsyncWatchStream) -> bool:
    """Whether ``stream`` serves the running loop (async: a store may serve one loop
    after another)."""
    return stream.loop is asyncio.get_running_loop()  # async-only
    # sync-only: return True


def open_etcd_async(url: StoreURL) -> AsyncBackend:
    """The ``etcd`` scheme's initializer; it contacts no server."""
    return AsyncEtcdBackend(common.read_settings(url))
