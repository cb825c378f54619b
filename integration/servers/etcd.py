"""etcd 3.4: one member (a single-member cluster), optionally serving clients over TLS
and requiring authentication, or a statically bootstrapped cluster."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path
from urllib.parse import quote

from .certificates import make_test_certificates
from .cluster import ServerCluster
from .process import (
    DEFAULT_START_TIMEOUT,
    HOST,
    ServerError,
    ServerProcess,
    find_binary,
    free_port,
    http_request,
)

ETCDCTL_TIMEOUT = 30.0


def etcd_binary() -> str:
    """The ``etcd`` binary."""
    return find_binary("etcd", ["/usr/bin/etcd"])


def etcdctl_binary() -> str:
    """The ``etcdctl`` binary (v3 API)."""
    return find_binary("etcdctl", ["/usr/bin/etcdctl"])


class EtcdServer(ServerProcess):
    """An etcd 3.4 member; alone it is a single-member cluster.

    ``tls=True`` serves clients over HTTPS/gRPC-TLS only (peers stay plain) with
    throwaway ``certificates``, requiring a client certificate signed by their CA unless
    ``client_cert_auth=False``; ``tls_options`` are the libkv URL options a client needs
    (``url`` carries none of them).

    ``auth=True`` turns authentication on once the member is first healthy: a ``root``
    user (password ``root_password``), a role ``username`` with read and write
    permission on the keys under ``key_prefix`` only, a user ``username`` (password
    ``password``) with that role, then ``etcdctl auth enable``. Passwords are random
    unless given. ``credentials_url`` is the libkv URL of that limited user, whose
    namespace is ``key_prefix``.
    """

    kind = "etcd"

    def __init__(
        self,
        directory: Path | None = None,
        *,
        name: str = "default",
        client_port: int | None = None,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        cluster_token: str | None = None,
        tls: bool = False,
        client_cert_auth: bool = True,
        auth: bool = False,
        username: str = "libkv",
        password: str | None = None,
        root_password: str | None = None,
        key_prefix: str = "libkv/",
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        if auth and (username == "root" or ":" in username or not key_prefix.endswith("/")):
            raise ServerError(
                "the limited user cannot be root or contain ':'; key_prefix ends in '/'"
            )
        super().__init__(directory, start_timeout=start_timeout, keep_directory=keep_directory)
        self.name = name
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.initial_cluster = initial_cluster or f"{name}=http://{HOST}:{self.peer_port}"
        self.cluster_token = cluster_token or f"libkv-{self.client_port}"
        self.certificates = make_test_certificates(self.directory / "tls") if tls else None
        self.client_cert_auth = client_cert_auth
        self.auth = auth
        self.username = username
        self.password = password or secrets.token_hex(12)
        self.root_password = root_password or secrets.token_hex(12)
        self.key_prefix = key_prefix
        self._auth_enabled = False

    @classmethod
    def check_installed(cls) -> None:
        etcd_binary()

    @property
    def port(self) -> int:
        return self.client_port

    @property
    def url(self) -> str:
        """``etcd://host:port``: no credentials, no TLS options."""
        return f"etcd://{self.endpoint}"

    @property
    def http_address(self) -> str:
        """Base URL of the client port (``https://`` with ``tls``)."""
        scheme = "http" if self.certificates is None else "https"
        return f"{scheme}://{self.endpoint}"

    @property
    def tls_options(self) -> dict[str, str]:
        """``ca``, ``cert`` and ``key`` (libkv's etcd URL options) for a TLS server."""
        if self.certificates is None:
            return {}
        return {
            "ca": str(self.certificates.ca),
            "cert": str(self.certificates.client),
            "key": str(self.certificates.client_key),
        }

    @property
    def credentials_url(self) -> str:
        """``etcd://USER:PASSWORD@host:port/PREFIX`` (URL-encoded) for an ``auth`` server:
        the limited user, namespaced to the keys its role may use."""
        user = quote(self.username, safe="")
        return f"etcd://{user}:{quote(self.password, safe='')}@{self.endpoint}/" + quote(
            self.key_prefix.rstrip("/"), safe="/"
        )

    def command(self) -> list[str]:
        client_url = self.http_address
        peer_url = f"http://{HOST}:{self.peer_port}"
        tls: list[str] = []
        if self.certificates is not None:
            tls = [
                "--cert-file", str(self.certificates.server),
                "--key-file", str(self.certificates.server_key),
                "--trusted-ca-file", str(self.certificates.ca),
            ]  # fmt: skip
            if self.client_cert_auth:
                tls.append("--client-cert-auth")
        return [
            etcd_binary(),
            "--name", self.name,
            "--data-dir", str(self.directory / "data"),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self.cluster_token,
            "--logger", "zap",
            *tls,
        ]  # fmt: skip

    def etcdctl(self, *arguments: str, user: tuple[str, str] | None = None) -> str:
        """Run ``etcdctl`` (v3) against this member (with the client certificate when it
        speaks TLS, as ``user`` = ``(name, password)`` if given) and return its output;
        raise ``ServerError`` on a non-zero exit code."""
        command = [etcdctl_binary(), "--endpoints", self.http_address, "--command-timeout=10s"]
        if self.certificates is not None:
            command += [
                "--cacert", str(self.certificates.ca),
                "--cert", str(self.certificates.client),
                "--key", str(self.certificates.client_key),
            ]  # fmt: skip
        if user is not None:
            command += ["--user", user[0], "--password", user[1]]
        result = subprocess.run(
            [*command, *arguments],
            capture_output=True,
            text=True,
            timeout=ETCDCTL_TIMEOUT,
            env={**os.environ, "ETCDCTL_API": "3"},
            check=False,
        )
        if result.returncode != 0:
            # The command line holds passwords: name only the etcdctl subcommand.
            raise ServerError(
                f"etcdctl {arguments[0] if arguments else ''} failed with code "
                f"{result.returncode}: {result.stdout}{result.stderr}"
            )
        return result.stdout

    def wait_healthy(self, timeout: float | None = None) -> None:
        """As ``ServerProcess.wait_healthy``; with ``auth``, the first time it is healthy
        it also creates the users and the role and enables authentication."""
        super().wait_healthy(timeout)
        if self.auth and not self._auth_enabled:
            self._enable_auth()

    def _enable_auth(self) -> None:
        role, user = self.username, self.username
        self.etcdctl("user", "add", "root", "--new-user-password", self.root_password)
        self.etcdctl("role", "add", role)
        self.etcdctl(
            "role", "grant-permission", role, "readwrite", self.key_prefix, "--prefix=true"
        )  # fmt: skip
        self.etcdctl("user", "add", user, "--new-user-password", self.password)
        self.etcdctl("user", "grant-role", user, role)
        self.etcdctl("auth", "enable")
        self._auth_enabled = True

    def is_healthy(self) -> bool:
        """``/health`` reports true once the member has a leader."""
        try:
            status, body = http_request(
                "GET", f"{self.http_address}/health", context=self.ssl_context()
            )
            return status == 200 and json.loads(body).get("health") == "true"
        except (OSError, ValueError):
            return False

    def is_leader(self) -> bool:
        """Whether this member is the Raft leader, asked via the v3 JSON gateway."""
        try:
            status, body = http_request(
                "POST",
                f"{self.http_address}/v3/maintenance/status",
                b"{}",
                context=self.ssl_context(),
            )
            reply = json.loads(body) if status == 200 else {}
        except (OSError, ValueError):
            return False
        member_id = reply.get("header", {}).get("member_id")
        return member_id is not None and member_id == reply.get("leader")


class EtcdCluster(ServerCluster[EtcdServer]):
    """A statically bootstrapped etcd cluster (3 members by default)."""

    kind = "etcd-cluster"
    member_type = EtcdServer
    scheme = "etcd"

    def plan_members(self, size: int) -> None:
        self.peer_ports = {f"member{number}": free_port() for number in range(1, size + 1)}
        self.initial_cluster = ",".join(
            f"{name}=http://{HOST}:{port}" for name, port in self.peer_ports.items()
        )
        self.cluster_token = f"libkv-{self.peer_ports['member1']}"

    def make_member(self, number: int, directory: Path) -> EtcdServer:
        name = f"member{number}"
        return EtcdServer(
            directory,
            name=name,
            peer_port=self.peer_ports[name],
            initial_cluster=self.initial_cluster,
            cluster_token=self.cluster_token,
            start_timeout=self.start_timeout,
        )
