"""Command line: ``python -m integration.servers start KIND`` runs one server (or cluster)
until Ctrl-C; ``python -m integration.servers check [KIND...]`` starts and stops each."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

from .cluster import ServerCluster
from .consul import ConsulCluster, ConsulServer
from .etcd import EtcdCluster, EtcdServer
from .process import BinaryNotFoundError, Server, ServerError, ServerProcess
from .redis import RedisSentinelGroup, RedisServer
from .redis_cluster import RedisCluster
from .zookeeper import ZooKeeperEnsemble, ZooKeeperServer

LOGGER = logging.getLogger(__name__)


SERVER_KINDS: dict[str, Callable[[], Server]] = {
    "redis": RedisServer,
    "redis-tls": lambda: RedisServer(tls=True),
    "redis-acl": lambda: RedisServer(acl=True),
    "redis-sentinel": RedisSentinelGroup,
    "redis-cluster": RedisCluster,
    "etcd": EtcdServer,
    "etcd-tls": lambda: EtcdServer(tls=True, client_cert_auth=True),
    "etcd-auth": lambda: EtcdServer(auth=True),
    "etcd-cluster": EtcdCluster,
    "zookeeper": ZooKeeperServer,
    "zookeeper-tls": lambda: ZooKeeperServer(tls=True),
    "zookeeper-auth": lambda: ZooKeeperServer(auth=True),
    "zookeeper-ensemble": ZooKeeperEnsemble,
    "consul": ConsulServer,
    "consul-acl": lambda: ConsulServer(acl=True),
    "consul-tls": lambda: ConsulServer(tls=True),
    "consul-cluster": ConsulCluster,
}


def _raise_keyboard_interrupt(number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _describe(server: Server) -> list[str]:
    lines = [f"url: {server.url}", f"directory: {server.directory}"]
    if isinstance(server, ServerProcess):
        lines.append(f"log: {server.log_path}")
    elif isinstance(server, ServerCluster):
        lines += [f"log: {member.log_path}" for member in server.members]
    # Throwaway credentials of this server only, printed so a person can connect.
    certificates = getattr(server, "certificates", None)
    if certificates is not None:
        lines.append(f"certificates: {certificates.directory} (ca.pem, client.pem, client-key.pem)")
    if isinstance(server, ZooKeeperServer) and server.auth:
        lines.append(f"digest user: {server.username}:{server.password} on {server.chroot}")
    if isinstance(server, ConsulServer) and server.acl:
        lines.append(f"management token: {server.token}")
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
