"""libkv for asyncio: the same contract, API and errors as :mod:`libkv`, awaited.

::

    async with libkv.aio.open("sqlite:///tmp/app.db") as store:
        await store.put("config/color", "blue")
        async with store.watch("config", recursive=True) as watch:
            async for event in watch: ...

Every public method of :class:`~libkv.Store`, :class:`~libkv.Watch`,
:class:`~libkv.Lease` and :class:`~libkv.Lock` has a twin here with the same name,
arguments, defaults, results and errors; both flavours are generated from one source
(``docs/design.md``). Cancelling a task blocked in any call raises CancelledError in it
and leaves nothing behind (no lease granted, no lock key written). The recipes
(cache, service discovery, election, typed values) are in :mod:`libkv.aio.recipes`.
"""

from __future__ import annotations

from libkv._async.api import AsyncStore
from libkv._async.backend import AsyncBackend
from libkv._async.lease import AsyncLease
from libkv._async.lock import AsyncLock
from libkv._async.watching import AsyncFeed, AsyncWatch
from libkv.aio.registry import load, open, register  # noqa: A004

__all__ = [
    "AsyncBackend",
    "AsyncFeed",
    "AsyncLease",
    "AsyncLock",
    "AsyncStore",
    "AsyncWatch",
    "load",
    "open",
    "register",
]
