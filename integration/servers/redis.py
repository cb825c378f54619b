"""Redis: a server (plain, TLS, with an ACL user, or replica), a Sentinel, and a Sentinel group.

The servers are probed with a minimal RESP2 client below rather than redis-py, which
stays a dependency of the libkv-redis plugin only: the harness needs the standard library alone.
"""

from __future__ import annotations

import secrets
import socket
import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from .certificates import make_test_certificates
from .cluster import ServerCluster
from .process import (
    DEFAULT_START_TIMEOUT,
    HOST,
    PROBE_TIMEOUT,
    ServerError,
    ServerProcess,
    find_binary,
    free_port,
)


class RedisReplyError(ServerError):
    """Redis answered a command with an error reply."""


@contextmanager
def _redis_connection(
    port: int,
    timeout: float,
    context: ssl.SSLContext | None,
    auth: tuple[str, str] | None = None,
) -> Iterator[socket.socket]:
    with socket.create_connection((HOST, port), timeout=timeout) as connection:
        if context is None:
            _authenticate(connection, auth)
            yield connection
        else:
            with context.wrap_socket(connection, server_hostname=HOST) as secure:
                _authenticate(secure, auth)
                yield secure


def _authenticate(connection: socket.socket, auth: tuple[str, str] | None) -> None:
    """``AUTH user password`` on ``connection`` if ``auth``; a refusal raises
    ``RedisReplyError`` (whose text is Redis' error, never the password)."""
    if auth is not None:
        connection.sendall(_redis_request(["AUTH", *auth]))
        with connection.makefile("rb") as stream:
            _read_redis_reply(stream)


def _redis_request(arguments: Sequence[str]) -> bytes:
    encoded = [argument.encode() for argument in arguments]
    return b"*%d\r\n" % len(encoded) + b"".join(
        b"$%d\r\n%s\r\n" % (len(argument), argument) for argument in encoded
    )


def redis_command(
    port: int,
    *arguments: str,
    timeout: float = PROBE_TIMEOUT,
    context: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
) -> bytes:
    """Send one Redis command and return the first reply line (without CRLF).

    ``context`` speaks TLS (see ``RedisServer.ssl_context``); ``auth`` is
    ``(user, password)`` sent with ``AUTH`` first (a refusal raises ``RedisReplyError``).
    """
    with _redis_connection(port, timeout, context, auth) as connection:
        connection.sendall(_redis_request(arguments))
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply.split(b"\r\n", 1)[0]


RedisReply = str | int | bytes | list["RedisReply"] | None


def redis_call(
    port: int,
    *arguments: str,
    timeout: float = PROBE_TIMEOUT,
    context: ssl.SSLContext | None = None,
    auth: tuple[str, str] | None = None,
) -> RedisReply:
    """Send one Redis command and return its whole decoded (RESP2) reply.

    Status replies are ``str``, bulk strings ``bytes``; an error reply raises
    ``RedisReplyError``. ``context`` and ``auth`` are as for ``redis_command``.
    """
    with _redis_connection(port, timeout, context, auth) as connection:
        connection.sendall(_redis_request(arguments))
        with connection.makefile("rb") as stream:
            return _read_redis_reply(stream)


def _read_redis_reply(stream: BinaryIO) -> RedisReply:
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("Redis closed the connection before replying")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise RedisReplyError(body.decode("utf-8", "replace"))
    if kind == b":":
        return int(body)
    if kind == b"$":
        length = int(body)
        return None if length < 0 else stream.read(length + 2)[:-2]
    if kind == b"*":
        length = int(body)
        return None if length < 0 else [_read_redis_reply(stream) for _ in range(length)]
    raise ServerError(f"unexpected Redis reply {line!r}")


# --------------------------------------------------------------------------- Redis


def redis_server_binary() -> str:
    """The ``redis-server`` binary (which also runs Sentinels)."""
    return find_binary("redis-server", ["/usr/bin/redis-server"])


class RedisProcess(ServerProcess):
    """A ``redis-server`` process (a data server or a Sentinel) on one port.

    ``credentials`` (``(user, password)``) are what its probes authenticate with.
    """

    credentials: tuple[str, str] | None = None

    def __init__(
        self,
        directory: Path | None,
        *,
        port: int | None,
        start_timeout: float,
        keep_directory: bool | None,
    ) -> None:
        super().__init__(directory, start_timeout=start_timeout, keep_directory=keep_directory)
        self._port = port or free_port()

    @classmethod
    def check_installed(cls) -> None:
        redis_server_binary()

    @property
    def port(self) -> int:
        return self._port

    def call(self, *arguments: str) -> RedisReply:
        """Send one command (over TLS if the server speaks it, authenticated if it requires
        it) and return its reply."""
        return redis_call(self.port, *arguments, context=self.ssl_context(), auth=self.credentials)


class RedisServer(RedisProcess):
    """redis-server without persistence (``restart()`` starts empty).

    ``tls=True`` serves TLS only (``rediss://``) with throwaway certificates made in the
    server's directory (``certificates``), requiring a client certificate unless
    ``tls_auth_clients=False``; ``tls_options`` are the libkv URL options a client needs.
    ``acl=True`` disables the ``default`` user (no ``requirepass``: a connection must
    ``AUTH`` as a named user) and creates the ACL user ``username`` with ``password``
    (random unless given), the key pattern ``key_pattern`` (libkv's default hash tag
    ``{libkv}`` only), no Pub/Sub channel and the commands ``commands``;
    ``credentials_url`` is the libkv URL with that user.
    ``replica_of`` starts it as a replica of another (plain) RedisServer; it is healthy
    once its link to the master is up.
    """

    kind = "redis"

    def __init__(
        self,
        directory: Path | None = None,
        *,
        port: int | None = None,
        tls: bool = False,
        tls_auth_clients: bool = True,
        acl: bool = False,
        username: str = "libkv",
        password: str | None = None,
        key_pattern: str = "{libkv}:*",
        commands: str = "+@all",
        replica_of: RedisServer | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        if replica_of is not None and (
            tls or acl or replica_of.certificates is not None or replica_of.credentials
        ):
            raise ServerError("the harness runs replicas of plain (non-TLS, no ACL) masters only")
        if acl and (username == "default" or any(char.isspace() for char in username)):
            raise ServerError("the ACL user cannot be 'default' or contain white space")
        super().__init__(
            directory, port=port, start_timeout=start_timeout, keep_directory=keep_directory
        )
        self.tls_auth_clients = tls_auth_clients
        self.replica_of = replica_of
        self.certificates = make_test_certificates(self.directory / "tls") if tls else None
        self.acl = acl
        self.username = username
        self.password = password or secrets.token_hex(12)
        self.key_pattern = key_pattern
        self.commands = commands
        self.credentials = (username, self.password) if acl else None

    @property
    def url(self) -> str:
        """``redis://host:port`` (``rediss://`` with ``tls``): no credentials, no options."""
        scheme = "redis" if self.certificates is None else "rediss"
        return f"{scheme}://{self.endpoint}"

    @property
    def credentials_url(self) -> str:
        """``url`` with ``USER:PASSWORD@`` (URL-encoded) of the ACL user."""
        scheme, _, address = self.url.partition("://")
        user, password = quote(self.username, safe=""), quote(self.password, safe="")
        return f"{scheme}://{user}:{password}@{address}"

    @property
    def tls_options(self) -> dict[str, str]:
        """``ssl_ca_certs``, ``ssl_certfile`` and ``ssl_keyfile`` for a TLS server."""
        if self.certificates is None:
            return {}
        return {
            "ssl_ca_certs": str(self.certificates.ca),
            "ssl_certfile": str(self.certificates.client),
            "ssl_keyfile": str(self.certificates.client_key),
        }

    def command(self) -> list[str]:
        command = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--logfile", "",
            "--repl-diskless-sync-delay", "0",  # replicas sync at once, not after 5 s
        ]  # fmt: skip
        if self.certificates is not None:
            command[1:3] = [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.certificates.server),
                "--tls-key-file", str(self.certificates.server_key),
                "--tls-ca-cert-file", str(self.certificates.ca),
                "--tls-auth-clients", "yes" if self.tls_auth_clients else "no",
            ]  # fmt: skip
        if self.acl:
            # Redis 7 quotes each command-line argument into the config line, so the
            # password may hold any character; ``>`` adds it, ``~`` the key pattern.
            command += [
                "--user", "default", "off",
                "--user", self.username, "on", ">" + self.password,
                "~" + self.key_pattern, "resetchannels", self.commands,
            ]  # fmt: skip
        if self.replica_of is not None:
            command += ["--replicaof", HOST, str(self.replica_of.port)]
        return command

    def info(self, section: str) -> dict[str, str]:
        """One section of ``INFO`` as a dict."""
        reply = self.call("INFO", section)
        text = reply.decode() if isinstance(reply, bytes) else ""
        return dict(
            line.split(":", 1) for line in text.splitlines() if ":" in line and line[0] != "#"
        )

    def is_healthy(self) -> bool:
        try:
            pong = redis_command(
                self.port, "PING", context=self.ssl_context(), auth=self.credentials
            )
            if pong != b"+PONG":
                return False
            if self.replica_of is None:
                return True
            replication = self.info("replication")
        except (OSError, ServerError):
            return False
        linked = replication.get("master_link_status") == "up"
        return linked or replication.get("role") != "slave"


class RedisSentinel(RedisProcess):
    """A Redis Sentinel (``redis-server <conf> --sentinel``) monitoring ``master`` under
    ``name`` with quorum 1, a ``down_after`` seconds down detection and a
    ``failover_timeout`` seconds failover timeout. Healthy once it names a master."""

    kind = "redis-sentinel"

    def __init__(
        self,
        master: RedisServer,
        directory: Path | None = None,
        *,
        name: str = "mymaster",
        port: int | None = None,
        down_after: float = 1.0,
        failover_timeout: float = 5.0,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        if master.certificates is not None or master.credentials is not None:
            raise ServerError("the harness runs Sentinels of plain (non-TLS, no ACL) masters only")
        super().__init__(
            directory, port=port, start_timeout=start_timeout, keep_directory=keep_directory
        )
        self.master = master
        self.name = name
        self.down_after = down_after
        self.failover_timeout = failover_timeout
        self.configuration_path = self.directory / "sentinel.conf"

    @property
    def url(self) -> str:
        """The libkv URL of the master this Sentinel names."""
        return f"redis://{self.endpoint}?sentinel={self.name}"

    def prepare(self) -> None:
        milliseconds = {
            "down-after-milliseconds": int(self.down_after * 1000),
            "failover-timeout": int(self.failover_timeout * 1000),
        }
        lines = [
            f"port {self.port}",
            f"bind {HOST}",
            f"dir {self.directory}",
            "daemonize no",
            'logfile ""',
            f"sentinel monitor {self.name} {HOST} {self.master.port} 1",
            *(f"sentinel {option} {self.name} {value}" for option, value in milliseconds.items()),
        ]
        # Sentinel rewrites this file with what it learns, so it lives in its directory.
        self.configuration_path.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [redis_server_binary(), str(self.configuration_path), "--sentinel"]

    def master_address(self) -> tuple[str, int] | None:
        """``(host, port)`` of the master, as ``SENTINEL get-master-addr-by-name`` says."""
        reply = self.call("SENTINEL", "get-master-addr-by-name", self.name)
        if not isinstance(reply, list) or len(reply) != 2:
            return None
        host, port = reply
        if not isinstance(host, bytes) or not isinstance(port, bytes):
            return None
        return host.decode(), int(port)

    def replicas(self) -> list[dict[str, str]]:
        """What the Sentinel knows of the master's replicas (``SENTINEL replicas``)."""
        reply = self.call("SENTINEL", "replicas", self.name)
        found = []
        for fields in reply if isinstance(reply, list) else []:
            assert isinstance(fields, list)
            texts = [field.decode() if isinstance(field, bytes) else str(field) for field in fields]
            found.append(dict(zip(texts[::2], texts[1::2], strict=True)))
        return found

    def failover(self) -> None:
        """Ask for a failover to a replica now (``SENTINEL FAILOVER``)."""
        self.call("SENTINEL", "FAILOVER", self.name)

    def is_healthy(self) -> bool:
        try:
            return self.master_address() is not None
        except (OSError, ServerError):
            return False


class RedisSentinelGroup(ServerCluster[ServerProcess]):
    """A master, ``replicas`` replicas of it and a Sentinel monitoring them (quorum 1).

    ``url`` reaches the master through the Sentinel. Healthy when every member is and
    the Sentinel knows every replica with its link to the master up (so
    ``sentinel.failover()`` can promote one). ``master()`` is the current master.
    """

    kind = "redis-sentinel-group"
    member_type = RedisServer
    scheme = "redis"
    # A Sentinel must find the master up and its replicas attached; stopped first (the
    # last started), it starts no failover at teardown.
    start_one_by_one = True
    primary: RedisServer
    replicas: list[RedisServer]
    sentinel: RedisSentinel

    def __init__(
        self,
        directory: Path | None = None,
        *,
        replicas: int = 1,
        name: str = "mymaster",
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        self.name = name
        super().__init__(
            replicas, directory, start_timeout=start_timeout, keep_directory=keep_directory
        )

    def make_members(self, size: int) -> list[ServerProcess]:
        self.primary = RedisServer(self.directory / "master", start_timeout=self.start_timeout)
        self.replicas = [
            self.make_member(number, self.directory / f"replica{number}")
            for number in range(1, size + 1)
        ]
        self.sentinel = RedisSentinel(
            self.primary,
            self.directory / "sentinel",
            name=self.name,
            start_timeout=self.start_timeout,
        )
        return [self.primary, *self.replicas, self.sentinel]

    def make_member(self, number: int, directory: Path) -> RedisServer:
        """Replica ``number`` of the master."""
        return RedisServer(directory, replica_of=self.primary, start_timeout=self.start_timeout)

    @property
    def url(self) -> str:
        return self.sentinel.url

    @property
    def servers(self) -> list[RedisServer]:
        """The data servers (the first master, then the replicas)."""
        return [self.primary, *self.replicas]

    def master(self) -> RedisServer | None:
        """The data server the Sentinel names as master now."""
        try:
            address = self.sentinel.master_address()
        except (OSError, ServerError):
            return None
        return next((server for server in self.servers if address == (HOST, server.port)), None)

    def is_healthy(self) -> bool:
        if not all(member.running and member.is_healthy() for member in self.members):
            return False
        try:
            known = self.sentinel.replicas()
        except (OSError, ServerError):
            return False
        ready = [
            replica
            for replica in known
            if replica.get("flags") == "slave" and replica.get("master-link-status") == "ok"
        ]
        return len(ready) >= len(self.replicas)
