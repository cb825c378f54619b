"""The Consul driver against the harness's 3-server Consul cluster: the conformance suite,
and the store carrying on (writes and a watch) after the leader is killed."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from libkv_consul import ConsulBackend
from libkv_consul._async.driver import AsyncConsulBackend
from libkv_consul.common import first_read_wait

import libkv
from integration.servers import ConsulCluster
from libkv import Action
from libkv.testing import CrossProcessConformance
from libkv.testing.conformance.base import EVENT_TIMEOUT
from libkv.testing.flavours import underlying
from libkv.testing.history import WatchRecorder, replay
from libkv.testing.polling import wait_until

BACKENDS = (ConsulBackend, AsyncConsulBackend)  # the sync flavour's, the async one's


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


@pytest.mark.usefixtures("both_flavours")
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
            isinstance(underlying(store).backend, BACKENDS)
            and underlying(store).backend.endpoint != leader.endpoint
        )
        assert not lease.lost.is_set()
        assert store.get("service").value == b"up"


@pytest.mark.usefixtures("both_flavours")
def test_a_frozen_agent_holds_no_read_or_watch_for_the_whole_timeout(
    consul_cluster: ConsulCluster,
) -> None:
    """Issue 20: a read sent to an agent that does not answer (frozen here; a follower
    without a leader holds one the same way) used to wait out the store's whole timeout
    and raise NotReachableError, although the other agents answered all along; a watch
    whose INIT or reconnection read did that failed. Now the read goes on to the next
    agent after ``first_read_wait(timeout)``: with the first-listed agent frozen for
    longer than the timeout, a watch opened then gets its INIT and its events, and reads
    are answered, each well within the timeout."""
    cluster = consul_cluster
    frozen = next(member for member in cluster.members if member is not cluster.leader())
    ordered = [frozen, *(member for member in cluster.members if member is not frozen)]
    url = "consul://" + ",".join(member.endpoint for member in ordered)
    timeout = 3.0
    bound = first_read_wait(timeout) + 1.0  # one abandoned attempt, then an answer
    with libkv.open(f"{url}/t{uuid.uuid4().hex}?session_ttl_min=1&timeout={timeout}") as store:
        assert isinstance(underlying(store).backend, BACKENDS)
        assert underlying(store).backend.endpoint == frozen.endpoint
        frozen.pause()
        try:
            started = time.monotonic()
            with store.watch("", recursive=True) as watch:
                init = watch.next_event(timeout + 1.0)  # raises NotReachableError if held
                took = time.monotonic() - started
                assert init is not None and init.action is Action.INIT
                assert took < bound, f"INIT took {took:.2f} s (bound {bound:.2f} s)"
                assert underlying(store).backend.endpoint != frozen.endpoint
                written = store.put("after-the-freeze", b"v")
                event = watch.next_event(EVENT_TIMEOUT)
                assert event is not None and event.pair == written
            store_on_frozen = libkv.open(f"{url}/t{uuid.uuid4().hex}?timeout={timeout}")
            with store_on_frozen:
                started = time.monotonic()
                with pytest.raises(libkv.KeyNotFoundError):  # an answer, not a timeout
                    store_on_frozen.get("missing")
                took = time.monotonic() - started
                assert took < bound, f"a read took {took:.2f} s (bound {bound:.2f} s)"
        finally:
            frozen.resume()
