"""The Redis driver against real redis-server processes (see integration/servers.py):
conformance (plain and TLS), URLs, history, expiry and authentication. Restarts, outages,
Sentinel and out-of-range input are in test_redis_faults.py."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio.sentinel
import redis.sentinel

import libkv
import libkv.aio
from integration.servers import (
    RedisSentinelGroup,
    RedisServer,
    make_test_certificates,
)
from libkv import (
    Action,
    AuthenticationError,
    HistoryLostError,
    InvalidURLError,
    KVError,
    NotReachableError,
    UnknownOutcomeError,
)
from libkv.testing import (
    CrossProcessConformance,
    wait_until,
)


def _url(server: RedisServer | RedisSentinelGroup, **options: object) -> str:
    """The server's URL with a fresh namespace, its TLS client files and ``options``."""
    tls = server.tls_options if isinstance(server, RedisServer) else {}
    query = "&".join(f"{name}={value}" for name, value in {**tls, **options}.items())
    separator = "&" if "?" in server.url else "?"
    return f"{server.url}{separator}prefix=t{uuid.uuid4().hex}" + (f"&{query}" if query else "")


class TestRedisConformance(CrossProcessConformance):
    @pytest.fixture
    def url(self, redis_server: RedisServer) -> str:
        return _url(redis_server)


# -- URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("redis://127.0.0.1:1?colour=blue", id="unknown-option"),
        pytest.param("redis://127.0.0.1:1?ssl_ca_certs=/ca.pem", id="tls-option-without-rediss"),
        pytest.param("rediss://127.0.0.1:1?ssl_cert_reqs=sometimes", id="bad-cert-reqs"),
        pytest.param("rediss://127.0.0.1:1?ssl_ca_certs=", id="empty-ca-certs"),
        pytest.param("rediss://127.0.0.1:1?tls=yes", id="unknown-tls-option"),
        pytest.param("redis://127.0.0.1:1?sentinel=", id="empty-sentinel"),
        pytest.param("redis://?sentinel=mymaster", id="sentinel-without-hosts"),
        pytest.param("redis://127.0.0.1:1,127.0.0.1:2", id="two-hosts-without-sentinel"),
        pytest.param("redis://127.0.0.1:1/myapp", id="path-is-not-a-db-number"),
        pytest.param("redis://127.0.0.1:1?timeout=0", id="zero-timeout"),
        pytest.param("redis://127.0.0.1:1?history=-5", id="negative-history"),
        pytest.param("redis://127.0.0.1:1?hashtag={x}", id="hashtag-with-braces"),
        pytest.param("redis://127.0.0.1:1?cluster=maybe", id="cluster-not-a-bool"),
        pytest.param("redis://127.0.0.1:1?cluster=true&sentinel=m", id="cluster-and-sentinel"),
        pytest.param("redis://127.0.0.1:1/2?cluster=true", id="cluster-with-a-database"),
    ],
)
def test_invalid_urls_are_rejected(url: str) -> None:
    with pytest.raises(InvalidURLError):
        libkv.open(url)


def test_valid_tls_and_sentinel_urls_open_without_contacting_a_server() -> None:
    tls = "rediss://u:secret@127.0.0.1:1/2?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem&timeout=1"
    with libkv.open(tls) as store:
        assert "secret" not in repr(store)
        with pytest.raises(NotReachableError):
            store.get("a")
    sentinels = "redis://127.0.0.1:1,127.0.0.1:2?sentinel=mymaster&timeout=1"
    with libkv.open(sentinels) as store, pytest.raises(NotReachableError):
        store.get("a")


def test_unreachable_cluster_raises_not_reachable_at_open() -> None:
    """A Cluster client reads the slot map when it is created, so open() fails early."""
    with pytest.raises(NotReachableError):
        libkv.open("redis://127.0.0.1:1?cluster=true&timeout=1")


def test_async_open_of_a_cluster_contacts_nothing_and_the_first_call_fails() -> None:
    """libkv.aio.open() does no I/O, a Cluster's slot map included: the first call
    raises NotReachableError instead, within the timeout."""
    store = libkv.aio.open("redis://127.0.0.1:1?cluster=true&timeout=1")
    assert store.capabilities.native_async is True

    async def first_call() -> None:
        try:
            with pytest.raises(NotReachableError):
                await asyncio.wait_for(store.get("a"), 5)
        finally:
            await store.close()

    asyncio.run(first_call())


def _caused(error: Exception, cause: Exception) -> Exception:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(
            redis.asyncio.sentinel.MasterNotFoundError("No master found for 'm'"),
            NotReachableError,
            id="async-sentinel-no-master",
        ),
        pytest.param(
            redis.sentinel.MasterNotFoundError("No master found for 'm'"),
            NotReachableError,
            id="sentinel-no-master",
        ),
        pytest.param(
            redis.exceptions.RedisClusterException("Redis Cluster cannot be connected"),
            NotReachableError,
            id="cluster-unreachable",
        ),
        pytest.param(
            _caused(
                redis.exceptions.RedisClusterUnreachableError("no node reached"),
                redis.ConnectionError("Error 111 connecting to 127.0.0.1:1."),
            ),
            NotReachableError,
            id="cluster-unreachable-while-connecting",
        ),
        pytest.param(
            _caused(
                redis.exceptions.RedisClusterUnreachableError("no node reached"),
                redis.TimeoutError("Timeout reading from 127.0.0.1:7000"),
            ),
            UnknownOutcomeError,
            id="cluster-unreachable-after-sending",
        ),
        pytest.param(
            redis.TimeoutError("Timeout reading from 127.0.0.1:1"),
            UnknownOutcomeError,
            id="read-timeout",
        ),
        pytest.param(
            redis.TimeoutError("Timeout connecting to server"),
            NotReachableError,
            id="connect-timeout",
        ),
    ],
)
def test_a_failed_write_is_translated_alike_in_both_flavours(
    error: Exception, expected: type[KVError]
) -> None:
    """Both flavours translate with libkv_redis.common.translate: what redis.asyncio
    raises of its own (its Sentinel's MasterNotFoundError, a Cluster client that reaches
    no node at its first command) is NotReachableError, and UnknownOutcomeError only
    when the write may have been sent."""
    from libkv_redis.common import translate

    url = libkv.StoreURL.parse("redis://127.0.0.1:1")
    translated = translate(error, url, 0, outcome_unknown=True)
    assert type(translated) is expected, repr(translated)


def test_db_number_and_hashtag_separate_stores(redis_server: RedisServer) -> None:
    prefix = f"t{uuid.uuid4().hex}"
    base = f"{redis_server.url}/3?prefix={prefix}"
    with libkv.open(base) as first, libkv.open(f"{base}&hashtag=other") as second:
        first.put("k", b"1")
        assert not second.exists("k")
    with libkv.open(f"{redis_server.url}/3?prefix={prefix}") as again:
        assert again.get("k").value == b"1"
    with libkv.open(f"{redis_server.url}?prefix={prefix}") as database_zero:
        assert not database_zero.exists("k")


def test_physical_keys_share_one_hash_tag_and_bookkeeping_is_hidden(
    redis_server: RedisServer,
) -> None:
    url = f"{redis_server.url}/5?hashtag=layout{uuid.uuid4().hex}"
    with libkv.open(url) as store, store.lease(5) as lease:
        store.put("a", b"1", lease=lease)
        store.put("b", b"2", ttl=30)
        client = redis.Redis(port=redis_server.port, db=5)
        tag = url.rpartition("hashtag=")[2]
        physical = [key.decode() for key in client.scan_iter(match=f"*{tag}*")]
        client.close()
        assert physical
        assert all(key.startswith("{" + tag + "}:") for key in physical)
        assert [pair.key for pair in store.list()] == ["a", "b"]
        assert list(store.keys()) == ["a", "b"]


# -- history ----------------------------------------------------------------------------


def test_trimmed_log_raises_history_lost(redis_server: RedisServer) -> None:
    url = _url(redis_server, history=5, hashtag=f"trim{uuid.uuid4().hex}")
    with libkv.open(url) as store:
        first = store.put("k", b"0").version
        for number in range(1, 10):
            store.put("k", str(number))
        with store.watch("k", since=first) as watch, pytest.raises(HistoryLostError):
            watch.next_event(5)
        # The last five revisions are still there.
        last = store.get("k").version
        with store.watch("k", since=last - 5) as watch:
            event = watch.next_event(5)
            assert event is not None and event.revision == last - 4


def test_watch_that_falls_behind_the_trimmed_log_raises_history_lost(
    redis_server: RedisServer,
) -> None:
    url = _url(redis_server, history=3, hashtag=f"behind{uuid.uuid4().hex}")
    with libkv.open(url) as store, store.watch("k") as watch:
        assert watch.next_event(5) is not None  # INIT
        for number in range(10):  # the watch does not read meanwhile
            store.put("k", str(number))
        with pytest.raises(HistoryLostError):
            while watch.next_event(5) is not None:
                pass


# -- expiry with the writer gone --------------------------------------------------------


def test_ttl_delete_is_reported_when_the_writer_is_closed(redis_server: RedisServer) -> None:
    url = _url(redis_server)
    with libkv.open(url) as watcher_store:
        with watcher_store.watch("k") as watch:
            assert watch.next_event(5) is not None  # INIT
            writer = libkv.open(url)
            writer.put("k", b"short-lived", ttl=0.5)
            written = time.monotonic()
            writer.close()
            update = watch.next_event(5)
            assert update is not None and update.action is Action.UPDATE
            delete = watch.next_event(5)
            elapsed = time.monotonic() - written
            assert delete is not None and delete.action is Action.DELETE
            assert elapsed <= 0.5 + watcher_store.capabilities.ttl_slack + 0.25
        assert not watcher_store.exists("k")


def test_expiry_with_no_client_connected_is_logged_by_the_next_one(
    redis_server: RedisServer,
) -> None:
    tag = f"alone{uuid.uuid4().hex}"  # no other test's Store reaps this database
    url = f"{redis_server.url}?hashtag={tag}"
    with libkv.open(url) as writer:
        version = writer.put("k", b"v", ttl=0.2).version
    client = redis.Redis(port=redis_server.port)
    try:
        # Nobody is connected at the deadline: Redis drops the value itself
        # (PEXPIREAT), so reads are exact, but no DELETE is logged yet ...
        wait_until(lambda: not client.exists("{" + tag + "}:v:k"), 5)
        assert client.get("{" + tag + "}:revision") == str(version).encode()
    finally:
        client.close()
    # ... until a client connects again.
    with libkv.open(url) as reader:
        assert not reader.exists("k")
        with reader.watch("k", since=version) as watch:
            event = watch.next_event(5)
            assert event is not None and event.action is Action.DELETE
            assert event.revision == version + 1


def test_scripts_are_reloaded_after_a_script_flush(redis_server: RedisServer) -> None:
    with libkv.open(_url(redis_server)) as store:
        store.put("a", b"1")
        client = redis.Redis(port=redis_server.port)
        client.script_flush()
        client.close()
        with store.watch("", recursive=True) as watch:
            init = watch.next_event(5)
            assert init is not None and [pair.key for pair in init.snapshot] == ["a"]
            client = redis.Redis(port=redis_server.port)
            client.script_flush()
            client.close()
            store.put("b", b"2", ttl=30)
            event = watch.next_event(5)
            assert event is not None and event.key == "b"
        assert store.get("b").value == b"2"


# -- failures ---------------------------------------------------------------------------


def test_wrong_credentials_raise_authentication_error(redis_server: RedisServer) -> None:
    url = redis_server.url.replace("redis://", "redis://ghost:wrong@")
    with libkv.open(url) as store:
        with pytest.raises(AuthenticationError) as raised:
            store.get("k")
        assert isinstance(raised.value.__cause__, redis.AuthenticationError)
        with pytest.raises(AuthenticationError):
            store.put("k", b"v")


def test_stopped_server_raises_not_reachable(dedicated_redis: RedisServer) -> None:
    with libkv.open(f"{dedicated_redis.url}?timeout=2") as store:
        store.put("k", b"v")
        dedicated_redis.stop()
        with pytest.raises(NotReachableError) as raised:
            store.get("k")
        assert isinstance(raised.value.__cause__, redis.RedisError)
        with pytest.raises(NotReachableError):
            store.put("k", b"w")
        with pytest.raises(NotReachableError):
            store.list()


# -- libkv.aio: the native async backend -------------------------------------------------


def test_the_async_store_is_native_and_starts_no_thread(redis_server: RedisServer) -> None:
    """libkv.aio runs on redis.asyncio: calls, a watch, a lease and its keep-alive and
    the reaper start no thread (the bridge it replaced started one per call)."""
    before = set(threading.enumerate())

    async def scenario() -> None:
        async with libkv.aio.open(_url(redis_server)) as store:
            assert store.capabilities.native_async is True
            async with store.watch("", recursive=True) as watch:
                init = await watch.next_event(5)
                assert init is not None and init.action is Action.INIT
                async with store.lease(1) as lease:
                    written = await store.put("k", b"v", lease=lease)
                    event = await watch.next_event(5)
                    assert event is not None and event.pair == written
                    await asyncio.sleep(0.6)  # the reaper and one keep-alive run meanwhile
                    assert not lease.lost.is_set()
                    started = set(threading.enumerate()) - before
                    assert not started, sorted(thread.name for thread in started)

    libkv.aio.load("redis")
    asyncio.run(scenario())


def test_a_call_cancelled_while_redis_holds_its_reply_leaves_no_stale_reply(
    dedicated_redis: RedisServer,
) -> None:
    """A get cancelled after it was sent (the server is frozen, so its reply is
    pending): redis-py drops that connection, so once the server answers no later call
    reads the cancelled call's reply as its own."""

    async def scenario() -> None:
        async with libkv.aio.open(f"{dedicated_redis.url}?timeout=5") as store:
            await store.put("a", b"1")
            await store.put("b", b"2")
            await dedicated_redis.cancel_while_paused(store.get("a"), sent=0.2)
            for _ in range(10):  # every call reads its own reply
                assert (await store.get("b")).value == b"2"
            written = await store.put("b", b"3")
            assert await store.get("b") == written

    libkv.aio.load("redis")
    asyncio.run(scenario())


# -- TLS (rediss://) --------------------------------------------------------------------


class TestRedisTLSConformance(CrossProcessConformance):
    """The whole suite over TLS with a client certificate (the server requires one)."""

    @pytest.fixture
    def url(self, redis_tls_server: RedisServer) -> str:
        return _url(redis_tls_server)


def test_the_async_tls_store_builds_its_tls_context_off_the_event_loop(
    redis_tls_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading the CA bundle and the client certificate takes tens of ms of CPU: the
    async store does it on a worker thread, never on the loop (which it would hold)."""
    import redis.utils

    loading: list[str] = []
    load = ssl.SSLContext.load_verify_locations

    def spy(context: ssl.SSLContext, *arguments: object, **options: object) -> None:
        loading.append(threading.current_thread().name)
        load(context, *arguments, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", spy)
    shared = getattr(redis.utils, "_SHARED_SSL_CONTEXTS", None)
    if shared is not None:
        shared.clear()  # redis-py shares contexts: make this store build its own

    async def scenario() -> str:
        async with libkv.aio.open(_url(redis_tls_server)) as store:
            await store.put("k", b"v")
            async with store.watch("k") as watch:
                assert await watch.next_event(5) is not None
        return threading.current_thread().name

    loop_thread = asyncio.run(scenario())
    assert loading and loop_thread not in loading, loading


BIG = b"v" * (16 * 1024 * 1024)


class _Writes:
    """Spies on asyncio's stream writes: the largest one, and after ``cancel_after``
    writes, cancels ``task``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.largest = 0
        self.count = 0
        self.cancel_after: int | None = None
        self.task: asyncio.Task[object] | None = None
        writelines = asyncio.StreamWriter.writelines

        def spy(writer: asyncio.StreamWriter, data: list[bytes]) -> None:
            self.largest = max(self.largest, sum(len(piece) for piece in data))
            self.count += 1
            if self.count == self.cancel_after and self.task is not None:
                self.task.cancel()
            writelines(writer, data)

        monkeypatch.setattr(asyncio.StreamWriter, "writelines", spy)


def check_large_writes_go_in_slices(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncio copies (over TLS: encrypts) a write whole in one callback, which for a
    16 MiB value held the loop 60-90 ms: the async store hands it over in slices. A
    write cancelled part-way leaves nothing written and the store working."""
    from libkv_redis._async.driver import SEND_SLICE

    writes = _Writes(monkeypatch)

    async def scenario() -> None:
        async with libkv.aio.open(url) as store:
            written = await store.put("big", BIG)
            assert (await store.get("big")) == written
            assert 0 < writes.largest <= SEND_SLICE, writes.largest
            writes.count, writes.cancel_after = 0, 8
            writes.task = asyncio.ensure_future(store.put("cut", BIG))
            with pytest.raises(asyncio.CancelledError):
                await writes.task
            assert 8 <= writes.count < len(BIG) // SEND_SLICE  # cancelled while being sent
            assert await store.exists("cut") is False
            assert (await store.put("after", b"small")).value == b"small"
            assert await store.exists("cut") is False

    asyncio.run(scenario())


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_the_async_store_writes_a_large_value_a_slice_per_step_of_the_loop(
    tls: bool, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = request.getfixturevalue("redis_tls_server" if tls else "redis_server")
    check_large_writes_go_in_slices(_url(server), monkeypatch)


def test_tls_with_a_client_certificate(redis_tls_server: RedisServer) -> None:
    assert redis_tls_server.url.startswith("rediss://")
    with libkv.open(_url(redis_tls_server)) as store:
        written = store.put("k", b"v")
        assert store.get("k") == written
        with store.watch("k") as watch:
            init = watch.next_event(5)
            assert init is not None and init.action is Action.INIT and init.pair == written
            updated = store.put("k", b"w")
            event = watch.next_event(5)
            assert event is not None and event.pair == updated
        with store.lock("lock", ttl=5) as lock:
            assert lock.token is not None and store.exists("lock")
        assert not store.exists("lock")
    # The server speaks nothing but TLS.
    plain = redis_tls_server.url.replace("rediss://", "redis://") + "?timeout=2"
    with libkv.open(plain) as store, pytest.raises(NotReachableError):
        store.get("k")


def test_tls_with_an_untrusted_server_certificate_is_not_reachable(
    redis_tls_server: RedisServer, tmp_path: Path
) -> None:
    """A server whose certificate is not signed by ``ssl_ca_certs``: the handshake fails
    before any command is sent, so even a write is NotReachable, not UnknownOutcome."""
    foreign = make_test_certificates(tmp_path)
    with libkv.open(_url(redis_tls_server, ssl_ca_certs=foreign.ca, timeout=2)) as store:
        operations: tuple[Callable[[], object], ...] = (
            lambda: store.get("k"),
            lambda: store.put("k", b"v"),
        )
        for operation in operations:
            with pytest.raises(NotReachableError) as raised:
                operation()
            assert not isinstance(raised.value, UnknownOutcomeError)
            assert isinstance(raised.value.__cause__, redis.ConnectionError)
            assert "certificate verify failed" in str(raised.value)


@pytest.mark.parametrize("client", ["none", "foreign"])
def test_tls_without_an_accepted_client_certificate_is_refused(
    redis_tls_server: RedisServer, tmp_path: Path, client: str
) -> None:
    """The server requires a client certificate signed by its CA. TLS 1.3 reports the
    refusal (an alert) at the first read: AuthenticationError, or NotReachableError when
    the server closed the connection before the command went out."""
    tls = redis_tls_server.tls_options
    options: dict[str, object] = {"ssl_ca_certs": tls["ssl_ca_certs"], "timeout": 2}
    if client == "foreign":
        foreign = make_test_certificates(tmp_path)
        options |= {"ssl_certfile": foreign.client, "ssl_keyfile": foreign.client_key}
    prefix = f"t{uuid.uuid4().hex}"
    query = "&".join(f"{name}={value}" for name, value in options.items())
    with libkv.open(f"{redis_tls_server.url}?prefix={prefix}&{query}") as store:
        operations: tuple[Callable[[], object], ...] = (
            lambda: store.get("k"),
            lambda: store.put("k", b"v"),
        )
        for operation in operations:
            with pytest.raises(KVError) as raised:
                operation()
            assert isinstance(raised.value, AuthenticationError | NotReachableError)
            assert not isinstance(raised.value, UnknownOutcomeError)  # the server ran nothing
            assert isinstance(raised.value.__cause__, redis.ConnectionError)
            if isinstance(raised.value, AuthenticationError):
                assert isinstance(_root(raised.value), ssl.SSLError)
    # The refused write was not applied.
    good = "&".join(f"{name}={value}" for name, value in tls.items())
    with libkv.open(f"{redis_tls_server.url}?prefix={prefix}&{good}") as store:
        assert not store.exists("k")


def _root(error: BaseException) -> BaseException:
    """The innermost exception ``error`` was raised from or while handling."""
    while (inner := error.__cause__ or error.__context__) is not None:
        error = inner
    return error
