"""The shared process machinery: the ``Server`` interface, one server process
(``ServerProcess``: start, wait until healthy, stop, kill, pause, resume, restart) and
the small helpers every server family uses (free ports, binaries, HTTP probes)."""

from __future__ import annotations

import abc
import asyncio
import atexit
import logging
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from libkv.testing.polling import wait_until

from .certificates import Certificates

LOGGER = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_START_TIMEOUT = 120.0
DEFAULT_STOP_TIMEOUT = 15.0
HEALTH_INTERVAL = 0.2
PROBE_TIMEOUT = 2.0
LOG_TAIL_LINES = 40
INSTALL_HINT = "run integration/install.sh (as root) to install the test servers"


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


def http_request(
    method: str,
    url: str,
    data: bytes | None = None,
    timeout: float = PROBE_TIMEOUT,
    *,
    headers: Mapping[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    """Send an HTTP request and return ``(status, body)``; HTTP errors are not raised.

    ``context`` is the TLS context of an ``https://`` URL.
    """
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


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

    def __init__(
        self, directory: Path | None, *, start_timeout: float, keep_directory: bool | None
    ) -> None:
        self.start_timeout = start_timeout
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
    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server log(s), each under a line naming its file."""

    @abc.abstractmethod
    def check_alive(self) -> None:
        """Raise ``ServerError`` if a started process has exited on its own."""

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Block until the server is healthy (``start_timeout`` by default); raise
        ``ServerError`` with the end of the log(s) otherwise, or at once if a process
        exits."""
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
    """One server process with its own directory, log file and fixed ports.

    A server that speaks TLS sets ``certificates`` (its throwaway CA, server and client
    certificates); ``ssl_context()`` is then the client context its probes use.
    """

    certificates: Certificates | None = None

    def __init__(
        self,
        directory: Path | None = None,
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        keep_directory: bool | None = None,
    ) -> None:
        self.check_installed()  # before creating directories
        super().__init__(directory, start_timeout=start_timeout, keep_directory=keep_directory)
        self.log_path = self.directory / f"{self.kind}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._prepared = False
        self._paused = False

    # Subclass hooks.
    @classmethod
    @abc.abstractmethod
    def check_installed(cls) -> None:
        """Raise ``BinaryNotFoundError`` unless what the server runs is installed."""

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

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context that trusts the server and presents the client
        certificate (None for a server without TLS)."""
        return None if self.certificates is None else self.certificates.client_context()

    def is_leader(self) -> bool:
        """Whether this member leads its cluster now (servers that elect one say so)."""
        return False

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
                f"{self.kind} at {self.endpoint} exited with code {self._process.returncode}\n"
                f"{self.log_tail()}"
            )

    def wait_healthy(self, timeout: float | None = None) -> None:
        if self._process is None:
            raise ServerError(f"{self!r} is not started")
        super().wait_healthy(timeout)

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

    async def cancel_while_paused(self, call: Awaitable[object], sent: float) -> None:
        """Freeze the server, start ``call`` and give it ``sent`` seconds to be sent
        (the frozen server then holds its answer), cancel it and check that it raises
        CancelledError; the server is resumed in any case."""
        self.pause()
        try:
            pending = asyncio.ensure_future(call)
            await asyncio.sleep(sent)
            assert not pending.done(), "the call ended although the server is frozen"
            pending.cancel()
            try:
                await pending
            except asyncio.CancelledError:
                pass
            else:
                raise AssertionError("the cancelled call did not raise CancelledError")
        finally:
            self.resume()

    def restart(self, wait: bool = True) -> Self:
        """Stop and start again with the same ports and data directory."""
        self.stop()
        return self.start(wait)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return f"--- last lines of {self.log_path}:\n{_read_tail(self.log_path, lines)}"
