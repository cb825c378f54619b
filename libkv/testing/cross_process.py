"""The conformance suite plus the guarantees that only another process can show.

`CrossProcessConformance` is `StoreConformance` with tests that open the test's `url`
in a child Python process: a dead process's keys, leases and locks vanish within
ttl + ttl_slack (it never got to close its store), and a lock excludes other
processes. A driver whose URL is reachable from another process (every driver but the
in-process `memory://`) subclasses this class instead of `StoreConformance`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from libkv import Action, Store
from libkv.testing.conformance import StoreConformance
from libkv.testing.conformance.base import (
    CONVERGENCE_BOUND,
    EVENT_TIMEOUT,
    HANDOVER_BOUND,
    ExpiryWindow,
)
from libkv.testing.history import WatchRecorder, replay
from libkv.testing.polling import wait_until

__all__ = ["CHILD_TIMEOUT", "CrossProcessConformance", "read_line", "spawn_child"]

CHILD_TIMEOUT = 30.0
"""Bound for a child process to start, import libkv and answer."""

DYING_CHILD = """
import os, sys
import libkv
store = libkv.open(sys.argv[1])
ttl = float(sys.argv[2])
store.put("dead/ttl", b"1", ttl=ttl)
store.put("dead/lease", b"1", lease=store.lease(ttl))
assert store.lock("dead/lock", ttl=ttl, value=b"child").acquire(timeout=10)
print("ready", flush=True)
os._exit(0)  # die without closing: nothing is revoked, released or deleted
"""

LOCKING_CHILD = """
import sys
import libkv
store = libkv.open(sys.argv[1])
lock = store.lock("shared-lock", ttl=float(sys.argv[2]), value=b"child")
assert lock.acquire(timeout=10)
print(lock.token, flush=True)
sys.stdin.readline()
lock.release()
store.close()
print("released", flush=True)
"""


def spawn_child(code: str, *arguments: str) -> subprocess.Popen[str]:
    """Run `code` in a child Python that imports libkv exactly as this process does."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The child's next output line; fails with its stderr if none comes in time."""
    lines: list[str] = []
    assert process.stdout is not None
    stdout = process.stdout
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not lines or not lines[0]:
        process.kill()
        _, errors = process.communicate(timeout=EVENT_TIMEOUT)
        raise AssertionError(f"the child process did not answer: {errors.strip()[-2000:]}")
    return lines[0].strip()


class CrossProcessConformance(StoreConformance):
    """StoreConformance plus tests that need the store reachable from another process."""

    def test_a_dead_process_leaves_nothing_behind(self, url: str, store: Store) -> None:
        """A process that dies without closing its store loses its TTL keys, its leased
        keys and its locks within ttl + ttl_slack, and watchers see them deleted."""
        ttl = self.ttl_for(store)
        keys = ["dead/lease", "dead/lock", "dead/ttl"]
        with store.watch("dead", recursive=True) as watch, WatchRecorder(watch) as recorder:
            init = self.recorded_init(recorder)
            child = spawn_child(DYING_CHILD, url, str(ttl))
            assert read_line(child, CHILD_TIMEOUT) == "ready"
            wait_until(
                lambda: {event.key for event in recorder.events[1:]} == set(keys),
                CONVERGENCE_BOUND,
                message="another process's writes did not reach the watch within 1 s",
            )
            child.wait(CHILD_TIMEOUT)
            died = time.monotonic()
            assert [pair.key for pair in store.list("dead")] == keys
            window = ExpiryWindow(tuple(keys), died, died + self.expiry_bound(store, ttl))
            self.assert_expiry(store, [window], recorder)
        assert replay(init, recorder.events[1:]) == {}
        updated = {event.key for event in recorder.events if event.action is Action.UPDATE}
        assert updated == set(keys)
        assert store.lock("dead/lock", ttl=ttl).acquire(blocking=False)

    def test_lock_excludes_another_process(self, url: str, store: Store) -> None:
        """A lock held by another process is not acquired here until that process releases
        it; then a waiter here gets it within 1 s, with a larger fencing token."""
        ttl = self.ttl_for(store)
        child = spawn_child(LOCKING_CHILD, url, str(ttl))
        try:
            child_token = int(read_line(child, CHILD_TIMEOUT))
            lock = store.lock("shared-lock", ttl=ttl, value=b"parent")
            assert lock.acquire(blocking=False) is False
            assert store.get("shared-lock").value == b"child"
            acquired: list[tuple[bool, float]] = []
            waiter = threading.Thread(
                target=lambda: acquired.append((lock.acquire(timeout=30), time.monotonic())),
                daemon=True,
            )
            waiter.start()
            time.sleep(0.3)  # let the waiter block
            assert acquired == [], "got a lock another process holds"
            assert child.stdin is not None
            child.stdin.write("release\n")
            child.stdin.flush()
            assert read_line(child, CHILD_TIMEOUT) == "released"
            released = time.monotonic()  # no earlier than the release itself
            waiter.join(HANDOVER_BOUND + EVENT_TIMEOUT)
            assert acquired and acquired[0][0], "the waiter did not get the lock"
            assert acquired[0][1] - released <= HANDOVER_BOUND
            assert lock.token is not None and lock.token > child_token
            lock.release()
        finally:
            if child.poll() is None:
                child.kill()
            child.communicate(timeout=CHILD_TIMEOUT)
