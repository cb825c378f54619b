"""Pytest fixtures that run real servers for the libkv integration tests.

Fixtures never skip: a missing binary is a test error telling you to run
``integration/install.sh``. Servers are stopped at teardown, also after failures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

import libkv

# `running`: the clustered-fault fixture of test_cluster_faults.py and
# test_cluster_linearizability.py.
from integration.cluster_faults import running  # noqa: F401
from integration.servers import (
    ConsulCluster,
    ConsulServer,
    EtcdCluster,
    EtcdServer,
    RedisCluster,
    RedisSentinelGroup,
    RedisServer,
    Server,
    ZooKeeperEnsemble,
    ZooKeeperServer,
)
from libkv.testing.flavours import Portal, open_blocking, portal_checks

ServerType = TypeVar("ServerType", bound=Server)


@pytest.fixture(params=["sync", "async"])
def both_flavours(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a driver test written against :func:`libkv.open` in both flavours: in
    "async", ``libkv.open`` opens the async flavour (``libkv.aio.open``) behind the
    blocking facade of :mod:`libkv.testing.flavours`, whose loop runs in debug mode (the
    test fails if a callback held it over 50 ms), as the conformance suite does."""
    if request.param == "sync":
        yield "sync"
        return
    portal = Portal()
    try:
        with portal_checks(portal):
            monkeypatch.setattr(
                libkv, "open", lambda url, **options: open_blocking(url, portal, **options)
            )
            yield "async"
            monkeypatch.undo()
    finally:
        portal.close()


def _run(factory: Callable[[], ServerType]) -> Iterator[ServerType]:
    server = factory()  # raises BinaryNotFoundError (an error, not a skip) when not installed
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A Redis server shared by the whole test session."""
    yield from _run(RedisServer)


@pytest.fixture(scope="session")
def redis_tls_server() -> Iterator[RedisServer]:
    """A Redis server speaking only TLS and requiring a client certificate, shared by the
    whole test session (``url`` is ``rediss://``; add its ``tls_options`` to the URL)."""
    yield from _run(lambda: RedisServer(tls=True))


@pytest.fixture(scope="session")
def redis_acl_server() -> Iterator[RedisServer]:
    """A Redis server whose ``default`` user is off: clients must authenticate as the ACL
    user ``username``/``password`` (``credentials_url``), who may touch only the keys of
    libkv's default hash tag. Shared by the whole test session."""
    yield from _run(lambda: RedisServer(acl=True))


@pytest.fixture
def redis_sentinel_group() -> Iterator[RedisSentinelGroup]:
    """A fresh Redis master, one replica and a Sentinel (``url``) for one test."""
    yield from _run(RedisSentinelGroup)


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """A single-member etcd 3.4 cluster shared by the whole test session."""
    yield from _run(EtcdServer)


@pytest.fixture(scope="session")
def etcd_tls_server() -> Iterator[EtcdServer]:
    """A single etcd member serving clients over TLS only and requiring a client
    certificate (``tls_options`` are the URL options a client needs), shared by the
    whole test session."""
    yield from _run(lambda: EtcdServer(tls=True))


@pytest.fixture(scope="session")
def etcd_auth_server() -> Iterator[EtcdServer]:
    """A single etcd member with authentication enabled: a ``root`` user and a user
    ``username``/``password`` (``credentials_url``) whose role may read and write only
    under ``key_prefix``. Shared by the whole test session."""
    yield from _run(lambda: EtcdServer(auth=True))


@pytest.fixture(scope="session")
def zookeeper_server() -> Iterator[ZooKeeperServer]:
    """A standalone ZooKeeper server (TTL nodes enabled) shared by the whole test session."""
    yield from _run(ZooKeeperServer)


@pytest.fixture(scope="session")
def zookeeper_tls_server() -> Iterator[ZooKeeperServer]:
    """A standalone ZooKeeper server speaking only TLS and requiring a client certificate,
    shared by the whole test session (files in its ``certificates``)."""
    yield from _run(lambda: ZooKeeperServer(tls=True))


@pytest.fixture(scope="session")
def zookeeper_auth_server() -> Iterator[ZooKeeperServer]:
    """A standalone ZooKeeper server that closes sessions not authenticated with the
    digest scheme, with ``chroot`` readable and writable only by ``username`` /
    ``password`` (``credentials_url``), shared by the whole test session."""
    yield from _run(lambda: ZooKeeperServer(auth=True))


@pytest.fixture(scope="session")
def consul_server() -> Iterator[ConsulServer]:
    """A single Consul server agent shared by the whole test session."""
    yield from _run(ConsulServer)


@pytest.fixture(scope="session")
def consul_acl_server() -> Iterator[ConsulServer]:
    """A Consul server agent with ACLs on and default deny; ``token`` is the management
    token. Shared by the whole test session."""
    yield from _run(lambda: ConsulServer(acl=True))


@pytest.fixture(scope="session")
def consul_tls_server() -> Iterator[ConsulServer]:
    """A Consul server agent serving its API over HTTPS only and requiring a client
    certificate (``url`` is ``consuls://``; files in its ``certificates``). Shared by the
    whole test session."""
    yield from _run(lambda: ConsulServer(tls=True))


@pytest.fixture
def etcd_cluster() -> Iterator[EtcdCluster]:
    """A fresh 3-member etcd cluster for one (fault-injection) test."""
    yield from _run(EtcdCluster)


@pytest.fixture
def zookeeper_ensemble() -> Iterator[ZooKeeperEnsemble]:
    """A fresh 3-member ZooKeeper ensemble for one (fault-injection) test."""
    yield from _run(ZooKeeperEnsemble)


@pytest.fixture
def consul_cluster() -> Iterator[ConsulCluster]:
    """A fresh 3-server Consul cluster for one (fault-injection) test."""
    yield from _run(ConsulCluster)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster of 3 masters on loopback (``url`` has ``cluster=true``), shared by
    the whole test session: tests keep apart with a ``hashtag=`` of their own."""
    yield from _run(RedisCluster)


@pytest.fixture
def dedicated_redis() -> Iterator[RedisServer]:
    """A Redis server of this test's own, free to be stopped and restarted."""
    yield from _run(RedisServer)


@pytest.fixture
def stopped_server() -> Iterator[EtcdServer]:
    """A dedicated etcd server, started; the test stops it (and may start it again)."""
    yield from _run(EtcdServer)
