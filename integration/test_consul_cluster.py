"""The Consul driver against the harness's 3-server Consul cluster: the conformance suite,
and the store carrying on (writes and a watch) after the leader is killed."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from libkv_consul import ConsulBackend

import libkv
from integration.servers import ConsulCluster
from libkv.testing import CrossProcessConformance
from libkv.testing.history import WatchRecorder, replay
from libkv.testing.polling import wait_until


@pytest.fixture(scope="module")
def shared_consul_cluster() -> Iterator[ConsulCluster]:
    """One cluster for the whole conformance suite (each test has its own namespace).

    The harness's ``consul_cluster`` fixture is function-scoped (a fresh cluster for a
    test that kills a member); starting one per conformance test would cost minutes.
    """
    with ConsulCluster() as cluster:
        yield cluster


class TestConsulCluster(CrossProcessConformance):
    @pytest.fixture
    def url(self, shared_consul_cluster: ConsulCluster) -> str:
        return f"{shared_consul_cluster.url}/t{uuid.uuid4().hex}?session_ttl_min=1"


def test_store_carries_on_after_the_leader_is_killed(consul_cluster: ConsulCluster) -> None:
    """Writes go on through the election (failing only with NotReachableError or
    UnknownOutcomeError), every acknowledged write survives, a watch converges, and a
    lease taken before the kill is still held."""
    cluster = consul_cluster
    leader = cluster.leader()
    assert leader is not None
    # Talk to the leader first, so that its death also moves the store to another agent.
    ordered = [leader, *(member for member in cluster.members if member is not leader)]
    url = "consul://" + ",".join(member.endpoint for member in ordered)
    with libkv.open(f"{url}/t{uuid.uuid4().hex}?session_ttl_min=1&timeout=10") as store:
        lease = store.lease(4.0)
        store.put("service", b"up", lease=lease)
        stop = threading.Event()
        acknowledged: dict[str, int] = {}
        failures: list[BaseException] = []

        def write() -> None:
            index = 0
            while not stop.is_set():
                key = f"k{index:05d}"
                index += 1
                try:
                    acknowledged[key] = store.put(key, key).version
                except BaseException as error:  # checked below
                    failures.append(error)
                    if not isinstance(error, libkv.NotReachableError):
                        return

        with store.watch("", recursive=True) as watch, WatchRecorder(watch) as recorder:
            writer = threading.Thread(target=write, daemon=True)
            writer.start()
            wait_until(lambda: len(acknowledged) > 20, 10.0, message="no writes")
            leader.kill()
            wait_until(
                lambda: cluster.leader() not in (None, leader), 30.0, message="no new leader"
            )
            count = len(acknowledged)
            wait_until(lambda: len(acknowledged) > count + 20, 30.0, message="no writes after")
            stop.set()
            writer.join(15)
            assert all(isinstance(error, libkv.NotReachableError) for error in failures), failures
            expected = {pair.key: pair for pair in store.list()}
            assert set(acknowledged) <= set(expected), "an acknowledged write was lost"
            wait_until(
                lambda: (
                    bool(recorder.events)
                    and replay(recorder.events[0], recorder.events[1:]) == expected
                ),
                10.0,
                message=lambda: f"the watch did not converge: {recorder.error!r}",
            )
            assert recorder.error is None and not watch.closed
        assert (
            isinstance(store.backend, ConsulBackend) and store.backend.endpoint != leader.endpoint
        )
        assert not lease.lost.is_set()
        assert store.get("service").value == b"up"
