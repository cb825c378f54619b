"""Scheme -> driver initializer, found through the ``libkv.stores`` entry points.

A third-party package makes its driver usable by URL by declaring, e.g.::

    [options.entry_points]
    libkv.stores =
        myscheme = mypackage.driver:open_store

where ``open_store(url: libkv.StoreURL) -> libkv.driver.Backend``; :func:`open` wraps
the backend in a :class:`~libkv.Store`. Entry points are loaded lazily, on first use of
their scheme. :func:`register` adds one at run time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import stevedore

from libkv.api import Store
from libkv.backend import Backend
from libkv.errors import InvalidArgumentError, InvalidURLError, UnknownSchemeError
from libkv.url import StoreURL, is_scheme

__all__ = ["Initializer", "open", "register", "schemes"]

log = logging.getLogger(__name__)

Initializer = Callable[[StoreURL], Backend]

NAMESPACE = "libkv.stores"

# First-party drivers that live in their own distributions: scheme -> what to install.
# First-party drivers that live in their own distributions: scheme -> plugin name.
_FIRST_PARTY = {
    "etcd": "etcd",
    "zookeeper": "zookeeper",
    "consul": "consul",
    "consuls": "consul",
    "redis": "redis",
    "rediss": "redis",
}
KNOWN_DRIVERS = {
    scheme: f"libkv-{plugin} (pip install 'libkv[{plugin}]'; from a source checkout: "
    f"pip install ./plugins/{plugin})"
    for scheme, plugin in _FIRST_PARTY.items()
}
"""Scheme -> what to install, for the first-party drivers that are separate distributions."""

_registered: dict[str, Initializer] = {}
_loaded: dict[str, Initializer] = {}
_lock = threading.Lock()


def register(scheme: str, initializer: Initializer) -> None:
    """Make ``scheme://`` URLs open with ``initializer``.

    ``scheme`` is accepted exactly when a URL could carry it (:func:`libkv.url.is_scheme`),
    case-insensitively; InvalidURLError otherwise. InvalidArgumentError if the scheme
    is taken or ``initializer`` is not callable.
    """
    if not is_scheme(scheme):
        raise InvalidURLError(
            f"invalid scheme name {scheme!r}: an ASCII letter, then letters, digits, '+', '-', '.'"
        )
    name = scheme.lower()
    if not callable(initializer):
        raise InvalidArgumentError(
            "initializer must be callable: initializer(url: StoreURL) -> Backend"
        )
    with _lock:
        if name in _registered or name in _entry_point_names():
            raise InvalidArgumentError(f"scheme {name!r} is already registered")
        _registered[name] = initializer


def schemes() -> list[str]:
    """Every scheme usable here: installed entry points and run-time registrations, sorted."""
    return sorted(set(_registered) | _entry_point_names())


def open(url: str | StoreURL, **options: object) -> Store:  # noqa: A001 - the public name
    """Open a store from a URL; keyword options override the URL's query options.

    Raises UnknownSchemeError (naming what is installed, and what to install for a
    first-party scheme) and InvalidURLError for a malformed URL or option; TypeError
    (a programming error) if the scheme's initializer returns something not a Backend.
    """
    parsed = url if isinstance(url, StoreURL) else StoreURL.parse(url)
    parsed = parsed.with_options(**options)
    backend = _initializer(parsed.scheme)(parsed)
    if not isinstance(backend, Backend):
        raise TypeError(
            f"the initializer of {parsed.scheme}:// returned {type(backend).__name__}, "
            "not a libkv.driver.Backend"
        )
    return Store(backend)


def _initializer(scheme: str) -> Initializer:
    with _lock:
        found = _registered.get(scheme) or _loaded.get(scheme)
    if found is not None:
        return found
    if scheme in _entry_point_names():
        try:
            manager: Any = stevedore.DriverManager(NAMESPACE, scheme, invoke_on_load=False)
        except Exception as error:
            raise UnknownSchemeError(
                f"the driver for {scheme}:// is installed but failed to load: {error}"
            ) from error
        initializer: Initializer = manager.driver
        with _lock:
            _loaded[scheme] = initializer
        return initializer
    installed = ", ".join(schemes()) or "none"
    hint = KNOWN_DRIVERS.get(scheme)
    message = f"unknown store scheme {scheme!r} (installed: {installed})"
    if hint:
        message += f"; install {hint}"
    raise UnknownSchemeError(message)


def _entry_point_names() -> set[str]:
    try:
        manager: Any = stevedore.ExtensionManager(NAMESPACE)
        return {entry_point.name for entry_point in manager.list_entry_points()}
    except Exception:  # a broken environment must not hide run-time registrations
        log.warning("could not read the %s entry points", NAMESPACE, exc_info=True)
        return set()
