"""The recipes (libkv.recipes) on the memory and SQLite drivers."""

import threading
import uuid
from pathlib import Path

import pytest
from test_doc_pages import run_block  # tests/ is on sys.path under pytest

import libkv
from libkv import Action, Store, cli
from libkv.recipes import ServiceRegistry
from libkv.testing.flavours import Recipes
from libkv.testing.polling import wait_until
from libkv.testing.recipes import CrossProcessRecipeConformance, RecipeConformance
from scripts.docs_site import python_blocks


class LogWatchRecipes(RecipeConformance):
    """What memory and SQLite add: their watches read a change log, so compacting it
    under a blocked cache loses the watch's history, and the cache must resync."""

    def test_cache_resyncs_when_its_watch_history_is_lost(
        self, recipes: Recipes, store: Store, other_store: Store
    ) -> None:
        events = self.fall_behind_compaction(recipes, store, other_store)
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


def test_cli_lists_services_and_their_instances(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`libkv services` prints the service names; `libkv services NAME` one line per live
    instance, ID ADDRESS METADATA; --root picks another registry."""
    url = f"memory://recipes-cli-{uuid.uuid4().hex}"
    monkeypatch.setenv("LIBKV_URL", url)
    with libkv.open(url) as store:
        registry = ServiceRegistry(store)
        registry.register("web", "10.0.0.3:80", instance_id="w1")
        registry.register("api", "10.0.0.2:80", instance_id="b")
        registry.register("api", "10.0.0.1:80", instance_id="a", metadata={"zone": "eu"})
        ServiceRegistry(store, "other").register("db", "10.0.0.9:5432", instance_id="d")
        assert cli.main(["services"]) == 0
        assert capsys.readouterr().out == "api\nweb\n"
        assert cli.main(["services", "api"]) == 0
        assert capsys.readouterr().out == 'a 10.0.0.1:80 {"zone": "eu"}\nb 10.0.0.2:80 {}\n'
        assert cli.main(["services", "--root", "other"]) == 0
        assert capsys.readouterr().out == "db\n"
        assert cli.main(["services", "nothing"]) == 0
        assert capsys.readouterr().out == ""
        assert cli.main(["services", "a/b"]) == 2
        assert "one key segment" in capsys.readouterr().err


RECIPES_DOC = Path(__file__).resolve().parent.parent / "docs" / "recipes.md"


def _recipe_blocks() -> list[tuple[int, str]]:
    return python_blocks(RECIPES_DOC)


@pytest.mark.parametrize(
    ("line", "code"), _recipe_blocks(), ids=[f"line-{line}" for line, _ in _recipe_blocks()]
)
def test_recipes_doc_block_runs_as_written(line: int, code: str, tmp_path: Path) -> None:
    """Every Python block of docs/recipes.md keeps its SQLite file in the temporary
    directory (tests/test_doc_pages.py runs every page's blocks)."""
    result = run_block(code, tmp_path)
    assert result.returncode == 0, f"docs/recipes.md block at line {line} failed:\n{result.stderr}"
    assert list(tmp_path.rglob("*.db")), "the block wrote no SQLite file in TMPDIR"


def test_service_discovery_example_prints_each_membership(tmp_path: Path) -> None:
    """The docs' (and README's) service-discovery example shows the empty membership,
    the registered instance, and the empty membership again after deregistration."""
    line, code = _recipe_blocks()[0]
    assert "ServiceRegistry" in code, f"the first block (line {line}) is not the discovery one"
    result = run_block(code, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "[]" and lines[-1] == "[]", result.stdout
    assert "address='10.0.0.7:8080', metadata={'zone': 'eu-1'}" in lines[1]
    assert lines[2] == "['api'] 10.0.0.7:8080"


def test_the_caches_of_a_store_run_one_thread(tmp_path: Path) -> None:
    """However many caches a store has, they add one thread, which ends with the last."""

    def cache_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("libkv-caches")]

    with libkv.open(f"sqlite:///{tmp_path}/caches.db") as store:
        caches = [libkv.recipes.Cache(store, prefix) for prefix in ("a", "b", "b/c", "")]
        for cache in caches:
            assert cache.wait_synced(5)
        assert cache_threads() == ["libkv-caches-sqlite"]
        store.put("b/c/d", b"1")
        wait_until(lambda: all("b/c/d" in cache for cache in caches[1:]), 5)
        for cache in caches:
            cache.close()
        assert cache_threads() == []
