"""etcd 3.4: one member (a single-member cluster) or a statically bootstrapped cluster."""

from __future__ import annotations

import json
from pathlib import Path

from .cluster import ServerCluster
from .process import (
    DEFAULT_START_TIMEOUT,
    HOST,
    ServerProcess,
    find_binary,
    free_port,
    http_request,
)


def etcd_binary() -> str:
    """The ``etcd`` binary."""
    return find_binary("etcd", ["/usr/bin/etcd"])


class EtcdServer(ServerProcess):
    """An etcd 3.4 member; alone it is a single-member cluster."""

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
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        super().__init__(directory, start_timeout=start_timeout, keep_directory=keep_directory)
        self.name = name
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.initial_cluster = initial_cluster or f"{name}=http://{HOST}:{self.peer_port}"
        self.cluster_token = cluster_token or f"libkv-{self.client_port}"

    @classmethod
    def check_installed(cls) -> None:
        etcd_binary()

    @property
    def port(self) -> int:
        return self.client_port

    @property
    def url(self) -> str:
        return f"etcd://{self.endpoint}"

    def command(self) -> list[str]:
        client_url = f"http://{HOST}:{self.client_port}"
        peer_url = f"http://{HOST}:{self.peer_port}"
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
        ]  # fmt: skip

    def is_healthy(self) -> bool:
        """``/health`` reports true once the member has a leader."""
        try:
            status, body = http_request("GET", f"http://{self.endpoint}/health")
            return status == 200 and json.loads(body).get("health") == "true"
        except (OSError, ValueError):
            return False

    def is_leader(self) -> bool:
        """Whether this member is the Raft leader, asked via the v3 JSON gateway."""
        try:
            status, body = http_request(
                "POST", f"http://{self.endpoint}/v3/maintenance/status", b"{}"
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
