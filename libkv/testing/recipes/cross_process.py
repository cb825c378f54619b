"""The recipe cases that need a real second process: a killed or paused registrant
leaves the registry (and a paused one registers again), a killed leader is replaced.
"""

from __future__ import annotations

import os
import signal
import time

from libkv import Store
from libkv.recipes import Leader
from libkv.testing.conformance.base import CONVERGENCE_BOUND, DELIVERY_MARGIN, EVENT_TIMEOUT
from libkv.testing.cross_process import CHILD_TIMEOUT, read_line, spawn_child
from libkv.testing.flavours import Recipes
from libkv.testing.polling import wait_until
from libkv.testing.recipes.base import RecipeConformanceBase

__all__ = ["ChildProcessRecipeConformance"]


class ChildProcessRecipeConformance(RecipeConformanceBase):
    """The cases that need the store reachable from another process."""

    def test_killed_registrant_disappears_within_latest_expiry(
        self, recipes: Recipes, url: str, store: Store
    ) -> None:
        """A process killed (SIGKILL) while registered leaves the registry within
        latest_expiry(ttl) of its death, and watchers are told."""
        ttl = self.ttl_for(store)
        registry = recipes.ServiceRegistry(store)
        with registry.watch("api") as watch:
            assert watch.next(EVENT_TIMEOUT) == []
            child = spawn_child(REGISTERING_CHILD, url, str(ttl), "dying", "yes")
            try:
                assert read_line(child, CHILD_TIMEOUT) == "ready"
                members = watch.next(CONVERGENCE_BOUND + DELIVERY_MARGIN)
                assert members is not None and [member.id for member in members] == ["dying"]
                child.kill()
                child.wait(CHILD_TIMEOUT)
                died = time.monotonic()
            finally:
                if child.poll() is None:
                    child.kill()
                child.communicate(timeout=CHILD_TIMEOUT)
            deadline = died + self.expiry_bound(store, ttl)
            wait_until(
                lambda: registry.instances("api") == [],
                deadline - time.monotonic(),
                message="a killed process's instance outlived latest_expiry(ttl)",
            )
            assert watch.next(deadline + DELIVERY_MARGIN - time.monotonic()) == []

    def test_paused_registrant_is_told_it_was_lost_and_registers_again(
        self, recipes: Recipes, url: str, store: Store
    ) -> None:
        """A process paused (SIGSTOP) past its lease's expiry drops out of the registry;
        resumed, its handle reports the loss and, unless told not to, registers again by
        itself (a new version); with reregister=False it stays out."""
        ttl = self.ttl_for(store)
        registry = recipes.ServiceRegistry(store)
        children = {
            name: spawn_child(REGISTERING_CHILD, url, str(ttl), name, again)
            for name, again in (("comeback", "yes"), ("quitter", "no"))
        }
        try:
            for child in children.values():
                assert read_line(child, CHILD_TIMEOUT) == "ready"
            before = {member.id: member.version for member in registry.instances("api")}
            assert sorted(before) == ["comeback", "quitter"]
            for child in children.values():
                os.kill(child.pid, signal.SIGSTOP)
            paused = time.monotonic()
            wait_until(
                lambda: registry.instances("api") == [],
                paused + self.expiry_bound(store, ttl) - time.monotonic(),
                message="a paused process's instances outlived latest_expiry(ttl)",
            )
            for child in children.values():
                os.kill(child.pid, signal.SIGCONT)
            for child in children.values():
                assert read_line(child, CHILD_TIMEOUT) == "lost"
            assert read_line(children["comeback"], CHILD_TIMEOUT) == "registered 2"
            after = registry.instances("api")
            assert [member.id for member in after] == ["comeback"]
            assert after[0].version > before["comeback"]
        finally:
            for child in children.values():
                os.kill(child.pid, signal.SIGCONT)
                child.kill()
                child.communicate(timeout=CHILD_TIMEOUT)

    def test_killed_leader_is_replaced_within_latest_expiry(
        self, recipes: Recipes, url: str, store: Store
    ) -> None:
        """A leader in another process killed by SIGKILL is replaced by a waiting
        candidate within latest_expiry(ttl), with a larger fencing token, and observers
        see the new term."""
        ttl = self.ttl_for(store)
        candidate = recipes.Election(store, "elections/main", "survivor", ttl=ttl)
        child = spawn_child(LEADING_CHILD, url, str(ttl))
        try:
            child_token = int(read_line(child, CHILD_TIMEOUT))
            with candidate.observe() as leaders:
                assert leaders.next(EVENT_TIMEOUT) == Leader(b"doomed", child_token)
                thread, elected = self.campaign_in_thread(candidate)
                child.kill()
                child.wait(CHILD_TIMEOUT)
                died = time.monotonic()
                bound = self.expiry_bound(store, ttl) + DELIVERY_MARGIN
                thread.join(bound + EVENT_TIMEOUT)
                assert elected, "the killed leader was not replaced"
                assert elected[0] - died <= bound
                assert candidate.token is not None and candidate.token > child_token
                new_term = leaders.next(CONVERGENCE_BOUND + DELIVERY_MARGIN)
                assert new_term == Leader(b"survivor", candidate.token)
        finally:
            if child.poll() is None:
                child.kill()
            child.communicate(timeout=CHILD_TIMEOUT)
        candidate.resign()


REGISTERING_CHILD = """
import sys
import libkv
from libkv.recipes import ServiceRegistry
from libkv.testing import wait_until
store = libkv.open(sys.argv[1])
instance = ServiceRegistry(store).register(
    "api", "127.0.0.1:1", instance_id=sys.argv[3], ttl=float(sys.argv[2]),
    reregister=sys.argv[4] == "yes",
)
print("ready", flush=True)
instance.lost.wait()
print("lost", flush=True)
if instance.reregister:
    wait_until(lambda: not instance.lost.is_set(), 30)
    print("registered", instance.registrations, flush=True)
sys.stdin.readline()
"""

LEADING_CHILD = """
import sys
import libkv
from libkv.recipes import Election
store = libkv.open(sys.argv[1])
election = Election(store, "elections/main", "doomed", ttl=float(sys.argv[2]))
assert election.campaign(timeout=10)
print(election.token, flush=True)
sys.stdin.readline()
"""
