"""The Consul driver against a 3-server Consul cluster: the conformance suite, and the
store carrying on (writes and a watch) after the leader is killed.

The cluster is assembled here from the harness's ConsulServer until the harness grows
its own ConsulCluster.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import pytest
from libkv_consul import ConsulStore

import libkv
from integration.servers import ConsulServer, http_request
from libkv.testing import CrossProcessConformance
from libkv.testing.history import WatchRecorder, replay
from libkv.testing.polling import wait_until

CLUSTER_START_TIMEOUT = 120.0


class ClusterMember(ConsulServer):
    """One of three Consul servers that elect a leader together."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: list[ClusterMember] = []

    def prepare(self) -> None:
        super().prepare()
        configuration = json.loads(self.configuration_path.read_text())
        configuration["retry_join"] = [f"127.0.0.1:{peer.ports['serf_lan']}" for peer in self.peers]
        configuration["retry_interval"] = "1s"
        self.configuration_path.write_text(json.dumps(configuration, indent=2) + "\n")

    def command(self) -> list[str]:
        return [
            "-bootstrap-expect=3" if part == "-bootstrap-expect=1" else part
            for part in super().command()
        ]


class ConsulCluster:
    """Three Consul servers on loopback; ``url`` names all three HTTP endpoints."""

    def __init__(self) -> None:
        self.members = [ClusterMember() for _ in range(3)]
        for member in self.members:
            member.peers = [peer for peer in self.members if peer is not member]

    def start(self) -> None:
        for member in self.members:
            member.start(wait=False)
        wait_until(
            lambda: all(member.is_healthy() for member in self.members) and self.leader(),
            CLUSTER_START_TIMEOUT,
            message="the Consul cluster did not elect a leader",
        )

    @property
    def url(self) -> str:
        return "consul://" + ",".join(member.endpoint for member in self.members)

    def leader(self) -> ClusterMember | None:
        """The running member that the others name as leader."""
        for member in self.members:
            if not member.running:
                continue
            try:
                status, body = http_request("GET", f"{member.http_address}/v1/status/leader")
            except OSError:
                continue
            address = json.loads(body) if status == 200 else ""
            for candidate in self.members:
                if address == f"127.0.0.1:{candidate.ports['server']}" and candidate.running:
                    return candidate
        return None

    def close(self) -> None:
        for member in self.members:
            member.close()


def _run() -> Iterator[ConsulCluster]:
    cluster = ConsulCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def consul_cluster() -> Iterator[ConsulCluster]:
    yield from _run()


@pytest.fixture
def fresh_consul_cluster() -> Iterator[ConsulCluster]:
    yield from _run()


class TestConsulCluster(CrossProcessConformance):
    @pytest.fixture
    def url(self, consul_cluster: ConsulCluster) -> str:
        return f"{consul_cluster.url}/t{uuid.uuid4().hex}?session_ttl_min=1"


def test_store_carries_on_after_the_leader_is_killed(
    fresh_consul_cluster: ConsulCluster,
) -> None:
    """Writes go on through the election (failing only with NotReachableError or
    UnknownOutcomeError), every acknowledged write survives, a watch converges, and a
    lease taken before the kill is still held."""
    cluster = fresh_consul_cluster
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
        assert isinstance(store, ConsulStore) and store.endpoint != leader.endpoint
        assert not lease.lost.is_set()
        assert store.get("service").value == b"up"
