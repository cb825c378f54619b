"""``zookeeper://``: libkv on ZooKeeper 3.6+ (tested on 3.8), through kazoo.

URL: ``zookeeper://[user:password@]host[:2181][,host[:port]...][/chroot][?options]``.
Options: ``prefix`` (namespace), ``timeout`` (seconds per operation, default 10),
``session_timeout`` (seconds, default 10), ``tls`` (true: TLS with the system roots),
``ca``, ``cert``, ``key`` (PEM files; ``ca`` or ``cert`` imply TLS), ``verify``
(default true: check the server's certificate), ``check_interval`` (seconds, default
0.5: the server's ``znode.container.checkIntervalMs``, which ``ttl_slack`` depends on).

Layout: a key is the znode at its path (segments percent-encoded where ZooKeeper
refuses characters, see :mod:`libkv_zookeeper.paths`), and its value is the znode's
data, verbatim. A znode with no data is an implicit parent, not a key, unless a
verbatim record ``%libkv/verbatim/<path>`` written in the same multi (same mzxid) says
its data is a value (the empty value; also one that starts like a previous layout's
marker, see :mod:`libkv_zookeeper.nodes`). Versions are mzxids.
Every write is one multi whose ops carry the data-version checks of the state its
conditions were evaluated on; ttl= and leases are TTL znodes under ``%libkv/leases``
whose keys (entries under ``%libkv/attached`` with the key's mzxid) any open Store
deletes once the server has reaped them.

One implementation in two flavours: the sync backend is generated from the async one
by ``scripts/unasync.py`` (renaming ``await``, ``Async...`` and the module).
Every request goes out through kazoo's connection thread, as kazoo's asynchronous
calls do; how a call waits for its answer is each flavour's ``io`` module: the sync
one blocks on kazoo's result, the async one awaits a future that kazoo's thread
completes with ``loop.call_soon_threadsafe`` (no thread per call, watch or lease).
What is not I/O (settings, the layout of keys in znodes, the session and its error
translation) is shared: :mod:`libkv_zookeeper.common`, :mod:`libkv_zookeeper.connection`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from kazoo.exceptions import (
    EXCEPTIONS,
    ConnectionLoss,
    KazooException,
    NoNodeError,
    SessionClosedRequireSaslError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.serialization import Exists, GetData
from kazoo.protocol.serialization import Sync as KazooSync
from kazoo.protocol.states import KeeperState

from libkv.driver import (
    AsyncBackend,
    AuthenticationError,
    FeedBatch,
    KVError,
    KVPair,
    LeaseNotFoundError,
    NotReachableError,
    NotSupportedError,
    Op,
    OpKind,
    StoreClosedError,
    StoreURL,
    UnknownOutcomeError,
    ValueTooLargeError,
    first_failure,
)
from libkv_zookeeper import protocol
from libkv_zookeeper._async.io import (
    AsyncReaper,
    AsyncWatchFeed,
    async_connected,
    async_finish_closing,
    async_outcome,
    pending_result,
)
from libkv_zookeeper.common import (
    CAPABILITIES,
    CHECK_INTERVAL,
    DECODE_SLICE,
    MAX_WRITE_OPS,
    OPEN_FEED_WAIT,
    Layout,
    read_settings,
)
from libkv_zookeeper.connection import (
    JUTE_MAXBUFFER,
    READ_LIMIT,
    REQUEST_LIMIT,
    ZooKeeperSession,
)
from libkv_zookeeper.nodes import (
    BAD_ARGUMENTS,
    NO_AUTH,
    NO_CHILDREN_FOR_EPHEMERALS,
    NO_NODE,
    ROLLED_BACK,
    RUNTIME_INCONSISTENCY,
    UNIMPLEMENTED,
    is_ambiguous,
    is_error,
    lineage,
    milliseconds,
    new_lease_id,
    parent_path,
    path_depth,
    protocol_set_data,
)
from libkv_zookeeper.paths import unflatten
from libkv_zookeeper.protocol import (
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
from libkv_zookeeper.transactions import Plan

__all__ = ["CAPABILITIES", "AsyncZooKeeperBackend", "open_zookeeper_async"]

log = logging.getLogger(__name__)


class AsyncZooKeeperBackend(Layout, ZooKeeperSession, AsyncBackend):
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
        AsyncBackend.__init__(self, url, namespace=namespace, timeout=timeout)
        self._lay_out(url, chroot, check_interval)
        self._open_session(hosts=hosts, session_timeout=session_timeout, tls=tls)
        self._lease_clock: dict[int, tuple[float, float]] = {}  # id -> (refreshed, ttl)
        # The reaper: a thread started now (sync), a task started by the first call in
        # each loop (async).
        self._reaper = AsyncReaper(self._reap, "libkv-zookeeper-reaper")
        # sync-only: self._reaper.start()

    # -- calling ZooKeeper --------------------------------------------------------------

    async def _await_connection(self, deadline: float) -> None:
        if self._unauthenticated:
            raise AuthenticationError(self._refused())
        if self._connected.is_set():
            return
        # A Store that has been without its server for a whole timeout already says so
        # at once (kazoo keeps reconnecting meanwhile, at least once a second), rather
        # than making each call wait a timeout of its own: a watch that just raised
        # NotReachableError is not followed by a lease revocation blocking as long again.
        since = self._disconnected_since
        if since is not None:
            deadline = min(deadline, max(since + self.timeout, time.monotonic()))
        while not await async_connected(self, max(min(0.05, deadline - time.monotonic()), 0.0)):
            if self.closed:
                raise StoreClosedError(f"store is closed: {self.url}")
            if self._client.client_state == KeeperState.AUTH_FAILED:
                raise AuthenticationError(self._refused())
            if time.monotonic() >= deadline:
                failure = self._kazoo_log.last_failure
                raise NotReachableError(
                    f"zookeeper at {self._hosts} not reachable within {self.timeout} s"
                    + (f": {failure}" if failure is not None else "")
                ) from failure

    async def _send(self, request: Any, *, write: bool, timeout: float | None = None) -> Any:
        """Send one request, waiting for the connection; retry a read until the timeout.

        A write whose connection fails after it may have been sent raises
        UnknownOutcomeError; it is never sent twice.
        """
        self._reaper.start()  # async-only
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            await self._await_connection(deadline)
            pending = pending_result(self._client)
            self._client._call(request, pending)
            try:
                return await async_outcome(self, pending, deadline)
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

    async def _multi_read(
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
            for result in await self._send(request, write=False, timeout=timeout):
                if isinstance(result, int):
                    if result != NO_NODE:  # the only error a read of many nodes expects
                        raise EXCEPTIONS[result]()
                    results.append(None)
                else:
                    results.append(result)
            zxid = max(zxid, request.zxid)
        return results, zxid, len(chunks) == 1

    async def _read_nodes(self, paths: Sequence[str]) -> tuple[dict[str, ReadData | None], int]:
        results, zxid, _ = await self._multi_read([("data", path) for path in paths])
        return {
            path: result if isinstance(result, ReadData) else None
            for path, result in zip(paths, results, strict=True)
        }, zxid

    async def _send_multi(self, operations: list[WriteOp]) -> list[Any]:
        size = protocol.request_size(operations)
        if size > REQUEST_LIMIT:
            raise ValueTooLargeError(
                f"the request of {size} bytes exceeds ZooKeeper's jute.maxbuffer "
                f"({JUTE_MAXBUFFER} bytes)"
            )
        request = Multi(operations)
        results: list[Any] = await self._send(request, write=True)
        return results

    # -- reading --------------------------------------------------------------------------

    async def get(self, key: str) -> KVPair | None:
        path = self._path(key)
        try:
            data, stat = await self._send(GetData(path, None), write=False)
        except NoNodeError:
            return None
        if not is_ambiguous(data):
            return KVPair(key, data, stat.mzxid)
        # Empty data, or a previous layout's marker: the verbatim record decides.
        nodes, _ = await self._read_nodes(self._with_records([path]))
        return self._pair(key, path, nodes)

    async def get_many(self, keys: Sequence[str]) -> list[KVPair | None]:
        if not keys:
            return []
        paths = [self._path(key) for key in keys]
        nodes, _ = await self._read_nodes(self._with_records(paths))
        return [self._pair(key, path, nodes) for key, path in zip(keys, paths, strict=True)]

    async def range(self, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
        self._sync_before_reads()
        if not recursive:
            path = self._path(prefix)
            read, revision = await self._read_nodes(self._with_records([path]))
            pair = self._pair(prefix, path, read)
            return ([pair] if pair is not None else []), revision
        root, include_root = self._range_root(prefix)
        nodes, zxid = await self._snapshot(root)
        return await self._decode(nodes, None if include_root else root), zxid

    async def _decode(
        self, nodes: dict[str, ReadData | None], excluded: str | None
    ) -> list[KVPair]:
        """The keys among ``nodes`` (a subtree read with its records), but ``excluded``,
        sorted by key; decoded DECODE_SLICE nodes at a time, and the async flavour lets
        other tasks run before each slice, so a large subtree never holds the loop."""
        paths = list(nodes)
        pairs: list[KVPair] = []
        for start in range(0, len(paths), DECODE_SLICE):
            await asyncio.sleep(0)  # async-only
            pairs += self._pairs(paths[start : start + DECODE_SLICE], nodes, excluded)
        pairs.sort(key=lambda pair: pair.key)
        return pairs

    async def _snapshot(self, root: str) -> tuple[dict[str, ReadData | None], int]:
        """Every node of the subtree at ``root`` (keys' subtrees only), as of one zxid,
        with the verbatim records of those whose data needs one to be classified.

        ZooKeeper has no subtree read, so this lists children and then reads every node's
        data in one multiRead, which the server answers from one state. The children lists
        are right for that state when each listed node's pzxid and child count are what
        they were when it was listed (pzxid changes with every child created or deleted);
        otherwise the changed nodes are listed again. When the subtree needs several
        requests, a second pass must find every mzxid and pzxid unchanged.

        A node whose data is ambiguous (no data, or a previous layout's marker) is
        classified by its verbatim record, read in the same request right after it. The
        nodes to read one for are the listed ones whose data was ambiguous when listed
        (implicit parents, mostly); a leaf found ambiguous (an empty value) joins them
        and the read is done again, so records cost reads only where they decide.
        """
        deadline = time.monotonic() + self.timeout
        listed: dict[str, tuple[int, int, list[str]]] = {}  # path -> (pzxid, count, children)
        ambiguous: set[str] = set()  # nodes whose record is read along
        while True:
            members = await self._members(root, listed)
            reads = [
                read
                for path in members
                for read in (self._with_records([path]) if path in ambiguous else [path])
            ]
            results, zxid, atomic = await self._multi_read([("data", path) for path in reads])
            found = dict(zip(reads, results, strict=True))
            nodes = {
                path: result for path in members if isinstance(result := found[path], ReadData)
            }
            unclassified = [
                path
                for path, node in nodes.items()
                if path not in ambiguous and self._below_base(path) and is_ambiguous(node.data)
            ]
            stale = [
                path
                for path, node in nodes.items()
                if (node.stat.num_children > 0 or path in listed)
                and listed.get(path, (-1, -1, []))[:2] != (node.stat.pzxid, node.stat.num_children)
            ]
            vanished = len(nodes) < len(members) - (root not in nodes)
            consistent = not stale and not vanished and (atomic or await self._unchanged(nodes))
            if consistent and not unclassified:
                records = {
                    path: result
                    for path, result in found.items()
                    if path not in nodes and isinstance(result, ReadData)
                }
                return {**nodes, **records}, zxid
            if time.monotonic() > deadline:
                raise KVError(f"the subtree at {root!r} kept changing while it was read")
            ambiguous.update(unclassified)
            if not consistent:
                await self._list(stale or list(listed), listed, ambiguous)

    async def _members(self, root: str, listed: dict[str, tuple[int, int, list[str]]]) -> list[str]:
        """The listed subtree at ``root``: the paths of ``root`` and of its descendants
        that may be keys, top-down. The async flavour lets other tasks run every
        DECODE_SLICE of them (each path is decoded)."""
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
                    if len(members) % DECODE_SLICE == 0:  # async-only
                        await asyncio.sleep(0)  # async-only
        return members

    async def _list(
        self,
        paths: Sequence[str],
        listed: dict[str, tuple[int, int, list[str]]],
        ambiguous: set[str],
    ) -> None:
        """(Re)list ``paths``' children, each with the pzxid it was listed at; add those
        whose data is ambiguous (their record is to be read) to ``ambiguous``."""
        reads = [read for path in paths for read in (("data", path), ("children", path))]
        results, _, _ = await self._multi_read(reads)
        for index, path in enumerate(paths):
            node, children = results[2 * index], results[2 * index + 1]
            if isinstance(node, ReadData) and isinstance(children, list):
                listed[path] = (node.stat.pzxid, node.stat.num_children, children)
                if self._below_base(path) and is_ambiguous(node.data):
                    ambiguous.add(path)
            else:
                listed.pop(path, None)

    async def _unchanged(self, nodes: dict[str, ReadData]) -> bool:
        """Whether every node still has the mzxid and pzxid it was read with."""
        again, _ = await self._read_nodes(list(nodes))
        return all(
            (node := again[path]) is not None
            and (node.stat.mzxid, node.stat.pzxid) == (old.stat.mzxid, old.stat.pzxid)
            for path, old in nodes.items()
        )

    # -- writing ------------------------------------------------------------------------

    async def commit(self, ops: Sequence[Op]) -> list[KVPair | None]:
        if len(ops) == 1:
            op = ops[0]
            plain = op.kind is OpKind.PUT and op.ttl is None and op.lease is None
            if plain and not is_ambiguous(op.value):
                # One setData when the node exists: a put costs what a raw set costs. (A
                # record or lease entry the key had no longer matches its mzxid.)
                try:
                    stat = await self._send(
                        protocol_set_data(self._path(op.key), op.value), write=True
                    )
                except NoNodeError:
                    pass
                else:
                    return [KVPair(op.key, op.value, stat.mzxid)]
        deadline = time.monotonic() + self.timeout
        synced = False
        while True:
            plan = Plan(self, ops)
            nodes, _ = await self._read_nodes(plan.reads)
            error = first_failure(ops, [self._pair(op.key, path, nodes) for op, path in plan.ops])
            if error is not None:
                if synced:
                    raise error
                # A follower may not have applied the write that makes the condition
                # hold yet: catch up with the leader before refusing.
                await self._send(KazooSync(self._base or "/"), write=False)
                synced = True
                continue
            operations = plan.build(nodes)
            results = await self._send_multi(operations)
            failed = next(
                (
                    (slot, result)
                    for slot, result in enumerate(results)
                    if is_error(result) and result not in (ROLLED_BACK, RUNTIME_INCONSISTENCY)
                ),
                None,
            )
            if failed is None:
                zxid = next((result.mzxid for result in results if isinstance(result, Stat)), 0)
                await self._remove_empty_parents(plan.deleted)
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

    async def delete_range(self, prefix: str) -> int:
        root, include_root = self._range_root(prefix)
        deadline = time.monotonic() + self.timeout
        count = 0
        while True:
            nodes, _ = await self._snapshot(root)
            # The keys' verbatim records go with them (leaves: any order suits them), the
            # stale ones of unambiguous values too (a plain put leaves its record behind).
            unread = [
                record
                for path in nodes
                if self._key(path) is not None and (record := self._record_path(path)) not in nodes
            ]
            stale, _ = await self._read_nodes(unread)
            found = [*nodes, *(path for path, node in stale.items() if node is not None)]
            kept = () if include_root else (root, self._record_path(root))
            doomed = sorted(
                (path for path in found if path not in kept), key=path_depth, reverse=True
            )
            if not doomed:
                break
            done = True
            for start in range(0, len(doomed), MAX_WRITE_OPS):
                chunk = doomed[start : start + MAX_WRITE_OPS]
                results = await self._send_multi([Delete(path, -1) for path in chunk])
                if any(is_error(result) for result in results):
                    done = False  # changed meanwhile: read again
                    break
                count += sum(
                    1
                    for path in chunk
                    if self._key(path) is not None and self._decoded(path, nodes) is not None
                )
            if done:
                break
            if time.monotonic() > deadline:
                raise KVError(f"the subtree at {root!r} kept changing while it was deleted")
        # The range's implicit ancestors (or its root, when only descendants went) may be empty.
        await self._remove_empty_parents([root] if include_root else [root + "/x"])
        return count

    async def _remove_empty_parents(self, paths: Iterable[str]) -> None:
        """Delete the implicit parents (no key there) that ``paths``' deletion left childless."""
        pending = {parent_path(path) for path in paths}
        while pending:
            candidates = sorted(
                (path for path in pending if self._below_base(path)), key=path_depth
            )
            pending = set()
            if not candidates:
                return
            try:
                nodes, _ = await self._read_nodes(self._with_records(candidates))
                for path in reversed(candidates):
                    node = nodes[path]
                    if node is None or node.stat.num_children or self._decoded(path, nodes):
                        continue
                    operations: list[WriteOp] = [Delete(path, node.stat.version)]
                    record = nodes[self._record_path(path)]
                    if record is not None:  # a stale one: no longer matches the znode
                        operations.append(Delete(self._record_path(path), record.stat.version))
                    results = await self._send_multi(operations)
                    if not any(is_error(result) for result in results):
                        pending.add(parent_path(path))
            except KVError:
                log.debug("could not remove empty parents of %s", candidates, exc_info=True)
                return

    # -- leases -------------------------------------------------------------------------------

    async def grant_lease(self, ttl: float) -> int:
        # async-only: begin
        # A grant cancelled after its multi was sent may still be applied: the lease it
        # made is then revoked by a clean-up task (close() waits for those), so a
        # cancelled call leaves no lease behind.
        granting = asyncio.ensure_future(self._grant(ttl))
        try:
            return await asyncio.shield(granting)
        except asyncio.CancelledError:
            granting.add_done_callback(self._revoke_granted)
            raise
        # async-only: end
        # sync-only: return self._grant(ttl)

    # async-only: begin
    def _revoke_granted(self, granting: asyncio.Future[int]) -> None:
        if granting.cancelled() or granting.exception() is not None:
            return  # no lease, or one of unknown outcome, which its ttl ends
        self._reaper.spawn(self._revoke_quietly(granting.result()), "libkv-zookeeper-revoke")

    async def _revoke_quietly(self, lease_id: int) -> None:
        try:
            await self.revoke_lease(lease_id)
        except Exception as error:  # best effort: the ttl ends it anyway
            log.info("cannot revoke lease %d of a cancelled grant: %s", lease_id, error)

    # async-only: end
    async def _grant(self, ttl: float) -> int:
        deadline = time.monotonic() + self.timeout
        while True:
            lease_id = new_lease_id()
            bookkeeping = [*lineage(self._bookkeeping), self._lease_root, self._attached_root]
            nodes, _ = await self._read_nodes(bookkeeping)
            operations: list[WriteOp] = [
                Create(path, b"", self._acl) for path in bookkeeping if nodes[path] is None
            ]
            operations += [
                CreateTTL(self._lease_path(lease_id), b"", self._acl, milliseconds(ttl)),
                Create(f"{self._attached_root}/{lease_id:016x}", b"", self._acl),
            ]
            results = await self._send_multi(operations)
            errors = [result for result in results if is_error(result)]
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

    async def keepalive_lease(self, lease_id: int) -> bool:
        try:
            await self._send(protocol_set_data(self._lease_path(lease_id), b""), write=False)
        except NoNodeError:
            return False
        clock = self._lease_clock.get(lease_id)
        if clock is not None:
            self._lease_clock[lease_id] = (time.monotonic(), clock[1])
        return True

    async def lease_ttl(self, lease_id: int) -> float | None:
        nodes, _ = await self._read_nodes([self._lease_path(lease_id)])
        if nodes[self._lease_path(lease_id)] is None:
            self._lease_clock.pop(lease_id, None)
            return None
        refreshed, ttl = self._lease_clock.get(lease_id, (time.monotonic(), 0.0))
        # Until the server reaps it the znode is there; ask again soon after the ttl.
        return max(ttl - (time.monotonic() - refreshed), 0.0)

    async def revoke_lease(self, lease_id: int) -> None:
        self._lease_clock.pop(lease_id, None)
        await self._send_multi([Delete(self._lease_path(lease_id), -1)])  # absent already: fine
        deadline = time.monotonic() + self.timeout
        while not await self._reap_lease(f"{lease_id:016x}"):
            if time.monotonic() > deadline:
                raise KVError(f"could not delete the keys of lease {lease_id}")

    async def _reap(self) -> None:
        """The reaper's work every REAP_INTERVAL until close(): delete the keys of the
        leases the server has reaped (one small read when there are none)."""
        if not self._connected.is_set() or self.closed:
            return
        try:
            results, _, _ = await self._multi_read(
                [("children", self._attached_root), ("children", self._lease_root)],
                timeout=1.0,
            )
            attached, live = results
            if not isinstance(attached, list):
                return
            alive = set(live) if isinstance(live, list) else set()
            for name in attached:
                if name not in alive:
                    await self._reap_lease(name)
        except (KVError, KazooException):
            log.debug("reaping expired leases failed; trying again", exc_info=True)

    async def _reap_lease(self, name: str) -> bool:
        """Delete the keys still attached to the dead lease ``name``; True once done."""
        directory = f"{self._attached_root}/{name}"
        try:
            lease_id = int(name, 16)
        except ValueError:
            return True
        results, _, _ = await self._multi_read([("children", directory)])
        entries = results[0]
        if not isinstance(entries, list):
            return True
        paths = [self._base + "/" + unflatten(entry) for entry in entries]
        entry_paths = [f"{directory}/{entry}" for entry in entries]
        nodes, _ = await self._read_nodes([*self._with_records(paths), *entry_paths])
        operations: list[WriteOp] = []
        deleted = []
        for path, entry_path in zip(paths, entry_paths, strict=True):
            node, entry = nodes[path], nodes[entry_path]
            decoded = self._decoded(path, nodes)
            # Attached: the entry was written by the key's last write (same mzxid), or the
            # key's data names the lease (the previous layout). Any later write detached it.
            if (
                node is not None
                and decoded is not None
                and (
                    (entry is not None and entry.stat.mzxid == node.stat.mzxid)
                    or decoded[1] == lease_id
                )
            ):
                record = nodes[self._record_path(path)]
                if record is not None:
                    operations.append(Delete(self._record_path(path), record.stat.version))
                if node.stat.num_children == 0:
                    operations.append(Delete(path, node.stat.version))
                    deleted.append(path)
                else:  # its children stay: it becomes their implicit parent
                    operations.append(SetData(path, b"", node.stat.version))
            operations.append(Delete(entry_path, -1))
        operations.append(Delete(directory, -1))
        if any(is_error(result) for result in await self._send_multi(operations)):
            return False
        await self._remove_empty_parents(deleted)
        return True

    # -- watching -------------------------------------------------------------------------------

    async def open_feed(self, prefix: str, after: int | None) -> AsyncWatchFeed:
        root = self._range_root(prefix)[0]
        deadline = time.monotonic() + OPEN_FEED_WAIT
        await self._await_connection(deadline)
        with self._watch_lock:
            # Requests leave in the order they are queued: adding and removing a path's
            # watch are queued under the lock, so a removal never overtakes an addition.
            feed = AsyncWatchFeed(self, root, self._generation)
            self._feeds = (*self._feeds, feed)
            count = self._watched.get(root, 0)
            self._watched[root] = count + 1
            # The watch on root exists already on this connection: an exists request
            # proves the connection still answers (a feed opened on a frozen server
            # would let the engine's re-read block for a whole timeout).
            request = (
                protocol.AddWatch(root, protocol.WATCH_PERSISTENT_RECURSIVE)
                if count == 0
                else Exists("/", None)
            )
            added = pending_result(self._client)
            self._client._call(request, added)
        try:
            await async_outcome(self, added, max(deadline, time.monotonic() + OPEN_FEED_WAIT))
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

    async def _read_changes(self, paths: Sequence[str]) -> FeedBatch | None:
        keys: list[str] = []
        reads: list[str] = []
        for path in paths:
            key = self._key(path)
            if key is not None:
                keys.append(key)
                reads.append(path)
        if not keys:
            return None
        nodes, zxid = await self._read_nodes(self._with_records(reads))
        pairs = [
            pair
            for key, path in zip(keys, reads, strict=True)
            if (pair := self._pair(key, path, nodes)) is not None
        ]
        return FeedBatch(zxid, snapshot=pairs, keys=keys)

    async def _full_snapshot(self, root: str) -> FeedBatch:
        nodes, zxid = await self._snapshot(root)
        return FeedBatch(zxid, snapshot=await self._decode(nodes, None))

    # -- closing --------------------------------------------------------------------------------

    async def close(self) -> None:
        await self._reaper.stop(self.timeout)
        await async_finish_closing(self._start_closing())


def open_zookeeper_async(url: StoreURL) -> AsyncZooKeeperBackend:
    """The ``zookeeper`` scheme's initializer; it contacts no server (the session is
    made in the background, and the first call waits for it up to ``timeout``)."""
    return AsyncZooKeeperBackend(url, **read_settings(url))
