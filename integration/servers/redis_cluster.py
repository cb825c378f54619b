"""Redis Cluster: masters on loopback started with ``--cluster-enabled yes`` and joined
into one cluster with ``redis-cli --cluster create``."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Self

from .cluster import ServerCluster
from .process import (
    DEFAULT_START_TIMEOUT,
    HOST,
    ServerError,
    find_binary,
    free_port,
)
from .redis import RedisServer

CREATE_TIMEOUT = 60.0
NODE_TIMEOUT_MILLISECONDS = 2000


def redis_cli_binary() -> str:
    """The ``redis-cli`` binary (which assembles clusters)."""
    return find_binary("redis-cli", ["/usr/bin/redis-cli"])


class RedisClusterNode(RedisServer):
    """A redis-server in cluster mode (no persistence, like ``RedisServer``).

    Its cluster state (``nodes.conf``) lives in its directory, so a restarted node
    rejoins the cluster with the slots it owned; their data is gone (no persistence).
    """

    kind = "redis-cluster-node"

    def __init__(
        self,
        directory: Path | None = None,
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        super().__init__(directory, start_timeout=start_timeout, keep_directory=keep_directory)
        # Redis puts the cluster bus at port + 10000 unless told, which may be taken
        # (or above 65535): the bus gets a free port of its own.
        self.bus_port = free_port()

    @classmethod
    def check_installed(cls) -> None:
        super().check_installed()
        redis_cli_binary()

    def command(self) -> list[str]:
        return [
            *super().command(),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(self.directory / "nodes.conf"),
            "--cluster-port", str(self.bus_port),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MILLISECONDS),
        ]  # fmt: skip

    def cluster_state(self) -> str | None:
        """``cluster_state`` of ``CLUSTER INFO`` (``ok`` or ``fail``), None if unreachable."""
        try:
            reply = self.call("CLUSTER", "INFO")
        except (OSError, ServerError):
            return None
        text = reply.decode() if isinstance(reply, bytes) else ""
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return fields.get("cluster_state")

    def known_nodes(self) -> int:
        """How many nodes this node knows (itself included), 0 if unreachable."""
        try:
            reply = self.call("CLUSTER", "NODES")
        except (OSError, ServerError):
            return 0
        return len(reply.splitlines()) if isinstance(reply, bytes) else 0


class RedisCluster(ServerCluster[RedisClusterNode]):
    """A Redis Cluster of ``size`` masters (3 by default, the least Redis accepts), no
    replicas, every hash slot assigned. ``url`` names every node with ``cluster=true``.

    Healthy when every node runs and reports ``cluster_state:ok`` knowing all the
    others. Killing a node leaves its slots unserved (there is no replica to promote)
    until it is started again: it rejoins with its slots, empty.
    """

    kind = "redis-cluster"
    member_type = RedisClusterNode
    scheme = "redis"

    def __init__(
        self,
        size: int = 3,
        directory: Path | None = None,
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        if size < 3:
            raise ServerError("a Redis Cluster needs at least 3 masters")
        super().__init__(
            size, directory, start_timeout=start_timeout, keep_directory=keep_directory
        )
        self.created = False

    def make_member(self, number: int, directory: Path) -> RedisClusterNode:
        return RedisClusterNode(directory, start_timeout=self.start_timeout)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{','.join(self.endpoints)}?cluster=true"

    def start(self, wait: bool = True) -> Self:
        """Start the nodes; the first time, also join them and assign every slot
        (``redis-cli --cluster create``), which needs them running, so it waits."""
        try:
            for member in self.members:
                if not member.running:
                    member.start(wait=False)
            if wait or not self.created:
                for member in self.members:
                    member.wait_healthy()
            if not self.created:
                self.create()
            if wait:
                self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def create(self) -> None:
        """Join the (running, empty) nodes into one cluster with every slot assigned."""
        command = [
            redis_cli_binary(),
            "--cluster", "create",
            *(f"{HOST}:{member.port}" for member in self.members),
            "--cluster-replicas", "0",
            "--cluster-yes",
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=CREATE_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise ServerError(f"redis-cli --cluster create hung: {error}") from error
        if result.returncode != 0 or "[OK] All 16384 slots covered" not in result.stdout:
            raise ServerError(
                f"redis-cli --cluster create failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )
        self.created = True

    def is_healthy(self) -> bool:
        return all(
            member.running
            and not member.paused
            and member.cluster_state() == "ok"
            and member.known_nodes() == len(self.members)
            for member in self.members
        )

    def node_for_slot(self, slot: int) -> RedisClusterNode | None:
        """The node that serves hash slot ``slot`` now, as the first running node says."""
        for member in self.running_members():
            try:
                reply = member.call("CLUSTER", "SLOTS")
            except (OSError, ServerError):
                continue
            for entry in reply if isinstance(reply, list) else []:
                if not isinstance(entry, list) or len(entry) < 3:
                    continue
                first, last, master = entry[0], entry[1], entry[2]
                if isinstance(first, int) and isinstance(last, int) and first <= slot <= last:
                    port = master[1] if isinstance(master, list) else None
                    return next((node for node in self.members if node.port == port), None)
            return None
        return None

    def key_slot(self, key: str) -> int:
        """The hash slot of ``key`` (``CLUSTER KEYSLOT``, asked of a running node)."""
        for member in self.running_members():
            try:
                reply = member.call("CLUSTER", "KEYSLOT", key)
            except (OSError, ServerError):
                continue
            if isinstance(reply, int):
                return reply
        raise ServerError("no running node answered CLUSTER KEYSLOT")
