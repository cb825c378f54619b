"""Election: one leader at a time and hand-over on resign, observers, and a leader
whose key is taken.
"""

from __future__ import annotations

import time

from libkv import Store
from libkv.recipes import Election, Leader
from libkv.testing.conformance.base import (
    CONVERGENCE_BOUND,
    DELIVERY_MARGIN,
    EVENT_TIMEOUT,
    HANDOVER_BOUND,
    LOST_MARGIN,
)
from libkv.testing.flavours import Recipes
from libkv.testing.polling import assert_holds_until, wait_until
from libkv.testing.recipes.base import RecipeConformanceBase

__all__ = ["ElectionRecipeConformance"]


def _term(election: Election) -> tuple[bool, int | None]:
    """Whether a candidate leads, and its token (read afresh: both change under us)."""
    return election.is_leader, election.token


class ElectionRecipeConformance(RecipeConformanceBase):
    """Election."""

    def test_election_has_one_leader_at_a_time_and_hands_over_on_resign(
        self, recipes: Recipes, store: Store, other_store: Store
    ) -> None:
        """One candidate leads; another cannot campaign its way in until the leader
        resigns, then it is elected within 1 s with a larger fencing token."""
        ttl = self.ttl_for(store)
        first = recipes.Election(store, "elections/main", "first", ttl=ttl)
        second = recipes.Election(other_store, "elections/main", b"second", ttl=ttl)
        assert first.leader() is None and _term(first) == (False, None)
        assert first.campaign(timeout=EVENT_TIMEOUT)
        assert first.campaign(timeout=0)  # already leader: at once
        leading, term = _term(first)
        assert leading and term is not None and not first.lost.is_set()
        assert second.leader() == b"first" and first.leader() == b"first"
        assert second.campaign(timeout=0) is False and not second.is_leader
        thread, elected = self.campaign_in_thread(second)
        assert_holds_until(lambda: not elected, time.monotonic() + 0.3)
        first.resign()
        resigned = time.monotonic()
        first.resign()  # harmless
        thread.join(HANDOVER_BOUND + EVENT_TIMEOUT)
        assert elected and elected[0] - resigned <= HANDOVER_BOUND + DELIVERY_MARGIN
        assert _term(first) == (False, None)
        leading, new_term = _term(second)
        assert leading and new_term is not None and new_term > term
        assert first.leader() == b"second"
        with second:
            assert _term(second)[0]  # still leading inside the block
        assert first.leader() is None and store.list() == []

    def test_election_observers_see_each_new_leader(
        self, recipes: Recipes, store: Store, other_store: Store
    ) -> None:
        """observe() yields the current leader, then each new term (value and token),
        once each; a vacancy is not yielded."""
        ttl = self.ttl_for(store)
        first = recipes.Election(other_store, "elections/main", "first", ttl=ttl)
        second = recipes.Election(other_store, "elections/main", "second", ttl=ttl)
        bound = CONVERGENCE_BOUND + DELIVERY_MARGIN
        with recipes.Election(store, "elections/main", "observer").observe() as leaders:
            assert leaders.next(0.2) is None  # no leader yet
            assert first.campaign(timeout=EVENT_TIMEOUT) and first.token is not None
            assert leaders.next(bound) == Leader(b"first", first.token)
            first.resign()
            assert second.campaign(timeout=EVENT_TIMEOUT) and second.token is not None
            assert leaders.next(bound) == Leader(b"second", second.token)
            second.resign()
            assert first.campaign(timeout=EVENT_TIMEOUT) and first.token is not None
            assert leaders.next(bound) == Leader(b"first", first.token)
            assert leaders.next(0.2) is None
            first.resign()
        assert list(leaders) == []

    def test_leader_whose_key_is_taken_is_told_it_lost(
        self, recipes: Recipes, store: Store, other_store: Store
    ) -> None:
        """A leader whose key another client deletes sets lost and stops leading; it may
        campaign again, and its old term never deletes what others wrote."""
        ttl = self.ttl_for(store)
        leader = recipes.Election(store, "elections/main", "leader", ttl=ttl)
        assert leader.campaign(timeout=EVENT_TIMEOUT)
        lost = leader.lost
        other_store.delete("elections/main")
        wait_until(
            lost.is_set,
            ttl + store.capabilities.ttl_slack + LOST_MARGIN,
            message="lost not set after the leader's key was deleted",
        )
        assert not leader.is_leader and leader.token is None
        usurper = recipes.Election(other_store, "elections/main", "usurper", ttl=ttl)
        assert usurper.campaign(timeout=self.expiry_bound(store, ttl) + LOST_MARGIN)
        assert leader.campaign(timeout=0) is False
        assert leader.leader() == b"usurper"
        usurper.resign()
        assert leader.campaign(timeout=EVENT_TIMEOUT) and not leader.lost.is_set()
        leader.resign()
