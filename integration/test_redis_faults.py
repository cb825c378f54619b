"""The Redis driver against real redis-server processes it stops, freezes, restarts or
fails over (see integration/servers.py), and out-of-range input (issue 8). The URLs,
history, expiry, TLS and conformance tests are in test_redis.py."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import cast

import pytest
import redis
from libkv_redis.driver import CAPABILITIES

import libkv
from integration.servers import RedisSentinelGroup, RedisServer, ServerError
from integration.test_redis import _url
from libkv import (
    Action,
    HistoryLostError,
    InvalidURLError,
    KeyModifiedError,
    KVError,
    NotReachableError,
    UnknownOutcomeError,
    ops,
)
from libkv.testing import WatchRecorder, assert_holds_until, wait_until

# -- restarts and outages ----------------------------------------------------------------


def test_write_to_a_frozen_server_has_an_unknown_outcome(dedicated_redis: RedisServer) -> None:
    with libkv.open(f"{dedicated_redis.url}?timeout=0.5") as store:
        store.put("k", b"v")
        dedicated_redis.pause()
        try:
            with pytest.raises(UnknownOutcomeError):
                store.put("k", b"w")
            with pytest.raises(NotReachableError):
                store.get("k")
        finally:
            dedicated_redis.resume()
        assert store.get("k").value == b"w"  # it was applied after all


def test_watch_survives_a_restart_of_a_persistent_server(dedicated_redis: RedisServer) -> None:
    """With the data saved (here by SAVE; in production by RDB/AOF persistence), a
    restart is only a connection loss: the watch carries on and misses nothing."""
    with libkv.open(f"{dedicated_redis.url}?timeout=10") as store:
        store.put("k", b"0")
        with store.watch("k") as watch:
            assert watch.next_event(5) is not None  # INIT
            store.put("k", b"1")
            client = redis.Redis(port=dedicated_redis.port)
            client.save()
            client.close()
            dedicated_redis.restart()
            store.put("k", b"2")
            values = []
            for _ in range(2):
                event = watch.next_event(15)
                assert event is not None and event.pair is not None
                values.append(event.pair.value)
            assert values == [b"1", b"2"]


def test_watch_survives_a_restart_and_reports_the_lost_history(
    dedicated_redis: RedisServer,
) -> None:
    """Without persistence a restart empties Redis: the revision goes back, and the
    watch raises HistoryLostError instead of carrying on over a different history."""
    with libkv.open(f"{dedicated_redis.url}?timeout=10") as store:
        for number in range(5):
            store.put("k", str(number))
        with store.watch("k") as watch:
            assert watch.next_event(5) is not None  # INIT
            store.put("k", b"before")
            event = watch.next_event(5)
            assert event is not None and event.pair is not None
            assert event.pair.value == b"before"
            dedicated_redis.restart()
            with pytest.raises(HistoryLostError):
                watch.next_event(15)


def test_a_reset_database_written_past_the_watch_revision_is_history_lost(
    dedicated_redis: RedisServer,
) -> None:
    """Without persistence a restart empties Redis; the new key space's revisions start
    above the old ones (at the server clock), so after other clients wrote to it the
    revision alone looks fine, but the history is a different one: the watch raises
    HistoryLostError instead of carrying on."""
    url = f"{dedicated_redis.url}?timeout=10"
    with libkv.open(url) as store, store.watch("k") as watch:
        store.put("k", b"before")
        assert watch.next_event(5) is not None  # INIT
        event = watch.next_event(5)
        assert event is not None and event.pair is not None and event.pair.value == b"before"
        revision = watch.revision
        dedicated_redis.restart()
        with libkv.open(url) as writer:
            for number in range(3):
                writer.put("k", str(number))
            assert writer.get("k").version > revision
        with pytest.raises(HistoryLostError, match=r"reset|discarded"):
            watch.next_event(15)


def test_watch_rides_out_a_short_outage(dedicated_redis: RedisServer) -> None:
    """A connection loss without data loss: the watch reconnects and misses nothing."""
    with libkv.open(f"{dedicated_redis.url}?timeout=10") as store, store.watch("k") as watch:
        assert watch.next_event(5) is not None  # INIT
        received: list[bytes] = []
        stop = threading.Event()

        def consume() -> None:
            while not stop.is_set():
                event = watch.next_event(0.2)
                if event is not None and event.pair is not None:
                    received.append(event.pair.value)

        consumer = threading.Thread(target=consume)
        consumer.start()
        try:
            store.put("k", b"1")
            wait_until(lambda: received == [b"1"], 5)
            client = redis.Redis(port=dedicated_redis.port)
            client.client_kill_filter(_type="normal", skipme=True)
            client.close()
            store.put("k", b"2")  # the pool replaces its killed connections
            wait_until(lambda: received == [b"1", b"2"], 10, message=lambda: str(received))
        finally:
            stop.set()
            consumer.join(5)


# -- Sentinel ---------------------------------------------------------------------------


def test_sentinel_reaches_the_master(redis_sentinel_group: RedisSentinelGroup) -> None:
    group = redis_sentinel_group
    url = _url(group)
    assert "sentinel=mymaster" in url
    with libkv.open(url) as store:
        written = store.put("k", b"v")
        assert store.get("k") == written
        with store.watch("", recursive=True) as watch:
            init = watch.next_event(5)
            assert init is not None and init.action is Action.INIT
            assert [pair.key for pair in init.snapshot] == ["k"]
            created = store.create("other", b"1")
            event = watch.next_event(5)
            assert event is not None and event.pair == created
        with store.lock("lock", ttl=5) as lock:
            assert lock.token is not None and store.exists("lock")
        assert not store.exists("lock")
        revision = str(store.put("last", b"x").version).encode()
    # The writes went to the master (the Sentinel names it), and replicated.
    assert group.master() is group.primary
    assert group.primary.call("GET", "{libkv}:revision") == revision
    for replica in group.replicas:
        wait_until(lambda: replica.call("GET", "{libkv}:revision") == revision, 5)  # noqa: B023


def test_sentinel_failover_moves_the_store_and_its_watch_to_the_new_master(
    redis_sentinel_group: RedisSentinelGroup,
) -> None:
    """After ``SENTINEL FAILOVER`` the Store follows the new master and keeps working,
    and a watch open across the failover delivers exactly the acknowledged writes, in
    order. Writes are paused while the roles switch (and the replica has them all), so
    no history is lost and the watch must carry on, not raise HistoryLostError: Redis
    replicates asynchronously, so a write acknowledged by the old master in that window
    could be lost, as for any Redis client (see the README)."""
    group = redis_sentinel_group
    old_master, new_master = group.primary, group.replicas[0]
    with libkv.open(_url(group, timeout=5)) as store:
        acknowledged = [store.put("k", f"before{number}") for number in range(5)]
        with (
            store.watch("k", since=acknowledged[0].version - 1) as watch,
            WatchRecorder(watch) as recorder,
        ):
            client = redis.Redis(port=old_master.port)
            try:  # every acknowledged write is on the replica
                assert client.wait(1, 5000) == 1
            finally:
                client.close()
            group.sentinel.failover()
            wait_until(lambda: group.master() is new_master, 20, 0.1)
            # The Store leaves the old master within about a second, long before
            # Sentinel demotes it (8 s or more): no write goes to it meanwhile.
            wait_until(lambda: not _clients(old_master), 5, 0.05, message="store still there")
            # No write was in flight during the switch: none has an unknown outcome.
            acknowledged += [store.put("k", f"after{number}") for number in range(5)]
            assert store.get("k") == acknowledged[-1]

            def caught_up() -> bool:
                return recorder.error is not None or len(recorder.events) >= len(acknowledged)

            wait_until(caught_up, 20, message=lambda: f"{recorder.events} {recorder.error}")
        assert recorder.error is None, repr(recorder.error)
        assert [event.pair for event in recorder.events] == acknowledged
        # The writes went to the new master, and the old one comes back as its replica
        # with the same history.
        revision = str(acknowledged[-1].version).encode()
        assert new_master.call("GET", "{libkv}:revision") == revision
        wait_until(lambda: _role(old_master) == b"slave", 20, 0.2)
        wait_until(lambda: _probe(old_master, "GET", "{libkv}:revision") == revision, 10, 0.1)


def _probe(server: RedisServer, *arguments: str) -> object:
    """The reply to one command, or None if the connection failed (Sentinel kills the
    client connections of a master it demotes)."""
    try:
        return server.call(*arguments)
    except (OSError, ServerError):
        return None


def _role(server: RedisServer) -> object:
    """``master`` or ``slave`` (bytes), or None if the server did not answer."""
    reply = _probe(server, "ROLE")
    return reply[0] if isinstance(reply, list) else None


def _clients(server: RedisServer) -> list[str]:
    """The normal client connections of ``server`` but ours and the Sentinel's."""
    reply = server.call("CLIENT", "LIST", "TYPE", "normal")
    assert isinstance(reply, bytes)
    return [
        line
        for line in reply.decode().splitlines()
        if " name=sentinel-" not in line and " cmd=client|list " not in line
    ]


def test_a_write_refused_by_a_demoted_master_is_not_an_unknown_outcome(
    redis_sentinel_group: RedisSentinelGroup,
) -> None:
    """redis-py's Sentinel client turns READONLY (the master it still talks to became a
    replica) into a ConnectionError; the write was refused, so NotReachableError."""
    group = redis_sentinel_group
    with libkv.open(_url(group, timeout=2)) as store:
        store.put("k", b"v")
        group.primary.call("REPLICAOF", "127.0.0.1", "1")  # a replica of nothing, read-only
        with pytest.raises(NotReachableError) as raised:
            store.put("k", b"w")
        assert not isinstance(raised.value, UnknownOutcomeError)
        assert isinstance(raised.value.__cause__, redis.ConnectionError)
        assert isinstance(raised.value.__cause__.__context__, redis.ReadOnlyError)
        group.primary.call("REPLICAOF", "NO", "ONE")
        assert store.get("k").value == b"v"


# -- faults and out-of-range input (issue 8) ---------------------------------------


def _state(server: RedisServer) -> dict[bytes, object]:
    """Every physical key with its type-independent dump: what a refused write must not change."""
    client = redis.Redis(port=server.port)
    try:
        keys = cast("list[bytes]", client.keys("*"))
        return {key: (client.dump(key), client.pttl(key)) for key in sorted(keys)}
    finally:
        client.close()


def _is_argument_error(error: BaseException) -> bool:
    return isinstance(error, KVError) and isinstance(error, ValueError)


# -- item 1: a write the server cannot represent is refused whole ------------------------


def test_a_write_redis_cannot_represent_is_refused_whole_and_watches_carry_on(
    dedicated_redis: RedisServer,
) -> None:
    """The scripts check every deadline before writing anything. Widening this Store's
    ``ttl_max`` lets a ttl past what Redis can keep exactly (2**53 ms) reach the
    server: the put, a transaction holding it and a lease are refused with a typed
    error, nothing changes in Redis, and an open watch carries on without a gap."""
    with libkv.open(_url(dedicated_redis)) as store:
        store.capabilities = dataclasses.replace(CAPABILITIES, ttl_max=1e300)
        store.put("a", b"1")
        with store.watch("", recursive=True) as watch, WatchRecorder(watch) as recorder:
            wait_until(lambda: len(recorder.events) == 1, 5)  # INIT
            before = _state(dedicated_redis)
            for attempt in (
                lambda: store.put("k", b"v", ttl=1e15),
                lambda: store.transaction([ops.put("b", b"2"), ops.put("k", b"v", ttl=1e15)]),
                lambda: store.lease(1e15),
            ):
                with pytest.raises(KVError) as raised:
                    attempt()
                assert _is_argument_error(raised.value), repr(raised.value)
                assert not isinstance(raised.value, NotReachableError)
                assert _state(dedicated_redis) == before
            assert not store.exists("k") and not store.exists("b")
            later = store.put("c", b"3")
            wait_until(lambda: len(recorder.events) == 2 or recorder.error, 5)
            assert recorder.error is None, repr(recorder.error)
            assert [(event.action, event.pair) for event in recorder.events[1:]] == [
                (Action.UPDATE, later)
            ]
            # Resuming from before the refusals misses nothing either.
            with store.watch("", recursive=True, since=later.version - 1) as resumed:
                event = resumed.next_event(5)
                assert event is not None and event.pair == later


def test_a_ttl_at_the_declared_maximum_is_kept(dedicated_redis: RedisServer) -> None:
    """``ttl_max`` is what Redis represents: a key and a lease at it are written and
    expire then (the key's PEXPIREAT is that far in the future)."""
    ttl_max = CAPABILITIES.ttl_max
    with libkv.open(_url(dedicated_redis)) as store, store.watch("", recursive=True) as watch:
        assert watch.next_event(5) is not None  # INIT
        pair = store.put("k", b"v", ttl=ttl_max)
        event = watch.next_event(5)
        assert event is not None and event.pair == pair
        client = redis.Redis(port=dedicated_redis.port)
        try:
            keys = cast("list[bytes]", client.keys("*"))
            (data_key,) = [key for key in keys if key.endswith(b"/k")]
            assert client.pttl(data_key) > (ttl_max - 60) * 1000
        finally:
            client.close()
        lease = store.lease(ttl_max, keepalive=False)
        try:
            assert store.put("l", b"v", lease=lease).version > pair.version
        finally:
            lease.revoke()


# -- item 2: revisions, versions, tokens and lease ids never go back ------------------


def test_versions_tokens_and_lease_ids_never_go_back_after_a_wipe(
    dedicated_redis: RedisServer,
) -> None:
    """Without persistence, ``kill -9`` and a restart empty Redis. The Store carries on
    with a new key space whose counters start at the server clock in microseconds,
    above anything the old one issued: versions, fencing tokens and lease ids only go
    up, and a compare-and-swap with a version from before the wipe fails."""
    with libkv.open(_url(dedicated_redis, timeout=5)) as store:
        stale = store.put("k", b"first")
        issued = [store.put("k", str(number)).version for number in range(5)]
        with store.lock("lock") as lock:
            assert lock.token is not None
            issued.append(lock.token)
        lease = store.lease(30, keepalive=False)
        old_lease_id = lease.id
        dedicated_redis.kill()
        dedicated_redis.start()
        pair = wait_until(lambda: _put_when_reachable(store, "k", b"after"), 10)
        assert pair is not None and pair.version > max(issued)
        with pytest.raises(KeyModifiedError):
            store.update("k", b"stale write", version=stale.version)
        with store.lock("lock") as lock:
            assert lock.token is not None and lock.token > max(issued)
        assert store.lease(30, keepalive=False).id > old_lease_id
        assert store.get("k").value == b"after"


def _put_when_reachable(store: libkv.Store, key: str, value: bytes) -> libkv.KVPair | None:
    try:
        return store.put(key, value)
    except NotReachableError:
        return None


# -- item 6: close() is prompt while the server is frozen ----------------------------


def test_watch_close_ends_iteration_within_a_second_while_the_server_is_frozen(
    dedicated_redis: RedisServer,
) -> None:
    with libkv.open(_url(dedicated_redis, timeout=10)) as store:
        watch = store.watch("", recursive=True)
        assert watch.next_event(5) is not None  # INIT
        finished = threading.Event()

        def consume() -> None:
            for _ in watch:
                pass
            finished.set()

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        dedicated_redis.pause()
        try:
            # The consumer is now blocked in a read the frozen server never answers.
            assert_holds_until(lambda: not finished.is_set(), time.monotonic() + 0.6)
            started = time.monotonic()
            watch.close()
            assert finished.wait(5), "iteration did not end"
            assert time.monotonic() - started < 1.0
        finally:
            dedicated_redis.resume()


# -- a killed or frozen server is reported, within the timeout plus 2 s ----------------


@pytest.mark.parametrize("how", ["kill", "pause"])
def test_a_watch_raises_not_reachable_when_the_server_is_gone(
    dedicated_redis: RedisServer, how: str
) -> None:
    timeout = 2.0
    with libkv.open(_url(dedicated_redis, timeout=timeout)) as store:
        store.put("k", b"0")
        watch = store.watch("", recursive=True)
        assert watch.next_event(5) is not None  # INIT
        if how == "kill":
            dedicated_redis.kill()
        else:
            dedicated_redis.pause()
        try:
            started = time.monotonic()
            with pytest.raises(NotReachableError):
                while time.monotonic() - started < 30:
                    watch.next_event(0.5)
            assert time.monotonic() - started < timeout + 2
        finally:
            if how == "pause":
                dedicated_redis.resume()


# -- item 7: Redis' own refusals become typed errors, with nothing half written --------


def test_out_of_memory_is_a_typed_error_and_writes_nothing(dedicated_redis: RedisServer) -> None:
    with libkv.open(_url(dedicated_redis)) as store:
        store.put("a", b"1")
        with store.watch("", recursive=True) as watch, WatchRecorder(watch) as recorder:
            wait_until(lambda: len(recorder.events) == 1, 5)  # INIT
            before = _state(dedicated_redis)
            dedicated_redis.call("CONFIG", "SET", "maxmemory-policy", "noeviction")
            dedicated_redis.call("CONFIG", "SET", "maxmemory", "1")
            try:
                for attempt in (
                    lambda: store.put("k", b"v"),
                    lambda: store.put("k", b"v", ttl=5),
                    lambda: store.create("k", b"v"),
                    lambda: store.transaction([ops.put("k", b"v"), ops.put("j", b"w")]),
                ):
                    with pytest.raises(KVError, match="out of memory") as raised:
                        attempt()
                    assert not isinstance(raised.value, NotReachableError)
                    assert isinstance(raised.value.__cause__, redis.ResponseError)
                    assert _state(dedicated_redis) == before
                # The watch keeps polling meanwhile, unharmed.
                assert_holds_until(
                    lambda: recorder.error is None and not recorder.ended.is_set(),
                    time.monotonic() + 0.5,
                    message=lambda: repr(recorder.error),
                )
            finally:
                dedicated_redis.call("CONFIG", "SET", "maxmemory", "0")
            later = store.put("c", b"3")
            wait_until(lambda: len(recorder.events) == 2 or recorder.error, 5)
            assert recorder.error is None, repr(recorder.error)
            assert recorder.events[1].pair == later
            assert not store.exists("k")


def test_a_database_the_server_does_not_have_is_an_invalid_url(redis_server: RedisServer) -> None:
    with libkv.open(f"{redis_server.url}/99") as store:
        with pytest.raises(InvalidURLError, match="database 99") as raised:
            store.get("k")
        assert isinstance(raised.value.__cause__, redis.ResponseError)
        with pytest.raises(InvalidURLError):
            store.put("k", b"v")


def test_compact_before_the_first_revision_is_harmless(redis_server: RedisServer) -> None:
    """A compaction point below 1 keeps everything (the core may refuse negatives
    first); whatever the server answers, nothing raw escapes and no history is lost."""
    with libkv.open(_url(redis_server)) as store:
        first = store.put("k", b"1")
        for revision in (-5, 0, 1):
            try:
                store.compact(revision)
            except KVError as error:
                assert _is_argument_error(error), repr(error)
        with store.watch("k", since=first.version - 1) as watch:
            event = watch.next_event(5)
            assert event is not None and event.pair == first


# -- item 8: a watch from a revision ahead of the store waits for it -------------------


def test_watch_since_a_revision_ahead_of_the_store_waits_for_it(
    redis_server: RedisServer,
) -> None:
    with libkv.open(_url(redis_server)) as store:
        revision = store.put("k", b"0").version
        with (
            store.watch("k", since=revision + 3) as watch,
            WatchRecorder(watch) as recorder,
        ):
            assert_holds_until(
                lambda: not recorder.events and recorder.error is None,
                time.monotonic() + 0.5,
            )
            written = [store.put("k", str(number)) for number in range(1, 6)]
            assert [pair.version for pair in written] == [revision + n for n in range(1, 6)]
            wait_until(lambda: len(recorder.events) == 2 or recorder.error, 5)
            assert recorder.error is None, repr(recorder.error)
            assert [event.pair for event in recorder.events] == written[3:]
