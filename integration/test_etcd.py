"""The etcd driver against a real etcd 3.4: the conformance suite plus driver specifics."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable

import grpc
import pytest
from libkv_etcd import EtcdBackend, common
from libkv_etcd.driver import CAPABILITIES
from pyetcd import etcdrpc

import libkv
import libkv.aio
from integration.servers import EtcdServer, free_port
from libkv import Action, ops
from libkv._async.sharing import AsyncSubscription
from libkv.sharing import Subscription
from libkv.testing import CrossProcessConformance, WatchRecorder
from libkv.testing.conformance.base import EVENT_TIMEOUT, ConformanceBase
from libkv.testing.flavours import underlying
from libkv.testing.polling import assert_holds_until, async_wait_until, wait_until


class TestEtcdConformance(CrossProcessConformance):
    @pytest.fixture
    def url(self, etcd_server: EtcdServer) -> str:
        return f"{etcd_server.url}/t{uuid.uuid4().hex}"


def test_url_with_several_hosts_credentials_prefix_and_options() -> None:
    store = libkv.open("etcd://alice:secret@10.0.0.1,10.0.0.2:2380,[::1]:2381/apps/one?timeout=2.5")
    try:
        assert isinstance(store.backend, EtcdBackend)
        assert [endpoint.address for endpoint in store.backend._endpoints] == [
            "10.0.0.1:2379",
            "10.0.0.2:2380",
            "[::1]:2381",
        ]
        assert store.backend.endpoint == "10.0.0.1:2379"
        assert store.namespace == "apps/one"
        assert store.timeout == 2.5
        assert store.backend._credentials == ("alice", "secret")
        assert "secret" not in repr(store)
    finally:
        store.close()


def test_default_host_and_prefix_option() -> None:
    with libkv.open("etcd://?prefix=p/q") as store:
        assert isinstance(store.backend, EtcdBackend)
        assert store.backend.endpoint == "127.0.0.1:2379"
        assert store.namespace == "p/q"


@pytest.mark.parametrize(
    "query",
    [
        "bogus=1",
        "timeout=0",
        "timeout=soon",
        "tls=maybe",
        "cert=/nonexistent.pem",  # without key=
        "ca=/nonexistent/ca.pem",
        "tls=false&ca=/etc/hostname",
    ],
)
def test_bad_option_raises_invalid_url(query: str) -> None:
    with pytest.raises(libkv.InvalidURLError):
        libkv.open(f"etcd://127.0.0.1:2379?{query}")


def test_server_down_raises_not_reachable(stopped_server: EtcdServer) -> None:
    with libkv.open(f"{stopped_server.url}/down?timeout=1") as store:
        store.put("k", b"v")
        stopped_server.stop()
        with pytest.raises(libkv.NotReachableError) as raised:
            store.get("k")
        assert not isinstance(raised.value, libkv.UnknownOutcomeError)
        with pytest.raises(libkv.NotReachableError):
            store.put("k", b"w")
        with pytest.raises(libkv.NotReachableError):
            store.list()


def test_nothing_listens_raises_not_reachable() -> None:
    store = libkv.open(f"etcd://127.0.0.1:{free_port()}?timeout=0.5")
    with store, pytest.raises(libkv.NotReachableError):
        store.get("k")


def test_failover_to_the_next_endpoint(etcd_server: EtcdServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with libkv.open(f"etcd://{dead},{etcd_server.endpoint}/t{uuid.uuid4().hex}") as store:
        assert isinstance(store.backend, EtcdBackend)
        assert store.backend.endpoint == dead
        store.put("k", b"v")  # refused by the dead one: certainly not applied, so retried
        assert store.get("k").value == b"v"
        assert store.backend.endpoint == etcd_server.endpoint


def test_history_lost_after_a_real_compaction(etcd_server: EtcdServer) -> None:
    with libkv.open(f"{etcd_server.url}/t{uuid.uuid4().hex}") as store:
        first = store.put("a", b"1")
        store.put("a", b"2")
        last = store.put("b", b"1")
        store.compact(last.version)
        store.compact(first.version)  # behind the compaction point: nothing to do
        with (
            pytest.raises(libkv.HistoryLostError),
            store.watch("", recursive=True, since=first.version) as watch,
        ):
            watch.next_event(timeout=5)
        with store.watch("", recursive=True, since=last.version) as watch:
            created = store.put("c", b"1")
            event = watch.next_event(timeout=5)
        assert event is not None
        assert (event.action, event.pair) == (Action.UPDATE, created)


def test_siblings_sharing_a_name_prefix_stay_out_of_a_prefix(etcd_server: EtcdServer) -> None:
    """'a-x' and 'a.x' sort between 'a' and 'a/...' in etcd; they are not under 'a'."""
    with libkv.open(f"{etcd_server.url}/t{uuid.uuid4().hex}") as store:
        for key in ("a", "a-x", "a.x", "a/b", "a/c/d", "a0", "b"):
            store.put(key, key)
        with store.watch("a", recursive=True) as watch:
            init = watch.next_event(timeout=5)
            assert init is not None
            assert [pair.key for pair in init.snapshot] == ["a", "a/b", "a/c/d"]
            store.put("a-y", b"out")
            store.put("a/e", b"in")
            event = watch.next_event(timeout=5)
            assert event is not None and event.key == "a/e"
        assert [pair.key for pair in store.list("a")] == ["a", "a/b", "a/c/d", "a/e"]
        assert store.delete_tree("a") == 4
        assert [pair.key for pair in store.list()] == ["a-x", "a-y", "a.x", "a0", "b"]


def test_ttl_is_rounded_up_to_whole_seconds(etcd_server: EtcdServer) -> None:
    with libkv.open(f"{etcd_server.url}/t{uuid.uuid4().hex}") as store:
        assert isinstance(store.backend, EtcdBackend)
        with store.lease(2.2, keepalive=False) as lease:
            request = etcdrpc.LeaseTimeToLiveRequest(ID=lease.id)
            assert store.backend._endpoints[0].lease.LeaseTimeToLive(request).grantedTTL == 3
        with pytest.raises(ValueError):
            store.put("k", b"v", ttl=1.5)  # below etcd's 2 s minimum


def test_value_as_large_as_declared_is_accepted(etcd_server: EtcdServer) -> None:
    with libkv.open(f"{etcd_server.url}/t{uuid.uuid4().hex}") as store:
        value = b"x" * store.capabilities.max_value_size
        key = "k" * 1000
        store.create(key, value)
        assert store.update(key, value, version=store.get(key).version).value == value


def test_authentication(stopped_server: EtcdServer) -> None:
    """user:password@ authenticates; bad credentials raise AuthenticationError."""
    endpoint = f"http://{stopped_server.endpoint}"
    for command in (["user", "add", "root:rootpw"], ["auth", "enable"]):
        subprocess.run(
            ["etcdctl", "--endpoints", endpoint, *command],
            check=True,
            capture_output=True,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        )
    host = stopped_server.endpoint
    with libkv.open(f"etcd://root:rootpw@{host}/auth") as store:
        store.put("k", b"v")
        assert store.get("k").value == b"v"
        with store.watch("k") as watch:
            assert watch.next_event(timeout=5) is not None
    store = libkv.open(f"etcd://root:wrong@{host}/auth")
    with store, pytest.raises(libkv.AuthenticationError):
        store.get("k")
    with libkv.open(f"etcd://{host}/auth") as store:
        with pytest.raises(libkv.AuthenticationError) as raised:
            store.get("k")
        assert not isinstance(raised.value, libkv.NotReachableError)


def test_tls_with_a_client_certificate(etcd_tls_server: EtcdServer) -> None:
    """Over TLS with a client certificate, reads, writes and watches work; a client
    that speaks plain HTTP to the TLS port is refused as unreachable."""
    files = "&".join(f"{name}={path}" for name, path in etcd_tls_server.tls_options.items())
    url = f"{etcd_tls_server.url}/tls{uuid.uuid4().hex}"
    with libkv.open(f"{url}?{files}") as store:
        written = store.put("k", b"v")
        assert store.get("k") == written
        with store.watch("k") as watch:
            init = watch.next_event(timeout=5)
            assert init is not None and init.pair == written
    plain = libkv.open(f"etcd://{etcd_tls_server.endpoint}/tls?timeout=1")
    with plain, pytest.raises(libkv.NotReachableError):
        plain.get("k")


class _FrequentProgressEtcdServer(EtcdServer):
    """An etcd member that sends watch progress notifications every second."""

    def command(self) -> list[str]:
        return [*super().command(), "--experimental-watch-progress-notify-interval", "1s"]


def test_progress_notifications_advance_an_idle_watch() -> None:
    """Writes elsewhere advance Watch.revision of a watch that sees no change."""
    with _FrequentProgressEtcdServer() as server, libkv.open(f"{server.url}/p") as store:
        with store.watch("quiet", recursive=True) as watch:
            init = watch.next_event(timeout=5)
            assert init is not None
            elsewhere = store.put("busy", b"1")

            def advanced() -> bool:
                assert watch.next_event(timeout=0.2) is None  # nothing under "quiet"
                return watch.revision >= elsewhere.version

            wait_until(advanced, 5.0, message=f"revision stuck at {watch.revision}")
        with store.watch("quiet", recursive=True, since=watch.revision) as resumed:
            created = store.put("quiet/k", b"1")
            event = resumed.next_event(timeout=5)
            assert event is not None and event.pair == created


# -- numbers etcd cannot represent (issue 8) -------------------------------------------


def test_numbers_etcd_cannot_represent_are_refused_whole(etcd_server: EtcdServer) -> None:
    """protobuf refuses an int64 field out of range before anything is sent, and etcd
    refuses a lease above its MaxLeaseTTL: both are typed argument errors (a KVError
    and a ValueError), nothing is written and an open watch carries on. This Store's
    ``ttl_max`` is widened so the ttls get past the core's own check to the driver."""
    with libkv.open(f"{etcd_server.url}/t{uuid.uuid4().hex}") as store:
        store.capabilities = dataclasses.replace(CAPABILITIES, ttl_max=1e300)
        first = store.put("k", b"0")
        with store.watch("", recursive=True) as watch:
            assert watch.next_event(5) is not None  # INIT
            leases_before = _lease_ids(etcd_server)
            for attempt in (
                lambda: store.put("k", b"v", ttl=1e30),
                lambda: store.put("k", b"v", ttl=CAPABILITIES.ttl_max + 1),
                lambda: store.lease(1e300),
                lambda: store.lease(CAPABILITIES.ttl_max + 1),
                lambda: store.update("k", b"v", version=2**70),
                lambda: store.transaction(
                    [ops.put("j", b"v", ttl=5), ops.update("k", b"v", version=2**70)]
                ),
            ):
                with pytest.raises(libkv.KVError) as raised:
                    attempt()
                assert isinstance(raised.value, ValueError), repr(raised.value)
                assert not isinstance(raised.value, libkv.NotReachableError)
            assert store.get("k") == first and not store.exists("j")
            assert _lease_ids(etcd_server) == leases_before
            later = store.put("l", b"1")
            event = watch.next_event(5)
            assert event is not None and event.pair == later


def test_a_ttl_at_the_declared_maximum_is_granted(etcd_server: EtcdServer) -> None:
    with libkv.open(f"{etcd_server.url}/t{uuid.uuid4().hex}") as store:
        pair = store.put("k", b"v", ttl=CAPABILITIES.ttl_max)
        assert store.get("k") == pair
        store.delete("k")


def _lease_ids(server: EtcdServer) -> set[str]:
    """The ids of every lease etcd holds (its gRPC gateway's LeaseLeases)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/v3/lease/leases", data=b"{}", method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return {lease["ID"] for lease in json.load(response).get("leases", [])}


# -- a single member killed or frozen: watches report it, close() stays prompt ---------


STORE_TIMEOUT = 2.0
REPORT_BOUND = STORE_TIMEOUT + 2.0  # the contract: within the timeout, plus 2 s of slack


def _stop(server: EtcdServer, how: str) -> None:
    if how == "kill":
        server.kill()
    else:
        server.pause()


def _bring_back(server: EtcdServer, how: str) -> None:
    if how == "pause":
        server.resume()


class TestAMemberGone(ConformanceBase):
    """A single member killed or frozen, in both flavours (the ``flavour`` fixture)."""

    @pytest.mark.parametrize("how", ["kill", "pause"])
    def test_a_watch_raises_not_reachable_when_the_member_is_gone(
        self, open_url: Callable[..., libkv.Store], stopped_server: EtcdServer, how: str
    ) -> None:
        with open_url(f"{stopped_server.url}/w?timeout={STORE_TIMEOUT:g}") as store:
            store.put("k", b"0")
            watch = store.watch("", recursive=True)
            assert watch.next_event(5) is not None  # INIT
            _stop(stopped_server, how)
            try:
                started = time.monotonic()
                with pytest.raises(libkv.NotReachableError):
                    while time.monotonic() - started < 30:
                        watch.next_event(0.5)
                assert time.monotonic() - started < REPORT_BOUND
            finally:
                _bring_back(stopped_server, how)

    @pytest.mark.parametrize("how", ["kill", "pause"])
    def test_wait_for_change_raises_not_reachable_when_the_member_is_gone(
        self, open_url: Callable[..., libkv.Store], stopped_server: EtcdServer, how: str
    ) -> None:
        with open_url(f"{stopped_server.url}/w?timeout={STORE_TIMEOUT:g}") as store:
            version = store.put("k", b"0").version
            outcome: list[BaseException | libkv.KVPair] = []

            def wait() -> None:
                try:
                    outcome.append(store.wait_for_change("k", version, timeout=30))
                except BaseException as error:
                    outcome.append(error)

            waiter = threading.Thread(target=wait, daemon=True)
            waiter.start()
            # The waiter's watch is open once it has polled its feed once (a batch proves it).
            assert_holds_until(lambda: not outcome, time.monotonic() + 0.5)
            _stop(stopped_server, how)
            try:
                started = time.monotonic()
                waiter.join(REPORT_BOUND + 1)
                assert outcome and isinstance(outcome[0], libkv.NotReachableError), outcome
                assert time.monotonic() - started < REPORT_BOUND
            finally:
                _bring_back(stopped_server, how)

    def test_lock_acquire_raises_not_reachable_when_the_member_is_frozen(
        self,
        open_url: Callable[..., libkv.Store],
        stopped_server: EtcdServer,
    ) -> None:
        """The waiting acquire's watch reports the frozen member like any watch; the Lock
        then revokes its lease, a request that waits for the store's timeout too."""
        with (
            open_url(f"{stopped_server.url}/w?timeout={STORE_TIMEOUT:g}") as holder,
            open_url(f"{stopped_server.url}/w?timeout={STORE_TIMEOUT:g}") as contender,
        ):
            held = holder.lock("lock", ttl=30)
            assert held.acquire()
            outcome: list[BaseException | bool] = []

            def acquire() -> None:
                try:
                    outcome.append(contender.lock("lock", ttl=30).acquire(timeout=30))
                except BaseException as error:
                    outcome.append(error)

            waiter = threading.Thread(target=acquire, daemon=True)
            waiter.start()
            assert_holds_until(lambda: not outcome, time.monotonic() + 1.0)  # waiting for release
            stopped_server.pause()
            try:
                started = time.monotonic()
                waiter.join(REPORT_BOUND + STORE_TIMEOUT + 1)
                assert outcome and isinstance(outcome[0], libkv.NotReachableError), outcome
                assert time.monotonic() - started < REPORT_BOUND + STORE_TIMEOUT
            finally:
                stopped_server.resume()

    @pytest.mark.parametrize("how", ["kill", "pause"])
    def test_watch_close_ends_iteration_within_a_second_while_the_member_is_gone(
        self, open_url: Callable[..., libkv.Store], stopped_server: EtcdServer, how: str
    ) -> None:
        with open_url(f"{stopped_server.url}/w?timeout=10") as store:
            watch = store.watch("", recursive=True)
            assert watch.next_event(5) is not None  # INIT
            finished = threading.Event()
            failures: list[BaseException] = []

            def consume() -> None:
                try:
                    for _ in watch:
                        pass
                except BaseException as error:
                    failures.append(error)
                finished.set()

            consumer = threading.Thread(target=consume, daemon=True)
            consumer.start()
            _stop(stopped_server, how)
            try:
                # Long enough for the watch to find the member gone and be reconnecting.
                assert_holds_until(lambda: not finished.is_set(), time.monotonic() + 3.0)
                started = time.monotonic()
                watch.close()
                assert finished.wait(5), "iteration did not end"
                assert time.monotonic() - started < 1.0
                assert not failures, failures
            finally:
                _bring_back(stopped_server, how)

    def test_a_watch_rides_out_a_short_freeze(
        self, open_url: Callable[..., libkv.Store], stopped_server: EtcdServer
    ) -> None:
        """A freeze shorter than the timeout: the watch reconnects and misses nothing."""
        with (
            open_url(f"{stopped_server.url}/w?timeout=10") as store,
            store.watch("", recursive=True) as watch,
            WatchRecorder(watch) as recorder,
        ):
            wait_until(lambda: len(recorder.events) == 1, 5)  # INIT
            first = store.put("a", b"1")
            stopped_server.pause()
            try:
                assert_holds_until(lambda: recorder.error is None, time.monotonic() + 3.0)
            finally:
                stopped_server.resume()
            second = store.put("b", b"2")
            wait_until(lambda: len(recorder.events) == 3 or recorder.error, 15)
            assert recorder.error is None, repr(recorder.error)
            assert [event.pair for event in recorder.events[1:]] == [first, second]


# -- one Watch stream per store, carrying every watch ----------------------------------


WATCHES = 1000


def _metric(server: EtcdServer, name: str) -> float:
    """A gauge of etcd's /metrics (``etcd_debugging_mvcc_watch_stream_total``: the
    gRPC Watch streams open on the member; ``..._watcher_total``: their watches)."""
    with urllib.request.urlopen(f"http://{server.endpoint}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"etcd reports no {name}")


class TestOneWatchStreamPerStore(ConformanceBase):
    """Every watch of a store is a watch on the store's one gRPC stream (both flavours:
    the ``flavour`` fixture), read by one thread (sync) or one task (async)."""

    @pytest.fixture
    def url(self, stopped_server: EtcdServer) -> str:
        return f"{stopped_server.url}/shared"

    def test_a_watch_left_unpolled_past_the_stall_allowance_keeps_its_stream(
        self, store: libkv.Store
    ) -> None:
        """A stream nobody polled for longer than ``stall`` is asked for a progress
        report by the next poll, not failed for its silence (which cost every watch on
        it a reconnection, and the change 0.1-0.2 s): the change comes on the same
        stream."""
        watch = store.watch("k")
        init = watch.next_event(EVENT_TIMEOUT)
        assert init is not None and init.action is Action.INIT
        backend = underlying(store).backend
        stream = backend._streams[-1]
        time.sleep(3 * common.STREAM_STALL)  # the scenario: nobody polls meanwhile
        assert watch.next_event(0.1) is None
        written = store.put("k", b"v")
        event = watch.next_event(EVENT_TIMEOUT)
        assert event is not None and event.pair == written
        assert not stream.ended and backend._streams == [stream]
        watch.close()

    def test_a_thousand_watches_use_the_threads_and_the_stream_of_ten(
        self, store: libkv.Store, stopped_server: EtcdServer
    ) -> None:
        watches: list[libkv.Watch] = []

        def open_watches(count: int) -> None:
            while len(watches) < count:
                watch = store.watch(f"k{len(watches):04d}")
                watches.append(watch)
                init = watch.next_event(EVENT_TIMEOUT)  # the feed is open
                assert init is not None and init.action is Action.INIT

        def watchers() -> float:
            return _metric(stopped_server, "etcd_debugging_mvcc_watcher_total")

        try:
            open_watches(10)
            wait_until(lambda: watchers() == 10, EVENT_TIMEOUT, message=watchers)
            threads = set(threading.enumerate())
            assert _metric(stopped_server, "etcd_debugging_mvcc_watch_stream_total") == 1
            open_watches(WATCHES)
            wait_until(lambda: watchers() == WATCHES, EVENT_TIMEOUT, message=watchers)
            started = set(threading.enumerate()) - threads
            assert not started, sorted(thread.name for thread in started)
            assert _metric(stopped_server, "etcd_debugging_mvcc_watch_stream_total") == 1
            # Each watch gets its own key's change, and nothing else.
            step = CAPABILITIES.max_transaction_ops
            written: list[libkv.KVPair] = []
            for start in range(0, WATCHES, step):
                keys = range(start, min(start + step, WATCHES))
                written += store.put_many({f"k{index:04d}": b"v" for index in keys})
            for watch, pair in zip(watches, written, strict=True):
                event = watch.next_event(EVENT_TIMEOUT)
                assert event is not None and event.pair == pair
            # Closing a watch cancels it on the stream.
            for watch in watches[10:]:
                watch.close()
            wait_until(lambda: watchers() == 10, EVENT_TIMEOUT, message=watchers)
        finally:
            for watch in watches:
                watch.close()
        store.close()
        wait_until(
            lambda: _metric(stopped_server, "etcd_debugging_mvcc_watch_stream_total") == 0,
            EVENT_TIMEOUT,
            message="closing the store left its watch stream open",
        )

    @pytest.mark.parametrize("compacted", [False, True], ids=["history", "compacted"])
    def test_a_lagging_watch_delays_no_other_and_misses_nothing(
        self, store: libkv.Store, monkeypatch: pytest.MonkeyPatch, compacted: bool
    ) -> None:
        """A watch whose consumer stops while changes come: once its buffer is full it
        alone is cancelled on the stream, the other watch's events go on arriving, and
        when its consumer comes back it gets every change in order (its buffer, then
        etcd's history), or HistoryLostError if that history was compacted meanwhile."""
        monkeypatch.setattr(common, "WATCH_BUFFER", 5)
        monkeypatch.setattr(common, "ASYNC_POLL_EVENTS", 2)  # a revision is never split
        with (
            store.watch("slow", recursive=True) as slow,
            store.watch("fast", recursive=True) as fast,
        ):
            for watch in (slow, fast):
                init = watch.next_event(EVENT_TIMEOUT)
                assert init is not None and init.action is Action.INIT
            subscription = underlying(slow)._feed  # the store's shared feed of the prefix
            assert isinstance(subscription, (Subscription, AsyncSubscription))
            feed = subscription.source
            assert isinstance(feed, common.WatchState)
            changes = []
            for index in range(30):
                if index % 10 == 3:  # three changes in one revision
                    changes += store.put_many({f"slow/{index:02d}/{part}": b"x" for part in "abc"})
                else:
                    changes.append(store.put(f"slow/{index:02d}", b"x"))
                # The other watch's change arrives while the slow one lags.
                written = store.put(f"fast/{index:02d}", b"y")
                event = fast.next_event(EVENT_TIMEOUT)
                assert event is not None and event.pair == written
            wait_until(lambda: feed.suspended, EVENT_TIMEOUT, message="not cancelled on the stream")
            if compacted:
                store.compact(store.put("last", b"z").version)
                held: list[libkv.KVPair | None] = []  # what it held is delivered first
                with pytest.raises(libkv.HistoryLostError):
                    while True:
                        event = slow.next_event(EVENT_TIMEOUT)
                        assert event is not None
                        held.append(event.pair)
                assert held and held == changes[: len(held)]
                return
            for pair in changes:
                event = slow.next_event(EVENT_TIMEOUT)
                assert event is not None and event.pair == pair
            assert not feed.suspended  # created again on the stream
            written = store.put("slow/again", b"x")
            event = slow.next_event(EVENT_TIMEOUT)
            assert event is not None and event.pair == written


class _ShortTokenEtcdServer(EtcdServer):
    """Authentication on (``auth=True``), with tokens that expire after 2 s unused."""

    def command(self) -> list[str]:
        return [*super().command(), "--auth-token-ttl", "2"]


class TestAStreamWhoseTokenExpired(ConformanceBase):
    """etcd checks a watch stream's token (sent once, when it opens) at each create."""

    def test_a_new_watch_goes_on_a_new_stream_and_the_old_one_carries_on(
        self, open_url: Callable[..., libkv.Store]
    ) -> None:
        with _ShortTokenEtcdServer(auth=True) as server:
            store = open_url(server.credentials_url)
            first = store.watch("a")
            init = first.next_event(EVENT_TIMEOUT)
            assert init is not None and init.action is Action.INIT
            token = underlying(store).backend._metadata
            kv = etcdrpc.KVStub(grpc.insecure_channel(server.endpoint))

            def expired() -> bool:  # the store's token, which its watch stream has
                try:
                    kv.Range(etcdrpc.RangeRequest(key=b"libkv/a"), metadata=token, timeout=5)
                except grpc.RpcError as error:
                    return error.code() is grpc.StatusCode.UNAUTHENTICATED
                return False

            # Each check uses the token, which keeps it alive: check less often than its ttl.
            wait_until(expired, 20, interval=3.0, message="the token did not expire")
            second = store.watch("b")
            init = second.next_event(EVENT_TIMEOUT)
            assert init is not None and init.action is Action.INIT
            for watch, key in ((second, "b"), (first, "a")):
                written = store.put(key, b"v")
                event = watch.next_event(EVENT_TIMEOUT)
                assert event is not None and event.pair == written
            streams = _metric(server, "etcd_debugging_mvcc_watch_stream_total")
            assert streams == 2  # the old stream still carries the first watch
            first.close()
            second.close()


def test_a_grant_cancelled_after_it_was_sent_leaves_no_lease(
    stopped_server: EtcdServer,
) -> None:
    """grpc.aio cancels the RPC of a cancelled task, but a grant the frozen member
    holds is applied once it runs again: the driver waits for it and revokes it."""

    async def scenario() -> None:
        async with libkv.aio.open(f"{stopped_server.url}/grant?timeout=5") as store:
            await store.put("k", b"v")  # connected
            before = _lease_ids(stopped_server)
            await stopped_server.cancel_while_paused(store.backend.grant_lease(30), sent=0.3)
            await store.put("k", b"w")  # the member answers again
            await async_wait_until(
                lambda: _lease_ids(stopped_server) == before, 10, message="a lease is left"
            )

    libkv.aio.load("etcd")
    asyncio.run(scenario())


def test_the_async_store_serves_one_loop_after_another(etcd_server: EtcdServer) -> None:
    """Opened outside any loop, an async store serves asyncio.run() after asyncio.run()
    (its channels and watch stream are made again in the new loop) and closes in a
    third; it starts no thread."""
    libkv.aio.load("etcd")
    before = set(threading.enumerate())
    store = libkv.aio.open(f"{etcd_server.url}/t{uuid.uuid4().hex}")
    assert store.capabilities.native_async is True

    async def use(turn: int) -> None:
        async with store.watch("k") as watch:
            init = await watch.next_event(EVENT_TIMEOUT)
            assert init is not None and init.action is Action.INIT
            written = await store.put("k", str(turn))
            event = await watch.next_event(EVENT_TIMEOUT)
            assert event is not None and event.pair == written

    asyncio.run(use(1))
    asyncio.run(use(2))
    asyncio.run(store.close())
    started = {thread for thread in set(threading.enumerate()) - before if thread.is_alive()}
    assert not [thread.name for thread in started if thread.name.startswith("libkv")]
