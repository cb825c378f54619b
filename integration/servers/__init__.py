"""Real Redis, etcd, ZooKeeper and Consul servers for the libkv integration tests.

Every server runs as a child process in its own temporary directory and listens on free
127.0.0.1 ports. Servers and clusters share one interface: ``start()``, ``stop()``,
``wait_healthy()``, ``close()``, ``url`` and use as a context manager. Single processes
(also each cluster member) add ``kill()``, ``pause()``, ``resume()`` and ``restart()``.

Modules: ``process`` (the ``Server`` interface, one process, helpers), ``cluster``
(members forming one service), ``certificates`` (test TLS files), and one per server
family: ``redis``, ``redis_cluster``, ``etcd``, ``zookeeper``, ``consul``. Everything
public is importable from ``integration.servers``.

Command line (from the repository root)::

    python -m integration.servers start redis|etcd|etcd-cluster|zookeeper|...
    python -m integration.servers check

Binaries come from ``integration/install.sh``.
"""

from .certificates import Certificates, make_test_certificates
from .cluster import ServerCluster
from .consul import ConsulCluster, ConsulServer, consul_binary, consul_version
from .etcd import EtcdCluster, EtcdServer
from .process import (
    BinaryNotFoundError,
    Server,
    ServerError,
    ServerProcess,
    cache_directory,
    find_binary,
    free_port,
    http_request,
)
from .redis import (
    RedisReplyError,
    RedisSentinel,
    RedisSentinelGroup,
    RedisServer,
    redis_call,
    redis_command,
)
from .redis_cluster import RedisCluster, RedisClusterNode
from .zookeeper import (
    SLF4J_SIMPLE_JAR,
    ZOOKEEPER_JAR,
    ZooKeeperEnsemble,
    ZooKeeperServer,
    digest_id,
    zookeeper_command,
    zookeeper_shell,
)

__all__ = [
    "SLF4J_SIMPLE_JAR",
    "ZOOKEEPER_JAR",
    "BinaryNotFoundError",
    "Certificates",
    "ConsulCluster",
    "ConsulServer",
    "EtcdCluster",
    "EtcdServer",
    "RedisCluster",
    "RedisClusterNode",
    "RedisReplyError",
    "RedisSentinel",
    "RedisSentinelGroup",
    "RedisServer",
    "Server",
    "ServerCluster",
    "ServerError",
    "ServerProcess",
    "ZooKeeperEnsemble",
    "ZooKeeperServer",
    "cache_directory",
    "consul_binary",
    "consul_version",
    "digest_id",
    "find_binary",
    "free_port",
    "http_request",
    "make_test_certificates",
    "redis_call",
    "redis_command",
    "zookeeper_command",
    "zookeeper_shell",
]
