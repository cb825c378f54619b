"""The recipes for asyncio: :mod:`libkv.recipes` with every call that does I/O awaited.

::

    async with libkv.aio.open("sqlite:///tmp/app.db") as store:
        registry = ServiceRegistry(store)
        async with registry.register("api", "10.0.0.7:8080", ttl=10) as instance:
            print(await registry.instances("api"))

The names, arguments, results and errors are those of :mod:`libkv.recipes` (both are
generated from one source, ``libkv/_async/recipes``); reads from memory (a cache's
``get``, ``in``, ``len``...) and attributes stay plain. Background work (a cache's
watch, a registration's keep-alive) runs as tasks of the running loop, so create the
recipes inside it; closing a recipe (``close()``, ``deregister()``, ``resign()``)
ends its tasks. A cancelled call leaves nothing behind. The values (codecs,
``ServiceInstance``, ``Leader``, ``DecodeError``...) are the very classes of
:mod:`libkv.recipes`.
"""

from __future__ import annotations

from libkv._async.recipes.cache import AsyncCache as Cache
from libkv._async.recipes.cache import AsyncCacheView as CacheView
from libkv._async.recipes.discovery import AsyncInstance as Instance
from libkv._async.recipes.discovery import AsyncMembership as Membership
from libkv._async.recipes.discovery import AsyncServiceRegistry as ServiceRegistry
from libkv._async.recipes.election import AsyncElection as Election
from libkv._async.recipes.election import AsyncLeaderWatch as LeaderWatch
from libkv._async.recipes.typed import AsyncTypedStore as TypedStore
from libkv._async.recipes.typed import AsyncTypedWatch as TypedWatch
from libkv.recipes.codecs import (
    Codec,
    DecodeError,
    JSONCodec,
    TextCodec,
    TypedEvent,
    TypedPair,
)
from libkv.recipes.records import Leader, ServiceInstance

__all__ = [
    "Cache",
    "CacheView",
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
