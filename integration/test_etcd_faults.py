"""The etcd driver while a cluster member crashes: writes fail over, the watch goes on.

A thread writes distinct keys for about five seconds while a recursive watch records what it
sees; meanwhile the member the client talks to is SIGKILLed. Checked as properties of
the recorded history: every write is either acknowledged (and then present afterwards)
or raised as NotReachableError/UnknownOutcomeError; writes go on after the crash; the
watch delivers every acknowledged write exactly once, in revision order.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from libkv_etcd import EtcdBackend

import libkv
from integration.servers import EtcdCluster
from libkv import Action, KVPair
from libkv.testing.history import WatchRecorder, assert_valid_history, describe
from libkv.testing.polling import wait_until

KILL_AFTER = 1.5
WRITE_AFTER_CRASH = 3.5
CRASH_WRITE_BOUND = 30.0


@dataclass
class _Outcomes:
    acknowledged: dict[str, KVPair] = field(default_factory=dict)
    acknowledged_at: dict[str, float] = field(default_factory=dict)
    uncertain: dict[str, BaseException] = field(default_factory=dict)
    unexpected: list[BaseException] = field(default_factory=list)


def _write_steadily(store: libkv.Store, outcomes: _Outcomes, stop: threading.Event) -> None:
    index = 0
    while not stop.is_set():
        key = f"k{index:05d}"
        index += 1
        try:
            pair = store.put(key, key)
        except libkv.NotReachableError as error:  # also UnknownOutcomeError
            outcomes.uncertain[key] = error
            continue
        except BaseException as error:
            outcomes.unexpected.append(error)
            return
        outcomes.acknowledged[key] = pair
        outcomes.acknowledged_at[key] = time.monotonic()


def _acknowledged_since(outcomes: _Outcomes, since: float) -> int:
    return sum(1 for at in list(outcomes.acknowledged_at.values()) if at > since)


def test_writes_and_watch_survive_the_crash_of_the_member_in_use(
    etcd_cluster: EtcdCluster,
) -> None:
    with libkv.open(f"{etcd_cluster.url}/faults?timeout=5") as store:
        assert isinstance(store.backend, EtcdBackend)
        with store.watch("", recursive=True) as watch, WatchRecorder(watch) as recorder:
            init = wait_until(lambda: recorder.events, 5.0, message="no INIT event")[0]
            assert init.action is Action.INIT and init.snapshot == ()
            outcomes = _Outcomes()
            stop = threading.Event()
            writer = threading.Thread(target=_write_steadily, args=(store, outcomes, stop))
            started = time.monotonic()
            writer.start()
            try:
                wait_until(
                    lambda: time.monotonic() - started >= KILL_AFTER and outcomes.acknowledged,
                    KILL_AFTER + 5.0,
                    message="no write acknowledged before the crash",
                )
                victim = next(
                    member
                    for member in etcd_cluster.members
                    if member.endpoint == store.backend.endpoint
                )
                victim.kill()
                killed_at = time.monotonic()
                # A write caught by the crash may hang for the client timeout (a follower
                # silently drops proposals until it learns the leader is gone), so keep
                # writing until writes have been acknowledged after the crash for a while.
                wait_until(
                    lambda: (
                        time.monotonic() - killed_at >= WRITE_AFTER_CRASH
                        and _acknowledged_since(outcomes, killed_at + 1.0) >= 50
                    ),
                    CRASH_WRITE_BOUND,
                    message=lambda: f"writes stalled after the crash: {outcomes.uncertain}",
                )
            finally:
                stop.set()
                writer.join(30.0)
            assert not writer.is_alive(), "the writer is stuck"
            assert not outcomes.unexpected, f"unexpected errors: {outcomes.unexpected!r}"
            assert store.backend.endpoint != victim.endpoint
            after_crash = [at for at in outcomes.acknowledged_at.values() if at > killed_at]
            assert after_crash, f"no write was acknowledged after the crash: {outcomes.uncertain}"

            # Every acknowledged write is there afterwards; uncertain ones may or may not be.
            final = {pair.key: pair for pair in store.list()}
            for key, pair in outcomes.acknowledged.items():
                assert final.get(key) == pair, f"acknowledged {pair} but found {final.get(key)}"
            assert set(final) <= set(outcomes.acknowledged) | set(outcomes.uncertain)

            # The watch delivers each acknowledged write exactly once, in revision order.
            def delivered() -> set[str]:
                return {event.key for event in recorder.events if event.action is Action.UPDATE}

            wait_until(
                lambda: set(final) <= delivered() or recorder.error is not None,
                10.0,
                message=lambda: f"watch missed {sorted(set(final) - delivered())[:10]}",
            )
            assert recorder.error is None, f"the watch failed: {recorder.error!r}"
        events = recorder.events[1:]
        assert_valid_history(init, events, watched="", recursive=True, every_change=True)
        updates = [event for event in events if event.action is Action.UPDATE]
        assert len(updates) == len({event.key for event in updates}), "a write delivered twice"
        for event in updates:
            assert event.pair == final.get(event.key), f"{describe(event)} is not in list()"
        print(
            f"{len(outcomes.acknowledged)} acknowledged ({len(after_crash)} after the crash), "
            f"{len(outcomes.uncertain)} uncertain, {len(updates)} delivered"
        )
