"""The ZooKeeper driver against a real ZooKeeper 3.8: the conformance suite plus driver
specifics (parents and values, CAS across delete and re-create, request size, foreign
znodes, session expiry, restart, an ensemble member killed)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from kazoo.client import KazooClient
from libkv_zookeeper import ZooKeeperBackend, connection, protocol
from libkv_zookeeper._async.driver import AsyncZooKeeperBackend
from libkv_zookeeper.paths import decode_segment, encode_segment

import libkv
import libkv.aio
from integration.servers import ZooKeeperEnsemble, ZooKeeperServer
from libkv.model import Action
from libkv.ops import Op
from libkv.testing import CrossProcessConformance, WatchRecorder, replay
from libkv.testing.conformance.base import EVENT_TIMEOUT, LOST_MARGIN, UNUSUAL_VALID_KEYS
from libkv.testing.polling import wait_until


class TestZooKeeper(CrossProcessConformance):
    @pytest.fixture
    def url(self, zookeeper_server: ZooKeeperServer) -> str:
        return f"{zookeeper_server.url}/t{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def ensemble() -> Iterator[ZooKeeperEnsemble]:
    """One 3-member ensemble for the whole conformance class (the harness's
    ``zookeeper_ensemble`` fixture starts one per test, for tests that harm it)."""
    with ZooKeeperEnsemble() as members:
        yield members


class TestZooKeeperEnsembleConformance(CrossProcessConformance):
    """The suite against a 3-member ensemble: each Store connects to a random member."""

    @pytest.fixture
    def url(self, ensemble: ZooKeeperEnsemble) -> str:
        return f"{ensemble.url}/t{uuid.uuid4().hex}"


def _tls_url(server: ZooKeeperServer, *, certificate: bool = True) -> str:
    """A ``zookeeper://`` URL of the harness's TLS server, with its CA and (unless told
    otherwise) its client certificate."""
    certificates = server.certificates
    assert certificates is not None
    query = f"ca={certificates.ca}"
    if certificate:
        query += f"&cert={certificates.client}&key={certificates.client_key}"
    return f"{server.url}/t{uuid.uuid4().hex}?{query}"


@pytest.fixture
def server() -> Iterator[ZooKeeperServer]:
    """A dedicated standalone server, started; the test may kill, pause or restart it."""
    dedicated = ZooKeeperServer()
    try:
        dedicated.start()
        yield dedicated
    finally:
        dedicated.close()


@pytest.fixture
def chroot_url(zookeeper_server: ZooKeeperServer) -> str:
    return f"{zookeeper_server.url}/t{uuid.uuid4().hex}"


@pytest.fixture
def raw(zookeeper_server: ZooKeeperServer) -> Iterator[KazooClient]:
    """A plain kazoo client of the shared server, as another ZooKeeper application."""
    client = KazooClient(hosts=zookeeper_server.endpoint)
    client.start(timeout=EVENT_TIMEOUT)
    yield client
    client.stop()
    client.close()


def _open(url: str) -> libkv.Store:
    store = libkv.open(url)
    assert isinstance(store.backend, ZooKeeperBackend)
    return store


def _chroot(url: str) -> str:
    return "/" + url.rsplit("/", 1)[1]


def _expire_session(store: libkv.Store, endpoint: str) -> None:
    """End the store's session from outside: a second client with the same session id and
    password closes it, so the server expires it (what a long partition does)."""
    session_id, password = store.backend._client.client_id
    impostor = KazooClient(hosts=endpoint, client_id=(session_id, password))
    impostor.start(timeout=EVENT_TIMEOUT)
    impostor.stop()
    impostor.close()


# -- URL --------------------------------------------------------------------------------


def test_url_with_hosts_credentials_chroot_and_options() -> None:
    store = libkv.open(
        "zookeeper://alice:secret@10.0.0.1,10.0.0.2:2182,[::1]:2183/apps/one"
        "?timeout=2.5&session_timeout=4&prefix=svc"
    )
    try:
        assert isinstance(store.backend, ZooKeeperBackend)
        assert store.backend._hosts == "10.0.0.1:2181,10.0.0.2:2182,[::1]:2183"
        assert store.backend._base == "/apps/one"
        assert store.namespace == "svc"
        assert store.timeout == 2.5
        assert store.backend._path("svc/a/b") == "/apps/one/svc/a/b"
        assert "secret" not in repr(store) and "secret" not in str(store.url)
    finally:
        store.close()


def test_check_interval_sets_the_declared_ttl_slack() -> None:
    with libkv.open("zookeeper://127.0.0.1:2181?check_interval=60") as store:
        assert store.capabilities.ttl_slack == 61.0
        assert store.capabilities.latest_expiry(2.0) == 63.0
    with libkv.open("zookeeper://127.0.0.1:2181") as store:
        assert store.capabilities.ttl_slack == 1.5


@pytest.mark.parametrize(
    "query",
    [
        "bogus=1",
        "check_interval=-1",
        "timeout=0",
        "session_timeout=never",
        "tls=maybe",
        "cert=/nonexistent.pem",  # without key=
        "ca=/nonexistent/ca.pem",
        "tls=false&ca=/etc/hostname",
        "verify=false",  # without TLS
    ],
)
def test_bad_option_raises_invalid_url(query: str) -> None:
    with pytest.raises(libkv.InvalidURLError):
        libkv.open(f"zookeeper://127.0.0.1:2181?{query}")


def test_bad_chroot_raises_invalid_url() -> None:
    with pytest.raises(libkv.InvalidURLError, match="chroot"):
        libkv.open("zookeeper://127.0.0.1:2181/a/../b")


# -- keys, parents and values -------------------------------------------------------------


def test_parents_are_implicit_and_cleaned_up(chroot_url: str, raw: KazooClient) -> None:
    """A parent created for a child is no key; a key with children deleted leaves them
    readable; an explicit b"" (an empty znode with a verbatim record) outlives its
    children; empty implicit parents and the records of deleted keys go away."""
    root = _chroot(chroot_url)
    with libkv.open(chroot_url) as store:
        store.put("a/b/c", b"deep")
        assert raw.exists(f"{root}/a/b") is not None
        assert store.list("") == [store.get("a/b/c")]
        with pytest.raises(libkv.KeyNotFoundError):
            store.get("a/b")
        store.put("a", b"")
        assert raw.get(f"{root}/a")[0] == b""
        record = raw.exists(f"{root}/%libkv/verbatim/a")
        assert record is not None and record.mzxid == raw.exists(f"{root}/a").mzxid
        store.delete("a/b/c")
        assert store.get("a").value == b""
        assert raw.get_children(f"{root}/a") == []  # the implicit a/b went with its child
        store.put("a/x", b"1")
        store.delete("a")
        assert store.get("a/x").value == b"1"
        assert not store.exists("a")
        assert raw.get_children(f"{root}/%libkv/verbatim") == []  # a's record went with it
        store.delete("a/x")
        assert raw.get_children(root) == ["%libkv"]
        store.put_many({f"m/{index}/leaf": b"" for index in range(20)})
        assert len(raw.get_children(f"{root}/%libkv/verbatim")) == 20
        assert store.delete_tree("m") == 20
        assert raw.get_children(root) == ["%libkv"]
        assert raw.get_children(f"{root}/%libkv/verbatim") == []


@pytest.mark.parametrize("child_first", [True, False], ids=["child-first", "parent-first"])
def test_a_transaction_writes_a_key_and_its_descendants_in_either_order(
    chroot_url: str, raw: KazooClient, child_first: bool
) -> None:
    """A key written (create, put, ttl=) in the same transaction as a child or a deeper
    descendant becomes a value with children, in one multi, whatever the order; a key
    deleted with a child written stays the child's implicit parent; an implicit parent
    is no key: create of it succeeds, update and check of it fail and write nothing."""
    root = _chroot(chroot_url)

    def ordered(parent: Op, *descendants: Op) -> list[Op]:
        return [*descendants, parent] if child_first else [parent, *descendants]

    def commit(operations: list[Op]) -> dict[str, libkv.KVPair | None]:
        results = store.transaction(operations)
        written = [pair for pair in results if pair is not None]
        assert len({pair.version for pair in written}) == 1, "not one multi"
        for pair in written:
            assert store.get(pair.key) == pair
        pairs = zip(operations, results, strict=True)
        return {operation.key: result for operation, result in pairs}

    with libkv.open(chroot_url) as store:
        commit(ordered(libkv.ops.create("c", b"1"), libkv.ops.put("c/y", b"2")))
        commit(ordered(libkv.ops.put("p", b"1"), libkv.ops.put("p/y", b"2")))
        commit(ordered(libkv.ops.put("a", b"1"), libkv.ops.put("a/b/c", b"3")))
        with pytest.raises(libkv.KeyNotFoundError):
            store.get("a/b")  # the implicit parent between a and a/b/c
        # A key kept a value with its children when the other side of the transaction
        # comes first: no implicit parent replaces it, no retry loop.
        commit(ordered(libkv.ops.put("c", b"again"), libkv.ops.put("c/z", b"4")))
        assert store.get("c").value == b"again"

        # ttl=: the key is a value under a lease that expires; its child stays.
        ttl = 1.0
        commit(ordered(libkv.ops.create("t", b"1", ttl=ttl), libkv.ops.put("t/y", b"2")))
        assert store.get("t").value == b"1"

        # delete of a childless key with a child written: the key goes, the child stays.
        store.put("d", b"doomed")
        assert commit(ordered(libkv.ops.delete("d"), libkv.ops.put("d/y", b"2")))["d"] is None
        assert not store.exists("d")
        assert raw.get(f"{root}/d")[0] == b""  # the child's implicit parent

        # An implicit parent (of i/j/k) is no key.
        deep = store.put("i/j/k", b"deep")
        for refused in (
            libkv.ops.update("i", b"x", version=deep.version),
            libkv.ops.check("i", deep.version),
        ):
            with pytest.raises(libkv.KeyNotFoundError) as raised:
                store.transaction(ordered(refused, libkv.ops.put("i/y", b"no")))
            assert raised.value.key == "i"
            assert not store.exists("i/y"), "a refused transaction wrote"
        commit(ordered(libkv.ops.create("i/j", b"now a key"), libkv.ops.put("i/j/y", b"5")))
        commit(ordered(libkv.ops.create("i", b"also a key"), libkv.ops.put("i/j/z", b"6")))

        wait_until(
            lambda: not store.exists("t"),
            store.capabilities.latest_expiry(ttl) + EVENT_TIMEOUT,
            message="the ttl= key outlived its ttl",
        )
        assert store.get("t/y").value == b"2"
        assert [(pair.key, pair.value) for pair in store.list("")] == [
            ("a", b"1"),
            ("a/b/c", b"3"),
            ("c", b"again"),
            ("c/y", b"2"),
            ("c/z", b"4"),
            ("d/y", b"2"),
            ("i", b"also a key"),
            ("i/j", b"now a key"),
            ("i/j/k", b"deep"),
            ("i/j/y", b"5"),
            ("i/j/z", b"6"),
            ("p", b"1"),
            ("p/y", b"2"),
            ("t/y", b"2"),
        ]


def test_compare_and_swap_survives_delete_and_recreate(chroot_url: str) -> None:
    """A version is an mzxid: after a delete and re-create that brings the znode back to
    the same data version, an update with the old version still fails."""
    with _open(chroot_url) as store, libkv.open(chroot_url) as other:
        old = store.put("k", b"1")
        data_version = store.backend._client.exists(store.backend._path("k")).version
        other.delete("k")
        other.put("k", b"2")
        while store.backend._client.exists(store.backend._path("k")).version < data_version:
            other.put("k", b"2")
        assert store.backend._client.exists(store.backend._path("k")).version == data_version
        with pytest.raises(libkv.KeyModifiedError):
            store.update("k", b"3", version=old.version)
        with pytest.raises(libkv.KeyModifiedError):
            store.delete("k", version=old.version)
        current = store.get("k")
        assert current.version > old.version
        assert store.update("k", b"3", version=current.version).value == b"3"


def test_request_over_jute_maxbuffer_is_refused_before_sending(chroot_url: str) -> None:
    """Two values that fit alone but not together in one request raise ValueTooLargeError
    before anything is sent: the connection (which the server would drop) stays up."""
    with _open(chroot_url) as store:
        limit = store.capabilities.max_value_size
        assert store.list("") == []
        states: list[str] = []
        store.backend._client.add_listener(states.append)
        with pytest.raises(libkv.ValueTooLargeError):
            store.put_many({"a": b"x" * limit, "b": b"y" * limit})
        assert store.list("") == []
        assert states == [], "the connection was dropped"
        store.put("a", b"x" * limit)
        assert store.get("a").value == b"x" * limit


def test_foreign_znodes(chroot_url: str, raw: KazooClient) -> None:
    """Znodes written by other ZooKeeper clients: data is a value, no data is an implicit
    parent, a name that is no encoded key is invisible, and an ephemeral parent refuses
    children with a KVError."""
    root = _chroot(chroot_url)
    raw.create(f"{root}/foreign/value", b"hello", makepath=True)
    raw.create(f"{root}/foreign/empty")
    raw.create(f"{root}/%41", b"not a key")
    raw.create(f"{root}/ephemeral", b"e", ephemeral=True)
    with libkv.open(chroot_url) as store:
        stat = raw.exists(f"{root}/foreign/value")
        assert store.get("foreign/value") == libkv.KVPair("foreign/value", b"hello", stat.mzxid)
        assert [pair.key for pair in store.list("")] == ["ephemeral", "foreign/value"]
        with pytest.raises(libkv.KVError, match="ephemeral"):
            store.put("ephemeral/child", b"1")
        store.put("foreign/value", b"mine")
        assert raw.get(f"{root}/foreign/value")[0] == b"mine"  # verbatim
        assert store.get("foreign/value").value == b"mine"


def test_values_are_the_znodes_data_verbatim(chroot_url: str, raw: KazooClient) -> None:
    """Every value is its znode's data byte for byte. An empty value, and one that starts
    like a previous layout's value, has a verbatim record with the key's mzxid; a write
    by another client (a new mzxid) leaves the data to speak for itself."""
    root = _chroot(chroot_url)
    values = {
        "text": b"hello",
        "binary": bytes(range(256)),
        "nul": b"\x00",
        "empty": b"",
        "marker": b"\x00k",
        "marker-like": b"\x00kvalue",
        "leased-like": b"\x00l" + bytes(8) + b"value",
        "short-leased-like": b"\x00l12",
    }
    with libkv.open(chroot_url) as store:
        for key, value in values.items():
            written = store.put(key, value)
            assert raw.get(f"{root}/{key}")[0] == value
            assert store.get(key) == written
        assert {pair.key: pair.value for pair in store.list("")} == values
        assert sorted(raw.get_children(f"{root}/%libkv/verbatim")) == [
            "empty",
            "leased-like",
            "marker",
            "marker-like",
        ]
        with store.watch("", recursive=True) as watch:
            init = watch.next_event(timeout=EVENT_TIMEOUT)
            assert init is not None
            assert {pair.key: pair.value for pair in init.snapshot} == values

        # Another client's writes: data that starts like a previous layout's value is
        # read as one; empty data is an implicit parent.
        raw.set(f"{root}/marker-like", b"\x00kvalue")
        raw.set(f"{root}/empty", b"")
        assert store.get("marker-like").value == b"value"
        assert not store.exists("empty")
        # A plain put stores its value natively and leaves no record behind.
        store.put("marker-like", b"plain")
        store.put("empty", b"e")
        assert raw.get(f"{root}/marker-like")[0] == b"plain"
        # Their records are stale now: a delete (and a delete_tree) removes them too.
        assert sorted(raw.get_children(f"{root}/%libkv/verbatim")) == [
            "empty",
            "leased-like",
            "marker",
            "marker-like",
        ]
        store.delete("leased-like")
        assert store.delete_tree("") == len(values) - 1
        assert raw.get_children(f"{root}/%libkv/verbatim") == []


def _multi(client: KazooClient, *operations: protocol.WriteOp) -> list[object]:
    """Send one multi over a raw kazoo client; every op must succeed."""
    result = client.handler.async_result()
    client._call(protocol.Multi(list(operations)), result)
    results: list[object] = result.get(timeout=EVENT_TIMEOUT)
    assert not any(isinstance(outcome, int) for outcome in results), results
    return results


def test_a_tree_of_the_previous_layout_stays_readable(chroot_url: str, raw: KazooClient) -> None:
    """A tree written as the previous layout wrote it (every value behind a marker,
    \\0k or \\0l plus its lease id, implicit parents without data, no records)
    reads without the markers; the next write stores a value natively; a key under an
    expired lease of that layout is still deleted with its lease."""
    root = _chroot(chroot_url)
    acl = protocol.OPEN_ACL_UNSAFE
    lease_id = 0x1234ABCD
    lease_name = f"{lease_id:016x}"
    # Exactly what the previous layout's multis made: parents first, values marked.
    raw.create(f"{root}/plain", b"\x00kold value", makepath=True)
    raw.create(f"{root}/empty", b"\x00k")
    raw.create(f"{root}/marked", b"\x00k\x00kinner")
    raw.create(f"{root}/parent/child", b"\x00kchild", makepath=True)
    raw.create(f"{root}/%libkv/attached/{lease_name}", b"", makepath=True)
    raw.create(f"{root}/%libkv/leases")
    _multi(
        raw,
        protocol.CreateTTL(f"{root}/%libkv/leases/{lease_name}", b"", acl, 1000),
        protocol.Create(f"{root}/leased", b"", acl),
        protocol.SetData(f"{root}/leased", b"\x00l" + lease_id.to_bytes(8, "big") + b"lv", 0),
        protocol.Create(f"{root}/%libkv/attached/{lease_name}/leased", b"", acl),
    )
    # A rewrite under the same lease was a setData alone: only the data names the lease.
    raw.set(f"{root}/leased", b"\x00l" + lease_id.to_bytes(8, "big") + b"lv")
    written = time.monotonic()
    with libkv.open(chroot_url) as store:
        expected = {
            "empty": b"",
            "leased": b"lv",
            "marked": b"\x00kinner",
            "parent/child": b"child",
            "plain": b"old value",
        }
        listed = store.list("")
        assert {pair.key: pair.value for pair in listed} == expected
        assert store.get_many(list(expected)) == listed
        for pair in listed:
            assert store.get(pair.key) == pair
        assert not store.exists("parent")
        with store.watch("", recursive=True) as watch:
            init = watch.next_event(timeout=EVENT_TIMEOUT)
            assert init is not None
            assert {pair.key: pair.value for pair in init.snapshot} == expected
        # The lease of the previous layout expires: its key goes (ttl 1 s).
        wait_until(
            lambda: not store.exists("leased"),
            store.capabilities.latest_expiry(1.0) + EVENT_TIMEOUT,
            message="a key of an expired lease of the previous layout outlived it",
        )
        assert time.monotonic() - written >= 1.0
        # The next write stores the value natively.
        current = store.get("plain")
        store.update("plain", b"new value", version=current.version)
        store.put("empty", b"")
        store.put("marked", b"\x00kinner")
        store.put("parent/child", b"child")
        assert raw.get(f"{root}/plain")[0] == b"new value"
        assert raw.get(f"{root}/empty")[0] == b""
        assert raw.get(f"{root}/marked")[0] == b"\x00kinner"
        assert raw.get(f"{root}/parent/child")[0] == b"child"
        assert {pair.key: pair.value for pair in store.list("")} == {
            "empty": b"",
            "marked": b"\x00kinner",
            "parent/child": b"child",
            "plain": b"new value",
        }
        store.delete("parent/child")
        assert raw.exists(f"{root}/parent") is None  # the old implicit parent went too


def test_keys_zookeeper_refuses_are_encoded(chroot_url: str, raw: KazooClient) -> None:
    with libkv.open(chroot_url) as store:
        store.put("emoji😀/100%", b"1")
        assert raw.get_children(_chroot(chroot_url) + "/emoji%F0%9F%98%80") == ["100%25"]
        assert [pair.key for pair in store.list("")] == ["emoji😀/100%"]


@pytest.mark.parametrize("key", [*UNUSUAL_VALID_KEYS, "%", "%25", "a%2Fb", "\ue000", "\ufff0"])
def test_key_segments_round_trip_through_znode_names(key: str) -> None:
    for segment in key.split("/"):
        name = encode_segment(segment)
        assert decode_segment(name) == segment
        assert "/" not in name and "%2F" not in name  # so flatten() can be undone


@pytest.mark.parametrize("name", ["%libkv", "%41", "%zz", "%", "a%2", "\ue000"])
def test_names_that_are_no_encoded_key_are_not_keys(name: str) -> None:
    assert decode_segment(name) is None


def test_snapshots_read_in_several_requests_are_consistent(
    chroot_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subtree too large for one multiRead is read in chunks and accepted only when a
    second pass finds nothing changed: snapshots taken under concurrent batches still
    show every key of a batch at one generation. (The batches come every 10 ms: a
    writer that never pauses can starve a chunked read until its timeout, when it
    raises KVError, as the plugin README says.)"""
    monkeypatch.setattr(connection, "READ_LIMIT", 200)  # a few paths per request
    keys = [f"batch/{index}" for index in range(12)]
    with libkv.open(chroot_url) as store, libkv.open(chroot_url) as writer:
        store.put_many({key: b"0" for key in keys})
        stop = threading.Event()

        def write_generations() -> None:
            generation = 0
            while not stop.is_set():
                generation += 1
                writer.put_many({key: str(generation).encode() for key in keys})
                stop.wait(0.01)  # the pace of the batches, not a wait for a condition

        thread = threading.Thread(target=write_generations, daemon=True)
        thread.start()
        try:
            for _ in range(5):
                snapshot = store.list("batch")
                assert [pair.key for pair in snapshot] == sorted(keys)
                assert len({pair.value for pair in snapshot}) == 1
        finally:
            stop.set()
            thread.join(EVENT_TIMEOUT)


def test_lease_bookkeeping_lives_outside_the_keys(chroot_url: str, raw: KazooClient) -> None:
    with libkv.open(chroot_url) as store:
        lease = store.lease(5.0)
        store.put("svc", b"1", lease=lease)
        assert raw.get_children(_chroot(chroot_url) + "/%libkv") == ["attached", "leases"]
        assert [pair.key for pair in store.list("")] == ["svc"]
        lease.revoke()
        assert store.list("") == []
        assert raw.get_children(_chroot(chroot_url) + "/%libkv/attached") == []


# -- errors and faults ------------------------------------------------------------------------


def _assert_refused(store: libkv.Store, *passwords: str) -> None:
    """A read, a write and a list of "private" raise AuthenticationError, and none of
    ``passwords`` shows in the error, its repr, the store's repr or its URL."""
    for call in (
        lambda: store.get("private"),
        lambda: store.put("private", b"2"),
        lambda: store.list(""),
    ):
        with pytest.raises(libkv.AuthenticationError) as caught:
            call()
        shown = f"{caught.value} {caught.value!r} {store!r} {store.url}"
        assert not any(password in shown for password in passwords), shown


def test_digest_auth_wrong_password_is_refused(chroot_url: str) -> None:
    """Nodes written with credentials are readable only with them; a wrong password raises
    AuthenticationError, and no password appears in any message."""
    host = chroot_url.split("//", 1)[1]
    with libkv.open(f"zookeeper://alice:s3cret@{host}") as owner:
        owner.put("private", b"1")
    with libkv.open(f"zookeeper://alice:wr0ng@{host}?timeout=3") as intruder:
        _assert_refused(intruder, "wr0ng", "s3cret")
    with libkv.open(f"zookeeper://alice:s3cret@{host}") as owner:
        assert owner.get("private").value == b"1"


def _round_trip(url: str) -> None:
    """put, get, a watch's event, a lease's key and a lock, through one URL."""
    with libkv.open(url) as store:
        with store.watch("", recursive=True) as watch:
            init = watch.next_event(EVENT_TIMEOUT)
            assert init is not None and init.action is libkv.Action.INIT
            written = store.put("k", b"v")
            event = watch.next_event(EVENT_TIMEOUT)
            assert event is not None and event.pair == written
        assert store.get("k") == written
        with store.lease(2.0) as lease:
            store.put("leased", b"1", lease=lease)
            with store.lock("lock", ttl=2.0) as lock:
                assert lock.token is not None
        assert not store.exists("leased")


def test_tls_with_a_client_certificate_round_trip(zookeeper_tls_server: ZooKeeperServer) -> None:
    _round_trip(_tls_url(zookeeper_tls_server))


def test_tls_without_a_client_certificate_is_not_reachable(
    zookeeper_tls_server: ZooKeeperServer,
) -> None:
    """The server requires a client certificate: the handshake fails, NotReachableError
    within the timeout."""
    with libkv.open(_tls_url(zookeeper_tls_server, certificate=False) + "&timeout=2") as stranger:
        started = time.monotonic()
        with pytest.raises(libkv.NotReachableError):
            stranger.get("k")
        assert time.monotonic() - started < 2 + 1


def test_digest_auth_round_trip(zookeeper_auth_server: ZooKeeperServer) -> None:
    _round_trip(f"{zookeeper_auth_server.credentials_url}/t{uuid.uuid4().hex}")


def test_enforced_auth_refuses_anonymous_and_wrong_passwords(
    zookeeper_auth_server: ZooKeeperServer,
) -> None:
    """On a server that requires digest auth, with the chroot readable by one user only:
    no credentials or a wrong password raise AuthenticationError, and no password
    appears in any message or repr."""
    server = zookeeper_auth_server
    url = f"{server.credentials_url}/t{uuid.uuid4().hex}"
    with libkv.open(url) as owner:
        owner.put("private", b"1")
    target = url.split("@", 1)[1]
    anonymous_url = f"zookeeper://{target}?timeout=2"
    intruder_url = f"zookeeper://{server.username}:wr0ngpass@{target}?timeout=2"
    for attempt in (anonymous_url, intruder_url):
        with libkv.open(attempt) as stranger:
            _assert_refused(stranger, "wr0ngpass", server.password)
    with libkv.open(url) as owner:
        assert owner.get("private").value == b"1"


def test_unreachable_server_raises_not_reachable_within_the_timeout(
    server: ZooKeeperServer,
) -> None:
    with libkv.open(f"{server.url}/t?timeout=2") as store:
        store.put("k", b"1")
        with store.watch("", recursive=True) as watch:
            assert watch.next_event(EVENT_TIMEOUT) is not None
            server.kill()
            started = time.monotonic()
            with pytest.raises(libkv.NotReachableError):
                store.get("k")
            assert time.monotonic() - started < 2 + 1
            with pytest.raises(libkv.NotReachableError):
                while time.monotonic() - started < 10:
                    watch.next_event(0.5)
            assert time.monotonic() - started < 2 + 3


def test_write_to_a_frozen_server_raises_unknown_outcome(server: ZooKeeperServer) -> None:
    with libkv.open(f"{server.url}/t?timeout=1") as store:
        store.put("k", b"1")
        server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(libkv.UnknownOutcomeError):
                store.put("k", b"2")
            assert time.monotonic() - started < 1 + 1
            with pytest.raises(libkv.NotReachableError) as caught:
                store.get("k")
            assert not isinstance(caught.value, libkv.UnknownOutcomeError)
        finally:
            server.resume()
        wait_until(lambda: store.get("k").value in (b"1", b"2"), EVENT_TIMEOUT)


def test_close_does_not_wait_for_a_frozen_server(server: ZooKeeperServer) -> None:
    store = libkv.open(f"{server.url}/t?timeout=1")
    store.put("k", b"1")
    watch = store.watch("", recursive=True)
    assert watch.next_event(EVENT_TIMEOUT) is not None
    server.pause()
    try:
        with pytest.raises(libkv.NotReachableError):
            store.get("k")
        started = time.monotonic()
        store.close()
        assert time.monotonic() - started < 2.0
        assert watch.closed
        with pytest.raises(libkv.StoreClosedError):
            store.get("k")
    finally:
        server.resume()


def _write_while_watching(store: libkv.Store, fault: Callable[[], object]) -> None:
    """Write continuously through a fault with a recursive watch open: writes fail only
    with NotReachableError (UnknownOutcomeError included), resume afterwards, and the
    watch converges to list() without raising."""
    stop = threading.Event()
    written: list[int] = []
    failures: list[BaseException] = []

    def write() -> None:
        index = 0
        while not stop.is_set():
            index += 1
            try:
                store.put(f"during/{index % 50}", str(index).encode())
            except libkv.NotReachableError as error:
                failures.append(error)
                continue
            written.append(index)

    with (
        store.watch("", recursive=True) as watch,
        WatchRecorder(watch) as recorder,
    ):
        init = wait_until(lambda: recorder.events, EVENT_TIMEOUT)[0]
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        try:
            wait_until(lambda: len(written) >= 20, EVENT_TIMEOUT)
            fault()
            after = len(written)
            wait_until(lambda: len(written) >= after + 20, 3 * EVENT_TIMEOUT)
        finally:
            stop.set()
            writer.join(2 * EVENT_TIMEOUT)
        assert not writer.is_alive(), "a write hung"
        store.delete("during/1")
        wait_until(
            lambda: replay(init, recorder.events[1:]) == {pair.key: pair for pair in store.list()},
            3 * EVENT_TIMEOUT,
            message=lambda: f"watch error {recorder.error!r}",
        )
        assert recorder.error is None


def test_session_expiry_during_writes(server: ZooKeeperServer) -> None:
    """An expired session is replaced; the watch re-reads and converges; a held lock and a
    lease are not tied to the session and stay held."""
    with libkv.open(f"{server.url}/t") as store:
        assert isinstance(store.backend, ZooKeeperBackend)
        lease = store.lease(2.0)
        store.put("leased", b"1", lease=lease)
        lock = store.lock("lock", ttl=2.0)
        assert lock.acquire(timeout=EVENT_TIMEOUT)
        session = store.backend._client.client_id
        _write_while_watching(store, lambda: _expire_session(store, server.endpoint))
        assert store.backend._client.client_id != session
        assert not lease.lost.is_set() and not lock.lost.is_set()
        assert store.get("leased").value == b"1"
        lock.release()


def test_crash_and_restart_during_writes(server: ZooKeeperServer) -> None:
    """The server is killed and started again while a writer writes and a watch is open:
    the watch converges; a lease and a lock with a ttl longer than the outage are kept."""
    with libkv.open(f"{server.url}/t") as store:
        lease = store.lease(30.0)
        store.put("leased", b"1", lease=lease)
        lock = store.lock("lock", ttl=30.0)
        assert lock.acquire(timeout=EVENT_TIMEOUT)

        def crash() -> None:
            server.kill()
            server.start()

        _write_while_watching(store, crash)
        assert not lease.lost.is_set() and not lock.lost.is_set()
        assert store.get("leased").value == b"1"
        lock.release()
        lease.revoke()
        assert not store.exists("leased")


def test_restart_whose_first_handshake_goes_unanswered(server: ZooKeeperServer) -> None:
    """A server that is starting can take a connection and never answer its handshake
    (seen under load: kazoo then waited a whole session timeout on that attempt, and the
    restarted server expired the session meanwhile). Here a listener that accepts and stays
    silent holds the port until a reconnection attempt is caught in it: the driver gives
    that attempt up and reaches the server once it is back, and the watch converges
    without raising (it would after the store's timeout of unreachability)."""
    host, port = server.endpoint.rsplit(":", 1)
    silent_connections: list[socket.socket] = []
    with libkv.open(f"{server.url}/t") as store:
        assert isinstance(store.backend, ZooKeeperBackend)
        sessions = []

        def crash_into_a_silent_listener() -> None:
            sessions.append(store.backend._client.client_id)
            server.kill()
            with socket.socket() as listener:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((host, int(port)))
                listener.listen()
                listener.settimeout(EVENT_TIMEOUT)
                connection, _ = listener.accept()  # kazoo's handshake, left unanswered
                silent_connections.append(connection)
            server.start()

        try:
            _write_while_watching(store, crash_into_a_silent_listener)
        finally:
            for connection in silent_connections:
                connection.close()
        assert silent_connections, "no reconnection attempt reached the silent listener"
        assert store.backend._client.client_id == sessions[0]  # back before the session expired


def test_lease_and_lock_are_lost_when_the_server_is_gone_past_their_ttl(
    server: ZooKeeperServer,
) -> None:
    with libkv.open(f"{server.url}/t?timeout=2") as store:
        lease = store.lease(1.0)
        lock = store.lock("lock", ttl=1.0)
        assert lock.acquire(timeout=EVENT_TIMEOUT)
        server.kill()
        wait_until(lambda: lease.lost.is_set() and lock.lost.is_set(), 1.0 + LOST_MARGIN + 1)
        server.start()
        wait_until(lambda: _gone(store, "lock"), EVENT_TIMEOUT + store.capabilities.ttl_slack)


def test_lease_and_lock_are_lost_when_another_client_deletes_their_lease_znodes(
    chroot_url: str, raw: KazooClient
) -> None:
    """Ownership ends when the lease znode goes, whoever removes it: the next keep-alive
    finds it gone and the lease and the lock report lost (within ttl + slack + margin),
    and the lock's key goes with its lease, so another client can take the lock."""
    with libkv.open(chroot_url) as store, libkv.open(chroot_url) as other:
        lease = store.lease(3.0)
        store.put("leased", b"1", lease=lease)
        lock = store.lock("lock", ttl=3.0)
        assert lock.acquire(timeout=EVENT_TIMEOUT)
        leases = _chroot(chroot_url) + "/%libkv/leases"
        names = raw.get_children(leases)
        assert len(names) == 2
        deleted = time.monotonic()
        for name in names:
            raw.delete(f"{leases}/{name}")
        bound = 3.0 + store.capabilities.ttl_slack + LOST_MARGIN
        wait_until(lambda: lease.lost.is_set() and lock.lost.is_set(), bound)
        assert time.monotonic() - deleted <= bound
        wait_until(lambda: not other.exists("leased") and not other.exists("lock"), bound)
        assert other.lock("lock", ttl=3.0).acquire(timeout=EVENT_TIMEOUT)


def _gone(store: libkv.Store, key: str) -> bool:
    try:
        return not store.exists(key)
    except libkv.NotReachableError:
        return False


class TestZooKeeperEnsemble:
    """Against a 3-member ensemble (slow to start: one ensemble per test)."""

    def test_killing_the_connected_member_leaves_the_store_working(
        self, zookeeper_ensemble: ZooKeeperEnsemble
    ) -> None:
        with libkv.open(f"{zookeeper_ensemble.url}/t") as store:
            assert isinstance(store.backend, ZooKeeperBackend)
            store.put("k", b"1")
            connected = store.backend.endpoint
            member = next(m for m in zookeeper_ensemble.members if m.endpoint == connected)
            _write_while_watching(store, member.kill)
            assert store.backend.endpoint != connected
            assert store.get("k").value == b"1"
            with store.lease(2.0) as lease:
                store.put("leased", b"1", lease=lease)
                with store.lock("lock", ttl=2.0):
                    assert store.get("lock").value == b""
            assert not store.exists("leased")


# -- libkv.aio: the native async backend ---------------------------------------------------


def test_the_async_store_is_native_and_adds_no_thread_per_call_watch_or_lease(
    chroot_url: str,
) -> None:
    """libkv.aio runs on kazoo's asynchronous requests: once the session is up (kazoo's
    own threads), calls, watches, leases and the reaper start no thread."""
    libkv.aio.load("zookeeper")

    async def scenario() -> None:
        async with libkv.aio.open(chroot_url) as store:
            assert store.capabilities.native_async is True
            assert isinstance(store.backend, AsyncZooKeeperBackend)
            await store.put("warm", b"up")  # the session and kazoo's threads exist now
            threads = set(threading.enumerate())
            watches = [store.watch(f"w{index}", recursive=True) for index in range(10)]
            for watch in watches:
                init = await watch.next_event(EVENT_TIMEOUT)
                assert init is not None and init.action is Action.INIT
            leases = [await store.lease(1) for _ in range(5)]
            for index, lease in enumerate(leases):
                written = await store.put(f"w{index}/k", b"v", lease=lease)
                event = await watches[index].next_event(EVENT_TIMEOUT)
                assert event is not None and event.pair == written
            await asyncio.gather(*(store.get("warm") for _ in range(50)))
            await asyncio.sleep(0.6)  # the reaper and keep-alives run meanwhile
            assert not any(lease.lost.is_set() for lease in leases)
            started = set(threading.enumerate()) - threads
            assert not started, sorted(thread.name for thread in started)
            for lease in leases:
                await lease.revoke()
            for watch in watches:
                await watch.close()

    asyncio.run(scenario())


def test_an_async_grant_cancelled_after_it_was_sent_leaves_no_lease(
    server: ZooKeeperServer,
) -> None:
    """A lease grant cancelled while the frozen server holds its request is revoked
    once the server has granted it: no lease znode is left."""
    chroot = f"/t{uuid.uuid4().hex}"
    libkv.aio.load("zookeeper")

    async def scenario() -> None:
        async with libkv.aio.open(f"{server.url}{chroot}") as store:
            await (await store.lease(5)).revoke()  # the bookkeeping znodes exist now
            await server.cancel_while_paused(store.lease(5), sent=0.3)
            raw = KazooClient(hosts=server.endpoint)
            raw.start(timeout=EVENT_TIMEOUT)
            try:
                leases = f"{chroot}/%libkv/leases"
                deadline = time.monotonic() + EVENT_TIMEOUT
                # Granted once the server answers (within a second of its resuming),
                # then revoked by a clean-up task of this loop.
                await asyncio.sleep(1.0)
                while raw.get_children(leases) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert raw.get_children(leases) == []
            finally:
                raw.stop()
                raw.close()

    asyncio.run(scenario())
