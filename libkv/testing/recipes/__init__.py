"""The recipes' tests (libkv.recipes), written once and run on every backend.

`RecipeConformance` needs only the function-scoped `url` fixture of the conformance
suite (each test starts with an empty namespace; every client of `url` in a test
reaches the same data). Every test runs in both flavours, as the store conformance
does: on `libkv.recipes` over `libkv.open`, and on `libkv.aio.recipes` over
`libkv.aio.open` behind the blocking facade of `libkv.testing.flavours` (where a
callback holding the loop over 50 ms, or a libkv task left after close, fails the
test). A backend whose URL another process can open subclasses
`CrossProcessRecipeConformance`, which adds the cases that need a real second process
(a killed registrant disappears; a killed leader is replaced); the second process is
sync, the test's side runs in its flavour.

Expectations are chosen from `store.capabilities`, never skipped. Timing bounds are the
contract's: 1 s for convergence, `latest_expiry(ttl)` for a dead holder's keys.

The suite is one mixin per recipe, each readable on its own: `base` (the conformance
suite's fixtures and TTL helpers, and the `recipes` fixture: the recipe classes of the
test's flavour), `cache`, `discovery` (ServiceRegistry), `election`,
`typed` (codecs) and `cross_process` (the cases that need a second process).
`RecipeConformance` and `CrossProcessRecipeConformance` compose them.
"""

from libkv.testing.recipes.base import RecipeConformanceBase
from libkv.testing.recipes.cache import CacheRecipeConformance
from libkv.testing.recipes.cross_process import ChildProcessRecipeConformance
from libkv.testing.recipes.discovery import DiscoveryRecipeConformance
from libkv.testing.recipes.election import ElectionRecipeConformance
from libkv.testing.recipes.typed import TypedRecipeConformance

__all__ = [
    "CacheRecipeConformance",
    "ChildProcessRecipeConformance",
    "CrossProcessRecipeConformance",
    "DiscoveryRecipeConformance",
    "ElectionRecipeConformance",
    "RecipeConformance",
    "RecipeConformanceBase",
    "TypedRecipeConformance",
]


class RecipeConformance(
    CacheRecipeConformance,
    DiscoveryRecipeConformance,
    ElectionRecipeConformance,
    TypedRecipeConformance,
):
    """Every recipe's guarantees as tests. Subclass it and provide a function-scoped `url`."""


class CrossProcessRecipeConformance(RecipeConformance, ChildProcessRecipeConformance):
    """RecipeConformance plus the cases that need the store reachable from another process."""
