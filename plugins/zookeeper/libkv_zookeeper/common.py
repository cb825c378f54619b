"""What both flavours of the ZooKeeper driver share that is not I/O: its settings (from
the URL), its capabilities, and its layout of keys in znodes (paths, the bookkeeping
znodes, the ACL, how a znode's data decodes to a value); see the module docstring of
:mod:`libkv_zookeeper._async.driver`, the one implementation of the I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from kazoo.security import make_digest_acl_credential

from libkv.driver import (
    Capabilities,
    InvalidURLError,
    KVPair,
    StoreURL,
    parse_bool,
    parse_seconds,
)
from libkv_zookeeper import protocol
from libkv_zookeeper.nodes import decode_data, is_ambiguous
from libkv_zookeeper.paths import decode_segment, encode_segment, flatten
from libkv_zookeeper.protocol import ReadData

__all__ = ["CAPABILITIES", "Layout", "read_settings"]

DEFAULT_PORT = 2181
REAP_INTERVAL = 0.2  # seconds between two looks for dead leases by each open Store
OPEN_FEED_WAIT = 0.5  # longest a watch waits for the connection when (re)opening its feed
MAX_WRITE_OPS = 1000
# Nodes of a subtree decoded into pairs at a time: the async flavour lets the loop run
# between two slices (10,000 nodes took 30 to 70 ms in one go, measured).
DECODE_SLICE = 1000
CHECK_INTERVAL = 0.5  # the server's znode.container.checkIntervalMs assumed (check_interval=)

CAPABILITIES = Capabilities(
    watch_every_change=False,  # a persistent watch says what changed, not every value
    watch_resume=False,  # ZooKeeper keeps no change history
    ttl_min=0.5,
    ttl_max=1e9,  # TTL znodes hold up to 2**40 ms
    # The server reaps a TTL znode up to znode.container.checkIntervalMs (500 ms in the
    # documented setting) after its ttl; an open Store notices within REAP_INTERVAL and
    # deletes its keys in one multi.
    ttl_slack=1.5,  # CHECK_INTERVAL + 1 s
    max_value_size=1_000_000,  # one value with the longest key stays under jute.maxbuffer
    max_transaction_ops=MAX_WRITE_OPS,
    native_async=True,  # libkv.aio runs the driver's own async backend
)


class Layout:
    """Where a Store's keys and bookkeeping live, and how a znode's data decodes: a base
    of both flavours' backends (no I/O)."""

    capabilities: Capabilities

    def _lay_out(self, url: StoreURL, chroot: str, check_interval: float) -> None:
        if check_interval != CHECK_INTERVAL:
            # Expiry waits for the server's TTL check: declare the slack it implies.
            self.capabilities = dataclasses.replace(
                CAPABILITIES, ttl_slack=CAPABILITIES.ttl_slack - CHECK_INTERVAL + check_interval
            )
        self._base = chroot  # "" or "/a/b": every path of this Store starts with it
        self._bookkeeping = self._base + "/%libkv"
        self._lease_root = self._bookkeeping + "/leases"
        self._attached_root = self._bookkeeping + "/attached"
        self._verbatim_root = self._bookkeeping + "/verbatim"
        # With credentials every znode the driver creates belongs to that digest user alone
        # (not to the session's other identities, such as its TLS certificate's).
        self._acl: tuple[tuple[int, str, str], ...] = (
            (
                (
                    31,
                    "digest",
                    make_digest_acl_credential(url.username or "", url.password or ""),
                ),
            )
            if url.username is not None or url.password is not None
            else protocol.OPEN_ACL_UNSAFE
        )

    def _path(self, key: str) -> str:
        return self._base + "/" + "/".join(encode_segment(part) for part in key.split("/"))

    def _key(self, path: str) -> str | None:
        """The key at ``path``, or None if no key is there (bookkeeping, foreign names)."""
        if not path.startswith(self._base + "/"):
            return None
        segments = []
        for name in path[len(self._base) + 1 :].split("/"):
            segment = decode_segment(name)
            if segment is None or not segment:
                return None
            segments.append(segment)
        if not self._base and segments[0] == "zookeeper":
            return None  # ZooKeeper's own subtree
        return "/".join(segments)

    def _below_base(self, path: str) -> bool:
        return len(path) > len(self._base) + 1 and path.startswith(self._base + "/")

    def _lease_path(self, lease_id: int) -> str:
        return f"{self._lease_root}/{lease_id:016x}"

    def _entry_path(self, lease_id: int, path: str) -> str:
        return f"{self._attached_root}/{lease_id:016x}/{flatten(path[len(self._base) + 1 :])}"

    def _record_path(self, path: str) -> str:
        """The verbatim record of the key at ``path`` (see :mod:`libkv_zookeeper.nodes`)."""
        return f"{self._verbatim_root}/{flatten(path[len(self._base) + 1 :])}"

    def _with_records(self, paths: Iterable[str]) -> list[str]:
        """``paths``, each followed by its verbatim record: read together, in one request."""
        return [read for path in paths for read in (path, self._record_path(path))]

    def _decoded(self, path: str, nodes: dict[str, ReadData | None]) -> tuple[bytes, int] | None:
        """(value, lease id of the previous layout or 0) of the znode at ``path``, or None
        if no key is there; ``nodes`` holds what was read of it and of its record."""
        node = nodes.get(path)
        if node is None:
            return None
        if not is_ambiguous(node.data):
            return node.data, 0
        record = nodes.get(self._record_path(path))
        return decode_data(node.data, record is not None and record.stat.mzxid == node.stat.mzxid)

    def _pair(self, key: str, path: str, nodes: dict[str, ReadData | None]) -> KVPair | None:
        decoded = self._decoded(path, nodes)
        if decoded is None:
            return None
        node = nodes[path]
        assert node is not None
        return KVPair(key, decoded[0], node.stat.mzxid)

    def _pairs(
        self, paths: Sequence[str], nodes: dict[str, ReadData | None], excluded: str | None
    ) -> list[KVPair]:
        """The keys at ``paths`` among ``nodes`` (read with their records), but
        ``excluded``, in the order of ``paths``."""
        pairs = []
        for path in paths:
            key = None if path == excluded else self._key(path)
            pair = None if key is None else self._pair(key, path, nodes)
            if pair is not None:
                pairs.append(pair)
        return pairs

    def _range_root(self, prefix: str) -> tuple[str, bool]:
        """The znode a driver prefix starts at, and whether that znode is in the range."""
        if not prefix:
            return self._base or "/", False
        if prefix[-1] == "/":
            return self._path(prefix[:-1]), False
        return self._path(prefix), True


def _read_file(option: str, path: object) -> str:
    try:
        with open(str(path), "rb"):
            pass
    except OSError as error:
        raise InvalidURLError(f"cannot read the {option}= file {path!r}: {error}") from error
    return str(path)


def _chroot(path: str) -> str:
    chroot = path.rstrip("/")
    if not chroot:
        return ""
    segments = chroot.split("/")[1:]
    if any(segment in ("", ".", "..") for segment in segments):
        raise InvalidURLError(f"invalid ZooKeeper chroot {path!r}")
    return "/" + "/".join(encode_segment(segment) for segment in segments)


def read_settings(url: StoreURL) -> dict[str, Any]:
    """The backend's keyword arguments for ``url`` (both flavours'); InvalidURLError
    naming the option for a bad one."""
    options = url.read_options(
        {
            "timeout": parse_seconds,
            "session_timeout": parse_seconds,
            "tls": parse_bool,
            "ca": str,
            "cert": str,
            "key": str,
            "verify": parse_bool,
            "check_interval": parse_seconds,
        }
    )
    if ("cert" in options) != ("key" in options):
        raise InvalidURLError("zookeeper:// client certificates need both cert= and key=")
    tls: dict[str, Any] = {}
    if options.get("tls") or "ca" in options or "cert" in options:
        if options.get("tls") is False:
            raise InvalidURLError("tls=false contradicts ca=/cert=")
        tls["use_ssl"] = True
        tls["verify_certs"] = options.get("verify", True)
        if "ca" in options:
            tls["ca"] = _read_file("ca", options["ca"])
        if "cert" in options:
            tls["certfile"] = _read_file("cert", options["cert"])
            tls["keyfile"] = _read_file("key", options["key"])
    elif "verify" in options:
        raise InvalidURLError("verify= applies to TLS only (tls=true, ca= or cert=)")
    hosts = url.hosts or (("127.0.0.1", None),)
    addresses = ",".join(
        f"[{host}]:{port or DEFAULT_PORT}" if ":" in host else f"{host}:{port or DEFAULT_PORT}"
        for host, port in hosts
    )
    return dict(
        hosts=addresses,
        chroot=_chroot(url.path),
        namespace=options.get("prefix", ""),
        timeout=options.get("timeout", 10.0),
        session_timeout=options.get("session_timeout", 10.0),
        check_interval=options.get("check_interval", CHECK_INTERVAL),
        tls=tls,
    )
