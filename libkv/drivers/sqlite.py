"""``sqlite:///path.db``: the persistent embedded default.

Several processes may open one file at once (WAL mode; writers serialise on the
database lock). Every write transaction bumps one store-wide revision and appends its
changes to a change-log table; watches read that log, so ``since=`` resumes, and a
trimmed log raises HistoryLostError. Expired keys and leases are reaped by every open
store (a background thread) and inside every write, so a TTL produces a DELETE event
even when its writer has gone, as long as any store has the file open.

Options: ``prefix`` (namespace), ``timeout`` (seconds to wait for the database lock,
default 10), ``history`` (changes kept for ``since=``, default 100000),
``synchronous`` (``normal``, the default: durable across process crashes, the last
transactions may be lost on power failure; ``full``: durable across power failure too,
at a few times the write latency).
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence

from libkv.driver import (
    Action,
    Backend,
    Capabilities,
    Event,
    FeedBatch,
    HistoryLostError,
    InvalidURLError,
    KVError,
    KVPair,
    LeaseNotFoundError,
    LocalBackend,
    NotReachableError,
    Op,
    OpKind,
    StoreURL,
    Wakers,
    first_failure,
    parse_positive_int,
    parse_seconds,
    take_batch,
)

__all__ = ["SQLiteBackend", "open_sqlite", "open_sqlite_async"]

log = logging.getLogger(__name__)

CAPABILITIES = Capabilities(
    watch_every_change=True,
    watch_resume=True,
    ttl_min=0.1,
    ttl_max=1e9,  # about 31 years; every backend represents it
    ttl_slack=1.0,
    max_value_size=16 * 1024 * 1024,
    max_transaction_ops=10_000,
    native_async=True,
)

_REAP_INTERVAL = 0.2  # seconds between expiry sweeps of an open store
_CROSS_PROCESS_POLL = 0.05  # how often a watch looks for other processes' writes
_ASYNC_CROSS_PROCESS_POLL = 0.1  # the same in libkv.aio, where all share one worker

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    version INTEGER NOT NULL,
    expires_at REAL,
    lease INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease IS NOT NULL;
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB,
    PRIMARY KEY (revision, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ttl REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0);
"""


# In-process wake-up of watches when this process writes to a file.
class _Signal(threading.Condition):
    """Notified on every write by this process; wakes sync feeds and async ones."""

    def __init__(self) -> None:
        super().__init__()
        self.wakers = Wakers()

    def notify_all(self) -> None:
        super().notify_all()
        self.wakers.wake()


_signals: weakref.WeakValueDictionary[str, _Signal] = weakref.WeakValueDictionary()
_signals_lock = threading.Lock()


def _signal_for(path: str) -> _Signal:
    with _signals_lock:
        condition = _signals.get(path)
        if condition is None:
            condition = _Signal()
            _signals[path] = condition
        return condition


def _prefix_clause(prefix: str) -> tuple[str, tuple[str, ...]]:
    """SQL condition on ``key`` for the driver prefix semantics of ``in_prefix``."""
    if not prefix:
        return "1", ()
    base = prefix.rstrip("/")
    below = ("key >= ? AND key < ?", (base + "/", base + "0"))  # '0' sorts right after '/'
    if prefix.endswith("/"):
        return below
    return f"(key = ? OR {below[0]})", (base, *below[1])


class _SQLiteFeed:
    def __init__(self, store: SQLiteBackend, prefix: str, after: int) -> None:
        self._store = store
        self._after = after
        self._clause, self._arguments = _prefix_clause(prefix)
        self._closed = False

    def poll(self, timeout: float) -> FeedBatch | None:
        deadline = time.monotonic() + timeout
        signal = self._store._signal
        while not self._closed:
            batch = self._read()
            if batch is not None:
                return batch
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with signal:
                if not self._closed:
                    signal.wait(min(remaining, _CROSS_PROCESS_POLL))
        return None

    def _read(self) -> FeedBatch | None:
        store = self._store
        with store._transaction(write=False) as cursor:
            revision, compacted = store._meta(cursor)
            if self._after < compacted:
                raise HistoryLostError(
                    f"changes after revision {self._after} were trimmed "
                    f"(history starts after {compacted})"
                )
            if revision <= self._after:
                return None
            rows, more = take_batch(
                cursor.execute(
                    "SELECT revision, key, value FROM changes"
                    f" WHERE revision > ? AND {self._clause} ORDER BY revision, key",
                    (self._after, *self._arguments),
                ),
                operator.itemgetter(0),
            )
        if more:
            revision = rows[-1][0]
        self._after = revision
        changes = [
            Event(Action.DELETE, key, None, change)
            if value is None
            else Event(Action.UPDATE, key, KVPair(key, value, change), change)
            for change, key, value in rows
        ]
        return FeedBatch(revision, changes)

    def close(self) -> None:
        self._closed = True
        with self._store._signal:
            self._store._signal.notify_all()


class SQLiteBackend(Backend):
    """A backend in one SQLite file; see the module docstring."""

    capabilities = CAPABILITIES

    def __init__(
        self,
        url: StoreURL,
        path: str,
        *,
        namespace: str,
        timeout: float,
        history: int,
        synchronous: str,
    ) -> None:
        super().__init__(url, namespace=namespace, timeout=timeout)
        self.path = path
        self._history = history
        self._synchronous = synchronous
        self._trim_every = max(1, min(1000, history // 4))
        self._lock = threading.RLock()
        self._signal = _signal_for(path)
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    _connection: sqlite3.Connection  # set by connect()

    def connect(self) -> None:
        """Open the file (creating its directory and schema) and start the reaper.

        Called once, before any primitive: by :func:`open_sqlite`, and in
        :mod:`libkv.aio` on the store's worker thread, so that ``open()`` does no I/O.
        """
        if self._reaper is not None:
            return
        path = self.path
        if path != ":memory:":
            directory = os.path.dirname(os.path.abspath(path))
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as error:
                raise NotReachableError(
                    f"cannot create directory {directory!r}: {error}"
                ) from error
        try:
            self._connection = sqlite3.connect(
                path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute(f"PRAGMA synchronous={self._synchronous}")
            with self._transaction(write=True) as cursor:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        cursor.execute(statement)
        except sqlite3.Error as error:
            raise NotReachableError(f"cannot open SQLite database {path!r}: {error}") from error
        self._reaper = threading.Thread(target=self._reap, name="libkv-sqlite-reaper", daemon=True)
        self._reaper.start()

    # -- primitives -------------------------------------------------------------------

    def get(self, key: str) -> KVPair | None:
        with self._lock:
            return self._current(self._connection, key, time.time())

    def get_many(self, keys: Sequence[str]) -> list[KVPair | None]:
        with self._transaction(write=False) as cursor:
            return [self._current(cursor, key, time.time()) for key in keys]

    def range(self, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
        clause, arguments = _prefix_clause(prefix) if recursive else ("key = ?", (prefix,))
        with self._transaction(write=False) as cursor:
            rows = cursor.execute(
                f"SELECT key, value, version FROM kv WHERE {clause}"
                " AND (expires_at IS NULL OR expires_at > ?) ORDER BY key",
                (*arguments, time.time()),
            ).fetchall()
            revision, _ = self._meta(cursor)
        return [KVPair(key, value, version) for key, value, version in rows], revision

    def commit(self, ops: Sequence[Op]) -> list[KVPair | None]:
        with self._transaction(write=True) as cursor:
            now = time.time()
            self._expire(cursor, now)
            current = [self._current(cursor, op.key, now) for op in ops]
            failure = first_failure(ops, current)
            if failure is not None:
                raise failure
            if ops[0].kind is OpKind.CHECK and all(op.kind is OpKind.CHECK for op in ops):
                return [None] * len(ops)
            revision = self._next_revision(cursor)
            results: list[KVPair | None] = []
            for op in ops:
                if op.kind is OpKind.CHECK:
                    results.append(None)
                elif op.kind is OpKind.DELETE:
                    cursor.execute("DELETE FROM kv WHERE key = ?", (op.key,))
                    cursor.execute("INSERT INTO changes VALUES (?, ?, NULL)", (revision, op.key))
                    results.append(None)
                else:
                    expires_at = None if op.ttl is None else now + op.ttl
                    lease_id = None
                    if op.lease is not None:
                        lease_id = op.lease.id
                        expires_at = self._lease_expiry(cursor, lease_id, now)
                    cursor.execute(
                        "INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?, ?)",
                        (op.key, op.value, revision, expires_at, lease_id),
                    )
                    cursor.execute(
                        "INSERT INTO changes VALUES (?, ?, ?)", (revision, op.key, op.value)
                    )
                    results.append(KVPair(op.key, op.value, revision))
        self._notify()
        return results

    def delete_range(self, prefix: str) -> int:
        clause, arguments = _prefix_clause(prefix)
        with self._transaction(write=True) as cursor:
            self._expire(cursor, time.time())
            keys = [
                row[0] for row in cursor.execute(f"SELECT key FROM kv WHERE {clause}", arguments)
            ]
            self._remove(cursor, keys)
        self._notify()
        return len(keys)

    def grant_lease(self, ttl: float) -> int:
        with self._transaction(write=True) as cursor:
            cursor.execute(
                "INSERT INTO leases (ttl, expires_at) VALUES (?, ?)", (ttl, time.time() + ttl)
            )
            lease_id = cursor.lastrowid
        assert lease_id is not None
        return lease_id

    def keepalive_lease(self, lease_id: int) -> bool:
        with self._transaction(write=True) as cursor:
            now = time.time()
            row = cursor.execute(
                "SELECT ttl FROM leases WHERE id = ? AND expires_at > ?", (lease_id, now)
            ).fetchone()
            if row is None:
                return False
            expires_at = now + row[0]
            cursor.execute("UPDATE leases SET expires_at = ? WHERE id = ?", (expires_at, lease_id))
            cursor.execute("UPDATE kv SET expires_at = ? WHERE lease = ?", (expires_at, lease_id))
            return True

    def lease_ttl(self, lease_id: int) -> float | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT expires_at FROM leases WHERE id = ?", (lease_id,)
            ).fetchone()
        if row is None:
            return None
        remaining: float = row[0] - time.time()
        return remaining if remaining > 0 else None

    def revoke_lease(self, lease_id: int) -> None:
        with self._transaction(write=True) as cursor:
            keys = [
                row[0] for row in cursor.execute("SELECT key FROM kv WHERE lease = ?", (lease_id,))
            ]
            self._remove(cursor, sorted(keys))
            cursor.execute("DELETE FROM leases WHERE id = ?", (lease_id,))
        self._notify()

    def open_feed(self, prefix: str, after: int | None) -> _SQLiteFeed:
        with self._transaction(write=False) as cursor:
            revision, compacted = self._meta(cursor)
        start = revision if after is None else after
        if start < compacted:
            raise HistoryLostError(
                f"changes after revision {start} were trimmed (history starts after {compacted})"
            )
        return _SQLiteFeed(self, prefix, start)

    def compact(self, revision: int) -> None:
        with self._transaction(write=True) as cursor:
            current, compacted = self._meta(cursor)
            floor = min(revision - 1, current)
            if floor > compacted:
                self._trim(cursor, floor)

    def translate_error(self, error: Exception) -> KVError | None:
        if isinstance(error, sqlite3.OperationalError):
            return NotReachableError(f"SQLite database {self.path!r}: {error}")
        if isinstance(error, sqlite3.Error):
            return KVError(f"SQLite database {self.path!r}: {error}")
        return None

    def close(self) -> None:
        self._stop.set()
        with self._signal:
            self._signal.notify_all()
        if self._reaper is None:
            return  # never connected
        self._reaper.join(timeout=2)
        with self._lock:
            self._connection.close()

    # -- helpers ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Cursor]:
        """One SQLite transaction on this store's connection (IMMEDIATE for writes)."""
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            else:
                cursor.execute("COMMIT")
            finally:
                cursor.close()

    @staticmethod
    def _meta(cursor: sqlite3.Cursor) -> tuple[int, int]:
        rows = dict(cursor.execute("SELECT name, value FROM meta").fetchall())
        return rows["revision"], rows["compacted"]

    @staticmethod
    def _current(
        cursor: sqlite3.Cursor | sqlite3.Connection, key: str, now: float
    ) -> KVPair | None:
        """The live (unexpired) pair at ``key``, or None."""
        row = cursor.execute(
            "SELECT value, version FROM kv"
            " WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
            (key, now),
        ).fetchone()
        return None if row is None else KVPair(key, row[0], row[1])

    @staticmethod
    def _lease_expiry(cursor: sqlite3.Cursor, lease_id: int, now: float) -> float:
        row = cursor.execute(
            "SELECT expires_at FROM leases WHERE id = ? AND expires_at > ?", (lease_id, now)
        ).fetchone()
        if row is None:
            raise LeaseNotFoundError(f"lease {lease_id} has expired or was revoked")
        expires_at: float = row[0]
        return expires_at

    def _next_revision(self, cursor: sqlite3.Cursor) -> int:
        """Take the next store revision (and now and then trim the change log)."""
        revision: int = cursor.execute(
            "UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value"
        ).fetchone()[0]
        if revision % self._trim_every == 0 and revision > self._history:
            self._trim(cursor, revision - self._history)
        return revision

    @staticmethod
    def _trim(cursor: sqlite3.Cursor, floor: int) -> None:
        cursor.execute("DELETE FROM changes WHERE revision <= ?", (floor,))
        cursor.execute("UPDATE meta SET value = MAX(value, ?) WHERE name = 'compacted'", (floor,))

    def _remove(self, cursor: sqlite3.Cursor, keys: Sequence[str]) -> None:
        """Delete existing ``keys`` as one new revision."""
        if not keys:
            return
        revision = self._next_revision(cursor)
        cursor.executemany("DELETE FROM kv WHERE key = ?", [(key,) for key in keys])
        cursor.executemany(
            "INSERT INTO changes VALUES (?, ?, NULL)", [(revision, key) for key in keys]
        )

    def _expire(self, cursor: sqlite3.Cursor, now: float) -> None:
        """Inside a write transaction, delete expired keys as one revision.

        Every write does this first, so a key that expired is reported as deleted
        before it is written again. Keys of a lease carry the lease's expiry, so this
        also covers lost leases; the lease rows themselves go in the reaper's sweep.
        """
        keys = [
            row[0]
            for row in cursor.execute(
                "SELECT key FROM kv WHERE expires_at <= ? ORDER BY key", (now,)
            )
        ]
        self._remove(cursor, keys)

    def _sweep(self) -> None:
        now = time.time()
        with self._lock:
            due = self._connection.execute(
                "SELECT EXISTS (SELECT 1 FROM kv WHERE expires_at <= ?)"
                " OR EXISTS (SELECT 1 FROM leases WHERE expires_at <= ?)",
                (now, now),
            ).fetchone()[0]
        if due:
            with self._transaction(write=True) as cursor:
                now = time.time()
                self._expire(cursor, now)
                cursor.execute("DELETE FROM leases WHERE expires_at <= ?", (now,))
            self._notify()

    def _reap(self) -> None:
        while not self._stop.wait(_REAP_INTERVAL):
            try:
                self._sweep()
            except sqlite3.Error:
                log.warning("expiry sweep of %s failed; retrying", self.path, exc_info=True)
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("expiry sweep of %s failed", self.path)

    def _notify(self) -> None:
        with self._signal:
            self._signal.notify_all()


def default_path() -> str:
    """The default database file: ``$XDG_DATA_HOME/libkv/libkv.db`` (or ~/.local/share).

    A relative ``XDG_DATA_HOME`` is ignored, as the XDG base directory spec says.
    """
    base = os.environ.get("XDG_DATA_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "libkv", "libkv.db")


def open_sqlite(url: StoreURL) -> SQLiteBackend:
    """The ``sqlite`` scheme's initializer.

    ``sqlite:///abs/path.db`` names the file; ``sqlite://`` is :func:`default_path`.
    """
    backend = _unconnected(url)
    backend.connect()
    return backend


def _unconnected(url: StoreURL) -> SQLiteBackend:
    options = url.read_options(
        {"timeout": parse_seconds, "history": parse_positive_int, "synchronous": _synchronous}
    )
    if url.hosts or url.username or url.password:
        raise InvalidURLError(
            f"sqlite URLs name a file, not a host: use sqlite:///absolute/path.db ({url})"
        )
    return SQLiteBackend(
        url,
        url.path or default_path(),
        namespace=options.get("prefix", ""),
        timeout=options.get("timeout", 10.0),
        history=options.get("history", 100_000),
        synchronous=options.get("synchronous", "NORMAL"),
    )


def open_sqlite_async(url: StoreURL) -> LocalBackend:
    """The ``sqlite`` scheme's initializer in :mod:`libkv.aio`.

    Every file access of the store runs on one worker thread of its own; watches
    wait on the loop, woken by this process's writes and re-reading the file every
    tenth of a second for other processes' writes.
    """
    backend = _unconnected(url)
    return LocalBackend(
        backend, backend._signal.wakers, _ASYNC_CROSS_PROCESS_POLL, setup=backend.connect
    )


def _synchronous(value: object) -> str:
    text = str(value).upper()
    if text not in ("NORMAL", "FULL"):
        raise ValueError("expected normal or full")
    return text
