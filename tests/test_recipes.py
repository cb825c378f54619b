"""The recipes (libkv.recipes) on the memory and SQLite drivers."""

import uuid
from pathlib import Path

import pytest

from libkv import Action, Store
from libkv.testing.recipes import CrossProcessRecipeConformance, RecipeConformance


class LogWatchRecipes(RecipeConformance):
    """What memory and SQLite add: their watches read a change log, so compacting it
    under a blocked cache loses the watch's history, and the cache must resync."""

    def test_cache_resyncs_when_its_watch_history_is_lost(
        self, store: Store, other_store: Store
    ) -> None:
        events = self.fall_behind_compaction(store, other_store)
        inits = [event for event in events if event.action is Action.INIT]
        assert len(inits) == 2, f"no resync reported to the listener: {events}"
        assert inits[1].snapshot == tuple(store.list("app"))


class TestMemoryRecipes(LogWatchRecipes):
    @pytest.fixture
    def url(self) -> str:
        return f"memory://recipes-{uuid.uuid4().hex}"


class TestSQLiteRecipes(LogWatchRecipes, CrossProcessRecipeConformance):
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path}/kv.db"
