"""The test servers start healthy and answer real requests, using only raw protocols,
the standard library or the servers' own command-line tools."""

from __future__ import annotations

import json
import os
import shlex
import ssl
import subprocess
import uuid
from collections.abc import Sequence

import pytest

from integration.servers import (
    ConsulCluster,
    ConsulServer,
    EtcdCluster,
    EtcdServer,
    RedisReplyError,
    RedisServer,
    ServerError,
    ZooKeeperEnsemble,
    ZooKeeperServer,
    find_binary,
    http_request,
    redis_call,
    redis_command,
    zookeeper_command,
    zookeeper_shell,
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


def test_redis_acl_user(redis_acl_server: RedisServer) -> None:
    server = redis_acl_server
    assert server.credentials is not None and server.url == f"redis://{server.endpoint}"
    key = "{libkv}:" + unique_key()
    assert server.call("SET", key, "value") == "OK"
    assert server.call("GET", key) == b"value"
    assert server.call("ACL", "WHOAMI") == server.username.encode()
    # The default user is off: no command without AUTH.
    with pytest.raises(RedisReplyError, match="NOAUTH"):
        redis_call(server.port, "GET", key)
    wrong = (server.username, "wrong-" + server.password)
    with pytest.raises(RedisReplyError, match="WRONGPASS"):
        redis_call(server.port, "GET", key, auth=wrong)
    # The key pattern: only libkv's default hash tag.
    with pytest.raises(RedisReplyError, match="NOPERM"):
        server.call("SET", unique_key(), "value")
    redis_cli = find_binary("redis-cli", ["/usr/bin/redis-cli"])
    output = run(
        [
            redis_cli,
            "-p",
            str(server.port),
            "--user",
            server.username,
            "--no-auth-warning",
            "GET",
            key,
        ],
        {"REDISCLI_AUTH": server.password},
    )
    assert output.strip() == "value"


def test_etcd_answers(etcd_server: EtcdServer) -> None:
    assert etcd_server.url == f"etcd://{etcd_server.endpoint}"
    key = unique_key()
    assert etcdctl([etcd_server.endpoint], "put", key, "value").strip() == "OK"
    assert etcdctl([etcd_server.endpoint], "get", key, "--print-value-only").strip() == "value"
    status, body = http_request("GET", f"http://{etcd_server.endpoint}/version")
    assert status == 200
    assert json.loads(body)["etcdserver"].startswith("3.4.")


def test_etcd_tls_only(etcd_tls_server: EtcdServer) -> None:
    server = etcd_tls_server
    assert server.certificates is not None and server.http_address.startswith("https://")
    assert set(server.tls_options) == {"ca", "cert", "key"}
    key = unique_key()
    assert server.etcdctl("put", key, "over-tls").strip() == "OK"
    assert server.etcdctl("get", key, "--print-value-only").strip() == "over-tls"
    status, body = http_request(
        "GET", f"{server.http_address}/version", context=server.ssl_context()
    )
    assert status == 200 and json.loads(body)["etcdserver"].startswith("3.4."), body
    # No plain HTTP on the port, and a client certificate is required.
    with pytest.raises(OSError):
        http_request("GET", f"http://{server.endpoint}/version", timeout=2.0)
    without_certificate = ssl.create_default_context(cafile=str(server.certificates.ca))
    with pytest.raises(OSError):
        http_request("GET", f"{server.http_address}/version", context=without_certificate)


def test_etcd_auth_users_and_roles(etcd_auth_server: EtcdServer) -> None:
    server = etcd_auth_server
    user = (server.username, server.password)
    key = server.key_prefix + unique_key()
    assert server.etcdctl("put", key, "mine", user=user).strip() == "OK"
    assert server.etcdctl("get", key, "--print-value-only", user=user).strip() == "mine"
    # The role covers key_prefix only; root covers everything.
    with pytest.raises(ServerError, match="permission denied"):
        server.etcdctl("put", unique_key(), "outside", user=user)
    assert server.etcdctl("put", unique_key(), "root", user=("root", server.root_password))
    with pytest.raises(ServerError, match="authentication failed"):
        server.etcdctl("get", key, user=(server.username, "wrong-" + server.password))
    with pytest.raises(ServerError, match="user name is empty"):
        server.etcdctl("get", key)
    root = ("root", server.root_password)
    assert server.etcdctl("user", "list", user=root).split() == sorted(["root", server.username])
    role = server.etcdctl("role", "get", server.username, user=root)
    assert f"[{server.key_prefix}, " in role, role  # a prefix range: [start, end)


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
    assert f"Created {path}" in zookeeper_shell([zookeeper_server.endpoint], f"create {path} v1")
    assert "v1" in zookeeper_shell([zookeeper_server.endpoint], f"get {path}").splitlines()
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
    output = zookeeper_shell([member.endpoint for member in survivors], f"create {path} two")
    assert f"Created {path}" in output

    leader.start()  # same ports and data directory: it rejoins as a follower
    zookeeper_ensemble.wait_healthy(REJOIN_TIMEOUT)
    assert leader.mode() == "follower"
    wait_until(
        lambda: "two" in zookeeper_shell([leader.endpoint], f"get {path}").splitlines(),
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


def test_zookeeper_tls_only(zookeeper_tls_server: ZooKeeperServer) -> None:
    server = zookeeper_tls_server
    assert server.certificates is not None
    context = server.ssl_context()
    assert zookeeper_command(server.port, "ruok", context=context) == "imok"
    assert server.mode() == "standalone"
    # No plain-text service on the port: the server waits for a TLS handshake.
    with pytest.raises(OSError):
        zookeeper_command(server.port, "ruok", timeout=1.0)
    # A client certificate is required.
    without_certificate = ssl.create_default_context(cafile=str(server.certificates.ca))
    with pytest.raises(ssl.SSLError):
        zookeeper_command(server.port, "ruok", context=without_certificate)
    path = "/" + unique_key()
    output = server.shell(f"create {path} over-tls", f"get {path}")
    assert f"Created {path}" in output and "over-tls" in output.splitlines(), output


def test_zookeeper_requires_digest_auth(zookeeper_auth_server: ZooKeeperServer) -> None:
    server = zookeeper_auth_server
    assert server.credentials_url == (
        f"zookeeper://{server.username}:{server.password}@{server.endpoint}{server.chroot}"
    )
    path = f"{server.chroot}/{unique_key()}"
    user = (server.username, server.password)
    # ACLs are per znode: this one is for its creator only (the shell's and kazoo's
    # default ACL is open to anyone).
    output = server.shell(f"create {path} secret auth::cdrwa", f"get {path}", digest=user)
    assert f"Created {path}" in output and "secret" in output.splitlines(), output
    # A session that has not authenticated is closed on its first request.
    output = server.shell("ls /")
    assert "failed to authenticate" in output, output
    # Any digest authenticates, but a wrong password can neither list nor create in the
    # chroot, nor read what was created for the right one.
    wrong = (server.username, "wrong-" + server.password)
    output = server.shell(
        f"ls {server.chroot}", f"create {path}-other x", f"get {path}", digest=wrong
    )
    assert output.count("Insufficient permission : ") == 3, output
    assert "secret" not in output.splitlines()
    assert "Created" not in output


def test_consul_acl_default_deny(consul_acl_server: ConsulServer) -> None:
    server = consul_acl_server
    key_url = f"{server.http_address}/v1/kv/{unique_key()}"
    status, body = http_request("PUT", key_url, b"anonymous")
    assert status == 403, body
    wrong_token = {"X-Consul-Token": str(uuid.uuid4())}
    status, body = http_request("PUT", key_url, b"wrong", headers=wrong_token)
    assert (status, body) == (403, b"ACL not found")
    management = {"X-Consul-Token": server.token}
    status, body = http_request("PUT", key_url, b"value", headers=management)
    assert (status, body.strip()) == (200, b"true")
    assert http_request("GET", key_url + "?raw", headers=management) == (200, b"value")
    assert http_request("GET", key_url + "?raw")[0] == 403
    request = json.dumps({"TTL": "1s", "Behavior": "delete"}).encode()
    status, body = server.api("PUT", "/v1/session/create", request)
    assert status == 200, body


def test_consul_https_only(consul_tls_server: ConsulServer) -> None:
    server = consul_tls_server
    assert server.certificates is not None
    assert server.url == f"consuls://127.0.0.1:{server.port}"
    status, body = http_request("GET", f"http://{server.endpoint}/v1/status/leader")
    assert status == 400, body  # "Client sent an HTTP request to an HTTPS server."
    without_certificate = ssl.create_default_context(cafile=str(server.certificates.ca))
    with pytest.raises(OSError):
        http_request("GET", f"{server.http_address}/v1/status/leader", context=without_certificate)
    key = unique_key()
    assert server.api("PUT", f"/v1/kv/{key}", b"over-tls") == (200, b"true")
    assert server.api("GET", f"/v1/kv/{key}?raw") == (200, b"over-tls")


def test_consul_cluster_survives_leader_kill(consul_cluster: ConsulCluster) -> None:
    assert consul_cluster.url == "consul://" + ",".join(consul_cluster.endpoints)
    leader = consul_cluster.leader()
    assert leader is not None
    addresses = {member.leader_address() for member in consul_cluster.members}
    assert addresses == {leader.server_address}
    status, body = leader.api("GET", "/v1/status/peers")
    assert status == 200 and len(json.loads(body)) == 3, body
    leader.kill()  # a new leader must be elected among the two others
    consul_cluster.wait_healthy(REJOIN_TIMEOUT)
    new_leader = consul_cluster.leader()
    assert new_leader is not None and new_leader is not leader
    survivor = next(member for member in consul_cluster.members if member is not leader)
    key = unique_key()

    # A write in flight during the election can fail (no leader); a client retries.
    def put_succeeds() -> bool:
        try:
            return survivor.api("PUT", f"/v1/kv/{key}", b"written-with-two") == (200, b"true")
        except OSError:
            return False

    wait_until(put_succeeds, REJOIN_TIMEOUT, interval=0.5, message="a write to two servers")

    leader.start()  # same ports and data directory: it rejoins
    consul_cluster.wait_healthy(REJOIN_TIMEOUT)
    wait_until(
        lambda: leader.api("GET", f"/v1/kv/{key}?raw&stale") == (200, b"written-with-two"),
        REJOIN_TIMEOUT,
        interval=0.5,
        message=f"{key} on the rejoined server",
    )
