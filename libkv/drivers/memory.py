"""``memory://``: the in-process reference implementation of the contract.

``memory://`` is private to its Store; ``memory://NAME`` is one database shared by
every Store opened with that name in this process (it lives while one is open).
Options: ``prefix`` (namespace), ``history`` (changes kept for ``since=``; default
100000). Versions come from one revision counter per database; every transaction is
one revision. A reaper thread expires TTLs and leases exactly on time, so the slack
is only scheduling delay.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

from libkv.driver import (
    Action,
    Backend,
    Capabilities,
    Event,
    FeedBatch,
    HistoryLostError,
    InlineBackend,
    InvalidURLError,
    KVPair,
    LeaseNotFoundError,
    Op,
    OpKind,
    StoreURL,
    Wakers,
    first_failure,
    in_prefix,
    parse_positive_int,
    take_batch,
)

__all__ = ["MemoryBackend", "open_memory", "open_memory_async"]

_REAPER_JOIN = 1.0  # seconds close() waits for the reaper, which ends at once

CAPABILITIES = Capabilities(
    watch_every_change=True,
    watch_resume=True,
    ttl_min=0.01,
    ttl_max=1e9,  # about 31 years; every backend represents it
    ttl_slack=0.5,
    max_value_size=16 * 1024 * 1024,
    max_transaction_ops=10_000,
    native_async=True,
)

_databases: weakref.WeakValueDictionary[str, _Database] = weakref.WeakValueDictionary()
_databases_lock = threading.Lock()
_private_names = itertools.count(1)


@dataclass(slots=True)
class _Entry:
    pair: KVPair
    expires_at: float | None = None
    lease: int | None = None


@dataclass(slots=True)
class _LeaseRecord:
    ttl: float
    expires_at: float
    keys: set[str] = field(default_factory=set)


class _Database:
    """The shared state of one memory database; every method takes ``condition``."""

    def __init__(self, history: int) -> None:
        self.condition = threading.Condition(threading.Lock())
        self.entries: dict[str, _Entry] = {}
        self.revision = 0
        self.history = history
        self.log: list[tuple[int, str, KVPair | None]] = []  # (revision, key, pair or None)
        self.compacted = 0  # changes with revision <= compacted are gone
        self.leases: dict[int, _LeaseRecord] = {}
        self.lease_ids = itertools.count(1)
        self.deadlines: list[tuple[float, int, str]] = []  # (when, lease id or 0, key)
        self.reaper: threading.Thread | None = None
        self.stores = 0
        self.waiting = 0  # threads blocked in condition.wait(); skip notify when none
        self.wakers = Wakers()  # async feeds waiting for a change

    def record(self, events: list[tuple[int, str, KVPair | None]]) -> None:
        log = self.log
        log.extend(events)
        if len(log) > self.history + self.history // 4 + 1:
            cut = len(log) - self.history
            self.compacted = log[cut - 1][0]
            del log[:cut]
        if self.waiting:
            self.condition.notify_all()
        self.wakers.wake()

    def schedule(self, when: float, lease_id: int, key: str) -> None:
        heapq.heappush(self.deadlines, (when, lease_id, key))
        if self.reaper is None:
            self.reaper = threading.Thread(
                target=_reap, args=(weakref.ref(self),), name="libkv-memory-reaper", daemon=True
            )
            self.reaper.start()
        elif self.deadlines[0][0] == when:
            self.condition.notify_all()

    def detach(self, key: str, entry: _Entry) -> None:
        if entry.lease is not None:
            record = self.leases.get(entry.lease)
            if record is not None:
                record.keys.discard(key)

    def remove(self, keys: Sequence[str]) -> list[tuple[int, str, KVPair | None]]:
        """Delete ``keys`` (which exist) as one new revision."""
        if not keys:
            return []
        self.revision += 1
        for key in keys:
            self.detach(key, self.entries.pop(key))
        return [(self.revision, key, None) for key in keys]

    def expire(self, now: float) -> None:
        """Remove every key and lease whose deadline has passed."""
        expired: list[str] = []
        while self.deadlines and self.deadlines[0][0] <= now:
            when, lease_id, key = heapq.heappop(self.deadlines)
            if lease_id:
                record = self.leases.get(lease_id)
                if record is not None and record.expires_at == when:
                    del self.leases[lease_id]
                    expired.extend(sorted(record.keys))
            else:
                entry = self.entries.get(key)
                if entry is not None and entry.expires_at == when:
                    expired.append(key)
        if expired:
            self.record(self.remove(list(dict.fromkeys(expired))))


def _reap(database_ref: weakref.ref[_Database]) -> None:
    while True:
        database = database_ref()
        if database is None:
            return
        with database.condition:
            if database.stores <= 0:
                database.reaper = None
                return
            now = time.monotonic()
            database.expire(now)
            wait = database.deadlines[0][0] - now if database.deadlines else 1.0
            condition = database.condition
            database.waiting += 1
            try:
                del database
                condition.wait(min(max(wait, 0.0), 1.0))
            finally:
                database = database_ref()
                if database is not None:
                    database.waiting -= 1
                del database


class _MemoryFeed:
    def __init__(self, database: _Database, prefix: str, after: int) -> None:
        self._database = database
        self._prefix = prefix
        self._after = after
        self._closed = False

    def poll(self, timeout: float) -> FeedBatch | None:
        database = self._database
        with database.condition:
            if database.revision <= self._after and not self._closed:
                database.waiting += 1
                try:
                    database.condition.wait(timeout)
                finally:
                    database.waiting -= 1
            if self._closed:
                return None
            if self._after < database.compacted:
                raise HistoryLostError(
                    f"changes after revision {self._after} were discarded "
                    f"(history starts after {database.compacted})"
                )
            if database.revision <= self._after:
                return None
            log, prefix = database.log, self._prefix
            start = bisect.bisect_right(log, self._after, key=_revision_of)
            tail = (log[index] for index in range(start, len(log)))
            found, more = take_batch(
                (change for change in tail if in_prefix(change[1], prefix)), _revision_of
            )
            self._after = found[-1][0] if more else database.revision
        changes = [
            Event(Action.DELETE if pair is None else Action.UPDATE, key, pair, revision)
            for revision, key, pair in found
        ]
        return FeedBatch(self._after, changes)

    def close(self) -> None:
        with self._database.condition:
            self._closed = True
            self._database.condition.notify_all()


class MemoryBackend(Backend):
    """A backend kept in this process's memory; see the module docstring."""

    capabilities = CAPABILITIES

    def __init__(self, url: StoreURL, database: _Database, namespace: str) -> None:
        super().__init__(url, namespace=namespace)
        self._database = database
        with database.condition:
            database.stores += 1

    def get(self, key: str) -> KVPair | None:
        entry = self._database.entries.get(key)
        return entry.pair if entry is not None else None

    def range(self, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
        database = self._database
        with database.condition:
            if not recursive:
                entry = database.entries.get(prefix)
                return ([entry.pair] if entry else []), database.revision
            pairs = [
                entry.pair for key, entry in database.entries.items() if in_prefix(key, prefix)
            ]
            revision = database.revision
        pairs.sort(key=lambda pair: pair.key)
        return pairs, revision

    def commit(self, ops: Sequence[Op]) -> list[KVPair | None]:
        database = self._database
        with database.condition:
            entries = database.entries
            if len(ops) > 1 or ops[0].kind is not OpKind.PUT:
                current = [entries[op.key].pair if op.key in entries else None for op in ops]
                failure = first_failure(ops, current)
                if failure is not None:
                    raise failure
            for op in ops:
                if op.lease is not None and op.lease.id not in database.leases:
                    raise LeaseNotFoundError(f"lease {op.lease.id} has expired or was revoked")
            if ops[0].kind is OpKind.CHECK and all(op.kind is OpKind.CHECK for op in ops):
                return [None] * len(ops)
            database.revision += 1
            revision = database.revision
            results: list[KVPair | None] = []
            events: list[tuple[int, str, KVPair | None]] = []
            for op in ops:
                kind, key = op.kind, op.key
                if kind is OpKind.CHECK:
                    results.append(None)
                    continue
                previous = entries.get(key)
                if previous is not None and previous.lease is not None:
                    database.detach(key, previous)
                if kind is OpKind.DELETE:
                    del entries[key]
                    events.append((revision, key, None))
                    results.append(None)
                    continue
                pair = KVPair(key, op.value, revision)
                entry = _Entry(pair)
                if op.ttl is not None:
                    entry.expires_at = time.monotonic() + op.ttl
                    database.schedule(entry.expires_at, 0, key)
                elif op.lease is not None:
                    entry.lease = op.lease.id
                    database.leases[op.lease.id].keys.add(key)
                entries[key] = entry
                events.append((revision, key, pair))
                results.append(pair)
            database.record(events)
            return results

    def delete_range(self, prefix: str) -> int:
        database = self._database
        with database.condition:
            doomed = sorted(key for key in database.entries if in_prefix(key, prefix))
            database.record(database.remove(doomed))
            return len(doomed)

    def grant_lease(self, ttl: float) -> int:
        database = self._database
        with database.condition:
            lease_id = next(database.lease_ids)
            record = _LeaseRecord(ttl, time.monotonic() + ttl)
            database.leases[lease_id] = record
            database.schedule(record.expires_at, lease_id, "")
            return lease_id

    def keepalive_lease(self, lease_id: int) -> bool:
        database = self._database
        with database.condition:
            record = database.leases.get(lease_id)
            if record is None:
                return False
            record.expires_at = time.monotonic() + record.ttl
            database.schedule(record.expires_at, lease_id, "")
            return True

    def lease_ttl(self, lease_id: int) -> float | None:
        with self._database.condition:
            record = self._database.leases.get(lease_id)
            return None if record is None else max(0.0, record.expires_at - time.monotonic())

    def revoke_lease(self, lease_id: int) -> None:
        database = self._database
        with database.condition:
            record = database.leases.pop(lease_id, None)
            if record is not None:
                database.record(database.remove(sorted(record.keys)))

    def open_feed(self, prefix: str, after: int | None) -> _MemoryFeed:
        database = self._database
        with database.condition:
            start = database.revision if after is None else after
            if start < database.compacted:
                raise HistoryLostError(
                    f"changes after revision {start} were discarded "
                    f"(history starts after {database.compacted})"
                )
        return _MemoryFeed(database, prefix, start)

    def compact(self, revision: int) -> None:
        database = self._database
        with database.condition:
            floor = min(revision - 1, database.revision)
            if floor <= database.compacted:
                return
            cut = bisect.bisect_right(database.log, floor, key=_revision_of)
            del database.log[:cut]
            database.compacted = floor
            database.condition.notify_all()
        database.wakers.wake()

    def translate_error(self, error: Exception) -> None:
        return None  # no backend client: every error this driver raises is a KVError

    def close(self) -> None:
        database = self._database
        with database.condition:
            database.stores -= 1
            database.condition.notify_all()
            reaper = database.reaper if database.stores <= 0 else None
        if reaper is not None and reaper is not threading.current_thread():
            reaper.join(_REAPER_JOIN)  # it ends at once: no thread outlives the last store


def open_memory(url: StoreURL) -> MemoryBackend:
    """The ``memory`` scheme's initializer."""
    options = url.read_options({"history": parse_positive_int})
    if len(url.hosts) > 1 or url.port is not None or url.username or url.password:
        raise InvalidURLError(f"memory:// takes at most a database name: {url}")
    namespace = options.get("prefix", url.path.strip("/"))
    history = options.get("history", 100_000)
    name = url.host
    with _databases_lock:
        database = _databases.get(name) if name else None
        if database is None:
            database = _Database(history)
            _databases[name or f"\0private-{next(_private_names)}"] = database
    return MemoryBackend(url, database, namespace)


def open_memory_async(url: StoreURL) -> InlineBackend:
    """The ``memory`` scheme's initializer in :mod:`libkv.aio`: native, nothing blocks."""
    backend = open_memory(url)
    return InlineBackend(backend, backend._database.wakers)


def _revision_of(change: tuple[int, str, KVPair | None]) -> int:
    return change[0]
