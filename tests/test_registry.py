"""Scheme registry: entry points, run-time registration, actionable errors."""

from __future__ import annotations

import uuid

import pytest

import libkv
from libkv import StoreURL, UnknownSchemeError, registry
from libkv.driver import Backend
from libkv.drivers.memory import open_memory


def test_builtin_schemes_come_from_entry_points() -> None:
    assert {"memory", "sqlite"} <= set(libkv.schemes())
    assert libkv.schemes() == sorted(libkv.schemes())


def test_unknown_scheme_names_installed_schemes() -> None:
    with pytest.raises(UnknownSchemeError, match=r"installed: .*memory") as raised:
        libkv.open("nosuch://h")
    assert isinstance(raised.value, libkv.InvalidURLError)


def test_first_party_scheme_not_installed_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed = registry._entry_point_names() - {"zookeeper"}
    monkeypatch.setattr(registry, "_entry_point_names", lambda: installed)
    monkeypatch.delitem(registry._loaded, "zookeeper", raising=False)
    with pytest.raises(UnknownSchemeError) as raised:
        libkv.open("zookeeper://127.0.0.1:2181")
    message = str(raised.value)
    assert "pip install 'libkv[zookeeper]'" in message
    assert "pip install ./plugins/zookeeper" in message
    assert "zookeeper" not in message.split("(installed: ")[1].split(")")[0]


def test_register_at_run_time_and_duplicates() -> None:
    scheme = f"test{uuid.uuid4().hex[:8]}"
    seen: list[StoreURL] = []

    def initializer(url: StoreURL) -> Backend:
        seen.append(url)
        return open_memory(StoreURL.parse("memory://"))

    libkv.register(scheme, initializer)
    assert scheme in libkv.schemes()
    with libkv.open(f"{scheme}://host/path", timeout=3) as store:
        store.put("a", "1")
        assert store.get("a").value == b"1"
    assert seen[0].host == "host" and seen[0].options["timeout"] == 3
    with pytest.raises(ValueError, match="already"):
        libkv.register(scheme, initializer)
    with pytest.raises(ValueError, match="already"):
        libkv.register("memory", initializer)


def test_an_initializer_must_return_a_backend() -> None:
    """open() wraps the initializer's Backend in a Store; anything else is a programming error."""
    scheme = f"test{uuid.uuid4().hex[:8]}"
    returned: list[libkv.Store] = []

    def initializer(url: StoreURL) -> libkv.Store:
        returned.append(libkv.open("memory://"))
        return returned[-1]

    libkv.register(scheme, initializer)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"returned Store, not a libkv\.driver\.Backend"):
        libkv.open(f"{scheme}://")
    returned[0].close()
