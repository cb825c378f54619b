"""ZooKeeper 3.8: a standalone server (optionally TLS only, optionally requiring digest
authentication) or an ensemble with a quorum."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import socket
import ssl
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Self

from .certificates import Certificates, make_test_certificates
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
# Netty's TLS handler needs netty-codec (and netty-resolver), which the Class-Path of
# Debian's zookeeper.jar leaves out: without them every TLS connection is closed at once.
NETTY_JARS = (Path("/usr/share/java/netty-codec.jar"), Path("/usr/share/java/netty-resolver.jar"))
SHELL_TIMEOUT = 60.0
SUPER_USER = "super"


def java_binary() -> str:
    """The ``java`` binary that runs ZooKeeper."""
    return find_binary("java", ["/usr/bin/java"])


def zookeeper_classpath() -> list[str]:
    """The jars of ZooKeeper, its TLS dependencies and a logging binding (slf4j-simple;
    without a binding ZooKeeper logs nothing)."""
    extra = [jar for jar in (SLF4J_SIMPLE_JAR, *NETTY_JARS) if jar.is_file()]
    return [str(jar) for jar in (ZOOKEEPER_JAR, *extra)]


def zookeeper_command(
    port: int,
    word: str,
    timeout: float = PROBE_TIMEOUT,
    context: ssl.SSLContext | None = None,
) -> str:
    """Send a ZooKeeper four-letter word (``ruok``, ``srvr``, ``mntr``) and return the reply.

    ``context`` speaks TLS (a TLS-only server answers them on its secure port).
    """
    with socket.create_connection((HOST, port), timeout=timeout) as plain:
        connection = plain if context is None else context.wrap_socket(plain, server_hostname=HOST)
        with connection:
            connection.sendall(word.encode("ascii"))
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def digest_id(username: str, password: str) -> str:
    """The ``user:base64(sha1(user:password))`` id of ZooKeeper's digest scheme (the form a
    digest ACL and ``superDigest`` take)."""
    digest = hashlib.sha1(f"{username}:{password}".encode()).digest()
    return f"{username}:{base64.b64encode(digest).decode()}"


def zookeeper_shell(
    endpoints: Sequence[str],
    *commands: str,
    certificates: Certificates | None = None,
    digest: tuple[str, str] | None = None,
    timeout: float = SHELL_TIMEOUT,
) -> str:
    """Run ``commands`` in one ZooKeeper shell (``ZooKeeperMain``, a JVM) against
    ``endpoints`` and return its output (stdout, then stderr).

    ``digest`` is ``(user, password)`` for ``addauth digest`` before the commands;
    ``certificates`` connects over TLS with their client certificate. As in an
    interactive session, a failing command shows in the output only (for example
    ``Insufficient permission``), and a session the server closes ends the shell.
    """
    properties = {"org.slf4j.simpleLogger.defaultLogLevel": "warn"}
    if certificates is not None:
        properties |= {
            "zookeeper.clientCnxnSocket": "org.apache.zookeeper.ClientCnxnSocketNetty",
            "zookeeper.client.secure": "true",
            "zookeeper.ssl.keyStore.location": str(certificates.client_bundle),
            "zookeeper.ssl.keyStore.type": "PEM",
            "zookeeper.ssl.trustStore.location": str(certificates.ca),
            "zookeeper.ssl.trustStore.type": "PEM",
        }
    script = [f"addauth digest {digest[0]}:{digest[1]}"] if digest is not None else []
    script += [*commands, "quit"]
    result = subprocess.run(
        [
            java_binary(),
            *(f"-D{name}={value}" for name, value in properties.items()),
            "-cp",
            ":".join(zookeeper_classpath()),
            "org.apache.zookeeper.ZooKeeperMain",
            "-server",
            ",".join(endpoints),
        ],
        input="\n".join(script) + "\n",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.stdout + result.stderr


class ZooKeeperServer(ServerProcess):
    """A ZooKeeper server (standalone, or one member of an ensemble).

    Runs with extended types (TTL nodes) enabled and a 500 ms container/TTL check
    interval, the admin server disabled and the four-letter words ruok, srvr and mntr.

    ``tls=True`` (standalone only) serves TLS only: the client port is a
    ``secureClientPort`` (Netty connection factory) with throwaway ``certificates`` in
    PEM form, and the server requires a client certificate (ZooKeeper's default,
    ``ssl.clientAuth=need``).

    ``auth=True`` (standalone only) requires digest authentication: sessions that have
    not authenticated with the digest scheme are closed on their first request
    (``enforce.auth.enabled``, ZooKeeper 3.7+), and the ``chroot`` znode is created with
    a digest ACL that gives ``username``/``password`` all rights and nobody else any, so
    a wrong password fails there with NoAuth. The super user (``superDigest``, random
    password) can ``protect`` more paths. ACLs are per znode: what a client creates under
    the chroot gets the ACL the client gives (kazoo's and the shell's default is open to
    anyone), so data hidden from other users needs a creator-only (``auth``) ACL.
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
        tls: bool = False,
        auth: bool = False,
        username: str = "libkv",
        password: str | None = None,
        chroot: str = "/libkv",
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        if quorum and (tls or auth):
            raise ServerError("the harness runs TLS and authentication on standalone servers only")
        super().__init__(directory, start_timeout=start_timeout, keep_directory=keep_directory)
        self.client_port = client_port or free_port()
        self.server_id = server_id
        self.quorum = quorum or {}
        self.configuration_directory = self.directory / "conf"
        self.data_directory = self.directory / "data"
        self.certificates = make_test_certificates(self.directory / "tls") if tls else None
        self.auth = auth
        self.username = username
        self.password = password or secrets.token_hex(12)
        self.chroot = chroot
        self.super_password = secrets.token_hex(12)
        self._protected = False

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
        """``zookeeper://host:port``, without credentials or chroot."""
        return f"zookeeper://{self.endpoint}"

    @property
    def credentials_url(self) -> str:
        """``zookeeper://username:password@host:port/chroot`` for an ``auth`` server."""
        return f"zookeeper://{self.username}:{self.password}@{self.endpoint}{self.chroot}"

    def prepare(self) -> None:
        self.configuration_directory.mkdir(parents=True, exist_ok=True)
        self.data_directory.mkdir(parents=True, exist_ok=True)
        lines = [
            f"tickTime={self.tick_milliseconds}",
            "initLimit=30",
            "syncLimit=10",
            f"dataDir={self.data_directory}",
            "maxClientCnxns=0",
            "admin.enableServer=false",
            "4lw.commands.whitelist=ruok,srvr,mntr",
            "autopurge.purgeInterval=0",
        ]
        if self.certificates is None:
            lines += [f"clientPort={self.client_port}", f"clientPortAddress={HOST}"]
        else:
            lines += [
                f"secureClientPort={self.client_port}",
                f"secureClientPortAddress={HOST}",
                "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
                # ZooKeeper 3.6+ reads PEM key and trust stores: no keytool conversion.
                f"ssl.keyStore.location={self.certificates.server_bundle}",
                "ssl.keyStore.type=PEM",
                f"ssl.trustStore.location={self.certificates.ca}",
                "ssl.trustStore.type=PEM",
                "ssl.clientAuth=need",
            ]
        if self.auth:
            lines += ["enforce.auth.enabled=true", "enforce.auth.schemes=digest"]
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
        flags = []
        if self.auth:
            super_id = digest_id(SUPER_USER, self.super_password)
            flags.append(f"-Dzookeeper.DigestAuthenticationProvider.superDigest={super_id}")
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
            *flags,
            "-cp", ":".join([str(self.configuration_directory), *zookeeper_classpath()]),
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            str(self.configuration_directory / "zoo.cfg"),
        ]  # fmt: skip

    def start(self, wait: bool = True) -> Self:
        super().start(wait)
        if wait and self.auth and not self._protected:
            self.protect(self.chroot, self.username, self.password)
            self._protected = True  # the ACL lives in the data directory, across restarts
        return self

    def shell(self, *commands: str, digest: tuple[str, str] | None = None) -> str:
        """Run ``zookeeper_shell`` commands against this server (over TLS if it speaks
        it), authenticated as ``digest`` (``(user, password)``) if given."""
        return zookeeper_shell(
            [self.endpoint], *commands, certificates=self.certificates, digest=digest
        )

    def protect(self, path: str, username: str, password: str) -> None:
        """Create ``path`` (if missing) as the super user and give it a digest ACL with
        every right for ``username``/``password`` and none for anyone else (``auth`` only)."""
        if not self.auth:
            raise ServerError("protect() needs a server started with auth=True")
        acl = f"digest:{digest_id(username, password)}:cdrwa"
        output = self.shell(
            f"create {path}",
            f"setAcl {path} {acl}",
            f"getAcl {path}",
            digest=(SUPER_USER, self.super_password),
        )
        if f"'digest,'{digest_id(username, password)}" not in output:
            raise ServerError(f"could not set a digest ACL on {path}:\n{output}")

    def mode(self) -> str | None:
        """The ``Mode:`` reported by ``srvr`` (standalone, leader, follower), if serving."""
        try:
            reply = zookeeper_command(self.client_port, "srvr", context=self.ssl_context())
        except OSError:
            return None
        match = re.search(r"^Mode: (\S+)", reply, re.M)
        return match.group(1) if match else None

    def is_leader(self) -> bool:
        return self.mode() == "leader"

    def is_healthy(self) -> bool:
        try:
            if zookeeper_command(self.client_port, "ruok", context=self.ssl_context()) != "imok":
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
