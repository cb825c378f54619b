"""``consul://``: libkv over Consul's KV store, through its HTTP API.

URL: ``consul://[token@]host[:8500][,host[:port]...][/prefix][?options]``;
``consuls://`` is the same over HTTPS (port 8501 by default). Options: ``timeout``
(seconds per request, default 10), ``consistency`` (``consistent``, the default,
``default`` or ``stale``), ``dc`` (datacenter), ``session_ttl_min`` (the agents'
``session_ttl_min``, default 10 s), ``prefix``; on ``consuls://`` also ``ca``,
``cert`` and ``key``. The ACL token comes from the URL only, never from the
environment, and is never shown.

Guarantees: versions are ModifyIndex values. Every write is one request to the
transaction endpoint, so it is atomic on the server and answers with the new
ModifyIndex; a write deletes the key before setting it, so that a write always gets
a new version (Consul ignores a write of an identical value) and drops an earlier
ttl or lease (Consul keeps the session of a key on a plain write). A ttl or a lease
is a Consul session (``Behavior=delete``, no lock delay, no node checks) whose TTL is
half the libkv ttl, since Consul invalidates a session twice its TTL after its last
renewal. Watches are blocking queries on the prefix, diffed by the watch engine.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import ssl
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from libkv.driver import (
    AuthenticationError,
    Backend,
    Capabilities,
    FeedBatch,
    HistoryLostError,
    InvalidURLError,
    KeyExistsError,
    KeyModifiedError,
    KeyNotFoundError,
    KVError,
    KVPair,
    LeaseNotFoundError,
    NotReachableError,
    Op,
    OpKind,
    StoreURL,
    ValueTooLargeError,
    first_failure,
    in_prefix,
    parse_seconds,
)
from libkv_consul.http import BlockingConnection, ConsulHTTP, Reply, key_path

__all__ = ["CAPABILITIES", "ConsulBackend", "capabilities_for", "open_consul", "open_consuls"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 8500
DEFAULT_TLS_PORT = 8501
TXN_MAX_OPS = 128  # hard-coded in Consul since 1.14
TXN_MAX_REQ_LEN = 512 * 1024  # Consul's default limits.txn_max_req_len
SESSION_TTL_MAX = 86400.0  # Consul refuses session TTLs above 24 h
DEFAULT_SESSION_TTL_MIN = 10.0  # Consul's default session_ttl_min
# Room in a transaction body for the JSON around one value: its keys (1 KiB each, up to
# twice that JSON-escaped) twice, the verbs, a session id.
_TXN_OVERHEAD = 8 * 1024
MAX_VALUE_SIZE = (TXN_MAX_REQ_LEN - _TXN_OVERHEAD) * 3 // 4  # values travel in base64
_OPS_PER_UPDATE = 3  # check-index, delete, set: the most Consul ops one libkv op takes
_CONSISTENCY = {"consistent": ("consistent",), "default": (), "stale": ("stale",)}
# A watch's blocking query waits a quarter of the store's timeout, within these bounds
# (seconds); see _ConsulFeed. An unchanged prefix is re-sent whole at each wait's end.
_SHORTEST_WAIT = 0.25
_LONGEST_WAIT = 1.0
_READ_MARGIN = 0.5  # beyond wait + jitter: the agent's answer is late, not just slow


def capabilities_for(session_ttl_min: float) -> Capabilities:
    """The capabilities of a store whose agents have this ``session_ttl_min`` (seconds)."""
    return Capabilities(
        watch_every_change=False,  # a blocking query returns the latest state only
        watch_resume=False,  # Consul keeps no history of changes
        # The session TTL is half the ttl and must be at least session_ttl_min.
        ttl_min=2 * session_ttl_min,
        ttl_max=2 * SESSION_TTL_MAX,
        # Measured: a session goes 2 x TTL + 10 ms after its renewal; 1 s covers load.
        # A new leader restarts every session timer in full: up to one more ttl.
        ttl_slack=1.0,
        ttl_slack_ratio=1.0,
        max_value_size=MAX_VALUE_SIZE,
        max_transaction_ops=TXN_MAX_OPS // _OPS_PER_UPDATE,
    )


CAPABILITIES = capabilities_for(DEFAULT_SESSION_TTL_MIN)
"""Against agents with Consul's default ``session_ttl_min`` (the URL option changes ttl_min)."""


class ConsulBackend(Backend):
    """A store in Consul's KV store; see the module docstring."""

    def __init__(
        self,
        url: StoreURL,
        client: ConsulHTTP,
        *,
        namespace: str,
        timeout: float,
        consistency: str,
        session_ttl_min: float,
    ) -> None:
        super().__init__(url, namespace=namespace, timeout=timeout)
        self.capabilities = capabilities_for(session_ttl_min)
        self.client = client
        self._read_query = _CONSISTENCY[consistency]
        self._lease_deadlines: dict[int, tuple[float, float]] = {}  # id -> (ttl, deadline)
        self._leases_lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        """``host:port`` of the agent requests currently go to."""
        return self.client.endpoint

    # -- reading ------------------------------------------------------------------------

    def get(self, key: str) -> KVPair | None:
        reply = self.client.request("GET", key_path(key), self._read_query, write=False)
        if reply.status == 404:
            return None
        entries = _entries(reply)
        return _pair(entries[0]) if entries else None

    def range(self, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
        reply = self.client.request(
            "GET", key_path(prefix), ("recurse", *self._read_query), write=False
        )
        return _snapshot(reply, prefix, recursive)

    # -- writing ------------------------------------------------------------------------

    def commit(self, ops: Sequence[Op]) -> list[KVPair | None]:
        sessions = self._ttl_sessions(ops)
        try:
            verbs: list[dict[str, Any]] = []
            owners: list[int] = []  # index of the libkv op of each Consul op
            for position, op in enumerate(ops):
                for verb in _verbs(op, _session_of(op, sessions)):
                    verbs.append({"KV": verb})
                    owners.append(position)
            body = json.dumps(verbs, ensure_ascii=False, separators=(",", ":")).encode()
            if len(body) > TXN_MAX_REQ_LEN:
                raise ValueTooLargeError(
                    f"transaction of {len(body)} bytes exceeds Consul's txn_max_req_len "
                    f"of {TXN_MAX_REQ_LEN} bytes"
                )
            reply = self.client.request("PUT", "/v1/txn", body=body, write=True)
            if reply.status == 409:
                raise self._failed(ops, owners, verbs, reply)
            if reply.status != 200:
                raise KVError(f"Consul answered {reply.status} to a transaction")
        except BaseException as error:
            if not isinstance(error, NotReachableError):  # unknown outcome: keep them
                for session in sessions.values():
                    self._destroy_quietly(session)
            raise
        versions: dict[str, int] = {}
        for result in json.loads(reply.data).get("Results") or ():
            entry = result.get("KV")
            if entry is not None:
                versions[entry["Key"]] = int(entry["ModifyIndex"])
        return [
            KVPair(op.key, op.value, versions[op.key]) if op.kind.writes else None for op in ops
        ]

    def _failed(
        self, ops: Sequence[Op], owners: list[int], verbs: list[dict[str, Any]], reply: Reply
    ) -> KVError:
        """The error for a transaction Consul refused (HTTP 409)."""
        errors = json.loads(reply.data).get("Errors") or []
        if not errors:
            return KVError("Consul refused a transaction without saying why")
        first = min(errors, key=lambda error: int(error.get("OpIndex", 0)))
        consul_index = int(first.get("OpIndex", 0))
        what = self.client.scrub(str(first.get("What", "")))
        if not 0 <= consul_index < len(verbs):
            return KVError(f"Consul refused a transaction: {what}")
        if what.startswith(("Permission denied", "ACL not found")):
            return AuthenticationError(f"Consul refused the ACL token: {what}")
        position = owners[consul_index]
        op = ops[position]
        verb = verbs[consul_index]["KV"]["Verb"]
        if verb == "check-not-exists":
            return KeyExistsError(op.key, index=position)
        if verb == "get" or (verb == "check-index" and what.endswith("doesn't exist")):
            return KeyNotFoundError(op.key, index=position)
        if verb == "check-index":
            return KeyModifiedError(op.key, index=position)
        if verb == "lock" and "session" in what:
            return LeaseNotFoundError(f"lease of {op.key!r} has expired or was revoked")
        # Not a condition of ours: explain from the current state if it can be.
        current = [self.get(operation.key) for operation in ops]
        explained = first_failure(ops, current)
        return explained or KVError(f"Consul refused a transaction: {what}")

    def _ttl_sessions(self, ops: Sequence[Op]) -> dict[float, str]:
        """A new session for each distinct ttl among ``ops``."""
        sessions: dict[float, str] = {}
        try:
            for op in ops:
                if op.ttl is not None and op.ttl not in sessions:
                    sessions[op.ttl] = self._create_session(op.ttl)
        except BaseException:
            for session in sessions.values():
                self._destroy_quietly(session)
            raise
        return sessions

    def delete_range(self, prefix: str) -> int:
        if prefix:
            verbs = [{"Verb": "get-tree", "Key": prefix}]
            if prefix[-1] == "/":
                verbs.append({"Verb": "delete-tree", "Key": prefix})
            else:  # the key itself and its descendants, not p-x or px
                verbs.append({"Verb": "delete", "Key": prefix})
                verbs.append({"Verb": "delete-tree", "Key": prefix + "/"})
            return len(self._tree_transaction(verbs, prefix))
        # The whole keyspace (Consul's transactions refuse an empty key): one tree per
        # first character of the keys there now.
        reply = self.client.request("GET", key_path(""), ("keys",), write=False)
        starts = sorted({key[0] for key in (json.loads(reply.data) if reply.data else [])})
        deleted: set[str] = set()
        step = TXN_MAX_OPS // 2
        for begin in range(0, len(starts), step):
            verbs = []
            for start in starts[begin : begin + step]:
                verbs.append({"Verb": "get-tree", "Key": start})
                verbs.append({"Verb": "delete-tree", "Key": start})
            deleted.update(self._tree_transaction(verbs, ""))
        return len(deleted)

    def _tree_transaction(self, verbs: list[dict[str, str]], prefix: str) -> set[str]:
        """Run get-tree/delete verbs in one transaction; the keys under prefix it deleted."""
        body = json.dumps([{"KV": verb} for verb in verbs], ensure_ascii=False).encode()
        reply = self.client.request("PUT", "/v1/txn", body=body, write=True)
        if reply.status != 200:
            errors = json.loads(reply.data).get("Errors") if reply.data else None
            raise KVError(f"Consul refused to delete a tree: {errors}")
        return {
            result["KV"]["Key"]
            for result in json.loads(reply.data).get("Results") or ()
            if in_prefix(result["KV"]["Key"], prefix)
        }

    # -- leases (Consul sessions) ---------------------------------------------------------

    def _create_session(self, ttl: float) -> str:
        body = {
            "Name": "libkv",
            # Half the ttl (see the module docstring), rounded up: never expire early.
            "TTL": f"{math.ceil(ttl * 500)}ms",
            "Behavior": "delete",  # invalidation deletes the keys it holds
            "LockDelay": "0s",  # a deleted lock key may be taken again at once
            "NodeChecks": [],  # only the TTL decides: not the health of the agent's node
        }
        reply = self.client.request(
            "PUT", "/v1/session/create", body=json.dumps(body).encode(), write=True
        )
        if reply.status != 200:
            raise KVError(f"Consul answered {reply.status} to a session create")
        return str(json.loads(reply.data)["ID"])

    def grant_lease(self, ttl: float) -> int:
        lease_id = uuid.UUID(self._create_session(ttl)).int
        with self._leases_lock:
            self._lease_deadlines[lease_id] = (ttl, time.monotonic() + ttl)
        return lease_id

    def keepalive_lease(self, lease_id: int) -> bool:
        reply = self.client.request(
            "PUT", f"/v1/session/renew/{_session_id(lease_id)}", write=False
        )  # renewing twice is harmless
        alive = reply.status == 200 and bool(json.loads(reply.data))
        with self._leases_lock:
            if lease_id in self._lease_deadlines:
                ttl, _ = self._lease_deadlines[lease_id]
                self._lease_deadlines[lease_id] = (ttl, time.monotonic() + ttl)
        return alive

    def lease_ttl(self, lease_id: int) -> float | None:
        reply = self.client.request(
            "GET", f"/v1/session/info/{_session_id(lease_id)}", self._read_query, write=False
        )
        if reply.status == 404 or not json.loads(reply.data):
            return None
        # Consul does not say how long a session has left; our own estimate, floored
        # so that a session past its deadline is polled often until it is gone.
        with self._leases_lock:
            _, deadline = self._lease_deadlines.get(lease_id, (0.0, 0.0))
        return max(deadline - time.monotonic(), 0.1)

    def revoke_lease(self, lease_id: int) -> None:
        with self._leases_lock:
            self._lease_deadlines.pop(lease_id, None)
        # Destroying twice is harmless; its keys go in the same raft entry. One attempt
        # per agent: a revoke often follows a failure (a lock wait that found the agent
        # gone), and the session expires by its TTL anyway, so it need not wait out the
        # timeout again for an agent known to be down.
        self.client.request(
            "PUT", f"/v1/session/destroy/{_session_id(lease_id)}", write=False, persist=False
        )

    def _destroy_quietly(self, session: str) -> None:
        try:
            self.client.request("PUT", f"/v1/session/destroy/{session}", write=False, persist=False)
        except KVError:
            log.debug("could not destroy unused session %s", session, exc_info=True)

    # -- watching ---------------------------------------------------------------------

    def open_feed(self, prefix: str, after: int | None) -> _ConsulFeed:
        return _ConsulFeed(self, prefix, after or 0)

    def last_contact(self) -> float | None:
        """When an agent last answered any request of this store (0: never)."""
        return self.client.last_contact or None

    def _kv_index(self) -> int:
        """The KV table's index: only a snapshot restore or a new cluster lowers it.

        (A single-key read answers with it, whether or not the key exists.)
        """
        return self.client.request("GET", key_path("_"), self._read_query, write=False).index

    # -- closing ----------------------------------------------------------------------

    def translate_error(self, error: Exception) -> KVError | None:
        """None: every HTTP failure is translated where the request is made
        (:meth:`ConsulHTTP.failure`), where it is known whether a write was sent."""
        return None

    def close(self) -> None:
        self.client.close()


class _ConsulFeed:
    """Blocking queries on a prefix, run by a thread so that ``close()`` is prompt.

    Each answer with a new ``X-Consul-Index`` becomes a snapshot batch that the watch
    engine diffs against what it delivered; answers with the same index (timeouts,
    spurious wake-ups) are dropped. Only the latest snapshot is kept until polled (it
    supersedes the earlier ones), so a slow consumer costs one snapshot, not a queue.
    An index that goes backwards is reset as Consul's documentation prescribes; it
    becomes a batch with a lower revision (which the engine reports as
    HistoryLostError) only when the whole KV table's index went back too (a snapshot
    restore), not when Consul merely reaped the prefix's tombstones.

    Contact (the engine's rule for ``poll``): every answer, new index or not, counts as
    contact. A blocking query waits ``_blocking_wait(timeout)`` (a quarter of the
    store's timeout, 0.25 to 1 s), so a live agent answers at least that often; a query
    unanswered past that wait plus Consul's jitter (wait / 16) and ``_READ_MARGIN`` ends
    in NotReachableError (a frozen agent), and ``poll`` raises NotReachableError rather
    than return None once nothing was heard for the store's timeout. The engine then
    fails the watch once its reconnects have failed for the store's timeout too,
    counted from the store's latest answer from any agent if that is later
    (``last_contact``: while other requests of the store are answered, the watch keeps
    reconnecting). A reconnection's re-read that an agent does not answer moves to the
    next agent after ``first_read_wait(timeout)`` (see ConsulHTTP.request). With no
    other traffic, a frozen agent ends a watch within timeout + wait * 17/16 +
    _READ_MARGIN (plus a reconnect interval), a dead one (connection refused) within
    about the timeout.
    """

    def __init__(self, store: ConsulBackend, prefix: str, after: int) -> None:
        self._store = store
        self._prefix = prefix
        self._index = max(after, 1)  # Consul: never block on index 0
        self._revision = after
        self._wait = _blocking_wait(store.timeout)
        self._batch: FeedBatch | None = None  # the latest snapshot not yet polled
        self._error: BaseException | None = None  # what ended the thread
        self._ready = threading.Condition()
        self._closed = False
        # Opening contacts nothing (the engine reads the prefix just before), so opening
        # counts as contact; the thread starts at the first poll, so a feed the engine
        # drops unpolled (its re-read failed) leaves no thread behind.
        self._heard = time.monotonic()
        # The engine opens a feed right after reading the prefix (contact), and restarts
        # its unreachable clock only when a poll returns: so the first poll returns even
        # if the first query already failed, and a watch reconnected after an agent's
        # restart is not failed by a clock that started when the agent went down.
        self._first_poll = True
        self._connection: BlockingConnection = store.client.blocking_connection()
        self._thread: threading.Thread | None = None

    def poll(self, timeout: float) -> FeedBatch | None:
        """The next snapshot with a new index, or None; see :class:`libkv.driver.Feed`."""
        with self._ready:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="libkv-consul-watch", daemon=True
                )
                self._thread.start()
            if self._batch is None and self._error is None and not self._closed:
                self._ready.wait(timeout)
            if self._closed:
                return None
            batch, self._batch = self._batch, None
            first, self._first_poll = self._first_poll, False
            if batch is not None or first:
                return batch
            if self._error is not None:
                raise self._error
            silent = time.monotonic() - self._heard
        if silent > self._store.timeout:
            raise NotReachableError(
                f"Consul at {self._connection.endpoint} sent nothing for {silent:.1f} s"
            )
        return None

    def close(self) -> None:
        """Stop the thread; a blocking query in flight is aborted."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        self._connection.abort()

    def _run(self) -> None:
        store = self._store
        query_base = ("recurse", *store._read_query, f"wait={self._wait * 1000:.0f}ms")
        # Consul adds up to wait/16 of jitter; beyond that the agent is not answering.
        read_timeout = self._wait * 17 / 16 + _READ_MARGIN
        path = key_path(self._prefix)
        while not self._closed:
            try:
                reply = self._connection.get(
                    path, (*query_base, f"index={self._index}"), read_timeout
                )
                with self._ready:
                    self._heard = time.monotonic()
                if reply.index == self._index:
                    continue  # the wait ran out, or a wake-up with nothing new
                pairs, index = _snapshot(reply, self._prefix, True)
                if index < self._index:
                    self._check_went_back(index)
                self._index = max(index, 1)
                self._revision = max(index, self._revision)
                batch = FeedBatch(self._revision, snapshot=pairs)
            except BaseException as error:
                with self._ready:
                    self._error = error
                    self._ready.notify_all()
                return
            with self._ready:
                self._batch = batch  # it supersedes an earlier one not yet polled
                self._ready.notify_all()

    def _check_went_back(self, index: int) -> None:
        """The prefix's index went back to ``index``: fine if Consul only reaped the
        prefix's tombstones; HistoryLostError if the whole KV table's index went back
        (a snapshot restore), since the changes in between are gone."""
        table = self._store._kv_index()
        if table >= self._revision:
            log.info("Consul index of %r went back to %d (tombstones reaped)", self._prefix, index)
            return
        log.warning("Consul's KV index went back from %d to %d", self._revision, table)
        raise HistoryLostError(
            f"Consul's KV index went back from {self._revision} to {table} (a snapshot restore)"
        )


def _blocking_wait(timeout: float) -> float:
    """How long a watch's blocking query waits (seconds): short enough that a frozen
    agent is noticed well within the store's timeout, long enough that an idle watch
    re-reads its prefix at most a few times a second."""
    return min(max(timeout / 4, _SHORTEST_WAIT), _LONGEST_WAIT)


def _entries(reply: Reply) -> list[dict[str, Any]]:
    if reply.status == 404 or not reply.data:
        return []
    entries = json.loads(reply.data)
    return entries if isinstance(entries, list) else []


def _pair(entry: dict[str, Any]) -> KVPair:
    encoded = entry["Value"]
    try:
        # Consul answers null for an empty value: the entry exists, so it is b"".
        value = binascii.a2b_base64(encoded, strict_mode=True) if encoded else b""
    except binascii.Error as error:
        raise KVError(f"Consul returned a malformed value for {entry['Key']!r}") from error
    return KVPair(entry["Key"], value, entry["ModifyIndex"])


def _snapshot(reply: Reply, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
    """The pairs of a recursive listing under a driver prefix, and its index."""
    entries = _entries(reply)
    if not recursive:
        entries = [entry for entry in entries if entry["Key"] == prefix]
    elif prefix and prefix[-1] != "/":  # Consul's prefix "p" also matches "pq"
        entries = [entry for entry in entries if in_prefix(entry["Key"], prefix)]
    pairs = [_pair(entry) for entry in entries]
    pairs.sort(key=lambda pair: pair.key)  # Consul's order already: a linear pass
    return pairs, reply.index


def _verbs(op: Op, session: str | None) -> list[dict[str, Any]]:
    """The Consul transaction ops of one libkv op (at most ``_OPS_PER_UPDATE``)."""
    key, kind = op.key, op.kind
    if kind is OpKind.CHECK:
        if op.version == 0:
            return [{"Verb": "check-not-exists", "Key": key}]
        return [{"Verb": "check-index", "Key": key, "Index": op.version}]
    verbs: list[dict[str, Any]] = []
    if kind is OpKind.CREATE:
        verbs.append({"Verb": "check-not-exists", "Key": key})
    elif kind is OpKind.UPDATE or (kind is OpKind.DELETE and op.version is not None):
        verbs.append({"Verb": "check-index", "Key": key, "Index": op.version})
    elif kind is OpKind.DELETE:
        verbs.append({"Verb": "get", "Key": key})  # fails if the key does not exist
    if kind is OpKind.DELETE:
        verbs.append({"Verb": "delete", "Key": key})
        return verbs
    if kind is not OpKind.CREATE:
        # Deleting first makes even an identical value a new version, and drops the
        # session (ttl or lease) of an earlier write, which a set would keep.
        verbs.append({"Verb": "delete", "Key": key})
    value = base64.b64encode(op.value).decode("ascii")
    if session is None:
        verbs.append({"Verb": "set", "Key": key, "Value": value})
    else:
        verbs.append({"Verb": "lock", "Key": key, "Value": value, "Session": session})
    return verbs


def _session_id(lease_id: int) -> str:
    return str(uuid.UUID(int=lease_id))


def _session_of(op: Op, sessions: dict[float, str]) -> str | None:
    if op.lease is not None:
        return _session_id(op.lease.id)
    if op.ttl is not None:
        return sessions[op.ttl]
    return None


def _tls_context(options: dict[str, Any]) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=options.get("ca"))
        if "cert" in options:
            context.load_cert_chain(options["cert"], options["key"])
    except (OSError, ssl.SSLError) as error:
        raise InvalidURLError(f"cannot load the TLS files of the URL: {error}") from error
    return context


def _consistency(value: object) -> str:
    text = str(value)
    if text not in _CONSISTENCY:
        raise ValueError(f"expected one of {', '.join(_CONSISTENCY)}")
    return text


def _open(url: StoreURL, *, tls: bool) -> ConsulBackend:
    spec: dict[str, Any] = {
        "timeout": parse_seconds,
        "consistency": _consistency,
        "dc": str,
        "session_ttl_min": parse_seconds,
    }
    if tls:
        spec.update({"ca": str, "cert": str, "key": str})
    options = url.read_options(spec)
    if ("cert" in options) != ("key" in options):
        raise InvalidURLError("consuls:// client certificates need both cert= and key=")
    if url.username and url.password is not None:
        raise InvalidURLError(
            f"{url.scheme}:// takes the ACL token alone before the host (token@host)"
        )
    token = url.password if url.password is not None else url.username or None
    if token is not None and not token.isascii():
        # An HTTP header carries the token: Consul's are UUIDs, and anything else would
        # fail at the first request with the client's own encoding error.
        raise InvalidURLError(f"{url.scheme}:// takes an ACL token of ASCII characters")
    hosts = url.hosts or (("127.0.0.1", None),)
    port = DEFAULT_TLS_PORT if tls else DEFAULT_PORT
    addresses = [(host, host_port or port) for host, host_port in hosts]
    timeout = options.get("timeout", 10.0)
    client = ConsulHTTP(
        addresses,
        tls=_tls_context(options) if tls else None,
        token=token,
        datacenter=options.get("dc"),
        timeout=timeout,
    )
    session_ttl_min = options.get("session_ttl_min", DEFAULT_SESSION_TTL_MIN)
    if session_ttl_min > SESSION_TTL_MAX:
        raise InvalidURLError(f"session_ttl_min above Consul's maximum of {SESSION_TTL_MAX:g} s")
    # The token is shown nowhere: not in repr(store), str(store.url) or any error.
    shown = StoreURL(
        scheme=url.scheme,
        hosts=url.hosts,
        password="***" if token else None,
        path=url.path,
        options=url.options,
    )
    return ConsulBackend(
        shown,
        client,
        namespace=options.get("prefix", url.path.strip("/")),
        timeout=timeout,
        consistency=options.get("consistency", "consistent"),
        session_ttl_min=session_ttl_min,
    )


def open_consul(url: StoreURL) -> ConsulBackend:
    """The ``consul`` scheme's initializer (HTTP)."""
    return _open(url, tls=False)


def open_consuls(url: StoreURL) -> ConsulBackend:
    """The ``consuls`` scheme's initializer (HTTPS)."""
    return _open(url, tls=True)
