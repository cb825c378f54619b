"""Data other clients share: each backend's own command-line client against libkv.

libkv is read and written by services in other languages and by the backends' own
tools, so what it stores must be what those read. Per network backend, the tool reads
exactly the bytes libkv wrote (on Redis through the format plugins/redis/README.md
documents); where the backend allows it (etcd, ZooKeeper, Consul), what the tool writes
and deletes is what libkv's ``get`` and ``list`` read and what a libkv watch delivers;
and a ``ServiceRegistry`` instance reads as the JSON docs/recipes.md documents.

One server per backend for the whole session (the harness's fixtures). ``zkCli.sh``
starts a JVM per invocation, so each step batches its commands into one.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

import libkv
from integration.servers import EtcdServer, RedisServer
from integration.servers.consul import ConsulServer, consul_binary
from integration.servers.etcd import etcdctl_binary
from integration.servers.process import HOST, find_binary
from integration.servers.zookeeper import ZooKeeperServer
from libkv import Action
from libkv.recipes import ServiceRegistry
from libkv.testing import WatchRecorder, wait_until
from libkv.testing.conformance.base import EVENT_TIMEOUT

TOOL_TIMEOUT = 60.0  # one tool invocation (a JVM start included)
ZOOKEEPER_STAT_LINES = 11  # the lines of the stat `get -s` prints after the data
REDIS_HASHTAG = "{libkv}:"  # the documented default hash tag of every Redis key


def _run(command: Sequence[str], *, env: dict[str, str] | None = None) -> bytes:
    """Run a tool; its stdout, raw. A failure is the test's failure, with its output."""
    result = subprocess.run(
        list(command),
        capture_output=True,
        timeout=TOOL_TIMEOUT,
        env=None if env is None else {**os.environ, **env},
        check=False,
    )
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result.stdout


class Tool:
    """A backend's command-line client, addressing the keys of one libkv namespace."""

    writes = True  # whether the backend lets another client write what libkv reads

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def read(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of libkv ``keys`` as the tool shows them (None: no such key)."""
        raise NotImplementedError

    def write(self, items: Sequence[tuple[str, bytes]]) -> None:
        raise NotImplementedError

    def delete(self, keys: Sequence[str]) -> None:
        raise NotImplementedError


class Etcdctl(Tool):
    """``etcdctl`` (v3 API); a libkv key ``k`` of namespace ``ns`` is the etcd key ``ns/k``."""

    def __init__(self, namespace: str, server: EtcdServer) -> None:
        super().__init__(namespace)
        self.command = [etcdctl_binary(), "--endpoints", server.http_address]

    def _etcdctl(self, *arguments: str) -> bytes:
        return _run([*self.command, *arguments], env={"ETCDCTL_API": "3"})

    def read(self, keys: Sequence[str]) -> list[bytes | None]:
        values: list[bytes | None] = []
        for key in keys:
            # JSON output carries the value in base64: every byte, exactly.
            reply = json.loads(self._etcdctl("get", "-w", "json", f"{self.namespace}/{key}"))
            found = reply.get("kvs", [])
            values.append(base64.b64decode(found[0].get("value", "")) if found else None)
        return values

    def write(self, items: Sequence[tuple[str, bytes]]) -> None:
        for key, value in items:
            self._etcdctl("put", f"{self.namespace}/{key}", value.decode())

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            assert self._etcdctl("del", f"{self.namespace}/{key}").strip() == b"1"


class ConsulKV(Tool):
    """``consul kv``; a libkv key ``k`` of namespace ``ns`` is the Consul key ``ns/k``."""

    def __init__(self, namespace: str, server: ConsulServer) -> None:
        super().__init__(namespace)
        self.binary = consul_binary()
        self.address = f"-http-addr={server.http_address}"

    def read(self, keys: Sequence[str]) -> list[bytes | None]:
        values: list[bytes | None] = []
        for key in keys:
            result = subprocess.run(
                [self.binary, "kv", "get", self.address, "-base64", f"{self.namespace}/{key}"],
                capture_output=True,
                timeout=TOOL_TIMEOUT,
                check=False,
            )
            if result.returncode == 1 and b"No key exists" in result.stderr:
                values.append(None)
                continue
            assert result.returncode == 0, (key, result.stdout, result.stderr)
            values.append(base64.b64decode(result.stdout.strip()))
        return values

    def write(self, items: Sequence[tuple[str, bytes]]) -> None:
        for key, value in items:
            _run(
                [self.binary, "kv", "put", self.address, f"{self.namespace}/{key}", value.decode()]
            )

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            _run([self.binary, "kv", "delete", self.address, f"{self.namespace}/{key}"])


class ZkCli(Tool):
    """``zkCli.sh`` (``ZooKeeperMain``); a libkv key ``a/b`` under the chroot ``/ns`` is
    the znode ``/ns/a/b``. Its ``create`` makes no parents: ``write`` creates each
    missing one first, with no data (which libkv reads as an implicit parent). Values
    are shown as text, one line each: the values here are single-line ASCII."""

    def __init__(self, namespace: str, server: ZooKeeperServer) -> None:
        super().__init__(namespace)
        self.server = server

    def _path(self, key: str) -> str:
        return f"/{self.namespace}/{key}"

    def read(self, keys: Sequence[str]) -> list[bytes | None]:
        output = self.server.shell(*(f"get -s {self._path(key)}" for key in keys))
        # After the connection banner, each `get -s` prints its data line, then the
        # stat (cZxid ... numChildren); a missing node prints nothing on stdout.
        banner = "WatchedEvent state:SyncConnected type:None path:null\n"
        lines = output.split(banner, 1)[1].split("\n")
        values: list[bytes | None] = []
        index = 0
        for key in keys:
            if f"Node does not exist: {self._path(key)}" in output:
                values.append(None)
                continue
            data = lines[index]
            stat = dict(
                line.split(" = ", 1) for line in lines[index + 1 : index + 1 + ZOOKEEPER_STAT_LINES]
            )
            index += 1 + ZOOKEEPER_STAT_LINES
            value = data.encode()
            # Every byte of the znode is the value: no marker in front of it.
            assert int(stat["dataLength"]) == len(value), (key, data, stat)
            values.append(value)
        return values

    def write(self, items: Sequence[tuple[str, bytes]]) -> None:
        commands: list[str] = []
        for key, value in items:
            segments = key.split("/")
            for depth in range(1, len(segments)):
                commands.append(f"create {self._path('/'.join(segments[:depth]))}")
            commands.append(f"create {self._path(key)} {value.decode()}")
        output = self.server.shell(*commands)
        for key, _ in items:
            assert f"Created {self._path(key)}" in output, output

    def delete(self, keys: Sequence[str]) -> None:
        output = self.server.shell(*(f"delete {self._path(key)}" for key in keys))
        assert "Node does not exist" not in output, output


class RedisCli(Tool):
    """``redis-cli``, reading the format plugins/redis/README.md documents: the value
    of a libkv key ``k`` of namespace ``ns`` is the string ``{libkv}:v:ns/k``, holding
    ``<version>:<value>`` (``~`` in front with a ttl or lease). Writing is libkv's own
    (a value, its revision, log entry and index change in one script)."""

    writes = False

    def __init__(self, namespace: str, server: RedisServer) -> None:
        super().__init__(namespace)
        binary = find_binary("redis-cli", ["/usr/bin/redis-cli"])
        self.command = [binary, "-h", HOST, "-p", str(server.port)]

    def redis_cli(self, *arguments: str) -> bytes:
        """One redis-cli command's raw output (stdout is no terminal: no quoting)."""
        return _run([*self.command, *arguments])

    def record(self, key: str) -> bytes | None:
        """The string holding libkv key ``key``, exactly (None: no such key)."""
        output = self.redis_cli("GET", f"{REDIS_HASHTAG}v:{self.namespace}/{key}")
        assert output.endswith(b"\n")
        return None if output == b"\n" else output[:-1]

    def read(self, keys: Sequence[str]) -> list[bytes | None]:
        values: list[bytes | None] = []
        for key in keys:
            record = self.record(key)
            values.append(None if record is None else record.partition(b":")[2])
        return values


@dataclass
class Backend:
    name: str
    url: str
    tool: Tool


def _backend(name: str, request: pytest.FixtureRequest) -> Backend:
    namespace = f"t{uuid.uuid4().hex}"
    if name == "etcd":
        etcd: EtcdServer = request.getfixturevalue("etcd_server")
        return Backend(name, f"{etcd.url}/{namespace}", Etcdctl(namespace, etcd))
    if name == "zookeeper":
        zookeeper: ZooKeeperServer = request.getfixturevalue("zookeeper_server")
        return Backend(name, f"{zookeeper.url}/{namespace}", ZkCli(namespace, zookeeper))
    if name == "consul":
        consul: ConsulServer = request.getfixturevalue("consul_server")
        url = f"{consul.url}/{namespace}?session_ttl_min=1"
        return Backend(name, url, ConsulKV(namespace, consul))
    redis: RedisServer = request.getfixturevalue("redis_server")
    return Backend(name, f"{redis.url}?prefix={namespace}", RedisCli(namespace, redis))


@pytest.fixture(params=["etcd", "zookeeper", "consul", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return _backend(request.param, request)


@pytest.fixture(params=["etcd", "zookeeper", "consul"])
def writable(request: pytest.FixtureRequest) -> Backend:
    """The backends whose own tool may write what libkv reads."""
    return _backend(request.param, request)


@pytest.fixture
def store(backend: Backend) -> Iterator[libkv.Store]:
    with libkv.open(backend.url) as opened:
        yield opened


def test_the_tool_reads_what_libkv_wrote(backend: Backend, store: libkv.Store) -> None:
    """Values libkv wrote, empty and nested ones and a rewrite included, read the same
    through the backend's own client."""
    written = {
        "config/name": b"interop-value",
        "config/deep/leaf": b'{"json":[1,2]}',
        "empty": b"",
    }
    store.put_many(written)
    store.put("config/name", b"rewritten")
    written["config/name"] = b"rewritten"
    assert backend.tool.read([*written, "absent"]) == [*written.values(), None]


def test_a_service_registry_instance_reads_as_the_documented_json(
    backend: Backend, store: libkv.Store
) -> None:
    """An instance registered through ServiceRegistry is, for the tool, the key
    services/<service>/<id> holding the JSON object docs/recipes.md documents."""
    registry = ServiceRegistry(store)
    with registry.register(
        "api", "10.0.0.7:8080", instance_id="i-1", metadata={"zone": "eu-1"}
    ) as instance:
        assert instance.registered
        (value,) = backend.tool.read(["services/api/i-1"])
        assert value is not None
        assert json.loads(value.decode("utf-8")) == {
            "address": "10.0.0.7:8080",
            "id": "i-1",
            "metadata": {"zone": "eu-1"},
            "service": "api",
        }
    wait_until(
        lambda: backend.tool.read(["services/api/i-1"]) == [None],
        EVENT_TIMEOUT,
        message="the tool still reads a deregistered instance",
    )


def test_what_the_tool_writes_libkv_reads_and_watches(writable: Backend) -> None:
    """Keys the tool creates, overwrites and deletes are what libkv's get and list read
    and what a libkv watch delivers; a libkv write over the tool's key reads back through
    the tool."""
    tool = writable.tool
    with libkv.open(writable.url) as store:
        store.put("tool/libkv", b"from-libkv")
        with store.watch("tool", recursive=True) as watch, WatchRecorder(watch) as recorder:
            wait_until(lambda: recorder.events, EVENT_TIMEOUT, message="no INIT")
            tool.write([("tool/created", b"from-the-tool"), ("tool/nested/leaf", b"deep")])
            tool.write([("other", b"outside-the-watch")])
            assert store.get("tool/created").value == b"from-the-tool"
            assert store.get("other").value == b"outside-the-watch"
            assert [(pair.key, pair.value) for pair in store.list("tool")] == [
                ("tool/created", b"from-the-tool"),
                ("tool/libkv", b"from-libkv"),
                ("tool/nested/leaf", b"deep"),
            ]

            def seen() -> dict[str, bytes | None]:
                latest: dict[str, bytes | None] = {}
                for event in recorder.events:
                    if event.action is Action.INIT:
                        latest = {pair.key: pair.value for pair in event.snapshot}
                    else:
                        latest[event.key] = None if event.pair is None else event.pair.value
                return latest

            expected: dict[str, bytes | None] = {
                "tool/libkv": b"from-libkv",
                "tool/created": b"from-the-tool",
                "tool/nested/leaf": b"deep",
            }
            wait_until(lambda: seen() == expected, EVENT_TIMEOUT, message=lambda: str(seen()))

            store.put("tool/created", b"libkv-again")
            assert tool.read(["tool/created"]) == [b"libkv-again"]
            tool.delete(["tool/created", "tool/nested/leaf"])
            assert not store.exists("tool/created")
            assert [pair.key for pair in store.list("tool")] == ["tool/libkv"]
            expected = {"tool/libkv": b"from-libkv", "tool/created": None, "tool/nested/leaf": None}
            wait_until(lambda: seen() == expected, EVENT_TIMEOUT, message=lambda: str(seen()))
            deletes = [event.key for event in recorder.events if event.action is Action.DELETE]
            assert sorted(deletes) == ["tool/created", "tool/nested/leaf"]


def test_redis_cli_reads_the_documented_format(redis_server: RedisServer) -> None:
    """The commands plugins/redis/README.md gives read what libkv wrote: the value and
    version of a key (``~`` in front with a ttl), its remaining ttl, and the key list."""
    namespace = f"t{uuid.uuid4().hex}"
    tool = RedisCli(namespace, redis_server)
    with libkv.open(f"{redis_server.url}?prefix={namespace}") as store:
        plain = store.put("app/config", b"line one\nline two:\x00")
        leased = store.put("app/session", b"s", ttl=30.0)
        store.put("other", b"o")
        assert tool.record("app/config") == f"{plain.version}:".encode() + plain.value
        assert tool.record("app/session") == f"~{leased.version}:s".encode()
        remaining = int(tool.redis_cli("PTTL", f"{REDIS_HASHTAG}v:{namespace}/app/session"))
        assert 0 < remaining <= 30_000
        assert tool.redis_cli("PTTL", f"{REDIS_HASHTAG}v:{namespace}/app/config") == b"-1\n"
        listed = tool.redis_cli(
            "ZRANGEBYLEX", f"{REDIS_HASHTAG}index", f"[{namespace}/", f"({namespace}0"
        )
        assert listed.decode().split() == [
            f"{namespace}/app/config",
            f"{namespace}/app/session",
            f"{namespace}/other",
        ]
        change = tool.redis_cli("XRANGE", f"{REDIS_HASHTAG}log", f"{plain.version}-0", "+")
        logged_key = f"{namespace}/app/config"
        header = f"u{len(logged_key)}:{logged_key}{len(plain.value)}:".encode()
        assert header + plain.value in change
        store.delete("app/config")
        assert tool.record("app/config") is None
        deleted = tool.redis_cli("XREVRANGE", f"{REDIS_HASHTAG}log", "+", "-", "COUNT", "1")
        assert f"d{len(logged_key)}:{logged_key}0:".encode() in deleted
