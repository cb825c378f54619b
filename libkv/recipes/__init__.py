"""Recipes: the patterns services build on a Store, written once on its public API.

- :class:`Cache` (``libkv.recipes.cache``): a local mirror of a prefix kept current by a
  watch, re-listing by itself when it falls behind.

Each works unchanged on every backend: what differs is read from
``store.capabilities``. See docs/recipes.md.
"""

from libkv.recipes.cache import Cache

__all__ = ["Cache"]
