"""The Redis driver in Cluster mode (``cluster=true``) against a Redis Cluster of three
masters that the harness starts: the whole cross-process conformance suite, and what a
dead node does to the one database it serves.

Each test gets a ``hashtag=`` of its own: an independent libkv database in one hash
slot, so the tests' databases spread over the three masters.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

import libkv
from integration.servers import RedisCluster, RedisClusterNode
from integration.test_redis import check_large_writes_go_in_slices
from libkv.testing import CrossProcessConformance
from libkv.testing.faults import FAULT_TIMEOUT, NOT_REACHABLE_MARGIN, RECOVERY_BOUND
from libkv.testing.polling import wait_until


def _hashtag() -> str:
    return f"t{uuid.uuid4().hex}"


class TestRedisCluster(CrossProcessConformance):
    @pytest.fixture
    def url(self, redis_cluster: RedisCluster) -> str:
        return f"{redis_cluster.url}&hashtag={_hashtag()}"


def test_the_async_store_writes_a_large_value_a_slice_per_step_of_the_loop(
    redis_cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_large_writes_go_in_slices(f"{redis_cluster.url}&hashtag={_hashtag()}", monkeypatch)


@pytest.fixture
def fresh_redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster of its own for a test that kills a node."""
    with RedisCluster() as cluster:
        yield cluster


def _node_of(cluster: RedisCluster, hashtag: str) -> RedisClusterNode:
    node = cluster.node_for_slot(cluster.key_slot("{" + hashtag + "}"))
    assert node is not None, f"no node serves the slot of {hashtag}"
    return node


def _hashtag_on(cluster: RedisCluster, wanted: RedisClusterNode, *, on: bool) -> str:
    """A fresh hashtag whose slot `wanted` serves (on=True) or does not (on=False)."""
    found: str | None = wait_until(
        lambda: next(
            (
                hashtag
                for hashtag in (_hashtag() for _ in range(50))
                if (_node_of(cluster, hashtag) is wanted) is on
            ),
            None,
        ),
        10.0,
        message="no hashtag found for the node",
    )
    assert found is not None
    return found


def test_a_dead_node_stops_only_its_own_database_and_the_same_store_recovers(
    fresh_redis_cluster: RedisCluster,
) -> None:
    """Killing the master that serves a database's slot: calls on that database raise
    NotReachableError within timeout + 2 s, a database on another node keeps working,
    and once the node is back the same Store works again (the node had no persistence,
    so it starts empty; versions still never go back)."""
    cluster = fresh_redis_cluster
    victim = cluster.members[0]
    doomed_tag = _hashtag_on(cluster, victim, on=True)
    spared_tag = _hashtag_on(cluster, victim, on=False)
    options = f"timeout={FAULT_TIMEOUT}"
    with (
        libkv.open(f"{cluster.url}&hashtag={doomed_tag}&{options}") as doomed,
        libkv.open(f"{cluster.url}&hashtag={spared_tag}&{options}") as spared,
    ):
        before = doomed.put("k", b"before")
        spared.put("k", b"before")
        victim.kill()
        calls: list[Callable[[], object]] = [
            lambda: doomed.get("k"),
            lambda: doomed.put("k", b"during"),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(libkv.NotReachableError):
                call()
            took = time.monotonic() - started
            assert took <= FAULT_TIMEOUT + NOT_REACHABLE_MARGIN, f"took {took:.1f} s"
        # The other database's node is alive; the cluster may call itself down for a
        # moment (cluster-require-full-coverage), then serves it again.
        spared_after = wait_until(
            lambda: _put_or_none(spared, "k", b"during"),
            RECOVERY_BOUND,
            message="the database on a live node stopped working",
        )
        assert spared.get("k") == spared_after
        victim.start()
        cluster.wait_healthy(RECOVERY_BOUND)
        after = wait_until(
            lambda: _put_or_none(doomed, "k", b"after"),
            RECOVERY_BOUND,
            message="the same Store did not recover after the node came back",
        )
        assert doomed.get("k") == after
        # The node kept nothing, yet versions (and so fencing tokens) never go back.
        assert after.version > before.version, (
            f"version {after.version} after the restart, {before.version} before"
        )
        assert [pair.key for pair in doomed.list()] == ["k"]


def _put_or_none(store: libkv.Store, key: str, value: bytes) -> libkv.KVPair | None:
    try:
        return store.put(key, value)
    except libkv.NotReachableError:
        return None
