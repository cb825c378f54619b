"""Recipes: the patterns services build on a Store, written once on its public API.

- :class:`Cache` (``libkv.recipes.cache``): a local mirror of a prefix kept current by a
  watch, re-listing by itself when it falls behind.
- :class:`ServiceRegistry` (``libkv.recipes.discovery``): register instances held alive
  by a lease (:class:`Instance`), list them, watch a service's membership; values are
  documented JSON (:class:`ServiceInstance`).
- :class:`Election` (``libkv.recipes.election``): leader election with fencing tokens
  on the lock; ``observe()`` yields each new :class:`Leader`.
- :class:`TypedStore` (``libkv.recipes.typed``): a view of a Store whose values are
  Python objects, through a codec (:class:`JSONCodec`, :class:`TextCodec`, or yours).

Each works unchanged on every backend: what differs is read from
``store.capabilities``. See docs/recipes.md. The modules are generated from
``libkv/_async/recipes`` (edit those); :mod:`libkv.aio.recipes` has the same recipes
for asyncio.
"""

from libkv.recipes.cache import Cache
from libkv.recipes.discovery import Instance, Membership, ServiceInstance, ServiceRegistry
from libkv.recipes.election import Election, Leader, LeaderWatch
from libkv.recipes.typed import (
    Codec,
    DecodeError,
    JSONCodec,
    TextCodec,
    TypedEvent,
    TypedPair,
    TypedStore,
    TypedWatch,
)

__all__ = [
    "Cache",
    "Codec",
    "DecodeError",
    "Election",
    "Instance",
    "JSONCodec",
    "Leader",
    "LeaderWatch",
    "Membership",
    "ServiceInstance",
    "ServiceRegistry",
    "TextCodec",
    "TypedEvent",
    "TypedPair",
    "TypedStore",
    "TypedWatch",
]
