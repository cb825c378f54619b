"""The Consul driver against a real Consul agent: the conformance suite plus driver specifics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from libkv_consul import ConsulBackend
from libkv_consul._async.driver import AsyncConsulBackend

import libkv
import libkv.aio
from integration.servers import ConsulServer, free_port, http_request
from libkv import Action, ops
from libkv.testing import CrossProcessConformance
from libkv.testing.faults import NOT_REACHABLE_MARGIN
from libkv.testing.history import WatchRecorder, replay
from libkv.testing.polling import async_wait_until, wait_until


def consul_url(server: ConsulServer) -> str:
    """A fresh namespace on ``server`` (whose session_ttl_min is 1 s)."""
    return f"{server.url}/t{uuid.uuid4().hex}?session_ttl_min=1"


class TestConsul(CrossProcessConformance):
    @pytest.fixture
    def url(self, consul_server: ConsulServer) -> str:
        return consul_url(consul_server)


@pytest.fixture
def dedicated_consul() -> Iterator[ConsulServer]:
    """A Consul agent of this test's own, free to be stopped, paused and restarted."""
    with ConsulServer() as server:
        yield server


def raw(server: ConsulServer, method: str, path: str, data: bytes | None = None) -> Any:
    """Consul's HTTP API directly (not through libkv): the JSON answer, or None."""
    status, body = http_request(method, f"{server.http_address}{path}", data)
    assert status == 200, (status, body)
    return json.loads(body) if body else None


# -- URLs -------------------------------------------------------------------------------


def test_url_with_several_hosts_token_prefix_and_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-the-environment")
    url = "consul://s3cr3t-token@10.0.0.1,10.0.0.2:8600/apps/one?timeout=2.5&dc=east"
    with libkv.open(url + "&consistency=stale&session_ttl_min=2") as store:
        assert isinstance(store.backend, ConsulBackend)
        assert store.backend.client.addresses == [("10.0.0.1", 8500), ("10.0.0.2", 8600)]
        assert store.backend.endpoint == "10.0.0.1:8500"
        assert store.namespace == "apps/one"
        assert store.timeout == 2.5
        assert store.capabilities.ttl_min == 4.0
        assert store.backend.client._headers == {"X-Consul-Token": "s3cr3t-token"}
        assert store.backend.client.url_of("/v1/kv/a", ["stale"]) == "/v1/kv/a?stale&dc=east"
        for shown in (repr(store), str(store.url), store.url.render()):
            assert "s3cr3t-token" not in shown
    with libkv.open("consul://127.0.0.1:8500") as store:
        assert isinstance(store.backend, ConsulBackend)
        assert store.backend.client._headers == {}  # the environment's token is never read
    with libkv.open("consul://:an%40other@127.0.0.1") as store:  # the password form
        assert isinstance(store.backend, ConsulBackend)
        assert store.backend.client._headers == {"X-Consul-Token": "an@other"}
        assert "an@other" not in repr(store) and "an%40other" not in repr(store)


def test_defaults_and_prefix_option() -> None:
    with libkv.open("consul://?prefix=p/q") as store:
        assert isinstance(store.backend, ConsulBackend)
        assert store.backend.endpoint == "127.0.0.1:8500"
        assert store.namespace == "p/q"
        assert store.capabilities.ttl_min == 20.0  # Consul's default session_ttl_min, twice
        assert store.backend._read_query == ("consistent",)
    with libkv.open("consuls://[::1]") as store:
        assert isinstance(store.backend, ConsulBackend)
        assert store.backend.client.addresses == [("::1", 8501)]


@pytest.mark.parametrize(
    "url",
    [
        "consul://127.0.0.1?bogus=1",
        "consul://127.0.0.1?timeout=0",
        "consul://127.0.0.1?consistency=linearizable",
        "consul://127.0.0.1?session_ttl_min=soon",
        "consul://127.0.0.1?session_ttl_min=100000",
        "consul://127.0.0.1?ca=/etc/hostname",  # TLS options only on consuls://
        "consul://user:token@127.0.0.1",
        "consuls://127.0.0.1?cert=/etc/hostname",  # without key=
        "consuls://127.0.0.1?ca=/nonexistent/ca.pem",
    ],
)
@pytest.mark.usefixtures("both_flavours")
def test_bad_url_raises_invalid_url(url: str) -> None:
    with pytest.raises(libkv.InvalidURLError):
        libkv.open(url)


# -- keys, values, versions -------------------------------------------------------------


@pytest.mark.usefixtures("both_flavours")
def test_empty_value_round_trips(consul_server: ConsulServer) -> None:
    """Consul answers null for an empty value: it still reads back as b"", not missing."""
    with libkv.open(consul_url(consul_server)) as store:
        assert store.put("e", b"").value == b""
        assert store.get("e").value == b""
        assert store.exists("e")
        assert store.list() == [store.get("e")]
        assert store.get_many(["e", "missing"]) == [store.get("e")]
        with store.watch("", recursive=True) as watch:
            init = watch.next_event(5)
            assert init is not None and init.snapshot == (store.get("e"),)
            store.put("f", "")
            event = watch.next_event(5)
            assert event is not None and event.pair is not None and event.pair.value == b""


ODD_KEYS = [
    "with space/a b",
    "percent/100%",
    "percent/%2F%00",
    "query/what?x=1&y=2",
    "hash/#fragment",
    "unicode/ünï/日本/🙂",
    "backslash/a\\b",
    "plus/a+b",
    "tilde/~x",
    "quote/\"'`",
    "semicolon/a;b=c",
]


@pytest.mark.usefixtures("both_flavours")
def test_every_valid_key_round_trips(consul_server: ConsulServer) -> None:
    with libkv.open(consul_url(consul_server)) as store:
        pairs = [store.put(key, key) for key in ODD_KEYS]
        for key, pair in zip(ODD_KEYS, pairs, strict=True):
            assert store.get(key) == pair
            assert pair.key == key and pair.value == key.encode()
        assert [pair.key for pair in store.list()] == sorted(ODD_KEYS)
        assert list(store.keys("percent/*")) == ["percent/%2F%00", "percent/100%"]
        assert store.list("percent/100%") == [store.get("percent/100%")]
        with store.watch("hash/#fragment") as watch:
            init = watch.next_event(5)
            assert init is not None and init.pair == store.get("hash/#fragment")
        store.delete("query/what?x=1&y=2", version=store.get("query/what?x=1&y=2").version)
        assert store.delete_tree("unicode/ünï") == 1
        assert len(store.list()) == len(ODD_KEYS) - 2


@pytest.mark.usefixtures("both_flavours")
def test_namespace_join_keeps_single_slashes(consul_server: ConsulServer) -> None:
    """The namespace and the key are joined with one "/" (Consul collapses "//")."""
    namespace = f"t{uuid.uuid4().hex}"
    with libkv.open(f"{consul_server.url}/{namespace}/") as store:
        store.put("/a/b/", b"1")
        assert [
            entry["Key"] for entry in raw(consul_server, "GET", f"/v1/kv/{namespace}?recurse")
        ] == [f"{namespace}/a/b"]


@pytest.mark.usefixtures("both_flavours")
def test_versions_are_modify_indexes_and_grow_across_delete_and_recreate(
    consul_server: ConsulServer,
) -> None:
    with libkv.open(consul_url(consul_server)) as store:
        first = store.put("k", b"1")
        (entry,) = raw(consul_server, "GET", f"/v1/kv/{store.namespace}/k")
        assert entry["ModifyIndex"] == first.version
        store.delete("k")
        again = store.create("k", b"1")
        assert again.version > first.version


@pytest.mark.usefixtures("both_flavours")
def test_writing_an_identical_value_is_a_new_version_and_an_event(
    consul_server: ConsulServer,
) -> None:
    """Consul ignores a plain write of an identical value; libkv's writes are never no-ops."""
    with libkv.open(consul_url(consul_server)) as store:
        first = store.put("k", b"same")
        with store.watch("k") as watch:
            assert watch.next_event(5) is not None  # INIT
            second = store.put("k", b"same")
            third = store.update("k", b"same", version=second.version)
            assert first.version < second.version < third.version
            seen = [watch.next_event(5) for _ in range(2)]
            events = [event for event in seen if event is not None]
            # Intermediate states may merge (watch_every_change is False), never stall:
            assert events and events[-1].pair == third
            assert all(event.action is Action.UPDATE for event in events)


@pytest.mark.usefixtures("both_flavours")
def test_versioned_delete_of_a_missing_key_raises_key_not_found(
    consul_server: ConsulServer,
) -> None:
    """Consul's own delete?cas= answers true for a missing key; libkv's does not."""
    with libkv.open(consul_url(consul_server)) as store:
        pair = store.put("k", b"1")
        store.delete("k")
        with pytest.raises(libkv.KeyNotFoundError):
            store.delete("k", version=pair.version)
        with pytest.raises(libkv.KeyNotFoundError) as raised:
            store.transaction([ops.put("other", b"x"), ops.delete("k", version=pair.version)])
        assert raised.value.index == 1
        assert store.list() == []


# -- transactions -----------------------------------------------------------------------


@pytest.mark.usefixtures("both_flavours")
def test_largest_transaction_of_updates_fits_consuls_128_ops(consul_server: ConsulServer) -> None:
    """An update is three Consul ops; max_transaction_ops of them still fit in one txn."""
    with libkv.open(consul_url(consul_server)) as store:
        limit = store.capabilities.max_transaction_ops
        assert limit * 3 <= 128
        pairs = store.put_many({f"u/{index}": b"0" for index in range(limit)})
        updated = store.transaction(ops.update(pair.key, b"1", pair.version) for pair in pairs)
        assert len({pair.version for pair in updated if pair is not None}) == 1
        assert [pair.value for pair in store.list("u")] == [b"1"] * limit


@pytest.mark.usefixtures("both_flavours")
def test_transaction_over_the_request_size_limit_is_refused_before_sending(
    consul_server: ConsulServer,
) -> None:
    """txn_max_req_len (512 KiB) bounds the whole request: checked before anything is sent."""
    with libkv.open(consul_url(consul_server)) as store:
        value = b"x" * (store.capabilities.max_value_size // 2)
        assert store.put("big", value * 2).value == value * 2  # one value of the maximum size
        with pytest.raises(libkv.ValueTooLargeError) as raised:
            store.put_many({"a": value, "b": value, "c": value})
        assert isinstance(raised.value, ValueError)
        assert [pair.key for pair in store.list()] == ["big"]


@pytest.mark.usefixtures("both_flavours")
def test_failed_transaction_names_the_first_failing_op(consul_server: ConsulServer) -> None:
    with libkv.open(consul_url(consul_server)) as store:
        a = store.put("a", b"1")
        store.put("b", b"1")
        cases: list[tuple[list[ops.Op], type[Exception], int]] = [
            (
                [ops.put("x", b"1"), ops.update("a", b"2", a.version + 1000)],
                libkv.KeyModifiedError,
                1,
            ),
            ([ops.check("a", a.version), ops.create("b", b"2")], libkv.KeyExistsError, 1),
            ([ops.delete("missing"), ops.check("a", 0)], libkv.KeyNotFoundError, 0),
            ([ops.update("missing", b"1", 5)], libkv.KeyNotFoundError, 0),
        ]
        for transaction, error_type, index in cases:
            with pytest.raises(error_type) as raised:
                store.transaction(transaction)
            assert getattr(raised.value, "index", None) == index
        assert [pair.key for pair in store.list()] == ["a", "b"]


# -- sessions, leases, locks ------------------------------------------------------------


@pytest.mark.usefixtures("both_flavours")
def test_bookkeeping_sessions_never_appear_in_the_keyspace(consul_server: ConsulServer) -> None:
    with libkv.open(consul_url(consul_server)) as store:
        with store.lease(store.capabilities.ttl_min) as lease:
            store.put("svc", b"up", lease=lease)
            store.put("ttl", b"1", ttl=store.capabilities.ttl_min)
            (entry,) = raw(consul_server, "GET", f"/v1/kv/{store.namespace}/svc")
            assert entry["Session"] == str(uuid.UUID(int=lease.id))
            assert [pair.key for pair in store.list()] == ["svc", "ttl"]
        assert [pair.key for pair in store.list()] == ["ttl"]


@pytest.mark.usefixtures("both_flavours")
def test_plain_write_drops_the_session_of_a_ttl_write(consul_server: ConsulServer) -> None:
    with libkv.open(consul_url(consul_server)) as store:
        store.put("k", b"1", ttl=store.capabilities.ttl_min)
        store.put("k", b"2")
        (entry,) = raw(consul_server, "GET", f"/v1/kv/{store.namespace}/k")
        assert "Session" not in entry or not entry["Session"]


@pytest.mark.usefixtures("both_flavours")
def test_lock_reports_lost_when_its_session_is_destroyed(consul_server: ConsulServer) -> None:
    with libkv.open(consul_url(consul_server)) as store, libkv.open(consul_url(consul_server)) as _:
        ttl = 3.0
        lock = store.lock("locks/x", ttl=ttl, value=b"mine")
        assert lock.acquire(timeout=5)
        (entry,) = raw(consul_server, "GET", f"/v1/kv/{store.namespace}/locks/x")
        raw(consul_server, "PUT", f"/v1/session/destroy/{entry['Session']}")
        # behavior=delete: the key went with the session, at once.
        assert not store.exists("locks/x")
        # The next keep-alive (every ttl/3) finds the session gone.
        wait_until(lock.lost.is_set, ttl / 3 + 2.0, message="lost not set")
        with pytest.raises(libkv.LockError):
            lock.release()


@pytest.mark.usefixtures("both_flavours")
def test_lease_ttl_is_a_session_of_half_the_ttl(consul_server: ConsulServer) -> None:
    """Consul invalidates a session 2 x its TTL after the last renewal."""
    with libkv.open(consul_url(consul_server)) as store:
        lease = store.lease(3.0)
        (info,) = raw(consul_server, "GET", f"/v1/session/info/{uuid.UUID(int=lease.id)}")
        assert info["TTL"] == "1500ms"
        assert info["Behavior"] == "delete" and info["LockDelay"] == 0
        assert info["NodeChecks"] == []
        lease.revoke()
        assert raw(consul_server, "GET", f"/v1/session/info/{uuid.UUID(int=lease.id)}") == []


# -- errors -----------------------------------------------------------------------------


@pytest.mark.usefixtures("both_flavours")
def test_nothing_listens_raises_not_reachable_within_the_timeout() -> None:
    with libkv.open(f"consul://127.0.0.1:{free_port()}?timeout=0.5") as store:
        started = time.monotonic()
        with pytest.raises(libkv.NotReachableError) as raised:
            store.get("k")
        assert not isinstance(raised.value, libkv.UnknownOutcomeError)
        with pytest.raises(libkv.NotReachableError) as raised:
            store.put("k", b"v")  # never sent: the connection was refused
        assert not isinstance(raised.value, libkv.UnknownOutcomeError)
        assert time.monotonic() - started < 0.5 * 2 + 1.0


@pytest.mark.usefixtures("both_flavours")
def test_paused_agent_reads_not_reachable_writes_unknown_outcome(
    dedicated_consul: ConsulServer,
) -> None:
    with libkv.open(f"{consul_url(dedicated_consul)}&timeout=1") as store:
        store.put("k", b"v")
        dedicated_consul.pause()
        try:
            started = time.monotonic()
            with pytest.raises(libkv.UnknownOutcomeError):
                store.put("k", b"w")  # sent, and no answer: it may have been applied
            with pytest.raises(libkv.NotReachableError) as raised:
                store.get("k")
            assert not isinstance(raised.value, libkv.UnknownOutcomeError)
            assert time.monotonic() - started < 2 * 1 + 1.0
        finally:
            dedicated_consul.resume()
        wait_until(lambda: store.exists("k"), 10.0, message="agent did not come back")


@pytest.mark.usefixtures("both_flavours")
def test_stopped_agent_ends_a_watch_with_not_reachable_after_the_timeout(
    dedicated_consul: ConsulServer,
) -> None:
    with libkv.open(f"{consul_url(dedicated_consul)}&timeout=2") as store:
        store.put("k", b"v")
        with store.watch("", recursive=True) as watch:
            assert watch.next_event(5) is not None
            dedicated_consul.stop()
            stopped = time.monotonic()
            with pytest.raises(libkv.NotReachableError):
                while watch.next_event(10) is not None:
                    pass
            assert time.monotonic() - stopped < 2 + 2.0


@pytest.mark.usefixtures("both_flavours")
def test_close_is_prompt_while_a_blocking_query_is_in_flight(consul_server: ConsulServer) -> None:
    """A blocking query waits up to the timeout (60 s here); closing aborts it."""
    store = libkv.open(f"{consul_url(consul_server)}&timeout=60")
    watch = store.watch("", recursive=True)
    assert watch.next_event(5) is not None
    ended = threading.Event()

    def consume() -> None:
        for _ in watch:
            pass
        ended.set()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    time.sleep(0.5)  # let the feed's blocking query reach the agent
    started = time.monotonic()
    store.close()
    assert ended.wait(1.0), "iteration did not end within 1 s of close()"
    assert time.monotonic() - started < 1.0
    with pytest.raises(libkv.StoreClosedError):
        store.get("k")


@pytest.mark.usefixtures("both_flavours")
def test_restored_snapshot_is_history_lost_for_a_watch(dedicated_consul: ConsulServer) -> None:
    """A snapshot restore sends Consul's index back: the watch cannot tell what it missed.

    A blocking query does not return early for an index below the one it waits on, so
    the watch notices when its wait (a quarter of the store's timeout, 0.5 s here, plus
    Consul's jitter) runs out."""
    with libkv.open(f"{consul_url(dedicated_consul)}&timeout=2") as store:
        store.put("a", b"1")
        status, snapshot = http_request("GET", f"{dedicated_consul.http_address}/v1/snapshot")
        assert status == 200
        for index in range(5):
            store.put(f"later/{index}", b"x")
        with store.watch("", recursive=True) as watch:
            assert watch.next_event(5) is not None
            status, body = http_request(
                "PUT", f"{dedicated_consul.http_address}/v1/snapshot", snapshot, timeout=30
            )
            assert status == 200, body
            restored = time.monotonic()
            with pytest.raises(libkv.HistoryLostError):
                while time.monotonic() - restored < 0.5 * 17 / 16 + 3.0:
                    watch.next_event(0.5)
        assert [pair.key for pair in store.list()] == ["a"]


@pytest.mark.usefixtures("both_flavours")
def test_agent_killed_and_restarted_during_writes_with_a_watch(
    dedicated_consul: ConsulServer,
) -> None:
    """Writes during the outage fail with NotReachableError (or UnknownOutcomeError); the
    watch reconnects by itself and converges on the state after the restart.

    The writer's store has a 1 s timeout, so its writes fail soon after the kill and the
    agent is restarted then; the watch's store has 10 s, longer than the outage (else the
    watch would rightly raise NotReachableError)."""
    url = consul_url(dedicated_consul)
    with libkv.open(f"{url}&timeout=10") as store, libkv.open(f"{url}&timeout=1") as writer_store:
        stop = threading.Event()
        acknowledged: dict[str, int] = {}
        failures: list[BaseException] = []

        def write() -> None:
            index = 0
            while not stop.is_set():
                key = f"k{index:05d}"
                index += 1
                try:
                    acknowledged[key] = writer_store.put(key, key).version
                except libkv.NotReachableError as error:
                    failures.append(error)
                except BaseException as error:  # anything else fails the test below
                    failures.append(error)
                    return

        with store.watch("", recursive=True) as watch, WatchRecorder(watch) as recorder:
            writer = threading.Thread(target=write, daemon=True)
            writer.start()
            wait_until(lambda: len(acknowledged) > 20, 10.0, message="no writes")
            dedicated_consul.kill()
            wait_until(lambda: len(failures) > 0, 15.0, message="no write failed")
            dedicated_consul.start()
            count = len(acknowledged)
            wait_until(lambda: len(acknowledged) > count + 20, 30.0, message="no writes after")
            stop.set()
            writer.join(15)
            assert all(isinstance(error, libkv.NotReachableError) for error in failures)
            listed = {pair.key: pair for pair in store.list()}
            for key in acknowledged:
                assert key in listed, f"acknowledged write {key} lost"
            # A write that timed out on the client (UnknownOutcomeError) may still be
            # applied later (Consul holds it while it elects itself), so the state to
            # converge on is listed again at each check.
            expected: list[dict[str, libkv.KVPair]] = [listed]

            def converged() -> bool:
                expected[0] = {pair.key: pair for pair in store.list()}
                return bool(recorder.events) and (
                    replay(recorder.events[0], recorder.events[1:]) == expected[0]
                )

            wait_until(
                converged,
                10.0,
                message=lambda: (
                    f"the watch did not converge after the restart: {recorder.error!r}; "
                    + _difference(replay(recorder.events[0], recorder.events[1:]), expected[0])
                ),
            )
            assert recorder.error is None and not watch.closed


def _difference(seen: dict[str, libkv.KVPair], expected: dict[str, libkv.KVPair]) -> str:
    """What a watch's view lacks, has in excess, or has at another version."""
    missing = sorted(expected.keys() - seen.keys())
    extra = sorted(seen.keys() - expected.keys())
    changed = sorted(key for key in seen.keys() & expected.keys() if seen[key] != expected[key])
    return f"missing {missing[:5]} ({len(missing)}), extra {extra[:5]}, changed {changed[:5]}"


@pytest.mark.usefixtures("both_flavours")
def test_whole_keyspace_without_a_namespace(dedicated_consul: ConsulServer) -> None:
    """Without a namespace, list and delete_tree("") cover every key (Consul's transactions
    refuse an empty key, so the driver deletes one tree per first character)."""
    with libkv.open(dedicated_consul.url) as store:
        keys = ["a", "a/b", "b/c", "ünï/x", "~z", "%", " lead"]
        for key in keys:
            store.put(key, key)
        assert [pair.key for pair in store.list()] == sorted(keys)
        assert store.delete_tree("a") == 2
        assert store.delete_tree("") == len(keys) - 2
        assert store.list() == []
        assert raw(dedicated_consul, "GET", "/v1/kv/?keys") in (None, [])


@pytest.mark.usefixtures("both_flavours")
@pytest.mark.parametrize("timeout", [1.0, 3.0])
def test_frozen_agent_ends_a_watch_with_not_reachable(
    dedicated_consul: ConsulServer, timeout: float
) -> None:
    """A paused agent answers nothing: the blocking query (waiting a quarter of the
    timeout) goes unanswered past its wait, jitter and margin, then the watch's re-reads
    fail for the timeout. The contract's bound: the timeout plus 2 s."""
    with libkv.open(f"{consul_url(dedicated_consul)}&timeout={timeout}") as store:
        store.put("k", b"v")
        with store.watch("", recursive=True) as watch:
            assert watch.next_event(5) is not None
            dedicated_consul.pause()
            try:
                paused = time.monotonic()
                with pytest.raises(libkv.NotReachableError):
                    while watch.next_event(15) is not None:
                        pass
                took = time.monotonic() - paused
            finally:
                dedicated_consul.resume()
    assert timeout <= took <= timeout + NOT_REACHABLE_MARGIN, f"{took:.2f} s"


# -- watches of one prefix share one blocking query ------------------------------------


def _connections_to(port: int) -> int:
    """This process's established TCP connections to ``port`` on the loopback."""
    inodes = set()
    for descriptor in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{descriptor}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                established = fields[3] == "01"
                if remote_port == port and established and fields[9] in inodes:
                    count += 1
    return count


def _watch_tasks() -> int:
    return sum(1 for task in asyncio.all_tasks() if task.get_name() == "libkv-consul-watch")


def _watch_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "libkv-consul-watch")


def _sync_footprint(store: libkv.Store, writer: libkv.Store, count: int) -> tuple[int, int]:
    """Open ``count`` watches on one prefix; once each has seen one put: the query
    threads and the connections to the agent; then close them all."""
    port = int(store.backend.endpoint.rsplit(":", 1)[1])
    watches = [store.watch("shared", recursive=True) for _ in range(count)]
    try:
        for watch in watches:
            assert watch.next_event(5) is not None  # INIT
        written = writer.put("shared/k", str(count))
        for watch in watches:
            event = watch.next_event(5)
            assert event is not None and event.pair == written
        return _watch_threads(), _connections_to(port)
    finally:
        for watch in watches:
            watch.close()


def test_hundreds_of_watches_on_one_prefix_share_one_thread_and_connection(
    consul_server: ConsulServer,
) -> None:
    """The sync flavour: 300 watches of a store on one prefix hold the same query
    threads (one) and connections as 10; closing the last ends the query's thread."""
    url = consul_url(consul_server)
    with libkv.open(url) as store, libkv.open(url) as writer:
        ten = _sync_footprint(store, writer, 10)
        hundreds = _sync_footprint(store, writer, 300)
        assert ten[0] == 1
        assert hundreds == ten
        wait_until(lambda: _watch_threads() == 0, 5.0, message="the query's thread lives on")


def test_hundreds_of_async_watches_on_one_prefix_share_one_task_and_connection(
    consul_server: ConsulServer,
) -> None:
    """The async flavour: 300 watches of a store on one prefix hold the same query
    tasks (one) and connections as 10, and no thread; closing the last ends the task."""
    url = consul_url(consul_server)
    port = consul_server.port

    async def footprint(
        store: libkv.aio.AsyncStore, writer: libkv.aio.AsyncStore, count: int
    ) -> tuple[int, int]:
        watches = [store.watch("shared", recursive=True) for _ in range(count)]
        try:
            for watch in watches:
                assert await watch.next_event(5) is not None  # INIT
            written = await writer.put("shared/k", str(count))
            for watch in watches:
                event = await watch.next_event(5)
                assert event is not None and event.pair == written
            return _watch_tasks(), _connections_to(port)
        finally:
            for watch in watches:
                watch.close()

    async def scenario() -> None:
        threads = threading.active_count()
        async with libkv.aio.open(url) as store, libkv.aio.open(url) as writer:
            assert store.capabilities.native_async is True
            ten = await footprint(store, writer, 10)
            hundreds = await footprint(store, writer, 300)
            assert ten[0] == 1
            assert hundreds == ten
            assert threading.active_count() == threads
            await async_wait_until(
                lambda: _watch_tasks() == 0, 5.0, message="the query's task lives on"
            )

    libkv.aio.load("consul")
    asyncio.run(scenario())


@pytest.mark.usefixtures("both_flavours")
def test_a_frozen_agent_fails_every_watch_of_a_shared_query(
    dedicated_consul: ConsulServer,
) -> None:
    """Three watches share the query on one prefix, a fourth has its own: a paused
    agent ends all four with NotReachableError within the timeout plus the contract's
    margin, and the store's close() is prompt with the agent still paused."""
    timeout = 2.0
    store = libkv.open(f"{consul_url(dedicated_consul)}&timeout={timeout}")
    try:
        store.put("a/k", b"v")
        watches = [store.watch("a", recursive=True) for _ in range(3)]
        watches.append(store.watch("b", recursive=True))
        for watch in watches:
            assert watch.next_event(5) is not None
        recorders = [WatchRecorder(watch).__enter__() for watch in watches]
        dedicated_consul.pause()
        try:
            paused = time.monotonic()
            for recorder in recorders:  # each watch is consumed all along, by its recorder
                assert recorder.ended.wait(15), "a watch outlived the paused agent"
            took = time.monotonic() - paused
            for recorder in recorders:
                assert isinstance(recorder.error, libkv.NotReachableError), recorder.error
            assert took <= timeout + NOT_REACHABLE_MARGIN, f"{took:.2f} s"
            closing = time.monotonic()
            store.close()
            assert time.monotonic() - closing < 1.0
        finally:
            dedicated_consul.resume()
    finally:
        store.close()


def _libkv_sessions(server: ConsulServer) -> list[str]:
    return [session["ID"] for session in raw(server, "GET", "/v1/session/list") or ()]


@pytest.mark.parametrize("call", ["grant", "put with ttl"])
def test_a_cancelled_call_leaves_no_session(dedicated_consul: ConsulServer, call: str) -> None:
    """The async flavour: a call creating a session, cancelled while the paused agent
    holds the request, leaves no session once the agent answers (the store destroys the
    session the call would have used)."""
    url = f"{consul_url(dedicated_consul)}&timeout=5"

    async def scenario() -> None:
        async with libkv.aio.open(url) as store:
            await store.put("k", b"v")
            assert _libkv_sessions(dedicated_consul) == []

            async def grant() -> None:
                await store.lease(4.0)

            dedicated_consul.pause()
            try:
                work = asyncio.ensure_future(
                    grant() if call == "grant" else store.put("t", b"v", ttl=4.0)
                )
                done, _ = await asyncio.wait([work], timeout=0.3)
                assert not done  # the paused agent holds the request
                work.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await work
            finally:
                dedicated_consul.resume()
            await async_wait_until(
                lambda: _libkv_sessions(dedicated_consul) == [],
                5.0,
                message=lambda: f"sessions left: {_libkv_sessions(dedicated_consul)}",
            )
            assert not await store.exists("t")

    libkv.aio.load("consul")
    asyncio.run(scenario())


@pytest.mark.usefixtures("both_flavours")
def test_a_big_listing_is_read_and_watched(consul_server: ConsulServer) -> None:
    """A listing over DECODE_INLINE_LIMIT (the async flavour decodes it off the loop,
    which the debug loop of the async flavour checks): list, a watch's INIT and an
    event on the prefix."""
    with libkv.open(consul_url(consul_server)) as store:
        value = b"v" * 200
        for start in range(0, 1600, 40):  # 1,600 keys, about 560 KB of listing
            batch = [ops.put(f"big/{index:05}", value) for index in range(start, start + 40)]
            store.transaction(batch)
        listed = store.list("big")
        assert len(listed) == 1600
        with store.watch("big", recursive=True) as watch:
            init = watch.next_event(10)
            assert init is not None and init.snapshot == tuple(listed)
            written = store.put("big/00007", b"new")
            event = watch.next_event(10)
            assert event is not None and event.pair == written


def test_a_feed_that_read_earlier_than_the_shared_query_catches_up(
    consul_server: ConsulServer,
) -> None:
    """Two watches opened at once: the one whose read came first joins a query that
    waits for changes after the other's later read; it gets a snapshot with the
    change in between at once, not at the next change (both flavours, at the driver)."""
    url = consul_url(consul_server)
    with libkv.open(url) as store:
        backend = store.backend
        assert isinstance(backend, ConsulBackend)
        prefix = backend.namespace + "/c"
        before = store.put("c/a", b"1").version
        written = store.put("c/b", b"2")
        later = backend.open_feed(prefix, written.version)
        earlier = backend.open_feed(prefix, before)
        try:
            batches = [earlier.poll(0), *(earlier.poll(0.2) for _ in range(3))]
            revisions = [batch.revision for batch in batches if batch is not None]
            assert revisions and revisions[0] >= written.version, revisions
        finally:
            later.close()
            earlier.close()

    async def scenario() -> None:
        async with libkv.aio.open(url) as store:
            backend = store.backend
            assert isinstance(backend, AsyncConsulBackend)
            prefix = backend.namespace + "/d"
            before = (await store.put("d/a", b"1")).version
            written = await store.put("d/b", b"2")
            later = await backend.open_feed(prefix, written.version)
            earlier = await backend.open_feed(prefix, before)
            try:
                batches = [await earlier.poll(0)]
                for _ in range(3):
                    batches.append(await earlier.poll(0.2))
                revisions = [batch.revision for batch in batches if batch is not None]
                assert revisions and revisions[0] >= written.version, revisions
            finally:
                later.close()
                earlier.close()

    libkv.aio.load("consul")
    asyncio.run(scenario())
