"""The raw clients' asyncio side: what a user of ``libkv.aio`` would write without it.

The same operations as :mod:`bench.compare.raw` (``get``, ``put``, ``cas``,
``lock_cycle``), as coroutines on each backend's own asyncio client, under a namespace
of its own. Created and closed inside the event loop that measures them.

* Redis: ``redis.asyncio`` (with hiredis, like libkv's driver), its ``Lock``.
* etcd: ``grpc.aio`` on the etcd stubs of etcd-sdk-python; the lock is python-etcd3's
  recipe (a lease, a Txn create-if-absent under it, a Txn delete-if-mine) written on
  those stubs, since no asyncio etcd client ships one.
* ZooKeeper: kazoo's asynchronous calls, each completed into an asyncio future by
  kazoo's own thread (``call_soon_threadsafe``), as libkv's driver does; kazoo has no
  asynchronous lock recipe.
* Consul: ``aiohttp`` (the Consul driver's asyncio client) on Consul's HTTP API.
* memory: a dict under an ``asyncio.Lock``; SQLite has no asyncio client to compare with.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import uuid
from typing import Any, cast

from .raw import _REDIS_CAS, _version


class AsyncRawClient:
    """The base: subclasses set ``client`` and implement the coroutines."""

    client = ""
    lock_note: str | None = None  # set where there is no fair raw asyncio lock

    async def get(self, key: str) -> object:
        raise NotImplementedError

    async def put(self, key: str, value: bytes) -> object:
        raise NotImplementedError

    async def cas(self, key: str, value: bytes) -> object:
        raise NotImplementedError

    async def lock_cycle(self) -> None:
        raise NotImplementedError(self.lock_note)

    async def close(self) -> None:
        return None


class AsyncMemoryClient(AsyncRawClient):
    """A dict of (value, version) guarded by an ``asyncio.Lock``."""

    client = "dict + asyncio.Lock"
    lock_note = "no distributed lock to compare with (an asyncio.Lock has no lease or token)"

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, int]] = {}
        self._lock = asyncio.Lock()
        self._version = 0

    async def get(self, key: str) -> object:
        async with self._lock:
            return self._data.get(key)

    async def put(self, key: str, value: bytes) -> object:
        async with self._lock:
            self._version += 1
            self._data[key] = (value, self._version)
            return self._version

    async def cas(self, key: str, value: bytes) -> object:
        async with self._lock:
            _, version = self._data[key]
        async with self._lock:
            if self._data[key][1] != version:
                raise RuntimeError("modified")
            self._version += 1
            self._data[key] = (value, self._version)
            return self._version


class AsyncRedisClient(AsyncRawClient):
    """redis.asyncio: GET/SET; CAS as GET then the Lua compare-and-set; its Lock."""

    client = f"{_version('redis')} (redis.asyncio)"

    def __init__(self, host: str, port: int) -> None:
        import redis.asyncio

        self._redis = redis.asyncio.Redis(host=host, port=port)
        self._root = "araw/"
        self._cas = self._redis.register_script(_REDIS_CAS)

    async def get(self, key: str) -> object:
        return await self._redis.get(self._root + key)

    async def put(self, key: str, value: bytes) -> object:
        return await self._redis.set(self._root + key, value)

    async def cas(self, key: str, value: bytes) -> object:
        path = self._root + key
        current = cast(bytes, await self._redis.get(path))
        if not await self._cas(keys=[path], args=[current, value]):
            raise RuntimeError("modified")
        return True

    async def lock_cycle(self) -> None:
        lock = self._redis.lock(self._root + "lock", timeout=15)
        await lock.acquire()
        await lock.release()

    async def close(self) -> None:
        await self._redis.aclose()


class AsyncEtcdClient(AsyncRawClient):
    """grpc.aio on etcd-sdk-python's stubs: Range, Put, Txn on mod_revision; the
    python-etcd3 lock recipe on the same stubs (its lease is left to expire, as there)."""

    client = f"{_version('grpcio')} (grpc.aio) on etcd-sdk-python's stubs"

    def __init__(self, host: str, port: int) -> None:
        import grpc.aio
        from pyetcd import etcdrpc

        self._rpc: Any = etcdrpc
        self._channel = grpc.aio.insecure_channel(f"{host}:{port}")
        self._kv: Any = etcdrpc.KVStub(self._channel)
        self._lease: Any = etcdrpc.LeaseStub(self._channel)
        self._root = "/araw/"

    async def get(self, key: str) -> object:
        return await self._kv.Range(self._rpc.RangeRequest(key=(self._root + key).encode()))

    async def put(self, key: str, value: bytes) -> object:
        request = self._rpc.PutRequest(key=(self._root + key).encode(), value=value)
        return await self._kv.Put(request)

    async def cas(self, key: str, value: bytes) -> object:
        rpc, path = self._rpc, (self._root + key).encode()
        read = await self._kv.Range(rpc.RangeRequest(key=path))
        compare = rpc.Compare(
            key=path,
            result=rpc.Compare.EQUAL,
            target=rpc.Compare.MOD,
            mod_revision=read.kvs[0].mod_revision,
        )
        put = rpc.RequestOp(request_put=rpc.PutRequest(key=path, value=value))
        reply = await self._kv.Txn(rpc.TxnRequest(compare=[compare], success=[put]))
        if not reply.succeeded:
            raise RuntimeError("modified")
        return True

    async def lock_cycle(self) -> None:
        rpc, path, token = self._rpc, b"/locks/arawlock", uuid.uuid1().bytes
        lease = await self._lease.LeaseGrant(rpc.LeaseGrantRequest(TTL=15))
        absent = rpc.Compare(
            key=path, result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, create_revision=0
        )
        put = rpc.RequestOp(request_put=rpc.PutRequest(key=path, value=token, lease=lease.ID))
        acquired = await self._kv.Txn(rpc.TxnRequest(compare=[absent], success=[put]))
        if not acquired.succeeded:
            raise RuntimeError("etcd lock not acquired")
        mine = rpc.Compare(
            key=path, result=rpc.Compare.EQUAL, target=rpc.Compare.VALUE, value=token
        )
        delete = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=path))
        await self._kv.Txn(rpc.TxnRequest(compare=[mine], success=[delete]))

    async def close(self) -> None:
        await self._channel.close()


class AsyncZooKeeperClient(AsyncRawClient):
    """kazoo's asynchronous get/set, completed into asyncio futures by kazoo's thread."""

    client = f"{_version('kazoo')} (asynchronous calls)"
    lock_note = "kazoo has no asynchronous lock recipe"

    def __init__(self, hosts: str) -> None:
        from kazoo.client import KazooClient

        self._zookeeper: Any = KazooClient(hosts=hosts)
        self._zookeeper.start(timeout=30)
        self._root = f"/araw-{uuid.uuid4().hex[:8]}/"
        self._zookeeper.ensure_path(self._root.rstrip("/"))

    @staticmethod
    async def _wait(result: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(done: Any) -> None:
            if future.done():
                return
            try:
                future.set_result(done.get_nowait())
            except Exception as error:
                future.set_exception(error)

        result.rawlink(lambda done: loop.call_soon_threadsafe(settle, done))
        return await future

    async def get(self, key: str) -> object:
        return await self._wait(self._zookeeper.get_async(self._root + key))

    async def put(self, key: str, value: bytes) -> object:
        from kazoo.exceptions import NoNodeError

        path = self._root + key
        try:
            return await self._wait(self._zookeeper.set_async(path, value))
        except NoNodeError:  # the first write of a key creates it
            return await self._wait(self._zookeeper.create_async(path, value, makepath=True))

    async def cas(self, key: str, value: bytes) -> object:
        path = self._root + key
        _, stat = await self._wait(self._zookeeper.get_async(path))
        return await self._wait(self._zookeeper.set_async(path, value, version=stat.version))

    async def close(self) -> None:
        self._zookeeper.stop()
        self._zookeeper.close()


class AsyncConsulClient(AsyncRawClient):
    """aiohttp (the Consul driver's asyncio client) on Consul's KV and session API,
    consistency=consistent like libkv: GET; PUT; CAS as GET then PUT ?cas=ModifyIndex;
    a session lock (create, acquire, delete, destroy), as the sync adapter does."""

    client = f"{_version('aiohttp')} (ClientSession)"

    def __init__(self, host: str, port: int) -> None:
        # Imported by name: aiohttp comes with the Consul plugin, not with the bench.
        self._aiohttp: Any = importlib.import_module("aiohttp")
        self._base = f"http://{host}:{port}/v1/"
        self._session: Any = None  # made on first use, inside the running loop
        self._root = "kv/araw/"

    async def _call(self, method: str, path: str, **arguments: Any) -> Any:
        if self._session is None:
            self._session = self._aiohttp.ClientSession()
        async with self._session.request(method, self._base + path, **arguments) as reply:
            reply.raise_for_status()
            return await reply.json()

    async def get(self, key: str) -> object:
        found = await self._call("GET", self._root + key, params={"consistent": ""})
        return [base64.b64decode(entry["Value"] or "") for entry in found]

    async def put(self, key: str, value: bytes) -> object:
        return await self._call("PUT", self._root + key, data=value)

    async def cas(self, key: str, value: bytes) -> object:
        found = await self._call("GET", self._root + key, params={"consistent": ""})
        index = str(found[0]["ModifyIndex"])
        if await self._call("PUT", self._root + key, params={"cas": index}, data=value) is not True:
            raise RuntimeError("modified")
        return True

    async def lock_cycle(self) -> None:
        created = await self._call(
            "PUT", "session/create", json={"Behavior": "delete", "TTL": "15s", "LockDelay": "0s"}
        )
        session = created["ID"]
        path = self._root + "lock"
        if await self._call("PUT", path, params={"acquire": session}, data=b"") is not True:
            raise RuntimeError("consul lock not acquired")
        await self._call("DELETE", path)
        await self._call("PUT", f"session/destroy/{session}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
