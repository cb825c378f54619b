"""What the Consul driver's two flavours share, with no I/O: URL settings, Consul's
limits and capabilities, the transaction verbs of libkv ops and the reading of their
answers, and the rules of a request's attempts on a list of agents (which failure is
retried on the next agent, which is an unknown outcome, how long a read waits).

The async driver (:mod:`libkv_consul._async.driver`, the source of the generated
:mod:`libkv_consul.driver`) and the HTTP clients of each flavour
(:mod:`libkv_consul.http` on urllib3, :mod:`libkv_consul._async.http` on aiohttp) do the
I/O around it.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import logging
import math
import ssl
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from libkv.driver import (
    AuthenticationError,
    Capabilities,
    FeedBatch,
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
    StoreClosedError,
    StoreURL,
    UnknownOutcomeError,
    ValueTooLargeError,
    in_prefix,
    parse_seconds,
)

log = logging.getLogger("libkv_consul.http")

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
CONSISTENCY = {"consistent": ("consistent",), "default": (), "stale": ("stale",)}
# A watch's blocking query waits a quarter of the store's timeout, within these bounds
# (seconds); see the driver's BlockingQuery. An unchanged prefix is re-sent whole at
# each wait's end.
_SHORTEST_WAIT = 0.25
_LONGEST_WAIT = 1.0
READ_MARGIN = 0.5  # beyond wait + jitter: the agent's answer is late, not just slow
# A read's first attempt waits for its answer a quarter of the timeout, within these
# bounds (seconds), then goes to the next agent; see Attempts.
_SHORTEST_READ_WAIT = 0.5
_LONGEST_READ_WAIT = 2.0
DECODE_INLINE_LIMIT = 256 * 1024
"""Bytes of a listing the async flavour decodes on the event loop; a bigger one (about
1,000 keys of 100 bytes and up: 10,000 took about 26 ms) is decoded by a worker thread,
so that no loop callback holds the loop that long."""
WATCH_BUFFER = 1
"""Snapshots a watch's feed keeps for its consumer: the latest only. A snapshot
supersedes every earlier one (the engine diffs each against what it delivered), so a
slow consumer costs one snapshot, never a queue, and never stalls the query."""

ANSWERED = (200, 404, 409)
"""Statuses handed back to the caller: success, no such key or session, failed txn."""
_LEADERLESS = ("No cluster leader", "no leader", "rpc error: No path to datacenter")


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
        native_async=True,  # libkv.aio runs the driver's own async backend
    )


CAPABILITIES = capabilities_for(DEFAULT_SESSION_TTL_MIN)
"""Against agents with Consul's default ``session_ttl_min`` (the URL option changes ttl_min)."""


# -- settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What a ``consul://`` or ``consuls://`` URL says; ``url`` is the one shown (token
    replaced by ``***``)."""

    url: StoreURL
    addresses: list[tuple[str, int]]
    tls: ssl.SSLContext | None
    token: str | None
    datacenter: str | None
    timeout: float
    consistency: str
    session_ttl_min: float
    namespace: str


def read_settings(url: StoreURL, *, tls: bool) -> Settings:
    """The settings of ``url``; InvalidURLError for anything wrong in it. No I/O."""
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
    return Settings(
        url=shown,
        addresses=[(host, host_port or port) for host, host_port in hosts],
        tls=_tls_context(options) if tls else None,
        token=token,
        datacenter=options.get("dc"),
        timeout=options.get("timeout", 10.0),
        consistency=options.get("consistency", "consistent"),
        session_ttl_min=session_ttl_min,
        namespace=options.get("prefix", url.path.strip("/")),
    )


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
    if text not in CONSISTENCY:
        raise ValueError(f"expected one of {', '.join(CONSISTENCY)}")
    return text


# -- requests and their attempts --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """An answered request: status, body, ``X-Consul-Index`` (0 if absent), and whether
    Consul left out results the ACL token may not read."""

    status: int
    data: bytes
    index: int
    filtered: bool = False


def reply_of(status: int, data: bytes, index: str | None, filtered: str | None) -> Reply:
    """A Reply from an answer's status, body and its two Consul headers."""
    try:
        number = int(index) if index else 0
    except ValueError:
        number = 0
    return Reply(status, data, number, filtered == "true")


def key_path(key: str) -> str:
    """``/v1/kv/<key>`` with every character but ``/`` percent-encoded (UTF-8)."""
    return "/v1/kv/" + quote(key, safe="/")


def first_read_wait(timeout: float) -> float:
    """How long the first attempt of a read waits for its answer (seconds): a quarter
    of the store's timeout, 0.5 to 2 s. Consul answers a read at once unless the agent is
    frozen or, without a leader, holds it (up to its rpc_hold_timeout of 7 s, answering
    it only some time after a new leader is known); a new attempt is answered as soon
    as there is a leader."""
    return min(max(timeout / 4, _SHORTEST_READ_WAIT), _LONGEST_READ_WAIT)


def blocking_wait(timeout: float) -> float:
    """How long a watch's blocking query waits (seconds): short enough that a frozen
    agent is noticed well within the store's timeout, long enough that an idle watch
    re-reads its prefix at most a few times a second."""
    return min(max(timeout / 4, _SHORTEST_WAIT), _LONGEST_WAIT)


class Failure(enum.Enum):
    """How a request went unanswered, as each flavour's client classifies its errors."""

    NOT_SENT = "not sent"  # the connection could not be made: certainly not applied
    TLS = "tls"  # the TLS handshake failed: Consul never read the request
    READ_TIMEOUT = "read timeout"  # sent; no answer in time
    LOST = "lost"  # sent; the connection broke before the answer


class Agents:
    """The agents of a store and what every request to them shares, in both flavours:
    the current agent (moved on by failures), the ACL token and its scrubbing, the
    datacenter, ``last_contact`` and the translation of failures into libkv errors.

    ``last_contact`` is the ``time.monotonic()`` of the latest answer from any agent to
    any request of this client (blocking queries included), 0.0 before the first.
    """

    def __init__(self, settings: Settings) -> None:
        self.addresses = list(settings.addresses)
        self.timeout = settings.timeout
        self._tls = settings.tls
        self._token = settings.token
        self._headers = {"X-Consul-Token": settings.token} if settings.token else {}
        self._datacenter = settings.datacenter
        self._current = 0
        self._closed = False
        self.last_contact = 0.0
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        """``host:port`` of the agent requests currently go to."""
        host, port = self.addresses[self._current]
        return f"{host}:{port}"

    def url_of(self, path: str, query: Sequence[str]) -> str:
        """``path?query`` with the datacenter added when one was chosen."""
        parameters = list(query)
        if self._datacenter:
            parameters.append("dc=" + quote(self._datacenter, safe=""))
        return path + ("?" + "&".join(parameters) if parameters else "")

    def scrub(self, text: str) -> str:
        """``text`` with the ACL token replaced by ``***``."""
        return text.replace(self._token, "***") if self._token else text

    def answered(self, reply: Reply) -> None:
        """Note an answer (any agent, any request) as contact."""
        if reply.status in ANSWERED:
            self.last_contact = time.monotonic()

    def status_error(self, reply: Reply, *, write: bool) -> KVError:
        """The libkv error for an HTTP status other than 200, 404 and 409."""
        text = self.scrub(reply.data.decode("utf-8", "replace").strip())
        where = f"Consul at {self.endpoint}"
        if reply.filtered:
            # A listing without the keys the token may not read would be a false answer.
            return AuthenticationError(f"{where}: the ACL token may not read every key asked for")
        if reply.status in (401, 403):
            return AuthenticationError(f"{where} refused the ACL token: {text}")
        if reply.status == 413:
            return ValueTooLargeError(f"{where}: request too large: {text}")
        if reply.status == 429 or any(reason in text for reason in _LEADERLESS):
            # Refused before being applied (rate limit, no leader): safe to retry.
            return NotReachableError(f"{where} cannot serve requests now: {text}")
        if reply.status >= 500 and not text.startswith("Invalid"):
            if write:
                return UnknownOutcomeError(
                    f"{where}: write may or may not be applied: {reply.status} {text}"
                )
            return NotReachableError(f"{where}: {reply.status} {text}")
        return KVError(f"{where}: {reply.status} {text}")

    def failure(self, kind: Failure, error: BaseException, *, write: bool) -> KVError:
        """The libkv error for a request that got no answer."""
        where = f"Consul at {self.endpoint}"
        text = self.scrub(str(error) or type(error).__name__)
        if self._closed:
            return StoreClosedError("store is closed")
        if kind is Failure.TLS:
            # TLS failed, so Consul's HTTP server never read the request: not applied.
            if "alert" in text and "certificate" in text:
                return AuthenticationError(f"{where} refused our client certificate: {text}")
            return NotReachableError(f"{where}: TLS handshake failed: {text}")
        if write and kind is not Failure.NOT_SENT:
            return UnknownOutcomeError(f"{where}: write may or may not be applied: {text}")
        return NotReachableError(f"{where} not reachable within {self.timeout} s: {text}")

    def watch_failure(
        self, kind: Failure, error: BaseException, agent: int, *, aborted: bool
    ) -> KVError:
        """The error of a blocking query that got no answer from agent number ``agent``
        (``aborted``: its query was ended); the next query goes to the next agent."""
        host, port = self.addresses[agent]
        if aborted:
            return NotReachableError(f"Consul at {host}:{port}: watch closed")
        if kind is Failure.TLS:
            return self.failure(kind, error, write=False)
        self.next_agent(agent, str(error))
        return NotReachableError(
            f"Consul at {host}:{port}: blocking query failed: {self.scrub(str(error))}"
        )

    def watch_reply(self, reply: Reply) -> Reply:
        """A blocking query's answer, or the error its status means."""
        self.answered(reply)
        if reply.status not in ANSWERED or reply.filtered:
            raise self.status_error(reply, write=False)
        return reply

    def next_agent(self, index: int, reason: str) -> None:
        """Requests go to the agent after number ``index``, unless one moved on already."""
        with self._lock:
            if len(self.addresses) > 1 and self._current == index:
                self._current = (index + 1) % len(self.addresses)
                log.info(
                    "Consul agent %s:%s unavailable (%s); trying %s",
                    *self.addresses[index],
                    self.scrub(reason),
                    self.endpoint,
                )

    def attempts(self, *, write: bool, persist: bool) -> Attempts:
        """The attempts of one request (see :class:`Attempts`)."""
        return Attempts(self, write=write, persist=persist)


class Attempts:
    """The attempts of one request on the agents, in both flavours.

    A request goes to the current agent; when the agent cannot be reached or has no
    leader (so the request was certainly not applied), it moves to the next one and
    retries until the timeout has passed. A write that may have reached the server
    raises UnknownOutcomeError rather than being sent twice. A read unanswered after
    ``first_read_wait(timeout)`` is sent again to the next agent, each such retry
    waiting twice as long, so that neither a frozen agent nor a follower holding the
    read until it learns a new leader takes the whole timeout. With ``persist=False``
    each agent is tried once (for clean-up that may fail fast).

    The client's loop: ``agent, connect, read = attempts.next()``; send; then
    ``attempts.reply(reply)`` or ``attempts.failed(kind, error)``, each of which
    returns the reply, raises the final error, or returns None with the pause before
    the next attempt in ``attempts.pause``.
    """

    def __init__(self, agents: Agents, *, write: bool, persist: bool) -> None:
        self._agents = agents
        self._write = write
        self._persist = persist
        self._deadline = time.monotonic() + agents.timeout
        self._count = 0
        self._agent = 0
        # A write waits for its answer until the deadline (sending it again could apply
        # it twice); a read gives up on an agent sooner and asks the next one.
        self._read_wait = math.inf if write else first_read_wait(agents.timeout)
        self.pause = 0.0

    def next(self) -> tuple[int, float, float]:
        """The agent to try now, and the connect and read timeouts of this attempt."""
        agents = self._agents
        if agents._closed:
            raise StoreClosedError("store is closed")
        self._agent = agents._current
        remaining = max(self._deadline - time.monotonic(), 0.001)
        return self._agent, remaining, min(remaining, self._read_wait)

    def reply(self, reply: Reply) -> Reply | None:
        """An answer: the reply to return, or None to try again (leaderless, 429)."""
        self._agents.answered(reply)
        if reply.status in ANSWERED and not reply.filtered:
            return reply
        error = self._agents.status_error(reply, write=self._write)
        if type(error) is not NotReachableError:
            raise error
        self._retry(error, None)
        return None

    def failed(self, kind: Failure, error: BaseException) -> None:
        """No answer (``error``, classified as ``kind``): raise, or prepare a retry."""
        agents = self._agents
        if kind is Failure.TLS or (self._write and kind is not Failure.NOT_SENT):
            raise agents.failure(kind, error, write=self._write) from error
        if kind is Failure.READ_TIMEOUT:
            self._read_wait *= 2  # a read that is merely slow still gets its answer
        self._retry(agents.failure(kind, error, write=False), error)

    def _retry(self, failure: KVError, cause: BaseException | None) -> None:
        agents = self._agents
        agents.next_agent(self._agent, str(failure))
        self._count += 1
        # Give up only once the whole timeout has passed (a last attempt at the
        # deadline), so that "unreachable for the timeout" is true when raised: the
        # watch engine fails a watch only after that long without the agent.
        now = time.monotonic()
        if now >= self._deadline or (not self._persist and self._count >= len(agents.addresses)):
            raise failure from cause
        pause = 0.0 if self._count % len(agents.addresses) else min(0.05 * self._count, 0.5)
        self.pause = min(pause, self._deadline - now)


# -- reading --------------------------------------------------------------------------------


def entries(reply: Reply) -> list[dict[str, Any]]:
    """The KV entries of a GET's answer ([] for 404)."""
    if reply.status == 404 or not reply.data:
        return []
    found = json.loads(reply.data)
    return found if isinstance(found, list) else []


def pair(entry: dict[str, Any]) -> KVPair:
    """The pair of one KV entry."""
    encoded = entry["Value"]
    try:
        # Consul answers null for an empty value: the entry exists, so it is b"".
        value = binascii.a2b_base64(encoded, strict_mode=True) if encoded else b""
    except binascii.Error as error:
        raise KVError(f"Consul returned a malformed value for {entry['Key']!r}") from error
    return KVPair(entry["Key"], value, entry["ModifyIndex"])


def get_result(reply: Reply) -> KVPair | None:
    """The pair of a single-key GET's answer, or None."""
    found = entries(reply)
    return pair(found[0]) if found else None


def snapshot(reply: Reply, prefix: str, recursive: bool) -> tuple[list[KVPair], int]:
    """The pairs of a recursive listing under a driver prefix, and its index."""
    found = entries(reply)
    if not recursive:
        found = [entry for entry in found if entry["Key"] == prefix]
    elif prefix and prefix[-1] != "/":  # Consul's prefix "p" also matches "pq"
        found = [entry for entry in found if in_prefix(entry["Key"], prefix)]
    pairs = [pair(entry) for entry in found]
    pairs.sort(key=lambda item: item.key)  # Consul's order already: a linear pass
    return pairs, reply.index


# -- writing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transaction:
    """The request of a commit: its body, its Consul verbs and the libkv op of each."""

    body: bytes
    verbs: list[dict[str, Any]]
    owners: list[int]


def transaction(ops: Sequence[Op], sessions: dict[float, str]) -> Transaction:
    """The transaction of ``ops``, with ``sessions`` (per ttl) for their ttls;
    ValueTooLargeError if it exceeds Consul's request limit."""
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
    return Transaction(body, verbs, owners)


def commit_result(ops: Sequence[Op], reply: Reply) -> list[KVPair | None]:
    """The new pairs of an applied transaction (None for deletes and checks)."""
    versions: dict[str, int] = {}
    for result in json.loads(reply.data).get("Results") or ():
        entry = result.get("KV")
        if entry is not None:
            versions[entry["Key"]] = int(entry["ModifyIndex"])
    return [KVPair(op.key, op.value, versions[op.key]) if op.kind.writes else None for op in ops]


def transaction_failure(
    ops: Sequence[Op], txn: Transaction, reply: Reply, agents: Agents
) -> KVError | None:
    """The error for a transaction Consul refused (HTTP 409), or None when Consul's
    answer names no condition of ours (the caller explains it from the current state)."""
    errors = json.loads(reply.data).get("Errors") or []
    if not errors:
        return KVError("Consul refused a transaction without saying why")
    first = min(errors, key=lambda error: int(error.get("OpIndex", 0)))
    consul_index = int(first.get("OpIndex", 0))
    what = agents.scrub(str(first.get("What", "")))
    if not 0 <= consul_index < len(txn.verbs):
        return KVError(f"Consul refused a transaction: {what}")
    if what.startswith(("Permission denied", "ACL not found")):
        return AuthenticationError(f"Consul refused the ACL token: {what}")
    position = txn.owners[consul_index]
    op = ops[position]
    verb = txn.verbs[consul_index]["KV"]["Verb"]
    if verb == "check-not-exists":
        return KeyExistsError(op.key, index=position)
    if verb == "get" or (verb == "check-index" and what.endswith("doesn't exist")):
        return KeyNotFoundError(op.key, index=position)
    if verb == "check-index":
        return KeyModifiedError(op.key, index=position)
    if verb == "lock" and "session" in what:
        return LeaseNotFoundError(f"lease of {op.key!r} has expired or was revoked")
    return None


def unexplained(reply: Reply, agents: Agents) -> KVError:
    """The error for a refused transaction that the current state does not explain."""
    errors = json.loads(reply.data).get("Errors") or [{}]
    return KVError(f"Consul refused a transaction: {agents.scrub(str(errors[0].get('What')))}")


def tree_verbs(prefix: str) -> list[dict[str, str]]:
    """get-tree and delete verbs for a non-empty prefix: the key itself and its
    descendants, never ``p-x`` or ``px`` for ``p``."""
    verbs = [{"Verb": "get-tree", "Key": prefix}]
    if prefix[-1] == "/":
        verbs.append({"Verb": "delete-tree", "Key": prefix})
    else:
        verbs.append({"Verb": "delete", "Key": prefix})
        verbs.append({"Verb": "delete-tree", "Key": prefix + "/"})
    return verbs


def keyspace_tree_verbs(reply: Reply) -> list[list[dict[str, str]]]:
    """For the whole keyspace (Consul's transactions refuse an empty key), from a
    ``?keys`` listing: transactions of get-tree and delete-tree verbs, one tree per
    first character of the keys there now."""
    starts = sorted({key[0] for key in (json.loads(reply.data) if reply.data else [])})
    step = TXN_MAX_OPS // 2
    transactions = []
    for begin in range(0, len(starts), step):
        verbs = []
        for start in starts[begin : begin + step]:
            verbs.append({"Verb": "get-tree", "Key": start})
            verbs.append({"Verb": "delete-tree", "Key": start})
        transactions.append(verbs)
    return transactions


def tree_body(verbs: list[dict[str, str]]) -> bytes:
    """The transaction body of get-tree/delete verbs."""
    return json.dumps([{"KV": verb} for verb in verbs], ensure_ascii=False).encode()


def tree_result(reply: Reply, prefix: str) -> set[str]:
    """The keys under ``prefix`` that a get-tree/delete transaction deleted."""
    if reply.status != 200:
        errors = json.loads(reply.data).get("Errors") if reply.data else None
        raise KVError(f"Consul refused to delete a tree: {errors}")
    return {
        result["KV"]["Key"]
        for result in json.loads(reply.data).get("Results") or ()
        if in_prefix(result["KV"]["Key"], prefix)
    }


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


# -- sessions --------------------------------------------------------------------------------


def session_body(ttl: float) -> bytes:
    """The request creating a session for a libkv ``ttl``."""
    return json.dumps(
        {
            "Name": "libkv",
            # Half the ttl (see the driver's docstring), rounded up: never expire early.
            "TTL": f"{math.ceil(ttl * 500)}ms",
            "Behavior": "delete",  # invalidation deletes the keys it holds
            "LockDelay": "0s",  # a deleted lock key may be taken again at once
            "NodeChecks": [],  # only the TTL decides: not the health of the agent's node
        }
    ).encode()


def session_created(reply: Reply) -> str:
    """The id of a created session."""
    if reply.status != 200:
        raise KVError(f"Consul answered {reply.status} to a session create")
    return str(json.loads(reply.data)["ID"])


def session_id(lease_id: int) -> str:
    """The Consul session id of a libkv lease id."""
    return str(uuid.UUID(int=lease_id))


def lease_id_of(session: str) -> int:
    """The libkv lease id of a Consul session id."""
    return uuid.UUID(session).int


def _session_of(op: Op, sessions: dict[float, str]) -> str | None:
    if op.lease is not None:
        return session_id(op.lease.id)
    if op.ttl is not None:
        return sessions[op.ttl]
    return None


class LeaseClock:
    """The driver's own estimate of each lease's deadline: Consul does not say how long
    a session has left. Thread-safe."""

    def __init__(self) -> None:
        self._deadlines: dict[int, tuple[float, float]] = {}  # id -> (ttl, deadline)
        self._lock = threading.Lock()

    def granted(self, lease_id: int, ttl: float) -> None:
        with self._lock:
            self._deadlines[lease_id] = (ttl, time.monotonic() + ttl)

    def renewed(self, lease_id: int) -> None:
        with self._lock:
            if lease_id in self._deadlines:
                ttl, _ = self._deadlines[lease_id]
                self._deadlines[lease_id] = (ttl, time.monotonic() + ttl)

    def left(self, lease_id: int) -> float:
        """Seconds left, floored so that a session past its deadline is polled often
        until it is gone."""
        with self._lock:
            _, deadline = self._deadlines.get(lease_id, (0.0, 0.0))
        return max(deadline - time.monotonic(), 0.1)

    def forget(self, lease_id: int) -> None:
        with self._lock:
            self._deadlines.pop(lease_id, None)


# -- watching --------------------------------------------------------------------------------


class Subscription:
    """One watch's share of a blocking query: a buffer of ``WATCH_BUFFER`` snapshot
    (the latest), the query's error, and the revision the watch is consistent with.
    Thread-safe: the query (a thread or a task) offers, the watch's poll takes."""

    def __init__(self, after: int) -> None:
        self.revision = after
        self._batch: FeedBatch | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._closed = False

    def offer(self, pairs: Sequence[KVPair], index: int, reset: bool) -> bool:
        """Keep the snapshot at ``index`` if it is news to this watch (a later index,
        or ``reset``: Consul's index went back while the KV table's did not, so it is
        the current state); it replaces one not yet taken. Whether it was kept."""
        with self._lock:
            if index <= self.revision and not reset:
                return False  # older than what the watch read: diffing it would lie
            self.revision = max(index, self.revision)
            self._batch = FeedBatch(self.revision, snapshot=pairs)
            return True

    def fail(self, error: BaseException) -> None:
        with self._lock:
            self._error = error

    def take(self) -> tuple[FeedBatch | None, BaseException | None]:
        """The snapshot waiting (taken), and the query's error if it ended."""
        with self._lock:
            batch, self._batch = self._batch, None
            return batch, self._error

    def ready(self) -> bool:
        """Whether a poll has something to return (or raise) at once."""
        return self._batch is not None or self._error is not None or self._closed

    def close(self) -> bool:
        """Mark the watch closed; whether it was open."""
        with self._lock:
            was_open, self._closed = not self._closed, True
            return was_open

    def is_closed(self) -> bool:
        return self._closed
