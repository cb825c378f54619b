"""One small raw-client adapter per backend: what a user would write without libkv.

Each adapter does the plain equivalent of a libkv call with the backend's own client,
under a namespace of its own (libkv's keys live under another), and says which client
and version it is. Keys given to an adapter are relative (``k1``, ``w/k``).

* ``get``/``put``: one read/write of a 100-byte value.
* ``cas``: read-modify-write, the way a compare-and-set is used: read the key and its
  version, then write only if it is unchanged (the backend's native conditional write).
* ``lock_cycle``: acquire and release the client's own lock recipe; ``lock_note`` says
  why there is none where a fair one does not exist.
* ``subscribe``: the backend's native change notification on a prefix, or None.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, cast

OnEvent = Callable[[], None]
Closer = Callable[[], None]


def _version(distribution: str) -> str:
    try:
        return f"{distribution} {metadata.version(distribution)}"
    except metadata.PackageNotFoundError:
        return distribution


class RawClient:
    """The interface every adapter implements (memory's is the reference)."""

    client = "?"
    lock_note: str | None = None  # set where there is no fair raw lock
    watch_note: str | None = None  # set where there is no native watch
    linger = 0.0  # seconds a closed watcher may hold its connection (blocking queries)

    def get(self, key: str) -> object:
        raise NotImplementedError

    def put(self, key: str, value: bytes) -> object:
        raise NotImplementedError

    def cas(self, key: str, value: bytes) -> object:
        raise NotImplementedError

    def lock_cycle(self) -> None:
        raise NotImplementedError(self.lock_note)

    def subscribe(self, prefix: str, on_event: OnEvent) -> Closer:
        raise NotImplementedError(self.watch_note)

    def close(self) -> None:
        pass


class MemoryClient(RawClient):
    """A dict of (value, version) guarded by a lock: the least a thread-safe store is."""

    client = "dict + threading.Lock"
    lock_note = "no distributed lock to compare with (a threading.Lock has no lease or token)"
    watch_note = "no native change notification"

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, int]] = {}
        self._mutex = threading.Lock()
        self._revision = 0

    def get(self, key: str) -> object:
        with self._mutex:
            return self._data[key]

    def put(self, key: str, value: bytes) -> object:
        with self._mutex:
            self._revision += 1
            self._data[key] = (value, self._revision)
            return self._revision

    def cas(self, key: str, value: bytes) -> object:
        _, version = self._data[key]
        with self._mutex:
            if self._data[key][1] != version:
                raise RuntimeError("modified")
            self._revision += 1
            self._data[key] = (value, self._revision)
            return self._revision


class SqliteClient(RawClient):
    """The sqlite3 module on a database of its own, same journal (WAL) and synchronous
    (normal) settings as libkv's default, one table of (key, value, version)."""

    client = f"sqlite3 (SQLite {sqlite3.sqlite_version})"
    lock_note = "no distributed lock in SQLite to compare with"
    watch_note = "no native change notification"

    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=normal")
        self._connection.execute(
            "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL,"
            " version INTEGER NOT NULL) WITHOUT ROWID"
        )
        self._revision = 0

    def get(self, key: str) -> object:
        return self._connection.execute(
            "SELECT value, version FROM kv WHERE key = ?", (key,)
        ).fetchone()

    def put(self, key: str, value: bytes) -> object:
        self._revision += 1
        with self._connection:  # no-op BEGIN in autocommit mode: be explicit
            self._connection.execute("BEGIN IMMEDIATE")
            self._connection.execute(
                "INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (key, value, self._revision)
            )
        return self._revision

    def cas(self, key: str, value: bytes) -> object:
        _, version = self._connection.execute(
            "SELECT value, version FROM kv WHERE key = ?", (key,)
        ).fetchone()
        self._revision += 1
        with self._connection:
            self._connection.execute("BEGIN IMMEDIATE")
            cursor = self._connection.execute(
                "UPDATE kv SET value = ?, version = ? WHERE key = ? AND version = ?",
                (value, self._revision, key, version),
            )
            if cursor.rowcount != 1:
                raise RuntimeError("modified")
        return self._revision

    def close(self) -> None:
        self._connection.close()


_REDIS_CAS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2])
end
return false
"""


class RedisClient(RawClient):
    """redis-py: GET/SET; CAS as GET then a Lua compare-and-set on the value read;
    redis-py's Lock (SET NX PX, Lua release); keyspace notifications (pub/sub)."""

    client = _version("redis")
    watch_note = "keyspace notifications carry no value and are lost while disconnected"

    def __init__(self, host: str, port: int) -> None:
        import redis

        self._redis = redis.Redis(host=host, port=port)
        # Each subscriber holds a connection: a pool of their own, larger than the default.
        self._subscriptions = redis.Redis(host=host, port=port, max_connections=1000)
        self._redis.config_set("notify-keyspace-events", "K$")
        self._root = "raw/"
        self._cas = self._redis.register_script(_REDIS_CAS)

    def get(self, key: str) -> object:
        return self._redis.get(self._root + key)

    def put(self, key: str, value: bytes) -> object:
        return self._redis.set(self._root + key, value)

    def cas(self, key: str, value: bytes) -> object:
        path = self._root + key
        current = cast(bytes, self._redis.get(path))
        if not self._cas(keys=[path], args=[current, value]):
            raise RuntimeError("modified")
        return True

    def lock_cycle(self) -> None:
        lock = self._redis.lock(self._root + "lock", timeout=15)
        lock.acquire()
        lock.release()

    def subscribe(self, prefix: str, on_event: OnEvent) -> Closer:
        # Through Any: redis-py types pubsub() in some supported releases, not others.
        pubsub = cast(Any, self._subscriptions).pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(**{f"__keyspace@0__:{self._root}{prefix}/*": lambda _: on_event()})
        worker = pubsub.run_in_thread(sleep_time=0.25, daemon=True)

        def close() -> None:
            worker.stop()
            worker.join(2)
            pubsub.close()

        return close

    def close(self) -> None:
        self._subscriptions.close()
        self._redis.close()


class EtcdClient(RawClient):
    """etcd-sdk-python (python-etcd3's API): get/put; CAS as get then a Txn comparing
    mod_revision; its Lock (lease + Txn); a prefix watch with a callback."""

    client = _version("etcd-sdk-python")

    def __init__(self, host: str, port: int) -> None:
        import pyetcd

        self._etcd: Any = pyetcd.client(host=host, port=port, timeout=10)
        self._root = "/raw/"

    def get(self, key: str) -> object:
        return self._etcd.get(self._root + key)

    def put(self, key: str, value: bytes) -> object:
        return self._etcd.put(self._root + key, value)

    def cas(self, key: str, value: bytes) -> object:
        path = self._root + key
        _, metadata_read = self._etcd.get(path)
        transactions = self._etcd.transactions
        succeeded, _ = self._etcd.transaction(
            compare=[transactions.mod(path) == metadata_read.mod_revision],
            success=[transactions.put(path, value)],
            failure=[],
        )
        if not succeeded:
            raise RuntimeError("modified")
        return succeeded

    def lock_cycle(self) -> None:
        lock = self._etcd.lock("rawlock", ttl=15)
        if not lock.acquire(timeout=10):
            raise RuntimeError("etcd lock not acquired")
        lock.release()

    def subscribe(self, prefix: str, on_event: OnEvent) -> Closer:
        def callback(response: Any) -> None:
            for _ in getattr(response, "events", ()):
                on_event()

        watch_id = self._etcd.add_watch_prefix_callback(f"{self._root}{prefix}/", callback)
        return lambda: self._etcd.cancel_watch(watch_id)

    def close(self) -> None:
        self._etcd.close()


class ZooKeeperClient(RawClient):
    """kazoo: get/set; CAS as get then set with the data version read; kazoo's Lock
    recipe; a DataWatch on the written key (kazoo has no recursive watch)."""

    client = _version("kazoo")
    watch_note = "kazoo DataWatch on the one key written (kazoo has no recursive watch)"

    def __init__(self, hosts: str) -> None:
        from kazoo.client import KazooClient
        from kazoo.exceptions import NoNodeError

        self._no_node: type[Exception] = NoNodeError
        self._zookeeper: Any = KazooClient(hosts=hosts)
        self._zookeeper.start(timeout=30)
        self._root = f"/raw-{uuid.uuid4().hex[:8]}/"
        self._zookeeper.ensure_path(self._root + "w")

    def get(self, key: str) -> object:
        return self._zookeeper.get(self._root + key)

    def put(self, key: str, value: bytes) -> object:
        path = self._root + key
        try:
            return self._zookeeper.set(path, value)
        except self._no_node:  # the first write of a key creates it
            return self._zookeeper.create(path, value, makepath=True)

    def cas(self, key: str, value: bytes) -> object:
        path = self._root + key
        _, stat = self._zookeeper.get(path)
        return self._zookeeper.set(path, value, version=stat.version)

    def lock_cycle(self) -> None:
        lock = self._zookeeper.Lock(self._root + "lock")
        lock.acquire(timeout=10)
        lock.release()

    def subscribe(self, prefix: str, on_event: OnEvent) -> Closer:
        path = f"{self._root}{prefix}/k"
        state = {"open": True, "first": True}

        def changed(data: bytes | None, stat: object, event: object = None) -> bool:
            if not state["open"]:
                return False  # kazoo stops re-arming the watch
            if state["first"]:  # DataWatch calls once at once with the current data
                state["first"] = False
            else:
                on_event()
            return True

        self._zookeeper.DataWatch(path, changed)

        def close() -> None:
            state["open"] = False

        return close

    def close(self) -> None:
        self._zookeeper.stop()
        self._zookeeper.close()


class ConsulClient(RawClient):
    """py-consul with consistency=consistent (libkv's default): kv get/put; CAS as get
    then put(cas=ModifyIndex); a session lock (create, acquire, delete, destroy); a
    blocking query on the prefix in a thread as the watch."""

    client = _version("py-consul")
    linger = 1.5

    def __init__(self, host: str, port: int) -> None:
        import consul

        self._host, self._port = host, port
        self._consul: Any = consul.Consul(host=host, port=port, consistency="consistent")
        self._root = "raw/"

    def get(self, key: str) -> object:
        return self._consul.kv.get(self._root + key)

    def put(self, key: str, value: bytes) -> object:
        return self._consul.kv.put(self._root + key, value)

    def cas(self, key: str, value: bytes) -> object:
        path = self._root + key
        _, data = self._consul.kv.get(path)
        if not self._consul.kv.put(path, value, cas=data["ModifyIndex"]):
            raise RuntimeError("modified")
        return True

    def lock_cycle(self) -> None:
        session = self._consul.session.create(behavior="delete", ttl=15, lock_delay=0)
        path = self._root + "lock"
        if not self._consul.kv.put(path, b"", acquire=session):
            raise RuntimeError("consul lock not acquired")
        self._consul.kv.delete(path)
        self._consul.session.destroy(session)

    def subscribe(self, prefix: str, on_event: OnEvent) -> Closer:
        import consul

        path = f"{self._root}{prefix}/"
        stop = threading.Event()
        started = threading.Event()
        # A client per watcher: one connection each, as 100 watching services would have.
        watcher: Any = consul.Consul(host=self._host, port=self._port, consistency="consistent")

        def query(index: str | None) -> str | None:
            while True:
                try:
                    found, _ = watcher.kv.get(path, recurse=True, index=index, wait="1s")
                    return cast(str | None, found)
                except consul.ConsulException as error:  # 429: too many connections
                    if "429" not in str(error) or stop.is_set():
                        raise
                    time.sleep(0.1)  # the agent's per-client connection limit: back off

        def run() -> None:
            index = query(None)
            started.set()
            while not stop.is_set():
                new_index = query(index)
                if new_index != index and not stop.is_set():
                    on_event()
                index = new_index
            watcher.http.session.close()

        threading.Thread(target=run, daemon=True).start()
        if not started.wait(30):
            raise TimeoutError("the Consul blocking query did not start within 30 s")
        return stop.set  # the thread ends with its current blocking query (<= 1 s)

    def close(self) -> None:
        self._consul.http.session.close()
