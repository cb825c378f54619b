"""Consul 1.22 (built by ``install.sh``): a server agent that bootstraps itself
(optionally with ACLs on and default deny, optionally serving HTTPS only), or a cluster
of server agents."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from pathlib import Path

from .certificates import make_test_certificates
from .cluster import ServerCluster
from .process import (
    DEFAULT_START_TIMEOUT,
    HOST,
    PROBE_TIMEOUT,
    ServerError,
    ServerProcess,
    cache_directory,
    find_binary,
    free_port,
    http_request,
)

INTEGRATION_DIRECTORY = Path(__file__).resolve().parent.parent
PORT_NAMES = ("http", "https", "dns", "serf_lan", "serf_wan", "server")


def consul_version() -> str:
    """Return the Consul version pinned in ``integration/consul/go.mod``."""
    go_mod = INTEGRATION_DIRECTORY / "consul" / "go.mod"
    match = re.search(r"^\s*github\.com/hashicorp/consul v(\S+)", go_mod.read_text(), re.M)
    if match is None:
        raise ServerError(f"cannot read the Consul version from {go_mod}")
    return match.group(1)


def consul_binary() -> str:
    """Return the path of the Consul binary built by ``install.sh``."""
    built = cache_directory() / f"consul-{consul_version()}" / "consul"
    return find_binary("consul", [built])


class ConsulServer(ServerProcess):
    """A Consul server agent; alone it bootstraps itself (like ``-dev``, but explicit).

    ``session_ttl_min`` is lowered to 1 s (Consul's default is 10 s).

    ``acl=True`` enables ACLs with ``default_policy = "deny"``; ``token`` (a random
    UUID unless given) is the initial management token, also used as the agent's own
    token so the node registers itself. Requests without a token, or with an unknown
    one, are refused (403).

    ``tls=True`` serves the HTTP API over HTTPS only (the plain HTTP port is off) with
    throwaway ``certificates``, requiring a client certificate unless
    ``tls_verify_incoming=False``; ``url`` is then ``consuls://``.

    ``ports``, ``bootstrap_expect`` and ``retry_join`` make it a member of a
    ``ConsulCluster``.
    """

    kind = "consul"

    def __init__(
        self,
        directory: Path | None = None,
        *,
        session_ttl_min: str = "1s",
        acl: bool = False,
        token: str | None = None,
        tls: bool = False,
        tls_verify_incoming: bool = True,
        ports: dict[str, int] | None = None,
        bootstrap_expect: int = 1,
        retry_join: Sequence[str] = (),
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        super().__init__(directory, start_timeout=start_timeout, keep_directory=keep_directory)
        self.session_ttl_min = session_ttl_min
        self.acl = acl
        self.token = token or str(uuid.uuid4())
        self.certificates = make_test_certificates(self.directory / "tls") if tls else None
        self.tls_verify_incoming = tls_verify_incoming
        self.ports = ports or {name: free_port() for name in PORT_NAMES}
        self.bootstrap_expect = bootstrap_expect
        self.retry_join = list(retry_join)
        self.node_name = f"libkv-{self.ports['server']}"
        self.configuration_path = self.directory / "consul.json"

    @classmethod
    def check_installed(cls) -> None:
        consul_binary()

    @property
    def port(self) -> int:
        """The port of the HTTP API (HTTPS with ``tls``)."""
        return self.ports["http" if self.certificates is None else "https"]

    @property
    def url(self) -> str:
        """``consul://host:port``, or ``consuls://host:port`` with ``tls``; no token."""
        scheme = "consul" if self.certificates is None else "consuls"
        return f"{scheme}://{self.endpoint}"

    @property
    def http_address(self) -> str:
        """Base URL of the HTTP API (``https://`` with ``tls``)."""
        scheme = "http" if self.certificates is None else "https"
        return f"{scheme}://{self.endpoint}"

    @property
    def server_address(self) -> str:
        """``host:port`` of the server RPC port (how Consul names the Raft leader)."""
        return f"{HOST}:{self.ports['server']}"

    def api(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        *,
        token: str | None = None,
        timeout: float = PROBE_TIMEOUT,
    ) -> tuple[int, bytes]:
        """One HTTP API request (``path`` like ``/v1/kv/key``): ``(status, body)``.

        It carries ``token`` if given, else the management token when ACLs are on, and
        speaks TLS (with the client certificate) when the server does.
        """
        token = token if token is not None else (self.token if self.acl else None)
        headers = {"X-Consul-Token": token} if token is not None else {}
        return http_request(
            method,
            self.http_address + path,
            data,
            timeout,
            headers=headers,
            context=self.ssl_context(),
        )

    def prepare(self) -> None:
        ports = {**self.ports, "grpc": -1, "grpc_tls": -1}
        ports["https" if self.certificates is None else "http"] = -1
        configuration: dict[str, object] = {
            "node_name": self.node_name,
            "datacenter": "dc1",
            "data_dir": str(self.directory / "data"),
            "advertise_addr": HOST,
            "ports": ports,
            "session_ttl_min": self.session_ttl_min,
            "disable_update_check": True,
            "log_level": "INFO",
            "ui_config": {"enabled": False},
            "leave_on_terminate": False,
            "performance": {"raft_multiplier": 1},
        }
        if self.retry_join:
            configuration |= {"retry_join": self.retry_join, "retry_interval": "1s"}
        if self.acl:
            configuration["acl"] = {
                "enabled": True,
                "default_policy": "deny",
                "down_policy": "extend-cache",
                "tokens": {"initial_management": self.token, "agent": self.token},
            }
        if self.certificates is not None:
            configuration["tls"] = {
                "https": {
                    "ca_file": str(self.certificates.ca),
                    "cert_file": str(self.certificates.server),
                    "key_file": str(self.certificates.server_key),
                    "verify_incoming": self.tls_verify_incoming,
                }
            }
        self.configuration_path.write_text(json.dumps(configuration, indent=2) + "\n")

    def command(self) -> list[str]:
        return [
            consul_binary(),
            "agent",
            "-server",
            f"-bootstrap-expect={self.bootstrap_expect}",
            "-bind", HOST,
            "-client", HOST,
            "-config-file", str(self.configuration_path),
        ]  # fmt: skip

    def leader_address(self) -> str | None:
        """The server RPC address of the Raft leader this agent knows, if any."""
        try:
            status, body = self.api("GET", "/v1/status/leader")
            leader = json.loads(body) if status == 200 else ""
        except (OSError, ValueError):
            return None
        return leader if isinstance(leader, str) and leader else None

    def is_leader(self) -> bool:
        return self.leader_address() == self.server_address

    def is_healthy(self) -> bool:
        """A leader is known, this node's serfHealth check passes (before that, sessions
        cannot be created) and, with ACLs, the management token is usable."""
        if self.leader_address() is None:
            return False
        try:
            status, body = self.api("GET", f"/v1/health/node/{self.node_name}")
            checks = json.loads(body) if status == 200 else []
            if self.acl and self.api("GET", "/v1/acl/token/self")[0] != 200:
                return False
        except (OSError, ValueError):
            return False
        return any(
            check.get("CheckID") == "serfHealth" and check.get("Status") == "passing"
            for check in checks
        )


class ConsulCluster(ServerCluster[ConsulServer]):
    """Consul server agents (3 by default) on loopback with distinct ports, each expecting
    all of them (``bootstrap_expect``) and joining the others (``retry_join``, every
    second). Plain HTTP, no ACLs, ``session_ttl_min`` 1 s."""

    kind = "consul-cluster"
    member_type = ConsulServer
    scheme = "consul"

    def plan_members(self, size: int) -> None:
        self.member_ports = {
            number: {name: free_port() for name in PORT_NAMES} for number in range(1, size + 1)
        }

    def make_member(self, number: int, directory: Path) -> ConsulServer:
        others = [ports for other, ports in self.member_ports.items() if other != number]
        return ConsulServer(
            directory,
            ports=self.member_ports[number],
            bootstrap_expect=len(self.member_ports),
            retry_join=[f"{HOST}:{ports['serf_lan']}" for ports in others],
            start_timeout=self.start_timeout,
        )
