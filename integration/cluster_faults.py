"""Support for the fault tests of the clustered form of every network backend.

`CLUSTERED` is the table of configurations, one entry each: a 3-member etcd cluster, a
3-server Consul cluster and a Redis master with a replica and a Sentinel. Adding a
backend (the ZooKeeper ensemble) is one entry. The member faulted is the one the
client talks to: the Raft leader, put first in the URL, or the Redis master. The
`running` fixture (imported into integration/conftest.py) starts one of them for each
test of `test_cluster_faults.py` (a member crashes or freezes during writes) and
`test_cluster_linearizability.py` (a compare-and-swap counter, lock fencing, a killed
lease holder).

Every scenario records each operation's outcome (`Call`, `outcome_of`) and checks
properties of that record afterwards (in the manner of etcd's robustness tests and
Jepsen's register checks).

Redis replicates asynchronously: a failover may lose acknowledged writes, which its
README documents. There those losses are measured and printed, not asserted away;
everything else is asserted on every backend. Each test prints one line of figures
(`report_figures`; run with ``-s`` to see them).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import libkv
from integration.servers import (
    ConsulCluster,
    EtcdCluster,
    RedisSentinelGroup,
    ServerCluster,
    ServerProcess,
    ZooKeeperEnsemble,
)
from libkv import Store
from libkv.testing.conformance.base import EVENT_TIMEOUT
from libkv.testing.faults import FAULT_TIMEOUT, NOT_REACHABLE_MARGIN, RECOVERY_BOUND
from libkv.testing.polling import wait_until

# A fault must never kill a libkv thread (a keep-alive, a watch feed) with an exception:
# each test module sets `pytestmark = THREAD_EXCEPTIONS_FAIL`.
THREAD_EXCEPTIONS_FAIL = pytest.mark.filterwarnings(
    "error::pytest.PytestUnhandledThreadExceptionWarning"
)

CALL_BOUND = FAULT_TIMEOUT + NOT_REACHABLE_MARGIN
"""Contract: a call ends (with a result or NotReachableError) this long after it began."""
FROZEN_FOR = FAULT_TIMEOUT + NOT_REACHABLE_MARGIN
"""How long a member stays frozen: past the store's timeout, and then some."""
REJOIN_BOUND = 60.0
"""Bound for a restarted or continued member to be part of a healthy cluster again."""
PROGRESS_BOUND = 30.0
"""Bound for the clients to make progress (writes, increments, locks) after a fault."""
LOCK_TTL = 5.0
"""Lock ttl: outlives a failover, short enough that a lock stranded by a failed release
frees itself within the test."""


# -- the clustered configurations -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Clustered:
    """One backend in its clustered form, and what its replication promises."""

    name: str
    make: Callable[[], ServerCluster[Any]]
    victim: Callable[[ServerCluster[Any]], ServerProcess | None]
    """The member the client talks to: the one a fault hits."""
    url: Callable[[ServerCluster[Any], ServerProcess], str]
    """The URL (no options), reaching `victim` first."""
    options: str = ""
    durable: bool = True
    """Whether an acknowledged write survives the loss of any one member (quorum
    replication). False: asynchronous replication, losses are measured."""
    watch_errors: tuple[type[libkv.KVError], ...] = ()
    """Errors a watch may end with across a failover, as the backend documents."""


def _leader(cluster: ServerCluster[Any]) -> ServerProcess | None:
    return cluster.leader()


def _leader_first(cluster: ServerCluster[Any], victim: ServerProcess) -> str:
    """All members, the victim first, so the client starts with it."""
    others = [member.endpoint for member in cluster.members if member is not victim]
    return f"{cluster.scheme}://" + ",".join([victim.endpoint, *others])


def _master(cluster: ServerCluster[Any]) -> ServerProcess | None:
    assert isinstance(cluster, RedisSentinelGroup)
    return cluster.master()


def _through_sentinel(cluster: ServerCluster[Any], victim: ServerProcess) -> str:
    return cluster.url


CLUSTERED = [
    Clustered("etcd-cluster", EtcdCluster, _leader, _leader_first),
    Clustered("consul-cluster", ConsulCluster, _leader, _leader_first, "session_ttl_min=1"),
    Clustered(
        "redis-sentinel",
        RedisSentinelGroup,
        _master,
        _through_sentinel,
        durable=False,
        watch_errors=(libkv.HistoryLostError,),  # plugins/redis/README.md, Sentinel
    ),
    Clustered("zookeeper-ensemble", ZooKeeperEnsemble, _leader, _leader_first),
]


@dataclasses.dataclass
class Running:
    """A started cluster of one configuration, with the member a fault will hit."""

    backend: Clustered
    cluster: ServerCluster[Any]
    victim: ServerProcess
    url: str
    """The URL of a fresh namespace, with the fault timeout."""

    def open(self) -> Store:
        return libkv.open(self.url)

    def assert_talks_to_victim(self, store: Store) -> None:
        """Where the driver says which member it talks to, it is the victim."""
        endpoint = getattr(store, "endpoint", None)
        assert endpoint in (None, self.victim.endpoint), (
            f"the store talks to {endpoint}, not to {self.victim.endpoint}"
        )

    def heal(self) -> None:
        """Bring every member back and wait until the cluster is healthy again."""
        for member in self.cluster.members:
            if member.paused:
                member.resume()
            elif not member.running:
                member.start(wait=False)
        self.cluster.wait_healthy(REJOIN_BOUND)


@pytest.fixture(params=CLUSTERED, ids=[backend.name for backend in CLUSTERED])
def running(request: pytest.FixtureRequest) -> Iterator[Running]:
    """A fresh cluster of one configuration for one test (tests kill its members)."""
    backend: Clustered = request.param
    cluster = backend.make()
    try:
        cluster.start()
        victim = wait_until(lambda: backend.victim(cluster), EVENT_TIMEOUT, message="no leader")
        assert victim is not None
        options = f"prefix=t{uuid.uuid4().hex}&timeout={FAULT_TIMEOUT}"
        if backend.options:
            options += "&" + backend.options
        base = backend.url(cluster, victim)
        url = base + ("&" if "?" in base else "?") + options
        yield Running(backend, cluster, victim, url)
    finally:
        cluster.close()


def report_figures(running: Running, scenario: str, **figures: object) -> None:
    listing = " ".join(f"{name}={value}" for name, value in figures.items())
    print(f"\nFIGURES {running.backend.name} {scenario}: {listing}")


# -- recorded operations ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Call:
    """One operation: when it began and ended and what came of it."""

    started: float
    ended: float
    outcome: str
    """"ok", "not-reachable" (certainly not applied), "unknown" or "error"."""
    error: BaseException | None = None

    @property
    def took(self) -> float:
        return self.ended - self.started


def outcome_of(error: BaseException) -> str:
    if isinstance(error, libkv.UnknownOutcomeError):
        return "unknown"
    if isinstance(error, libkv.NotReachableError):
        return "not-reachable"
    return "error"


def retrying(call: Callable[[], Any], what: str) -> Any:
    """`call`'s result once it stops raising NotReachableError (bounded)."""
    results: list[Any] = []
    failures: list[str] = []

    def attempt() -> bool:
        try:
            results.append(call())
        except libkv.NotReachableError as error:
            failures[:] = [repr(error)]
            return False
        return True

    wait_until(attempt, RECOVERY_BOUND, 0.1, message=lambda: f"{what}: {failures}")
    return results[-1]
