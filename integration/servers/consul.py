"""Consul 1.22 (built by ``install.sh``): a server agent that bootstraps itself."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .process import (
    DEFAULT_START_TIMEOUT,
    HOST,
    ServerError,
    ServerProcess,
    cache_directory,
    find_binary,
    free_port,
    http_request,
)

INTEGRATION_DIRECTORY = Path(__file__).resolve().parent.parent


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
    """A single Consul server agent that bootstraps itself (like ``-dev``, but explicit)."""

    kind = "consul"

    def __init__(
        self,
        directory: Path | None = None,
        *,
        session_ttl_min: str = "1s",
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        super().__init__(directory, start_timeout=start_timeout, keep_directory=keep_directory)
        self.session_ttl_min = session_ttl_min
        self.ports = {
            name: free_port() for name in ("http", "dns", "serf_lan", "serf_wan", "server")
        }
        self.node_name = f"libkv-{self.ports['http']}"
        self.configuration_path = self.directory / "consul.json"

    @classmethod
    def check_installed(cls) -> None:
        consul_binary()

    @property
    def port(self) -> int:
        return self.ports["http"]

    @property
    def url(self) -> str:
        return f"consul://{self.endpoint}"

    @property
    def http_address(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://{self.endpoint}"

    def prepare(self) -> None:
        configuration = {
            "node_name": self.node_name,
            "datacenter": "dc1",
            "data_dir": str(self.directory / "data"),
            "advertise_addr": HOST,
            "ports": {**self.ports, "grpc": -1, "grpc_tls": -1, "https": -1},
            "session_ttl_min": self.session_ttl_min,
            "disable_update_check": True,
            "log_level": "INFO",
            "ui_config": {"enabled": False},
            "leave_on_terminate": False,
            "performance": {"raft_multiplier": 1},
        }
        self.configuration_path.write_text(json.dumps(configuration, indent=2) + "\n")

    def command(self) -> list[str]:
        return [
            consul_binary(),
            "agent",
            "-server",
            "-bootstrap-expect=1",
            "-bind", HOST,
            "-client", HOST,
            "-config-file", str(self.configuration_path),
        ]  # fmt: skip

    def is_healthy(self) -> bool:
        """A leader is elected and this node's serfHealth check passes (sessions work)."""
        try:
            status, body = http_request("GET", f"{self.http_address}/v1/status/leader")
            if status != 200 or not json.loads(body):
                return False
            node_url = f"{self.http_address}/v1/health/node/{self.node_name}"
            status, body = http_request("GET", node_url)
            checks = json.loads(body) if status == 200 else []
        except (OSError, ValueError):
            return False
        return any(
            check.get("CheckID") == "serfHealth" and check.get("Status") == "passing"
            for check in checks
        )
