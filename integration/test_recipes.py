"""The recipes (libkv.recipes) on real Redis and etcd servers (see integration/servers.py).

Besides the shared suite: a Cache re-lists by itself, telling its listeners, after the
two real ways a watch falls behind for good: Redis restarted without its data (history
lost) and etcd unreachable past the store's timeout.
"""

from __future__ import annotations

import threading
import uuid

import pytest

import libkv
from integration.servers import EtcdServer, RedisServer
from integration.servers.consul import ConsulServer
from integration.servers.zookeeper import ZooKeeperServer
from integration.test_consul import consul_url
from libkv import Action, Event
from libkv.recipes import Cache
from libkv.testing import wait_until
from libkv.testing.recipes import CrossProcessRecipeConformance

RESYNC_TIMEOUT = 20.0
"""Bound for a restarted server to answer and the cache to re-list (server start-up)."""


class TestRedisRecipes(CrossProcessRecipeConformance):
    @pytest.fixture
    def url(self, redis_server: RedisServer) -> str:
        return f"{redis_server.url}?prefix=t{uuid.uuid4().hex}"


class TestEtcdRecipes(CrossProcessRecipeConformance):
    @pytest.fixture
    def url(self, etcd_server: EtcdServer) -> str:
        return f"{etcd_server.url}/t{uuid.uuid4().hex}"


class TestZooKeeperRecipes(CrossProcessRecipeConformance):
    @pytest.fixture
    def url(self, zookeeper_server: ZooKeeperServer) -> str:
        return f"{zookeeper_server.url}/t{uuid.uuid4().hex}"


class TestConsulRecipes(CrossProcessRecipeConformance):
    @pytest.fixture
    def url(self, consul_server: ConsulServer) -> str:
        return consul_url(consul_server)


def test_cache_resyncs_after_redis_lost_its_data(
    dedicated_redis: RedisServer,
) -> None:
    """Redis restarted without persistence: the cache's watch reports history lost, the
    cache clears ``synced``, re-lists the (now empty) store, tells its listeners with a
    second INIT, and follows the new history."""
    with libkv.open(f"{dedicated_redis.url}?timeout=10") as store:
        store.put("app/a", b"1")
        events: list[Event] = []
        unsynced = threading.Event()
        cache = Cache(store, "app", listener=events.append)
        try:
            assert cache.wait_synced(5)
            assert cache.get("app/a") is not None
            watcher = threading.Thread(
                target=lambda: (
                    wait_until(lambda: not cache.synced, RESYNC_TIMEOUT) and unsynced.set()
                ),
                daemon=True,
            )
            watcher.start()
            dedicated_redis.restart()
            wait_until(
                lambda: [event.action for event in events].count(Action.INIT) == 2,
                RESYNC_TIMEOUT,
                message=lambda: f"no resync: {events}",
            )
            watcher.join(RESYNC_TIMEOUT)
            assert unsynced.is_set(), "synced stayed set while the cache was behind"
            assert cache.wait_synced(5)
            assert events[-1].action is Action.INIT and events[-1].snapshot == ()
            assert cache.get("app/a") is None and len(cache) == 0
            store.put("app/b", b"2")
            wait_until(lambda: cache.list() == store.list("app"), 1.0)
        finally:
            cache.close()


def test_cache_resyncs_after_etcd_was_unreachable_past_the_timeout(
    stopped_server: EtcdServer,
) -> None:
    """etcd down for longer than the store's timeout: the cache's watch raises
    NotReachableError, the cache clears ``synced`` and keeps retrying; once etcd is back
    it re-lists, tells its listeners with a second INIT, and holds what was written."""
    url = f"{stopped_server.url}/t{uuid.uuid4().hex}?timeout=1"
    with libkv.open(url) as store:
        store.put("app/a", b"1")
        events: list[Event] = []
        cache = Cache(store, "app", listener=events.append)
        try:
            assert cache.wait_synced(5)
            stopped_server.stop()
            wait_until(lambda: not cache.synced, RESYNC_TIMEOUT, message="synced stayed set")
            stopped_server.start()
            with libkv.open(url) as writer:
                writer.put("app/b", b"2")
            assert cache.wait_synced(RESYNC_TIMEOUT)
            wait_until(lambda: cache.list() == store.list("app"), 1.0, message=lambda: str(events))
            assert [event.action for event in events].count(Action.INIT) == 2
        finally:
            cache.close()
