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
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from kazoo.exceptions import (
    EXCEPTIONS,
    ConnectionLoss,
    KazooException,
    NoNodeError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.serialization import Exists, GetData
from kazoo.protocol.serialization import Sync as KazooSync
from kazoo.security import make_digest_acl_credential

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
    StoreURL,
    first_failure,
    parse_bool,
    parse_seconds,
)
from libkv_zookeeper import protocol
from libkv_zookeeper.connection import ZooKeeperConnection
from libkv_zookeeper.feed import WatchFeed
from libkv_zookeeper.nodes import (
    BAD_ARGUMENTS,
    NO_AUTH,
    NO_CHILDREN_FOR_EPHEMERALS,
    NO_NODE,
    ROLLED_BACK,
    RUNTIME_INCONSISTENCY,
    UNIMPLEMENTED,
    decode_data,
    is_ambiguous,
    is_error,
    lineage,
    milliseconds,
    new_lease_id,
    parent_path,
    path_depth,
    protocol_set_data,
)
from libkv_zookeeper.paths import decode_segment, encode_segment, flatten, unflatten
from libkv_zookeeper.protocol import (
    Create,
    CreateTTL,
    Delete,
    ReadData,
    SetData,
    Stat,
    WriteOp,
)
from libkv_zookeeper.transactions import Plan

__all__ = ["CAPABILITIES", "ZooKeeperBackend", "open_zookeeper"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 2181
REAP_INTERVAL = 0.2  # seconds between two looks for dead leases by each open Store
OPEN_FEED_WAIT = 0.5  # longest a watch waits for the connection when (re)opening its feed
MAX_WRITE_OPS = 1000
CHECK_INTERVAL = 0.5  # the server's znode.container.checkIntervalMs assumed (check_interval=)

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


class ZooKeeperBackend(ZooKeeperConnection):
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
        super().__init__(
            url,
            hosts=hosts,
            namespace=namespace,
            timeout=timeout,
            session_timeout=session_timeout,
            tls=tls,
        )
        if check_interval != CHECK_INTERVAL:
            # Expiry waits for the server's TTL check: declare the slack it implies.
            self.capabilities = dataclasses.replace(
                CAPABILITIES, ttl_slack=CAPABILITIES.ttl_slack - CHECK_INTERVAL + check_interval
            )
        self._base = chroot  # "" or "/a/b": every path of this Store starts with it
        self._bookkeeping = self._base + "/%libkv"
        self._lease_root = self._bookkeeping + "/leases"
        self._attached_root = self._bookkeeping + "/attached"
        self._verbatim_root = self._bookkeeping + "/verbatim"
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
            if self._credentials
            else protocol.OPEN_ACL_UNSAFE
        )
        self._lease_clock: dict[int, tuple[float, float]] = {}  # id -> (refreshed, ttl)
        self._stopping = threading.Event()
        self._reaper = threading.Thread(
            target=self._reap_loop, name="libkv-zookeeper-reaper", daemon=True
        )
        self._reaper.start()

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

    def _record_path(self, path: str) -> str:
        """The verbatim record of the key at ``path`` (see :mod:`libkv_zookeeper.nodes`)."""
        return f"{self._verbatim_root}/{flatten(path[len(self._base) + 1 :])}"

    def _with_records(self, paths: Iterable[str]) -> list[str]:
        """``paths``, each followed by its verbatim record: read together, in one request."""
        return [read for path in paths for read in (path, self._record_path(path))]

    def _decoded(self, path: str, nodes: dict[str, ReadData | None]) -> tuple[bytes, int] | None:
        """(value, lease id of the previous layout or 0) of the znode at ``path``, or None
        if no key is there; ``nodes`` holds what was read of it and of its record."""
        node = nodes.get(path)
        if node is None:
            return None
        if not is_ambiguous(node.data):
            return node.data, 0
        record = nodes.get(self._record_path(path))
        return decode_data(node.data, record is not None and record.stat.mzxid == node.stat.mzxid)

    def _pair(self, key: str, path: str, nodes: dict[str, ReadData | None]) -> KVPair | None:
        decoded = self._decoded(path, nodes)
        if decoded is None:
            return None
        node = nodes[path]
        assert node is not None
        return KVPair(key, decoded[0], node.stat.mzxid)

    # -- reading --------------------------------------------------------------------------

    def get(self, key: str) -> KVPair | None:
        path = self._path(key)
        try:
            data, stat = self._send(GetData(path, None), write=False)
        except NoNodeError:
            return None
        if not is_ambiguous(data):
            return KVPair(key, data, stat.mzxid)
        # Empty data, or a previous layout's marker: the verbatim record decides.
        nodes, _ = self._read_nodes(self._with_records([path]))
        return self._pair(key, path, nodes)

    def _sync_before_reads(self) -> None:
        """Queue a sync ahead of the reads that follow, without waiting for it.

        A member answers a session's requests in order, so reads queued after a sync
        wait until the member has caught up with the leader: a list, or a watch's INIT
        snapshot, then holds every write acknowledged (to any client, through any
        member) before it was asked for. Pipelined, it costs no round trip of the
        client's; its own outcome does not matter (a lost connection fails the reads).
        """
        self._client._call(KazooSync("/"), self._client.handler.async_result())

    def get_many(self, keys: Sequence[str]) -> list[KVPair | None]:
        if not keys:
            return []
        paths = [self._path(key) for key in keys]
        nodes, _ = self._read_nodes(self._with_records(paths))
        return [self._pair(key, path, nodes) for key, path in zip(keys, paths, strict=True)]

    def range(self, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
        self._sync_before_reads()
        if not recursive:
            path = self._path(prefix)
            read, revision = self._read_nodes(self._with_records([path]))
            pair = self._pair(prefix, path, read)
            return ([pair] if pair is not None else []), revision
        root, include_root = self._range_root(prefix)
        nodes, zxid = self._snapshot(root)
        return self._pairs(nodes, None if include_root else root), zxid

    def _pairs(self, nodes: dict[str, ReadData | None], excluded: str | None) -> list[KVPair]:
        """The keys among ``nodes`` (read with their records), but ``excluded``, by key."""
        pairs = []
        for path in nodes:
            key = None if path == excluded else self._key(path)
            pair = None if key is None else self._pair(key, path, nodes)
            if pair is not None:
                pairs.append(pair)
        pairs.sort(key=lambda pair: pair.key)
        return pairs

    def _range_root(self, prefix: str) -> tuple[str, bool]:
        """The znode a driver prefix starts at, and whether that znode is in the range."""
        if not prefix:
            return self._base or "/", False
        if prefix[-1] == "/":
            return self._path(prefix[:-1]), False
        return self._path(prefix), True

    def _snapshot(self, root: str) -> tuple[dict[str, ReadData | None], int]:
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
            members = self._members(root, listed)
            reads = [
                read
                for path in members
                for read in (self._with_records([path]) if path in ambiguous else [path])
            ]
            results, zxid, atomic = self._multi_read([("data", path) for path in reads])
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
            consistent = not stale and not vanished and (atomic or self._unchanged(nodes))
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
                self._list(stale or list(listed), listed, ambiguous)

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

    def _list(
        self,
        paths: Sequence[str],
        listed: dict[str, tuple[int, int, list[str]]],
        ambiguous: set[str],
    ) -> None:
        """(Re)list ``paths``' children, each with the pzxid it was listed at; add those
        whose data is ambiguous (their record is to be read) to ``ambiguous``."""
        reads = [read for path in paths for read in (("data", path), ("children", path))]
        results, _, _ = self._multi_read(reads)
        for index, path in enumerate(paths):
            node, children = results[2 * index], results[2 * index + 1]
            if isinstance(node, ReadData) and isinstance(children, list):
                listed[path] = (node.stat.pzxid, node.stat.num_children, children)
                if self._below_base(path) and is_ambiguous(node.data):
                    ambiguous.add(path)
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

    def commit(self, ops: Sequence[Op]) -> list[KVPair | None]:
        if len(ops) == 1:
            op = ops[0]
            plain = op.kind is OpKind.PUT and op.ttl is None and op.lease is None
            if plain and not is_ambiguous(op.value):
                # One setData when the node exists: a put costs what a raw set costs. (A
                # record or lease entry the key had no longer matches its mzxid.)
                try:
                    stat = self._send(protocol_set_data(self._path(op.key), op.value), write=True)
                except NoNodeError:
                    pass
                else:
                    return [KVPair(op.key, op.value, stat.mzxid)]
        deadline = time.monotonic() + self.timeout
        synced = False
        while True:
            plan = Plan(self, ops)
            nodes, _ = self._read_nodes(plan.reads)
            error = first_failure(ops, [self._pair(op.key, path, nodes) for op, path in plan.ops])
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
                    if is_error(result) and result not in (ROLLED_BACK, RUNTIME_INCONSISTENCY)
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

    def delete_range(self, prefix: str) -> int:
        root, include_root = self._range_root(prefix)
        deadline = time.monotonic() + self.timeout
        count = 0
        while True:
            nodes, _ = self._snapshot(root)
            # The keys' verbatim records go with them (leaves: any order suits them), the
            # stale ones of unambiguous values too (a plain put leaves its record behind).
            unread = [
                record
                for path in nodes
                if self._key(path) is not None and (record := self._record_path(path)) not in nodes
            ]
            stale, _ = self._read_nodes(unread)
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
                results = self._send_multi([Delete(path, -1) for path in chunk])
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
        self._remove_empty_parents([root] if include_root else [root + "/x"])
        return count

    def _remove_empty_parents(self, paths: Iterable[str]) -> None:
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
                nodes, _ = self._read_nodes(self._with_records(candidates))
                for path in reversed(candidates):
                    node = nodes[path]
                    if node is None or node.stat.num_children or self._decoded(path, nodes):
                        continue
                    operations: list[WriteOp] = [Delete(path, node.stat.version)]
                    record = nodes[self._record_path(path)]
                    if record is not None:  # a stale one: no longer matches the znode
                        operations.append(Delete(self._record_path(path), record.stat.version))
                    results = self._send_multi(operations)
                    if not any(is_error(result) for result in results):
                        pending.add(parent_path(path))
            except KVError:
                log.debug("could not remove empty parents of %s", candidates, exc_info=True)
                return

    # -- leases -------------------------------------------------------------------------------

    def grant_lease(self, ttl: float) -> int:
        deadline = time.monotonic() + self.timeout
        while True:
            lease_id = new_lease_id()
            bookkeeping = [*lineage(self._bookkeeping), self._lease_root, self._attached_root]
            nodes, _ = self._read_nodes(bookkeeping)
            operations: list[WriteOp] = [
                Create(path, b"", self._acl) for path in bookkeeping if nodes[path] is None
            ]
            operations += [
                CreateTTL(self._lease_path(lease_id), b"", self._acl, milliseconds(ttl)),
                Create(f"{self._attached_root}/{lease_id:016x}", b"", self._acl),
            ]
            results = self._send_multi(operations)
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

    def keepalive_lease(self, lease_id: int) -> bool:
        try:
            self._send(protocol_set_data(self._lease_path(lease_id), b""), write=False)
        except NoNodeError:
            return False
        clock = self._lease_clock.get(lease_id)
        if clock is not None:
            self._lease_clock[lease_id] = (time.monotonic(), clock[1])
        return True

    def lease_ttl(self, lease_id: int) -> float | None:
        nodes, _ = self._read_nodes([self._lease_path(lease_id)])
        if nodes[self._lease_path(lease_id)] is None:
            self._lease_clock.pop(lease_id, None)
            return None
        refreshed, ttl = self._lease_clock.get(lease_id, (time.monotonic(), 0.0))
        # Until the server reaps it the znode is there; ask again soon after the ttl.
        return max(ttl - (time.monotonic() - refreshed), 0.0)

    def revoke_lease(self, lease_id: int) -> None:
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
        entry_paths = [f"{directory}/{entry}" for entry in entries]
        nodes, _ = self._read_nodes([*self._with_records(paths), *entry_paths])
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
        if any(is_error(result) for result in self._send_multi(operations)):
            return False
        self._remove_empty_parents(deleted)
        return True

    # -- watching -------------------------------------------------------------------------------

    def open_feed(self, prefix: str, after: int | None) -> WatchFeed:
        root = self._range_root(prefix)[0]
        deadline = time.monotonic() + OPEN_FEED_WAIT
        self._await_connection(deadline)
        with self._watch_lock:
            # Requests leave in the order they are queued: adding and removing a path's
            # watch are queued under the lock, so a removal never overtakes an addition.
            feed = WatchFeed(self, root, self._generation)
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

    def _forget(self, feed: WatchFeed) -> None:
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
        nodes, zxid = self._read_nodes(self._with_records(reads))
        pairs = [
            pair
            for key, path in zip(keys, reads, strict=True)
            if (pair := self._pair(key, path, nodes)) is not None
        ]
        return FeedBatch(zxid, snapshot=pairs, keys=keys)

    def _full_snapshot(self, root: str) -> FeedBatch:
        nodes, zxid = self._snapshot(root)
        return FeedBatch(zxid, snapshot=self._pairs(nodes, None))

    # -- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        self._stopping.set()
        super().close()


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


def open_zookeeper(url: StoreURL) -> ZooKeeperBackend:
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
    return ZooKeeperBackend(
        url,
        hosts=addresses,
        chroot=_chroot(url.path),
        namespace=options.get("prefix", ""),
        timeout=options.get("timeout", 10.0),
        session_timeout=options.get("session_timeout", 10.0),
        check_interval=options.get("check_interval", CHECK_INTERVAL),
        tls=tls,
    )
