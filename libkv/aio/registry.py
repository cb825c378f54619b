"""Scheme -> async backend, for :func:`libkv.aio.open`.

A driver with an async backend of its own declares it under the ``libkv.aio.stores``
entry points (``open_store(url: StoreURL) -> libkv.aio.AsyncBackend``), beside its
sync one under ``libkv.stores``. A driver with only a sync backend works here too: its
primitives run on worker threads of the store (``capabilities.native_async`` False).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import stevedore

from libkv import registry as sync_registry
from libkv._async.api import AsyncStore
from libkv._async.backend import AsyncBackend
from libkv.aio.bridge import ThreadedBackend
from libkv.backend import Backend
from libkv.errors import InvalidArgumentError, UnknownSchemeError
from libkv.url import StoreURL, is_scheme

__all__ = ["AsyncInitializer", "load", "open", "register"]

AsyncInitializer = Callable[[StoreURL], AsyncBackend]

NAMESPACE = "libkv.aio.stores"

_registered: dict[str, AsyncInitializer] = {}
_loaded: dict[str, AsyncInitializer | None] = {}
_lock = threading.Lock()


def open(url: str | StoreURL, **options: object) -> AsyncStore:  # noqa: A001 - the public name
    """Open an async store from a URL; keyword options override the URL's options.

    A plain call that does no I/O: the store is usable at once (``async with``
    closes it). The first open of a scheme in the process imports its driver; call
    :func:`load` before the loop starts to have that done beforehand. Raises what
    :func:`libkv.open` raises for a bad URL or an unknown scheme.
    """
    parsed = url if isinstance(url, StoreURL) else StoreURL.parse(url)
    parsed = parsed.with_options(**options)
    initializer = _async_initializer(parsed.scheme)
    if initializer is not None:
        backend = initializer(parsed)
        if not isinstance(backend, AsyncBackend):
            raise TypeError(
                f"the async initializer of {parsed.scheme}:// returned "
                f"{type(backend).__name__}, not a libkv.aio.AsyncBackend"
            )
        return AsyncStore(backend)
    sync_backend = sync_registry._initializer(parsed.scheme)(parsed)
    if not isinstance(sync_backend, Backend):
        raise TypeError(
            f"the initializer of {parsed.scheme}:// returned {type(sync_backend).__name__}, "
            "not a libkv.driver.Backend"
        )
    return AsyncStore(ThreadedBackend(sync_backend))


def load(scheme: str) -> None:
    """Find and import the driver of ``scheme://`` now, as :func:`open` does on its
    first use of the scheme: for a program (or a test) that wants the import, which
    can take a tenth of a second, done before its event loop runs.

    UnknownSchemeError if no driver provides the scheme.
    """
    name = scheme.lower()
    if _async_initializer(name) is None:
        sync_registry._initializer(name)


def register(scheme: str, initializer: AsyncInitializer) -> None:
    """Make ``scheme://`` URLs open with ``initializer`` in :mod:`libkv.aio`."""
    if not isinstance(scheme, str) or not is_scheme(scheme):
        raise InvalidArgumentError(f"invalid scheme name: {scheme!r}")
    if not callable(initializer):
        raise InvalidArgumentError(
            "initializer must be callable: initializer(url: StoreURL) -> AsyncBackend"
        )
    with _lock:
        _registered[scheme.lower()] = initializer


def _builtin(scheme: str) -> AsyncInitializer | None:
    # Found without reading the entry points (some 200 ms on first use, which would
    # hold the event loop): the drivers that ship with libkv.
    if scheme == "memory":
        from libkv.drivers.memory import open_memory_async

        return open_memory_async
    if scheme == "sqlite":
        from libkv.drivers.sqlite import open_sqlite_async

        return open_sqlite_async
    return None


def _async_initializer(scheme: str) -> AsyncInitializer | None:
    with _lock:
        if scheme in _registered:
            return _registered[scheme]
        if scheme in _loaded:
            return _loaded[scheme]
    found: AsyncInitializer | None = _builtin(scheme)
    if found is not None:
        return found
    try:
        manager: Any = stevedore.ExtensionManager(NAMESPACE)
        names = {entry_point.name for entry_point in manager.list_entry_points()}
    except Exception:  # a broken environment falls back to the sync driver
        names = set()
    if scheme in names:
        try:
            driver: Any = stevedore.DriverManager(NAMESPACE, scheme, invoke_on_load=False)
        except Exception as error:
            raise UnknownSchemeError(
                f"the async driver for {scheme}:// is installed but failed to load: {error}"
            ) from error
        found = driver.driver
    with _lock:
        _loaded[scheme] = found
    return found
