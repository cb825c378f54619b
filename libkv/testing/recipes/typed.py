"""Typed values: a codec's view through every Store operation, text and custom codecs,
and values that cannot be decoded or encoded.
"""

from __future__ import annotations

import json
import threading

import pytest

import libkv
from libkv import Action, Store, ops
from libkv.recipes import DecodeError, JSONCodec, TextCodec, TypedPair
from libkv.testing.conformance.base import EVENT_TIMEOUT
from libkv.testing.flavours import Recipes
from libkv.testing.recipes.base import RecipeConformanceBase

__all__ = ["TypedRecipeConformance"]


class TypedRecipeConformance(RecipeConformanceBase):
    """Typed values."""

    def test_typed_values_go_through_every_operation(
        self, recipes: Recipes, store: Store, other_store: Store
    ) -> None:
        """Through a JSON view, every Store operation takes and returns Python values,
        stored as the documented bytes any raw client reads."""
        typed = recipes.TypedStore(store, JSONCodec())
        config = {"color": "blue", "sizes": [1, 2], "on": True, "name": "é"}
        pair = typed.put("app/config", config)
        assert pair == TypedPair("app/config", config, pair.version)
        assert json.loads(other_store.get("app/config").value) == config
        assert typed.get("app/config") == pair and typed.exists("app/config")
        updated = typed.update("app/config", {"color": "green"}, version=pair.version)
        assert updated.value == {"color": "green"} and updated.version > pair.version
        created = typed.create("app/count", 1)
        with pytest.raises(libkv.KeyExistsError):
            typed.create("app/count", 2)
        assert [item.value for item in typed.put_many({"app/a": [1], "app/b": None})] == [[1], None]
        results = typed.transaction(
            [
                ops.update("app/count", 2, created.version),
                ops.put("app/c", "three"),
                ops.check("app/a", typed.get("app/a").version),
            ]
        )
        assert [None if item is None else item.value for item in results] == [2, "three", None]
        assert [(item.key, item.value) for item in typed.list("app")] == [
            ("app/a", [1]),
            ("app/b", None),
            ("app/c", "three"),
            ("app/config", {"color": "green"}),
            ("app/count", 2),
        ]
        assert [item.value for item in typed.get_many(["app/c", "app/x", "app/a"])] == [
            "three",
            [1],
        ]
        assert list(typed.keys("app/c*")) == ["app/c", "app/config", "app/count"]
        with typed.watch("app", recursive=True) as watch:
            init = watch.next_event(EVENT_TIMEOUT)
            assert init is not None and init.action is Action.INIT
            assert init.snapshot == tuple(typed.list("app"))
            recipes.TypedStore(other_store, JSONCodec()).put("app/b", {"now": 1})
            event = watch.next_event(EVENT_TIMEOUT)
            assert event is not None and event.pair is not None
            assert (event.action, event.key, event.pair.value) == (
                Action.UPDATE,
                "app/b",
                {"now": 1},
            )
            typed.delete("app/b")
            event = watch.next_event(EVENT_TIMEOUT)
            assert event is not None and (event.action, event.pair) == (Action.DELETE, None)
        count = typed.get("app/count")
        waiter = threading.Thread(target=lambda: typed.put("app/count", 3), daemon=True)
        waiter.start()
        assert typed.wait_for_change("app/count", count.version, timeout=EVENT_TIMEOUT).value == 3
        waiter.join(EVENT_TIMEOUT)
        with typed.lock("app/lock", ttl=self.ttl_for(store), value={"owner": "me"}):
            assert typed.get("app/lock").value == {"owner": "me"}
        with typed.lease(self.ttl_for(store)) as lease:
            typed.put("app/leased", [True], lease=lease)
            assert typed.get("app/leased").value == [True]
        assert not typed.exists("app/leased")
        assert typed.delete_tree("app") == 4 and store.list() == []
        assert typed.capabilities == store.capabilities

    def test_text_and_custom_codecs(self, recipes: Recipes, store: Store) -> None:
        """TextCodec stores str in its encoding; any object with encode/decode is a codec."""

        class Reversed:
            def encode(self, value: str) -> bytes:
                return value[::-1].encode()

            def decode(self, data: bytes) -> str:
                return data.decode()[::-1]

        latin = recipes.TypedStore(store, TextCodec("latin-1"))
        assert latin.put("t", "café").value == "café"
        assert store.get("t").value == "café".encode("latin-1")
        reversed_view = recipes.TypedStore(store, Reversed())
        assert reversed_view.put("r", "abc").value == "abc"
        assert store.get("r").value == b"cba"
        with pytest.raises(libkv.InvalidValueError):
            latin.put("t", 1)  # type: ignore[arg-type]

    def test_undecodable_values_raise_decode_error_naming_the_key(
        self, recipes: Recipes, store: Store, other_store: Store
    ) -> None:
        """A stored value the codec cannot decode raises DecodeError (a KVError and a
        ValueError) naming key and version, from reads and watches, never half an event;
        the watch carries on. A value it cannot encode is refused and nothing written."""
        typed = recipes.TypedStore(store, JSONCodec())
        typed.put("app/good", 1)
        bad = other_store.put("app/bad", b"{not json")
        for call in (lambda: typed.get("app/bad"), lambda: typed.list("app")):
            with pytest.raises(DecodeError) as raised:
                call()
            error = raised.value
            assert isinstance(error, libkv.KVError) and isinstance(error, ValueError)
            assert (error.key, error.version) == ("app/bad", bad.version)
            assert "app/bad" in str(error) and isinstance(error.__cause__, ValueError)
        with typed.watch("app", recursive=True) as watch:
            with pytest.raises(DecodeError, match="app/bad"):
                watch.next_event(EVENT_TIMEOUT)  # the INIT holds the bad value
            other_store.put("app/worse", b"\xff")
            other_store.put("app/fine", b"[2]")
            with pytest.raises(DecodeError, match="app/worse"):
                watch.next_event(EVENT_TIMEOUT)
            event = watch.next_event(EVENT_TIMEOUT)
            assert event is not None and event.pair is not None and event.pair.value == [2]
        with pytest.raises(libkv.InvalidValueError, match="app/new"):
            typed.put("app/new", object())
        with pytest.raises(libkv.InvalidValueError, match="app/tx"):
            typed.transaction([ops.put("app/ok", 1), ops.put("app/tx", {1, 2})])
        with pytest.raises(libkv.InvalidValueError, match="app/many"):
            typed.put_many({"app/ok": 1, "app/many": object()})
        assert [pair.key for pair in store.list("app")] == [
            "app/bad",
            "app/fine",
            "app/good",
            "app/worse",
        ]
