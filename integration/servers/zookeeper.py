"""ZooKeeper 3.8: a standalone server or an ensemble with a quorum."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import ClassVar

from .cluster import ServerCluster
from .process import (
    DEFAULT_START_TIMEOUT,
    HOST,
    INSTALL_HINT,
    PROBE_TIMEOUT,
    BinaryNotFoundError,
    ServerError,
    ServerProcess,
    find_binary,
    free_port,
)

ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
SLF4J_SIMPLE_JAR = Path("/usr/share/java/slf4j-simple.jar")


def java_binary() -> str:
    """The ``java`` binary that runs ZooKeeper."""
    return find_binary("java", ["/usr/bin/java"])


def zookeeper_command(port: int, word: str, timeout: float = PROBE_TIMEOUT) -> str:
    """Send a ZooKeeper four-letter word (``ruok``, ``srvr``, ``mntr``) and return the reply."""
    with socket.create_connection((HOST, port), timeout=timeout) as connection:
        connection.sendall(word.encode("ascii"))
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


class ZooKeeperServer(ServerProcess):
    """A ZooKeeper server (standalone, or one member of an ensemble).

    Runs with extended types (TTL nodes) enabled and a 500 ms container/TTL check
    interval, the admin server disabled and the four-letter words ruok, srvr and mntr.
    """

    kind = "zookeeper"
    tick_milliseconds = 1000
    healthy_modes: ClassVar[frozenset[str]] = frozenset({"standalone", "leader", "follower"})

    def __init__(
        self,
        directory: Path | None = None,
        *,
        client_port: int | None = None,
        server_id: int | None = None,
        quorum: dict[int, tuple[int, int]] | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        super().__init__(directory, start_timeout=start_timeout, keep_directory=keep_directory)
        self.client_port = client_port or free_port()
        self.server_id = server_id
        self.quorum = quorum or {}
        self.configuration_directory = self.directory / "conf"
        self.data_directory = self.directory / "data"

    @classmethod
    def check_installed(cls) -> None:
        java_binary()
        if not ZOOKEEPER_JAR.is_file():
            raise BinaryNotFoundError(f"{ZOOKEEPER_JAR} not found; {INSTALL_HINT}")

    @property
    def port(self) -> int:
        return self.client_port

    @property
    def url(self) -> str:
        return f"zookeeper://{self.endpoint}"

    def prepare(self) -> None:
        self.configuration_directory.mkdir(parents=True, exist_ok=True)
        self.data_directory.mkdir(parents=True, exist_ok=True)
        lines = [
            f"tickTime={self.tick_milliseconds}",
            "initLimit=30",
            "syncLimit=10",
            f"dataDir={self.data_directory}",
            f"clientPort={self.client_port}",
            f"clientPortAddress={HOST}",
            "maxClientCnxns=0",
            "admin.enableServer=false",
            "4lw.commands.whitelist=ruok,srvr,mntr",
            "autopurge.purgeInterval=0",
        ]
        if self.quorum:
            if self.server_id is None:
                raise ServerError("an ensemble member needs a server_id")
            (self.data_directory / "myid").write_text(f"{self.server_id}\n")
            lines += [
                f"server.{number}={HOST}:{quorum_port}:{election_port}"
                for number, (quorum_port, election_port) in sorted(self.quorum.items())
            ]
        (self.configuration_directory / "zoo.cfg").write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        classpath = [str(self.configuration_directory), str(ZOOKEEPER_JAR)]
        if SLF4J_SIMPLE_JAR.is_file():  # logs to stderr; without a binding ZooKeeper is mute
            classpath.append(str(SLF4J_SIMPLE_JAR))
        return [
            java_binary(),
            "-Xms32m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-Djava.net.preferIPv4Stack=true",
            "-Dzookeeper.extendedTypesEnabled=true",
            "-Dznode.container.checkIntervalMs=500",
            "-Dzookeeper.admin.enableServer=false",
            "-Dzookeeper.cnxTimeout=3000",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd HH:mm:ss.SSS",
            "-cp", ":".join(classpath),
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            str(self.configuration_directory / "zoo.cfg"),
        ]  # fmt: skip

    def mode(self) -> str | None:
        """The ``Mode:`` reported by ``srvr`` (standalone, leader, follower), if serving."""
        try:
            reply = zookeeper_command(self.client_port, "srvr")
        except OSError:
            return None
        match = re.search(r"^Mode: (\S+)", reply, re.M)
        return match.group(1) if match else None

    def is_leader(self) -> bool:
        return self.mode() == "leader"

    def is_healthy(self) -> bool:
        try:
            if zookeeper_command(self.client_port, "ruok") != "imok":
                return False
        except OSError:
            return False
        return self.mode() in self.healthy_modes


class ZooKeeperEnsemble(ServerCluster[ZooKeeperServer]):
    """A ZooKeeper ensemble with a quorum (3 members by default)."""

    kind = "zookeeper-ensemble"
    member_type = ZooKeeperServer
    scheme = "zookeeper"

    def plan_members(self, size: int) -> None:
        # server id -> (quorum port, election port), the same in every member's zoo.cfg
        self.quorum_ports = {number: (free_port(), free_port()) for number in range(1, size + 1)}

    def make_member(self, number: int, directory: Path) -> ZooKeeperServer:
        return ZooKeeperServer(
            directory,
            server_id=number,
            quorum=self.quorum_ports,
            start_timeout=self.start_timeout,
        )
