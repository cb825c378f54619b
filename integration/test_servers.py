"""The test servers start healthy and answer real requests, using only raw protocols,
the standard library or the servers' own command-line tools."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import uuid
from collections.abc import Sequence

from integration.servers import (
    SLF4J_SIMPLE_JAR,
    ZOOKEEPER_JAR,
    ConsulServer,
    EtcdCluster,
    EtcdServer,
    RedisServer,
    ZooKeeperEnsemble,
    ZooKeeperServer,
    find_binary,
    http_request,
    redis_command,
    zookeeper_command,
)
from libkv.testing.polling import wait_until

COMMAND_TIMEOUT = 60.0
REJOIN_TIMEOUT = 120.0


def try_run(command: Sequence[str], environment: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a command line tool; return its exit code and output (stdout, then stderr)."""
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        env={**os.environ, **(environment or {})},
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def run(command: Sequence[str], environment: dict[str, str] | None = None) -> str:
    """Run a command line tool and return its output; fail on a non-zero exit code."""
    code, output = try_run(command, environment)
    assert code == 0, f"{shlex.join(command)} failed with code {code}:\n{output}"
    return output


def unique_key() -> str:
    return f"libkv-test-{uuid.uuid4().hex[:12]}"


def etcdctl_command(endpoints: Sequence[str], *arguments: str) -> list[str]:
    binary = find_binary("etcdctl", ["/usr/bin/etcdctl"])
    return [binary, "--endpoints", ",".join(endpoints), "--command-timeout=10s", *arguments]


def etcdctl(endpoints: Sequence[str], *arguments: str) -> str:
    return run(etcdctl_command(endpoints, *arguments), {"ETCDCTL_API": "3"})


def zookeeper_cli(endpoints: Sequence[str], *arguments: str) -> str:
    """Run one ZooKeeper shell command (``ZooKeeperMain``) against ``endpoints``."""
    java = find_binary("java", ["/usr/bin/java"])
    classpath = ":".join(str(jar) for jar in (ZOOKEEPER_JAR, SLF4J_SIMPLE_JAR) if jar.is_file())
    return run(
        [
            java,
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            classpath,
            "org.apache.zookeeper.ZooKeeperMain",
            "-server",
            ",".join(endpoints),
            *arguments,
        ]
    )


def test_redis_answers(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}"
    key = unique_key()
    assert redis_command(redis_server.port, "PING") == b"+PONG"
    assert redis_command(redis_server.port, "SET", key, "value") == b"+OK"
    redis_cli = find_binary("redis-cli", ["/usr/bin/redis-cli"])
    output = run([redis_cli, "-h", "127.0.0.1", "-p", str(redis_server.port), "GET", key])
    assert output.strip() == "value"


def test_redis_pause_and_resume(redis_server: RedisServer) -> None:
    redis_server.pause()
    try:
        assert not redis_server.is_healthy()
    finally:
        redis_server.resume()
    redis_server.wait_healthy(30)


def test_etcd_answers(etcd_server: EtcdServer) -> None:
    assert etcd_server.url == f"etcd://{etcd_server.endpoint}"
    key = unique_key()
    assert etcdctl([etcd_server.endpoint], "put", key, "value").strip() == "OK"
    assert etcdctl([etcd_server.endpoint], "get", key, "--print-value-only").strip() == "value"
    status, body = http_request("GET", f"http://{etcd_server.endpoint}/version")
    assert status == 200
    assert json.loads(body)["etcdserver"].startswith("3.4.")


def test_etcd_cluster_survives_member_kill(etcd_cluster: EtcdCluster) -> None:
    assert etcd_cluster.url == "etcd://" + ",".join(etcd_cluster.endpoints)
    health = etcdctl(etcd_cluster.endpoints, "endpoint", "health")
    assert health.count("is healthy") == 3, health
    victim = etcd_cluster.leader()
    assert victim is not None
    victim.kill()  # the hardest case: a new leader must be elected
    etcd_cluster.wait_healthy(REJOIN_TIMEOUT)
    survivors = [member.endpoint for member in etcd_cluster.members if member is not victim]
    key = unique_key()
    put = etcdctl_command(survivors, "put", key, "written-with-two")

    # A request in flight during the election fails ("possibly due to previous leader
    # failure"); a client retries, so does this test, within a bound.
    def put_succeeds() -> bool:
        code, output = try_run(put, {"ETCDCTL_API": "3"})
        return code == 0 and "OK" in output.split()

    wait_until(
        put_succeeds,
        REJOIN_TIMEOUT,
        interval=0.5,
        message="a write to the two surviving etcd members",
    )

    victim.start()  # same ports and data directory: it rejoins and catches up
    etcd_cluster.wait_healthy(REJOIN_TIMEOUT)
    value = etcdctl([victim.endpoint], "get", key, "--print-value-only", "--consistency=s")
    assert value.strip() == "written-with-two"
    health = etcdctl(etcd_cluster.endpoints, "endpoint", "health")
    assert health.count("is healthy") == 3, health


def test_zookeeper_answers(zookeeper_server: ZooKeeperServer) -> None:
    assert zookeeper_server.url == f"zookeeper://{zookeeper_server.endpoint}"
    assert zookeeper_command(zookeeper_server.port, "ruok") == "imok"
    assert zookeeper_server.mode() == "standalone"
    path = "/" + unique_key()
    assert f"Created {path}" in zookeeper_cli([zookeeper_server.endpoint], "create", path, "v1")
    assert "v1" in zookeeper_cli([zookeeper_server.endpoint], "get", path).splitlines()
    statistics = zookeeper_command(zookeeper_server.port, "mntr")
    assert "zk_server_state\tstandalone" in statistics


def test_zookeeper_ensemble_survives_member_kill(zookeeper_ensemble: ZooKeeperEnsemble) -> None:
    modes = sorted(str(member.mode()) for member in zookeeper_ensemble.members)
    assert modes == ["follower", "follower", "leader"]
    leader = zookeeper_ensemble.leader()
    assert leader is not None
    leader.kill()  # the hardest case: a new leader must be elected
    survivors = [member for member in zookeeper_ensemble.members if member is not leader]
    zookeeper_ensemble.wait_healthy(REJOIN_TIMEOUT)
    path = "/" + unique_key()
    output = zookeeper_cli([member.endpoint for member in survivors], "create", path, "two")
    assert f"Created {path}" in output

    leader.start()  # same ports and data directory: it rejoins as a follower
    zookeeper_ensemble.wait_healthy(REJOIN_TIMEOUT)
    assert leader.mode() == "follower"
    wait_until(
        lambda: "two" in zookeeper_cli([leader.endpoint], "get", path).splitlines(),
        REJOIN_TIMEOUT,
        interval=0.5,
        message=f"{path} on the rejoined member",
    )


def test_consul_answers(consul_server: ConsulServer) -> None:
    assert consul_server.url == f"consul://127.0.0.1:{consul_server.port}"
    base = consul_server.http_address
    key = unique_key()
    status, body = http_request("PUT", f"{base}/v1/kv/{key}", b"value")
    assert (status, body.strip()) == (200, b"true")
    status, body = http_request("GET", f"{base}/v1/kv/{key}?raw")
    assert (status, body) == (200, b"value")
    # session_ttl_min is lowered to 1s, so a 1s session TTL is accepted (default minimum: 10s).
    request = json.dumps({"TTL": "1s", "Behavior": "delete"}).encode()
    status, body = http_request("PUT", f"{base}/v1/session/create", request)
    assert status == 200, body
    assert json.loads(body)["ID"]
