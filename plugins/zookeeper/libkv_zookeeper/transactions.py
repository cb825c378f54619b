"""Planning one attempt at a commit: the nodes to read, and the multi built from them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from libkv.driver import Op, OpKind
from libkv_zookeeper.nodes import is_ambiguous, lineage, milliseconds, new_lease_id, parent_path
from libkv_zookeeper.protocol import Check, Create, CreateTTL, Delete, ReadData, SetData, WriteOp

if TYPE_CHECKING:
    from libkv_zookeeper.common import Layout


class Plan:
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

    A written value is the znode's data verbatim; an ambiguous one (empty, or starting
    like a previous layout's value) gets its verbatim record set in the same multi, so
    the record's mzxid is the key's; any other write or delete drops the key's record.
    A key under a lease gets its attachment entry set in the same multi likewise.
    """

    def __init__(self, store: Layout, ops: Sequence[Op]) -> None:
        self.store = store
        self.source = ops
        self.ops = [(op, store._path(op.key)) for op in ops]
        self.ttl_leases: dict[float, int] = {}
        self.deleted: list[str] = []
        self.roles: list[tuple[str, int]] = []
        reads: dict[str, None] = {}
        leased = False
        ambiguous = False
        for op, path in self.ops:
            reads[path] = None
            reads[store._record_path(path)] = None
            ambiguous = ambiguous or (op.kind.writes and is_ambiguous(op.value))
            parent = parent_path(path)
            while parent:
                reads[parent] = None
                parent = parent_path(parent)
            lease_id = self._lease_id(op)
            if lease_id:
                leased = True
                entry = store._entry_path(lease_id, path)
                reads[parent_path(entry)] = None
                reads[entry] = None
        if leased:
            for path in (store._bookkeeping, store._lease_root, store._attached_root):
                reads[path] = None
        if ambiguous:
            for path in (store._bookkeeping, store._verbatim_root):
                reads[path] = None
        self.reads = list(reads)

    def _lease_id(self, op: Op) -> int:
        if op.lease is not None:
            return op.lease.id
        if op.ttl is not None:
            if op.ttl not in self.ttl_leases:
                self.ttl_leases[op.ttl] = new_lease_id()
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
            parent = parent_path(path)
            while parent and parent not in exists:
                missing.append(parent)
                parent = parent_path(parent)
            for ancestor in reversed(missing):
                add(Create(ancestor, b"", acl), "parent", index)
                exists.add(ancestor)

        def mark(path: str, node: ReadData | None, index: int) -> None:
            """Create or rewrite the bookkeeping znode ``path``: its mzxid becomes the multi's."""
            if node is not None:
                add(SetData(path, b"", node.stat.version), "record", index)
            elif path not in exists:
                ensure(path, index)
                add(Create(path, b"", acl), "record", index)
                exists.add(path)

        for index, (op, path) in enumerate(self.ops):  # absence checks come first
            if op.kind is OpKind.CHECK and op.version == 0 and nodes[path] is None:
                highest = path
                while parent_path(highest) and nodes.get(parent_path(highest)) is None:
                    highest = parent_path(highest)
                add(Create(highest, b"", acl), "guard", index)
                add(Delete(highest, 0), "guard", index)
        for index, (op, _path) in enumerate(self.ops):
            if op.lease is not None:
                add(Check(store._lease_path(op.lease.id), -1), "lease", index)
        for ttl, lease_id in self.ttl_leases.items():
            index = next(i for i, (op, _) in enumerate(self.ops) if op.ttl == ttl)
            ensure(store._attached_root + "/x", index)
            ensure(store._lease_root + "/x", index)
            add(CreateTTL(store._lease_path(lease_id), b"", acl, milliseconds(ttl)), "ttl", index)
            directory = f"{store._attached_root}/{lease_id:016x}"
            add(Create(directory, b"", acl), "ttl", index)
            exists.add(directory)
        # Nodes this multi writes a child under: a deleted key among them stays their
        # implicit parent instead of being deleted, whatever the order of the ops.
        parents = {
            ancestor for op, path in self.ops if op.kind.writes for ancestor in lineage(path)[:-1]
        }
        for index, (op, path) in enumerate(self.ops):
            node = nodes[path]
            kind = op.kind
            record_path = store._record_path(path)
            record = nodes[record_path]
            if kind.writes:
                lease_id = op.lease.id if op.lease is not None else self._lease_id(op)
                data = op.value
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
                # Records and entries are set by this multi: their mzxid is the key's.
                if is_ambiguous(data):
                    mark(record_path, record, index)
                elif record is not None:
                    add(Delete(record_path, record.stat.version), "record", index)
                if lease_id:
                    entry = store._entry_path(lease_id, path)
                    mark(entry, nodes.get(entry), index)
            elif kind is OpKind.DELETE:
                assert node is not None  # first_failure saw the key
                if record is not None:
                    add(Delete(record_path, record.stat.version), "record", index)
                if node.stat.num_children == 0 and path not in parents:
                    add(Delete(path, node.stat.version), "op", index)
                    self.deleted.append(path)
                else:  # its children stay readable: it becomes their implicit parent
                    add(SetData(path, b"", node.stat.version), "op", index)
            elif node is not None:  # a check of an existing node (absence: see above)
                add(Check(path, node.stat.version), "op", index)
        return operations
