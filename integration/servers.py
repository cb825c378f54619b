"""Real Redis, etcd, ZooKeeper and Consul servers for the libkv integration tests.

Every server runs as a child process in its own temporary directory and listens on free
127.0.0.1 ports. Servers and clusters share one interface: ``start()``, ``stop()``,
``wait_healthy()``, ``close()``, ``url`` and use as a context manager. Single processes
(also each cluster member) add ``kill()``, ``pause()``, ``resume()`` and ``restart()``.

Command line (from the repository root)::

    python -m integration.servers start redis|etcd|etcd-cluster|zookeeper|...
    python -m integration.servers check

Binaries come from ``integration/install.sh``.
"""

from __future__ import annotations

import abc
import argparse
import atexit
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import BinaryIO, ClassVar, Self, TypeVar

from libkv.testing.polling import wait_until

__all__ = [
    "BinaryNotFoundError",
    "Certificates",
    "ConsulServer",
    "EtcdCluster",
    "EtcdServer",
    "RedisReplyError",
    "RedisSentinel",
    "RedisSentinelGroup",
    "RedisServer",
    "Server",
    "ServerCluster",
    "ServerError",
    "ServerProcess",
    "ZooKeeperEnsemble",
    "ZooKeeperServer",
    "cache_directory",
    "consul_binary",
    "find_binary",
    "free_port",
    "http_request",
    "make_test_certificates",
    "redis_call",
    "redis_command",
    "zookeeper_command",
]

LOGGER = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_START_TIMEOUT = 120.0
DEFAULT_STOP_TIMEOUT = 15.0
HEALTH_INTERVAL = 0.2
PROBE_TIMEOUT = 2.0
LOG_TAIL_LINES = 40
INSTALL_HINT = "run integration/install.sh (as root) to install the test servers"

INTEGRATION_DIRECTORY = Path(__file__).resolve().parent
ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
SLF4J_SIMPLE_JAR = Path("/usr/share/java/slf4j-simple.jar")

T = TypeVar("T")


class ServerError(RuntimeError):
    """A test server could not be found, started or stopped."""


class BinaryNotFoundError(ServerError):
    """A server binary is not installed."""


# --------------------------------------------------------------------------- helpers

_handed_out_ports: set[int] = set()


def free_port(host: str = HOST) -> int:
    """Return a port that is free for TCP and UDP on ``host`` and not handed out before."""
    for _attempt in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
            if port in _handed_out_ports:
                continue
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind((host, port))
            except OSError:
                continue
        _handed_out_ports.add(port)
        return port
    raise ServerError(f"no free port found on {host}")


def cache_directory() -> Path:
    """Return the cache directory used by ``install.sh`` (for the Consul build)."""
    configured = os.environ.get("LIBKV_CACHE_DIR")
    if configured:
        return Path(configured)
    xdg_cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg_cache) / "libkv"


def consul_version() -> str:
    """Return the Consul version pinned in ``integration/consul/go.mod``."""
    go_mod = INTEGRATION_DIRECTORY / "consul" / "go.mod"
    match = re.search(r"^\s*github\.com/hashicorp/consul v(\S+)", go_mod.read_text(), re.M)
    if match is None:
        raise ServerError(f"cannot read the Consul version from {go_mod}")
    return match.group(1)


def find_binary(name: str, locations: Iterable[Path | str] = ()) -> str:
    """Return the path of executable ``name`` from ``PATH`` or from ``locations``."""
    found = shutil.which(name)
    if found:
        return found
    for location in locations:
        if os.access(location, os.X_OK) and Path(location).is_file():
            return str(location)
    searched = ", ".join(str(location) for location in locations) or "nowhere else"
    raise BinaryNotFoundError(f"{name} not found on PATH or in {searched}; {INSTALL_HINT}")


def consul_binary() -> str:
    """Return the path of the Consul binary built by ``install.sh``."""
    built = cache_directory() / f"consul-{consul_version()}" / "consul"
    return find_binary("consul", [built])


def http_request(
    method: str,
    url: str,
    data: bytes | None = None,
    timeout: float = PROBE_TIMEOUT,
) -> tuple[int, bytes]:
    """Send an HTTP request and return ``(status, body)``; HTTP errors are not raised."""
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def zookeeper_command(port: int, word: str, timeout: float = PROBE_TIMEOUT) -> str:
    """Send a ZooKeeper four-letter word (``ruok``, ``srvr``, ``mntr``) and return the reply."""
    with socket.create_connection((HOST, port), timeout=timeout) as connection:
        connection.sendall(word.encode("ascii"))
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


class RedisReplyError(ServerError):
    """Redis answered a command with an error reply."""


@contextmanager
def _redis_connection(
    port: int, timeout: float, context: ssl.SSLContext | None
) -> Iterator[socket.socket]:
    with socket.create_connection((HOST, port), timeout=timeout) as connection:
        if context is None:
            yield connection
        else:
            with context.wrap_socket(connection, server_hostname=HOST) as secure:
                yield secure


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
) -> bytes:
    """Send one Redis command and return the first reply line (without CRLF).

    ``context`` speaks TLS (see ``RedisServer.ssl_context``).
    """
    with _redis_connection(port, timeout, context) as connection:
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
) -> RedisReply:
    """Send one Redis command and return its whole decoded (RESP2) reply.

    Status replies are ``str``, bulk strings ``bytes``; an error reply raises
    ``RedisReplyError``.
    """
    with _redis_connection(port, timeout, context) as connection:
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


@dataclass(frozen=True)
class Certificates:
    """Throwaway PEM files made by ``make_test_certificates``: a CA, a server certificate
    for 127.0.0.1 and a client certificate (for client authentication), all signed by it."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server-key.pem"

    @property
    def client(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client-key.pem"

    def client_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts the CA and presents the client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.client), str(self.client_key))
        return context


def make_test_certificates(directory: Path) -> Certificates:
    """Make a CA, a server certificate (SAN IP:127.0.0.1) and a client certificate with
    the ``openssl`` command-line tool in ``directory`` (valid for two days)."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*arguments: str) -> None:
        subprocess.run(["openssl", *arguments], cwd=directory, check=True, capture_output=True)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca-key.pem", "-out", "ca.pem", "-subj", "/CN=libkv-test-ca",
    )  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}-key.pem",
            "-out", f"{name}.csr", "-subj", f"/CN={name}",
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
        )  # fmt: skip
    return Certificates(directory)


def _read_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 64 * 1024))
            data = log.read()
    except OSError as error:
        return f"(cannot read {path}: {error})"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


# --------------------------------------------------------------------------- base classes

_running_processes: dict[int, ServerProcess] = {}


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_running_processes.values()):
        server.kill()


class Server(abc.ABC):
    """What every test server and cluster offers."""

    kind: ClassVar[str] = "server"

    def __init__(self, directory: Path | None, keep_directory: bool | None) -> None:
        if keep_directory is None:
            keep_directory = os.environ.get("LIBKV_KEEP_SERVER_DIRS", "") not in ("", "0")
        self.keep_directory = keep_directory
        self.owns_directory = directory is None
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix=f"libkv-{self.kind}-"))
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The libkv URL of this server."""

    @abc.abstractmethod
    def start(self, wait: bool = True) -> Self:
        """Start the server; with ``wait`` block until it is healthy."""

    @abc.abstractmethod
    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop the server gracefully (forcefully after ``timeout`` seconds)."""

    @abc.abstractmethod
    def is_healthy(self) -> bool:
        """Probe the server once."""

    @abc.abstractmethod
    def wait_healthy(self, timeout: float | None = None) -> None:
        """Block until the server is healthy; raise ``ServerError`` otherwise."""

    @abc.abstractmethod
    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server log(s)."""

    @abc.abstractmethod
    def check_alive(self) -> None:
        """Raise ``ServerError`` if a started process has exited on its own."""

    def close(self) -> None:
        """Stop the server and remove its temporary directory (unless kept)."""
        self.stop()
        if self.owns_directory and not self.keep_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
        elif self.owns_directory:
            LOGGER.info("keeping %s", self.directory)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exception_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class ServerProcess(Server):
    """One server process with its own directory, log file and fixed ports."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        super().__init__(directory, keep_directory)
        self.start_timeout = start_timeout
        self.log_path = self.directory / f"{self.kind}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._prepared = False
        self._paused = False

    # Subclass hooks.
    @abc.abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    def environment(self) -> dict[str, str]:
        """Extra environment variables for the server process."""
        return {}

    def prepare(self) -> None:
        """Write configuration files; called once before the first start."""

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client port."""
        return f"{HOST}:{self.port}"

    @property
    @abc.abstractmethod
    def port(self) -> int:
        """The client port."""

    @property
    def pid(self) -> int | None:
        """Process id while the process exists."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the process exists (paused processes count as running)."""
        return self._process is not None and self._process.poll() is None

    @property
    def paused(self) -> bool:
        """Whether the process is stopped with SIGSTOP."""
        return self.running and self._paused

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint} pid={self.pid}>"

    def start(self, wait: bool = True) -> Self:
        if self.running:
            raise ServerError(f"{self!r} is already running")
        if not self._prepared:
            self.prepare()
            self._prepared = True
        command = self.command()
        LOGGER.info("starting %s: %s", self.kind, shlex.join(command))
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- {stamp} libkv: starting {shlex.join(command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.environment()},
                start_new_session=True,
            )
        self._paused = False
        _running_processes[id(self)] = self
        if wait:
            try:
                self.wait_healthy()
            except BaseException:
                self.kill()
                raise
        return self

    def check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise ServerError(
                f"{self.kind} at {self.endpoint} exited with code {self._process.returncode}; "
                f"last lines of {self.log_path}:\n{self.log_tail()}"
            )

    def wait_healthy(self, timeout: float | None = None) -> None:
        if self._process is None:
            raise ServerError(f"{self!r} is not started")
        timeout = self.start_timeout if timeout is None else timeout

        def healthy() -> bool:
            self.check_alive()
            return self.is_healthy()

        started = time.monotonic()
        try:
            wait_until(healthy, timeout, HEALTH_INTERVAL, error=TimeoutError)
        except TimeoutError as error:
            raise ServerError(
                f"{self.kind} at {self.endpoint} not healthy after {timeout:.0f}s; "
                f"last lines of {self.log_path}:\n{self.log_tail()}"
            ) from error
        LOGGER.info("%s healthy after %.1fs", self.url, time.monotonic() - started)

    def _signal(self, number: signal.Signals) -> None:
        if self._process is None or self._process.poll() is not None:
            raise ServerError(f"{self!r} is not running")
        self._process.send_signal(number)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            LOGGER.info("stopping %s (pid %d)", self.kind, process.pid)
            process.terminate()
            if self._paused:
                process.send_signal(signal.SIGCONT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                LOGGER.warning("%s did not stop in %.0fs; killing it", self.kind, timeout)
                process.kill()
                process.wait(timeout)
        self._forget()

    def kill(self) -> None:
        """Kill the process with SIGKILL (a crash) and reap it."""
        process = self._process
        if process is not None and process.poll() is None:
            LOGGER.info("killing %s (pid %d)", self.kind, process.pid)
            process.kill()
            process.wait(DEFAULT_STOP_TIMEOUT)
        self._forget()

    def _forget(self) -> None:
        self._process = None
        self._paused = False
        _running_processes.pop(id(self), None)

    def pause(self) -> None:
        """Freeze the process with SIGSTOP."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Continue a paused process with SIGCONT."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def restart(self, wait: bool = True) -> Self:
        """Stop and start again with the same ports and data directory."""
        self.stop()
        return self.start(wait)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _read_tail(self.log_path, lines)


class ServerCluster(Server):
    """A group of member processes that together form one service."""

    def __init__(
        self,
        members: Sequence[ServerProcess],
        directory: Path,
        owns_directory: bool,
        *,
        start_timeout: float,
        keep_directory: bool | None,
    ) -> None:
        super().__init__(directory, keep_directory)
        self.owns_directory = owns_directory
        self.members = list(members)
        self.start_timeout = start_timeout

    @property
    def quorum(self) -> int:
        """Members needed for a majority."""
        return len(self.members) // 2 + 1

    @property
    def endpoints(self) -> list[str]:
        """``host:port`` client endpoints of all members."""
        return [member.endpoint for member in self.members]

    def running_members(self) -> list[ServerProcess]:
        """Members whose process exists and is not paused."""
        return [member for member in self.members if member.running and not member.paused]

    def start(self, wait: bool = True) -> Self:
        for member in self.members:
            if not member.running:
                member.start(wait=False)
        if wait:
            try:
                self.wait_healthy()
            except BaseException:
                self.stop()
                raise
        return self

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        for member in self.members:
            member.stop(timeout)

    def members_healthy(self) -> bool:
        """Whether a quorum runs and every running member is healthy."""
        running = self.running_members()
        return len(running) >= self.quorum and all(member.is_healthy() for member in running)

    def is_healthy(self) -> bool:
        return self.members_healthy()

    def check_alive(self) -> None:
        for member in self.members:
            member.check_alive()

    def wait_healthy(self, timeout: float | None = None) -> None:
        timeout = self.start_timeout if timeout is None else timeout

        def healthy() -> bool:
            self.check_alive()
            return self.is_healthy()

        started = time.monotonic()
        try:
            wait_until(healthy, timeout, HEALTH_INTERVAL, error=TimeoutError)
        except TimeoutError as error:
            raise ServerError(
                f"{self.kind} {self.url} not healthy after {timeout:.0f}s\n{self.log_tail()}"
            ) from error
        LOGGER.info("%s healthy after %.1fs", self.url, time.monotonic() - started)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(
            f"--- last lines of {member.log_path}:\n{member.log_tail(lines)}"
            for member in self.members
        )


# --------------------------------------------------------------------------- Redis


class RedisServer(ServerProcess):
    """redis-server without persistence (``restart()`` starts empty).

    ``tls=True`` serves TLS only (``rediss://``) with throwaway certificates made in the
    server's directory (``certificates``), requiring a client certificate unless
    ``tls_auth_clients=False``; ``tls_options`` are the libkv URL options a client needs.
    ``replica_of`` starts it as a replica of another (plain) RedisServer; it is healthy
    once its link to the master is up.
    """

    kind = "redis"
    certificates: Certificates | None

    def __init__(
        self,
        directory: Path | None = None,
        *,
        port: int | None = None,
        tls: bool = False,
        tls_auth_clients: bool = True,
        replica_of: RedisServer | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        self.binary = find_binary("redis-server", ["/usr/bin/redis-server"])
        if replica_of is not None and (tls or replica_of.certificates is not None):
            raise ServerError("the harness runs replicas of plain (non-TLS) masters only")
        super().__init__(directory, start_timeout=start_timeout, keep_directory=keep_directory)
        self._port = port or free_port()
        self.tls_auth_clients = tls_auth_clients
        self.replica_of = replica_of
        self.certificates = make_test_certificates(self.directory / "tls") if tls else None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        scheme = "redis" if self.certificates is None else "rediss"
        return f"{scheme}://{self.endpoint}"

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

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context for ``redis_command``/``redis_call`` (None without TLS)."""
        return None if self.certificates is None else self.certificates.client_context()

    def command(self) -> list[str]:
        command = [
            self.binary,
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
        if self.replica_of is not None:
            command += ["--replicaof", HOST, str(self.replica_of.port)]
        return command

    def call(self, *arguments: str) -> RedisReply:
        """Send one command (over TLS if the server speaks it) and return its reply."""
        return redis_call(self.port, *arguments, context=self.ssl_context())

    def info(self, section: str) -> dict[str, str]:
        """One section of ``INFO`` as a dict."""
        reply = self.call("INFO", section)
        text = reply.decode() if isinstance(reply, bytes) else ""
        return dict(
            line.split(":", 1) for line in text.splitlines() if ":" in line and line[0] != "#"
        )

    def is_healthy(self) -> bool:
        try:
            if redis_command(self.port, "PING", context=self.ssl_context()) != b"+PONG":
                return False
            if self.replica_of is None:
                return True
            replication = self.info("replication")
        except (OSError, ServerError):
            return False
        linked = replication.get("master_link_status") == "up"
        return linked or replication.get("role") != "slave"


class RedisSentinel(ServerProcess):
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
        self.binary = find_binary("redis-server", ["/usr/bin/redis-server"])
        if master.certificates is not None:
            raise ServerError("the harness runs Sentinels of plain (non-TLS) masters only")
        super().__init__(directory, start_timeout=start_timeout, keep_directory=keep_directory)
        self.master = master
        self.name = name
        self._port = port or free_port()
        self.down_after = down_after
        self.failover_timeout = failover_timeout
        self.configuration_path = self.directory / "sentinel.conf"

    @property
    def port(self) -> int:
        return self._port

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
        return [self.binary, str(self.configuration_path), "--sentinel"]

    def call(self, *arguments: str) -> RedisReply:
        """Send one command to the Sentinel and return its reply."""
        return redis_call(self.port, *arguments)

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


class RedisSentinelGroup(ServerCluster):
    """A master, ``replicas`` replicas of it and a Sentinel monitoring them (quorum 1).

    ``url`` reaches the master through the Sentinel. Healthy when every member is and
    the Sentinel knows every replica with its link to the master up (so
    ``sentinel.failover()`` can promote one). ``master()`` is the current master.
    """

    kind = "redis-sentinel-group"

    def __init__(
        self,
        directory: Path | None = None,
        *,
        replicas: int = 1,
        name: str = "mymaster",
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        find_binary("redis-server", ["/usr/bin/redis-server"])  # before creating directories
        owns_directory = directory is None
        root = directory or Path(tempfile.mkdtemp(prefix=f"libkv-{self.kind}-"))
        self.primary = RedisServer(root / "master", keep_directory=True)
        self.replicas = [
            RedisServer(root / f"replica{number}", replica_of=self.primary, keep_directory=True)
            for number in range(1, replicas + 1)
        ]
        self.sentinel = RedisSentinel(
            self.primary, root / "sentinel", name=name, keep_directory=True
        )
        super().__init__(
            [self.primary, *self.replicas, self.sentinel],
            root,
            owns_directory,
            start_timeout=start_timeout,
            keep_directory=keep_directory,
        )

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

    def start(self, wait: bool = True) -> Self:
        # In order: a Sentinel must find the master up and its replicas attached.
        try:
            for member in self.members:
                if not member.running:
                    member.start(wait=wait)
            if wait:
                self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        for member in reversed(self.members):  # the Sentinel first: no failover at teardown
            member.stop(timeout)

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


# --------------------------------------------------------------------------- etcd


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
        self.binary = find_binary("etcd", ["/usr/bin/etcd"])
        super().__init__(directory, start_timeout=start_timeout, keep_directory=keep_directory)
        self.name = name
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.initial_cluster = initial_cluster or f"{name}=http://{HOST}:{self.peer_port}"
        self.cluster_token = cluster_token or f"libkv-{self.client_port}"

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
            self.binary,
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


class EtcdCluster(ServerCluster):
    """A statically bootstrapped etcd cluster (3 members by default)."""

    kind = "etcd-cluster"
    members: list[EtcdServer]  # type: ignore[assignment]

    def __init__(
        self,
        size: int = 3,
        directory: Path | None = None,
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        find_binary("etcd", ["/usr/bin/etcd"])  # fail before creating directories
        owns_directory = directory is None
        root = directory or Path(tempfile.mkdtemp(prefix=f"libkv-{self.kind}-"))
        names = [f"member{index}" for index in range(1, size + 1)]
        peer_ports = [free_port() for _ in names]
        initial_cluster = ",".join(
            f"{name}=http://{HOST}:{port}" for name, port in zip(names, peer_ports, strict=True)
        )
        token = f"libkv-{peer_ports[0]}"
        members = [
            EtcdServer(
                root / name,
                name=name,
                peer_port=peer_port,
                initial_cluster=initial_cluster,
                cluster_token=token,
                start_timeout=start_timeout,
                keep_directory=True,
            )
            for name, peer_port in zip(names, peer_ports, strict=True)
        ]
        super().__init__(
            members,
            root,
            owns_directory,
            start_timeout=start_timeout,
            keep_directory=keep_directory,
        )

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(self.endpoints)

    def leader(self) -> EtcdServer | None:
        """The running member that is the Raft leader, asked via the v3 JSON gateway."""
        for member in self.members:
            if not member.running or member.paused:
                continue
            try:
                status, body = http_request(
                    "POST", f"http://{member.endpoint}/v3/maintenance/status", b"{}"
                )
                reply = json.loads(body) if status == 200 else {}
            except (OSError, ValueError):
                continue
            member_id = reply.get("header", {}).get("member_id")
            if member_id is not None and member_id == reply.get("leader"):
                return member
        return None

    def is_healthy(self) -> bool:
        return self.members_healthy() and self.leader() is not None


# --------------------------------------------------------------------------- ZooKeeper


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
        self.java = find_binary("java", ["/usr/bin/java"])
        if not ZOOKEEPER_JAR.is_file():
            raise BinaryNotFoundError(f"{ZOOKEEPER_JAR} not found; {INSTALL_HINT}")
        super().__init__(directory, start_timeout=start_timeout, keep_directory=keep_directory)
        self.client_port = client_port or free_port()
        self.server_id = server_id
        self.quorum = quorum or {}
        self.configuration_directory = self.directory / "conf"
        self.data_directory = self.directory / "data"

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
            self.java,
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

    def is_healthy(self) -> bool:
        try:
            if zookeeper_command(self.client_port, "ruok") != "imok":
                return False
        except OSError:
            return False
        return self.mode() in self.healthy_modes


class ZooKeeperEnsemble(ServerCluster):
    """A ZooKeeper ensemble with a quorum (3 members by default)."""

    kind = "zookeeper-ensemble"
    members: list[ZooKeeperServer]  # type: ignore[assignment]

    def __init__(
        self,
        size: int = 3,
        directory: Path | None = None,
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        find_binary("java", ["/usr/bin/java"])  # fail before creating directories
        owns_directory = directory is None
        root = directory or Path(tempfile.mkdtemp(prefix=f"libkv-{self.kind}-"))
        quorum = {number: (free_port(), free_port()) for number in range(1, size + 1)}
        members = [
            ZooKeeperServer(
                root / f"member{number}",
                server_id=number,
                quorum=quorum,
                start_timeout=start_timeout,
                keep_directory=True,
            )
            for number in quorum
        ]
        super().__init__(
            members,
            root,
            owns_directory,
            start_timeout=start_timeout,
            keep_directory=keep_directory,
        )

    @property
    def url(self) -> str:
        return "zookeeper://" + ",".join(self.endpoints)

    def leader(self) -> ZooKeeperServer | None:
        """The running member that reports ``Mode: leader``."""
        for member in self.members:
            if member.running and not member.paused and member.mode() == "leader":
                return member
        return None

    def is_healthy(self) -> bool:
        return self.members_healthy() and self.leader() is not None


# --------------------------------------------------------------------------- Consul


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
        self.binary = consul_binary()
        super().__init__(directory, start_timeout=start_timeout, keep_directory=keep_directory)
        self.session_ttl_min = session_ttl_min
        self.ports = {
            name: free_port() for name in ("http", "dns", "serf_lan", "serf_wan", "server")
        }
        self.node_name = f"libkv-{self.ports['http']}"
        self.configuration_path = self.directory / "consul.json"

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
            self.binary,
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


# --------------------------------------------------------------------------- command line

SERVER_KINDS: dict[str, Callable[[], Server]] = {
    "redis": RedisServer,
    "redis-tls": lambda: RedisServer(tls=True),
    "redis-sentinel": RedisSentinelGroup,
    "etcd": EtcdServer,
    "etcd-cluster": EtcdCluster,
    "zookeeper": ZooKeeperServer,
    "zookeeper-ensemble": ZooKeeperEnsemble,
    "consul": ConsulServer,
}


def _raise_keyboard_interrupt(number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _describe(server: Server) -> list[str]:
    lines = [f"url: {server.url}", f"directory: {server.directory}"]
    if isinstance(server, ServerProcess):
        lines.append(f"log: {server.log_path}")
    elif isinstance(server, ServerCluster):
        lines += [f"log: {member.log_path}" for member in server.members]
    return lines


def _run_start(kind: str) -> int:
    server = SERVER_KINDS[kind]()
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        server.start()
        print(server.url, flush=True)
        for line in _describe(server)[1:]:
            print(f"  {line}", flush=True)
        print("running; press Ctrl-C to stop", file=sys.stderr, flush=True)
        while True:
            server.check_alive()
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr, flush=True)
        return 0
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        server.close()


def _run_check(kinds: Sequence[str]) -> int:
    failures = 0
    for kind in kinds:
        started = time.monotonic()
        try:
            server = SERVER_KINDS[kind]()
            try:
                server.start()
                detail = server.url
            finally:
                server.close()
        except Exception as error:  # report every failure and go on
            failures += 1
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            print(f"FAIL {kind:<20} {time.monotonic() - started:6.1f}s  {first_line}", flush=True)
            LOGGER.debug("%s failed", kind, exc_info=True)
            if not isinstance(error, BinaryNotFoundError):
                print(str(error), file=sys.stderr, flush=True)
            continue
        print(f"OK   {kind:<20} {time.monotonic() - started:6.1f}s  {detail}", flush=True)
    return 1 if failures else 0


def main(arguments: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m integration.servers", description="Run libkv test servers."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start a server and wait for Ctrl-C")
    start.add_argument("kind", choices=sorted(SERVER_KINDS))
    check = commands.add_parser("check", help="start and stop each server, print OK/FAIL")
    check.add_argument("kinds", nargs="*", metavar="kind", help="default: all")
    options = parser.parse_args(arguments)
    unknown = sorted(set(getattr(options, "kinds", [])) - set(SERVER_KINDS))
    if unknown:
        parser.error(f"unknown kind(s) {', '.join(unknown)}; choose from {', '.join(SERVER_KINDS)}")
    logging.basicConfig(
        level=logging.INFO if options.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if options.command == "start":
        return _run_start(options.kind)
    return _run_check(options.kinds or list(SERVER_KINDS))


if __name__ == "__main__":
    sys.exit(main())
