"""The conformance kit's fault layer (`libkv.testing.faults`) against real servers.

Every test gets a server of its own, since it kills or freezes it: Redis as the harness
runs it (no RDB, no append-only file: a restart starts empty, so `persistent` is
False), Redis with an append-only file fsynced on every write (persistent), and a
single etcd member (its WAL is fsynced before a write is acknowledged and its data
directory survives the restart: persistent), and a single Consul server agent (not in
dev mode: its Raft log in ``data_dir`` is fsynced before a write is committed and
survives the restart: persistent).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from integration.servers import ConsulServer, EtcdServer, RedisServer
from integration.servers.zookeeper import ZooKeeperServer
from libkv.testing import FaultConformance, FaultServer


class VolatileRedisServer(RedisServer):
    """The harness's Redis (``--save "" --appendonly no``): a restart starts empty."""

    persistent = False


class PersistentRedisServer(RedisServer):
    """Redis with an append-only file fsynced before every reply: a crash loses nothing."""

    persistent = True

    def command(self) -> list[str]:
        # Later options override earlier ones on the redis-server command line.
        return [*super().command(), "--appendonly", "yes", "--appendfsync", "always"]


class PersistentEtcdServer(EtcdServer):
    """A single etcd member; acknowledged writes are in its WAL, which survives a kill."""

    persistent = True


class PersistentConsulServer(ConsulServer):
    """A Consul server agent; acknowledged writes are in its Raft log, which survives a kill."""

    persistent = True

    @property
    def url(self) -> str:
        # The agents' session_ttl_min is 1 s (Consul's default, assumed without it, is 10 s).
        return f"{super().url}?session_ttl_min=1"


class TestVolatileRedisFaults(FaultConformance):
    @pytest.fixture
    def fault_server(self) -> Iterator[FaultServer]:
        with VolatileRedisServer() as server:
            yield server


class TestPersistentRedisFaults(FaultConformance):
    @pytest.fixture
    def fault_server(self) -> Iterator[FaultServer]:
        with PersistentRedisServer() as server:
            yield server


class TestEtcdFaults(FaultConformance):
    @pytest.fixture
    def fault_server(self) -> Iterator[FaultServer]:
        with PersistentEtcdServer() as server:
            yield server


class PersistentZooKeeperServer(ZooKeeperServer):
    """A standalone ZooKeeper: it fsyncs its transaction log before acknowledging a write
    (``forceSync``, on by default) into a data directory that a kill leaves in place and
    a restart reuses, so acknowledged writes survive (and so does the session)."""

    persistent = True


class TestZooKeeperFaults(FaultConformance):
    @pytest.fixture
    def fault_server(self) -> Iterator[FaultServer]:
        with PersistentZooKeeperServer() as server:
            yield server


class TestConsulFaults(FaultConformance):
    @pytest.fixture
    def fault_server(self) -> Iterator[FaultServer]:
        with PersistentConsulServer() as server:
            yield server
