"""Keys, values, single-key operations and ranges.

Keys and their normal form, values, get/put/create/update/delete, versions, list,
keys (globs), delete_tree, get_many and put_many.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import cast

import pytest

import libkv
from libkv import Action, KVPair, Store, ops
from libkv.testing.conformance.base import (
    INVALID_KEYS,
    INVALID_VALUES,
    LARGEST_TESTABLE_VALUE,
    NON_STRING_KEYS,
    UNUSUAL_VALID_KEYS,
    VALUES,
    ConformanceBase,
    expect_all_raise,
    keys_of,
)

__all__ = ["KeyValueConformance"]


class KeyValueConformance(ConformanceBase):
    """Keys, values, single-key operations and ranges."""

    # -- keys -----------------------------------------------------------------------

    def test_slashes_around_a_key_are_stripped(self, store: Store) -> None:
        """Leading and trailing '/' are stripped: '/a/b/' is 'a/b', in every call."""
        pair = store.put("/a/b/", b"v")
        assert pair.key == "a/b"
        assert store.get("a/b") == pair
        assert store.get("/a/b") == pair
        assert store.get("a/b/") == pair
        assert store.exists("/a/b/")
        assert keys_of(store.list("")) == ["a/b"]
        assert keys_of(store.list("/a/")) == ["a/b"]
        updated = store.update("a/b/", b"w", version=pair.version)
        assert updated.key == "a/b"
        with pytest.raises(libkv.KeyExistsError):
            store.create("/a/b", b"x")
        store.delete("/a/b/")
        assert not store.exists("a/b")

    @pytest.mark.parametrize("key", INVALID_KEYS)
    def test_invalid_key_is_rejected_by_every_call_and_nothing_is_written(
        self, store: Store, key: str
    ) -> None:
        """Empty keys and segments, '.'/'..' segments, control characters and keys over
        1024 UTF-8 bytes raise InvalidKeyError (a ValueError) before anything is sent."""
        calls: dict[str, Callable[[], object]] = {
            "get": lambda: store.get(key),
            "exists": lambda: store.exists(key),
            "put": lambda: store.put(key, b"v"),
            "create": lambda: store.create(key, b"v"),
            "update": lambda: store.update(key, b"v", version=1),
            "delete": lambda: store.delete(key),
            "get_many": lambda: store.get_many(["valid", key]),
            "put_many mapping": lambda: store.put_many({"valid": b"v", key: b"v"}),
            "put_many pairs": lambda: store.put_many([("valid", b"v"), (key, b"v")]),
            "transaction": lambda: store.transaction([ops.put("valid", b"v"), ops.put(key, b"v")]),
            "wait_for_change": lambda: store.wait_for_change(key, 1, timeout=0.1),
            "lock": lambda: store.lock(key).acquire(blocking=False),
        }
        if key.strip("/"):
            # "" is a valid prefix (the whole namespace); any other invalid key is not.
            calls |= {
                "list": lambda: store.list(key),
                "delete_tree": lambda: store.delete_tree(key),
                "watch": lambda: store.watch(key),
                "recursive watch": lambda: store.watch(key, recursive=True),
            }
        expect_all_raise(calls, libkv.InvalidKeyError)
        assert issubclass(libkv.InvalidKeyError, ValueError)
        assert store.list("") == [], "a rejected call wrote something"

    @pytest.mark.parametrize("key", NON_STRING_KEYS)
    def test_non_string_key_is_rejected(self, store: Store, key: object) -> None:
        """Keys are str: anything else raises InvalidKeyError and nothing is written."""
        as_key = cast(str, key)
        expect_all_raise(
            {
                "get": lambda: store.get(as_key),
                "exists": lambda: store.exists(as_key),
                "put": lambda: store.put(as_key, b"v"),
                "create": lambda: store.create(as_key, b"v"),
                "delete": lambda: store.delete(as_key),
                "put_many": lambda: store.put_many([("valid", b"v"), (as_key, b"v")]),
                "transaction": lambda: store.transaction([ops.put(as_key, b"v")]),
                "watch": lambda: store.watch(as_key),
            },
            libkv.InvalidKeyError,
        )
        assert store.list("") == []

    def test_unusual_but_valid_keys_round_trip(self, store: Store) -> None:
        """Only the listed forms are invalid: spaces, non-ASCII, '...', glob and URL
        characters, and exactly 1024 UTF-8 bytes are ordinary keys."""
        for key in UNUSUAL_VALID_KEYS:
            assert store.put(key, key).key == key
        for key in UNUSUAL_VALID_KEYS:
            assert store.get(key).value == key.encode()
        assert keys_of(store.list("")) == sorted(UNUSUAL_VALID_KEYS)
        for key in UNUSUAL_VALID_KEYS:
            store.delete(key)
        assert store.list("") == []

    def test_a_key_and_its_children_are_independent(self, store: Store) -> None:
        """'a' and 'a/b' are independent keys; putting 'a/b' does not make 'a' exist."""
        child = store.put("a/b", b"child")
        assert not store.exists("a")
        with pytest.raises(libkv.KeyNotFoundError):
            store.get("a")
        parent = store.put("a", b"parent")
        assert store.get("a/b") == child
        store.delete("a")
        assert store.get("a/b") == child
        store.put("a", b"parent again")
        store.delete("a/b")
        assert store.get("a").value == b"parent again"
        assert parent.version < store.get("a").version

    def test_prefix_option_confines_a_store_to_its_namespace(self, url: str) -> None:
        """Every driver accepts the namespace option prefix=: keys (in pairs, events and
        errors) are relative to it, and a namespace sees nothing outside it, not even a
        sibling whose name merely starts with the same characters."""
        name = f"namespace-{uuid.uuid4().hex}"
        with (
            libkv.open(url, prefix=name) as outer,
            libkv.open(url, prefix=f"{name}/inner") as inner,
            libkv.open(url, prefix=f"{name}x") as sibling,
        ):
            try:
                self._check_namespaces(outer, inner, sibling)
            finally:
                outer.delete_tree("")
                sibling.delete_tree("")

    def test_unknown_option_is_rejected_by_name(self, url: str) -> None:
        """An unknown option, in the query or as a keyword, raises InvalidURLError naming
        it: nothing is silently ignored."""
        separator = "&" if "?" in url else "?"
        with pytest.raises(libkv.InvalidURLError, match="no_such_option"):
            libkv.open(f"{url}{separator}no_such_option=1")
        with pytest.raises(libkv.InvalidURLError, match="no_such_option"):
            libkv.open(url, no_such_option="1")

    def _check_namespaces(self, outer: Store, inner: Store, sibling: Store) -> None:
        written = inner.put("/k/", b"1")
        assert written.key == "k"
        assert inner.get("k") == written
        assert outer.get("inner/k").value == b"1"
        sibling.put("k", b"sibling")
        outer.put("top", b"2")
        assert keys_of(inner.list("")) == ["k"]
        assert keys_of(outer.list("")) == ["inner/k", "top"]
        assert keys_of(sibling.list("")) == ["k"]
        assert list(inner.keys("**")) == ["k"]
        with pytest.raises(libkv.KeyExistsError) as caught:
            inner.create("k", b"again")
        assert caught.value.key == "k"
        with pytest.raises(libkv.KeyNotFoundError) as caught_in_transaction:
            inner.transaction([ops.put("j", b"1"), ops.delete("missing")])
        assert (caught_in_transaction.value.key, caught_in_transaction.value.index) == (
            "missing",
            1,
        )
        (result,) = inner.transaction([ops.put("/j/", b"1")])
        assert result is not None and result.key == "j"
        with inner.watch("", recursive=True) as watch:
            init = self.first_event(watch)
            assert keys_of(list(init.snapshot)) == ["j", "k"]
            outer.put("top", b"3")
            sibling.put("j", b"sibling")
            created = outer.put("inner/deep/x", b"1")
            event = self.next_event(watch)
            assert (event.action, event.key) == (Action.UPDATE, "deep/x")
            assert event.pair == KVPair("deep/x", b"1", created.version)
        assert inner.delete_tree("") == 3
        assert keys_of(outer.list("")) == ["top"]
        assert keys_of(sibling.list("")) == ["j", "k"]

    # -- values ---------------------------------------------------------------------

    @pytest.mark.parametrize(("value", "expected"), VALUES)
    def test_values_are_bytes_like_or_str_and_read_back_as_bytes(
        self, store: Store, value: bytes | bytearray | memoryview | str, expected: bytes
    ) -> None:
        """bytes, bytearray, memoryview and str (as UTF-8) are accepted; reads return bytes."""
        first = store.put("put", value)
        written = [
            first,
            store.create("create", value),
            store.update("put", value, version=first.version),
            *store.put_many({"put_many": value}),
            *cast(list[KVPair], store.transaction([ops.put("transaction", value)])),
        ]
        read = [
            store.get("put"),
            *store.list(""),
            *store.get_many(["create", "put_many"]),
        ]
        for pair in written + read:
            assert type(pair.value) is bytes, f"{pair.key}: {type(pair.value).__name__}"
            assert pair.value == expected, pair.key

    @pytest.mark.parametrize("value", INVALID_VALUES)
    def test_value_of_another_type_is_rejected_and_nothing_is_written(
        self, store: Store, value: object
    ) -> None:
        """A value that is neither bytes-like nor str raises InvalidValueError (a TypeError)."""
        existing = store.put("existing", b"old")
        as_value = cast(bytes, value)
        expect_all_raise(
            {
                "put": lambda: store.put("new", as_value),
                "create": lambda: store.create("new", as_value),
                "update": lambda: store.update("existing", as_value, version=existing.version),
                "put_many": lambda: store.put_many({"valid": b"v", "new": as_value}),
                "transaction": lambda: store.transaction(
                    [ops.put("valid", b"v"), ops.put("new", as_value)]
                ),
            },
            libkv.InvalidValueError,
        )
        assert issubclass(libkv.InvalidValueError, TypeError)
        assert store.list("") == [existing]

    def test_value_over_max_value_size_is_rejected_and_nothing_is_written(
        self, store: Store
    ) -> None:
        """A value over capabilities.max_value_size (counted in encoded bytes) raises
        ValueTooLargeError, also inside put_many and transactions, with nothing written;
        a value of exactly max_value_size is accepted."""
        limit = store.capabilities.max_value_size
        assert limit <= LARGEST_TESTABLE_VALUE, (
            f"max_value_size {limit} is too large for the suite to exercise; declare the "
            "real limit of the backend"
        )
        too_large = b"x" * (limit + 1)
        wide = "é" * (limit // 2 + 1)  # fewer characters than the limit, more bytes
        existing = store.put("existing", b"old")
        expect_all_raise(
            {
                "put": lambda: store.put("new", too_large),
                "put bytearray": lambda: store.put("new", bytearray(too_large)),
                "put str": lambda: store.put("new", wide),
                "create": lambda: store.create("new", too_large),
                "update": lambda: store.update("existing", too_large, version=existing.version),
                "put_many mapping": lambda: store.put_many({"valid": b"v", "new": too_large}),
                "put_many pairs": lambda: store.put_many([("valid", b"v"), ("new", too_large)]),
                "transaction": lambda: store.transaction(
                    [ops.put("valid", b"v"), ops.put("new", too_large)]
                ),
            },
            libkv.ValueTooLargeError,
        )
        assert issubclass(libkv.ValueTooLargeError, ValueError)
        assert store.list("") == [existing]
        at_limit = b"y" * limit
        store.put("at-limit", at_limit)
        assert store.get("at-limit").value == at_limit

    # -- single-key operations ------------------------------------------------------

    def test_get_of_a_missing_key_raises_key_not_found(self, store: Store) -> None:
        """get(key) raises KeyNotFoundError (also a KeyError) carrying the relative key."""
        with pytest.raises(libkv.KeyNotFoundError) as caught:
            store.get("/missing/")
        assert isinstance(caught.value, KeyError)
        assert caught.value.key == "missing"
        assert caught.value.index == 0
        assert store.exists("missing") is False

    def test_put_writes_unconditionally_and_get_reads_it(
        self, store: Store, other_store: Store
    ) -> None:
        """put returns the new pair; get (from any client) and exists see it; a second
        put replaces the value with a larger version."""
        first = store.put("k", b"one")
        assert isinstance(first, KVPair)
        assert (first.key, first.value) == ("k", b"one")
        assert isinstance(first.version, int) and first.version > 0
        assert store.get("k") == first
        assert other_store.get("k") == first
        assert store.exists("k") is True
        second = other_store.put("k", b"two")
        assert second.version > first.version
        assert store.get("k") == second

    def test_create_fails_on_an_existing_key(self, store: Store, other_store: Store) -> None:
        """create raises KeyExistsError when the key is present and changes nothing."""
        created = store.create("k", b"one")
        assert store.get("k") == created
        for client in (store, other_store):
            with pytest.raises(libkv.KeyExistsError) as caught:
                client.create("k/", b"two")
            assert (caught.value.key, caught.value.index) == ("k", 0)
        assert store.get("k") == created

    def test_update_requires_the_current_version(self, store: Store) -> None:
        """update raises KeyNotFoundError when absent and KeyModifiedError when the
        version is not the current one; with the current version it writes."""
        with pytest.raises(libkv.KeyNotFoundError) as missing:
            store.update("missing", b"x", version=1)
        assert (missing.value.key, missing.value.index) == ("missing", 0)
        first = store.put("k", b"one")
        second = store.put("k", b"two")
        with pytest.raises(libkv.KeyModifiedError) as modified:
            store.update("k", b"three", version=first.version)
        assert (modified.value.key, modified.value.index) == ("k", 0)
        assert store.get("k") == second
        updated = store.update("k", b"three", version=second.version)
        assert (updated.key, updated.value) == ("k", b"three")
        assert updated.version > second.version
        assert store.get("k") == updated

    def test_delete_is_checked_and_optionally_conditional(
        self, store: Store, other_store: Store
    ) -> None:
        """delete raises KeyNotFoundError when absent (with or without version) and
        KeyModifiedError on a version mismatch; otherwise the key is gone."""
        with pytest.raises(libkv.KeyNotFoundError) as missing:
            store.delete("missing")
        assert (missing.value.key, missing.value.index) == ("missing", 0)
        with pytest.raises(libkv.KeyNotFoundError):
            store.delete("missing", version=1)
        first = store.put("k", b"one")
        second = store.put("k", b"two")
        with pytest.raises(libkv.KeyModifiedError) as modified:
            store.delete("k", version=first.version)
        assert (modified.value.key, modified.value.index) == ("k", 0)
        assert store.get("k") == second
        store.delete("k", version=second.version)
        assert not store.exists("k")
        store.put("k", b"three")
        store.delete("k")
        assert not other_store.exists("k")
        with pytest.raises(libkv.KeyNotFoundError):
            store.delete("k")

    def test_versions_grow_with_every_write_across_keys_and_clients(
        self, store: Store, other_store: Store
    ) -> None:
        """Versions are store-wide revisions: positive, larger for every later write, and
        comparable across keys and clients (a recreated key included)."""
        versions = [store.put("a", b"1").version, other_store.put("b", b"1").version]
        versions.append(store.put("a", b"2").version)
        versions.append(other_store.create("c", b"1").version)
        versions.append(store.update("b", b"2", version=versions[1]).version)
        store.delete("a")
        versions.append(other_store.put("a", b"3").version)
        versions += [pair.version for pair in store.put_many({"d": b"1"})]
        assert versions[0] > 0
        assert versions == sorted(set(versions)), f"versions not strictly increasing: {versions}"

    # -- ranges ---------------------------------------------------------------------

    def test_list_returns_everything_under_a_prefix_sorted(self, store: Store) -> None:
        """list(P) returns P and every key starting with 'P/', sorted by key; [] if none."""
        keys = ["a", "a/x", "a/x/y", "a-b", "a.b", "ab", "a0", "b", "p/q"]
        for key in reversed(keys):
            store.put(key, key)
        assert keys_of(store.list("")) == sorted(keys)
        assert keys_of(store.list()) == sorted(keys)
        assert keys_of(store.list("a")) == ["a", "a/x", "a/x/y"]
        assert keys_of(store.list("a/")) == ["a", "a/x", "a/x/y"]
        assert keys_of(store.list("a/x")) == ["a/x", "a/x/y"]
        assert keys_of(store.list("a/x/y")) == ["a/x/y"]
        assert keys_of(store.list("b")) == ["b"]
        assert keys_of(store.list("p")) == ["p/q"]
        assert store.list("missing") == []
        assert store.list("a/z") == []
        assert store.list("a") == [store.get(key) for key in ["a", "a/x", "a/x/y"]]

    def test_keys_match_a_glob_sorted(self, store: Store) -> None:
        """keys(pattern): '*' and '?' stay within a segment, '**' spans segments, '[abc]'
        is a class; the result is sorted and defaults to every key."""
        keys = ["app/x", "app/y/z", "apple", "b1", "b2", "bx", "c/d/e/f"]
        for key in reversed(keys):
            store.put(key, b"")
        expectations = {
            "**": keys,
            "*": ["apple", "b1", "b2", "bx"],
            "app/*": ["app/x"],
            "app/**": ["app/x", "app/y/z"],
            "app*": ["apple"],
            "*/y/*": ["app/y/z"],
            "b?": ["b1", "b2", "bx"],
            "b[12]": ["b1", "b2"],
            "b[x1]": ["b1", "bx"],
            "b[!1]": ["b2", "bx"],
            "c/**/f": ["c/d/e/f"],
            "**/f": ["c/d/e/f"],
            "?/d/*/f": ["c/d/e/f"],
            "c/*/f": [],
            "nothing*": [],
        }
        found = {pattern: list(store.keys(pattern)) for pattern in expectations}
        assert found == expectations
        assert list(store.keys()) == keys

    def test_delete_tree_deletes_under_a_prefix_and_counts(self, store: Store) -> None:
        """delete_tree(P) deletes P and keys under 'P/' (not 'Px'), returning how many;
        '' is the whole namespace."""
        for key in ["t", "t/a", "t/a/b", "t/c", "tx", "t-x", "u"]:
            store.put(key, b"")
        assert store.delete_tree("t/a/") == 2
        assert keys_of(store.list("")) == ["t", "t-x", "t/c", "tx", "u"]
        assert store.delete_tree("t") == 2
        assert store.delete_tree("missing") == 0
        assert store.delete_tree("") == 3
        assert store.list("") == []

    def test_get_many_keeps_the_order_asked_and_skips_missing(self, store: Store) -> None:
        """get_many returns the pairs found, in the order asked; missing keys skipped."""
        a, b, c = (store.put(key, key) for key in "abc")
        assert store.get_many(["c", "missing", "a", "/b/"]) == [c, a, b]
        assert store.get_many([]) == []
        assert store.get_many(["missing"]) == []

    def test_put_many_writes_a_mapping_or_pairs(self, store: Store, other_store: Store) -> None:
        """put_many accepts a mapping or an iterable of (key, value) and returns the new
        pairs in the order given."""
        from_mapping = store.put_many({"m/b": b"1", "m/a": "2"})
        assert keys_of(from_mapping) == ["m/b", "m/a"]
        from_pairs = store.put_many(iter([("p/a", bytearray(b"3")), ("/p/b/", b"4")]))
        assert keys_of(from_pairs) == ["p/a", "p/b"]
        for pair in from_mapping + from_pairs:
            assert other_store.get(pair.key) == pair
        assert other_store.get("m/a").value == b"2"
        again = store.put_many([("m/a", b"5")])
        assert again[0].version > from_pairs[-1].version
