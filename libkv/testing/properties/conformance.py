"""`PropertyConformance`: the mixin whose tests run the properties on a driver's store."""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar, TypeVar
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import libkv
from libkv import Store
from libkv.testing.conformance.base import ConformanceBase, call_within, close_quietly
from libkv.testing.conformance.bounds import is_argument_error
from libkv.testing.properties.calls import AT_MAX, CURRENT, OVER_MAX, STALE, Call, resolve_ttl
from libkv.testing.properties.model import REFUSALS, Trial, describe_error
from libkv.testing.properties.oracle import GlobError, glob_matcher, valid_ttl
from libkv.testing.properties.strategies import (
    GLOB_KEYS,
    KEY_POOL,
    TRANSACTION_KEYS,
    UrlRecipe,
    globs,
    keys,
    setup_writes,
    single_calls,
    transactions,
    ttls,
    url_recipes,
    values,
    versions,
)

__all__ = ["PropertyConformance"]

T = TypeVar("T")


def _secret_forms(password: str) -> list[str]:
    return [password, quote(password, safe=""), quote(password)]


class PropertyConformance(ConformanceBase):
    """Property-based tests on bad and random input; subclass it with a `url` fixture."""

    property_examples: ClassVar[int] = 25
    """Examples per property (a driver class may raise it; network drivers keep 25-50)."""

    def run_property(
        self,
        strategy: st.SearchStrategy[T],
        check: Callable[[T], None],
        *explicit: T,
    ) -> None:
        """Run `check` on `property_examples` examples drawn from `strategy` (after the
        `explicit` ones). The test function itself takes no hypothesis arguments, so
        its function-scoped fixtures (`url`) are never shared between examples."""
        configured = settings(
            max_examples=int(os.environ.get("LIBKV_PROPERTY_EXAMPLES", self.property_examples)),
            deadline=None,
            derandomize=bool(os.environ.get("CI")),
            database=None,
            print_blob=True,
            # No explain phase: it re-runs a failing example many times over a network
            # round trip each, for a hint the shrunk example already gives.
            phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        test = given(strategy)(check)
        for value in reversed(explicit):
            test = example(value)(test)
        configured(test)()

    @pytest.fixture(autouse=True)
    def _flavoured(self, open_url: Callable[..., Store]) -> None:
        # Every property runs in both flavours (the `flavour` fixture), through the
        # clients this opener makes.
        self._open_url = open_url

    @contextlib.contextmanager
    def clients(self, url: str) -> Iterator[tuple[Store, Store]]:
        """A writer and a watcher of the test's store (of the test's flavour), closed
        afterwards."""
        store = self._open_url(url)
        try:
            watcher = self._open_url(url)
            try:
                yield store, watcher
            finally:
                close_quietly(watcher)
        finally:
            close_quietly(store)

    def run_calls(
        self, url: str, strategy: st.SearchStrategy[list[Call]], *explicit: list[Call]
    ) -> None:
        """Each example: empty the namespace, open a watch, apply the calls against the
        model, and check the watch's history."""
        with self.clients(url) as (store, watcher):

            def check(calls: list[Call]) -> None:
                trial = Trial(store, watcher)
                try:
                    for call in calls:
                        trial.apply(trial.resolve(call))
                except BaseException:
                    trial.close()
                    raise
                trial.finish()

            self.run_property(strategy, check, *explicit)

    # -- the properties ---------------------------------------------------------------

    def test_random_keys_are_refused_or_behave_like_the_model(self, url: str) -> None:
        """Random keys (unicode, separators, slashes, dots, controls, ~1024 bytes, not
        str) in every key-taking call: InvalidKeyError and nothing written, or the
        model's result."""
        self.run_calls(url, st.lists(single_calls(keys(), st.binary(max_size=8)), max_size=6))

    def test_random_values_are_refused_or_read_back_as_bytes(self, url: str) -> None:
        """Random values (empty, binary, str, invalid Unicode, other types, and exactly
        max_value_size and one byte more): InvalidValueError / ValueTooLargeError and
        nothing written, or read back as the model's bytes."""
        self.run_calls(
            url,
            st.lists(single_calls(st.sampled_from(KEY_POOL), values()), max_size=6),
            [Call("put", "a", AT_MAX), Call("get", "a")],
            [
                Call("put", "a", b"before"),
                Call("put_many", items=(Call("put", "b", b"1"), Call("put", "a", OVER_MAX))),
            ],
        )

    def test_random_ttls_are_refused_or_honoured(self, url: str) -> None:
        """Random ttls (nan, inf, negative, zero, bool, str, huge, around ttl_min and
        ttl_max) on put, create, update, put_many, transactions, leases and locks: an
        argument error and nothing written, or a write that reads back and does not
        expire before its ttl."""
        kinds = st.sampled_from(
            ["put", "put-over", "create", "update", "put_many", "transaction", "lease", "lock"]
        )
        self.run_ttls(url, st.lists(st.tuples(kinds, ttls()), min_size=1, max_size=5))

    def run_ttls(self, url: str, strategy: st.SearchStrategy[list[tuple[str, object]]]) -> None:
        with self.clients(url) as (store, watcher):

            def check(cases: list[tuple[str, object]]) -> None:
                trial = Trial(store, watcher)
                try:
                    for index, (kind, ttl) in enumerate(cases):
                        self.apply_ttl(trial, index, kind, resolve_ttl(ttl, store.capabilities))
                except BaseException:
                    trial.close()
                    raise
                trial.finish()

            self.run_property(strategy, check)

    def apply_ttl(self, trial: Trial, index: int, kind: str, ttl: object) -> None:
        """One ttl case on keys of its own (so an expiry never changes another case)."""
        existing, new = f"e{index}", f"n{index}"
        if kind in ("put-over", "update"):
            trial.apply(Call("put", existing, b"old"))
        if kind == "put":
            trial.apply(Call("put", new, b"v", ttl=ttl))
        elif kind == "put-over":
            trial.apply(Call("put", existing, b"v", ttl=ttl))
        elif kind == "create":
            trial.apply(Call("create", new, b"v", ttl=ttl))
        elif kind == "update":
            version = trial.model.pairs[existing].version
            trial.apply(Call("update", existing, b"v", version, ttl))
        elif kind == "put_many":
            trial.apply(
                Call(
                    "put_many",
                    ttl=ttl,
                    items=(Call("put", new, b"1"), Call("put", f"{new}/x", b"2")),
                )
            )
        elif kind == "transaction":
            trial.apply(
                Call(
                    "transaction",
                    items=(Call("put", f"{new}/y", b"1"), Call("create", new, b"2", ttl=ttl)),
                )
            )
        else:
            self.apply_lease_ttl(trial, kind, f"l{index}", ttl)

    def apply_lease_ttl(self, trial: Trial, kind: str, key: str, ttl: object) -> None:
        """lease(ttl) and lock(key, ttl=ttl): refused like a write, or granted and
        given back at once (the lock's key is a visible write, then a delete)."""
        store, model = trial.store, trial.model
        valid = valid_ttl(ttl, trial.capabilities)
        started = time.monotonic()
        try:
            if kind == "lease":
                lease = store.lease(ttl, keepalive=False)  # type: ignore[arg-type]
                lease.revoke()
            else:
                lock = store.lock(key, ttl=ttl, value=b"held")  # type: ignore[arg-type]
                assert lock.acquire(blocking=False), f"lock({key!r}) not free"
                held = store.get(key)
                model.wrote(held, key, b"held", None, started)
                lock.release()
                model.deleted(key)
        except Exception as error:
            assert not valid, f"{kind}(ttl={ttl!r}) raised {describe_error(error)}"
            assert REFUSALS["argument"](error), (
                f"{kind}(ttl={ttl!r}) raised {describe_error(error)}; expected an argument error"
            )
        else:
            assert valid, f"{kind}(ttl={ttl!r}) was accepted"
        model.compare(store.list(""), time.monotonic())

    def test_random_versions_are_refused_or_compared(self, url: str) -> None:
        """Random versions (current, stale, 0, negative, bool, float, str, 2**63 - 1,
        2**63 and more) on update, delete and check: an argument error and nothing
        written, or the model's comparison (KeyModifiedError / KeyNotFoundError)."""
        key = st.sampled_from(TRANSACTION_KEYS)
        version_call = st.one_of(
            st.builds(Call, st.just("update"), key, st.binary(max_size=4), versions()),
            st.builds(Call, st.just("delete"), key, version=versions()),
            st.builds(
                Call,
                st.just("transaction"),
                items=st.tuples(st.builds(Call, st.just("check"), key, version=versions())),
            ),
        )
        self.run_calls(
            url,
            st.builds(
                lambda setup, calls: setup + calls,
                setup_writes(),
                st.lists(version_call, max_size=5),
            ),
        )

    def test_random_transactions_are_atomic_like_the_model(self, url: str) -> None:
        """Random transactions of put/create/update/delete/check on a small key pool,
        with duplicate keys and more than max_transaction_ops: an argument error and
        nothing written, the model's first failing condition (with its index) and
        nothing written, or every op applied."""
        self.run_calls(
            url,
            st.builds(
                lambda setup, calls: setup + calls,
                setup_writes(),
                st.lists(
                    transactions(st.sampled_from([CURRENT, CURRENT, STALE, 0])),
                    min_size=1,
                    max_size=4,
                ),
            ),
        )

    def test_random_globs_match_like_the_model(self, url: str) -> None:
        """Random glob patterns over a fixed set of keys: the model's matches, sorted,
        or an argument error for a malformed pattern (never re.error)."""
        with self.clients(url) as (store, _):
            store.delete_tree("")
            store.put_many({key: b"" for key in GLOB_KEYS})

            def check(pattern: str) -> None:
                try:
                    matches = glob_matcher(pattern)
                except GlobError:
                    expected = None
                else:
                    expected = [key for key in sorted(GLOB_KEYS) if matches(key)]
                try:
                    found = list(store.keys(pattern))
                except Exception as error:
                    assert expected is None, f"keys({pattern!r}) raised {describe_error(error)}"
                    assert is_argument_error(error), (
                        f"keys({pattern!r}) raised {describe_error(error)}; "
                        "expected an argument error"
                    )
                    return
                assert expected is not None, f"keys({pattern!r}) returned {found}; it is malformed"
                assert found == expected, f"keys({pattern!r}) returned {found}, not {expected}"

            # Empty and negated classes, which once matched any character ("[!]") or
            # read "[!-a]" as the range "/-a".
            self.run_property(globs(), check, "[!]", "[]", "[!-a]", "[!a-]")

    def test_random_urls_raise_only_documented_errors_without_the_password(self, url: str) -> None:
        """The test's URL with random credentials, malformed hosts and ports, and random
        options: open() raises InvalidURLError (naming an unknown option) or opens a
        store whose first call raises at most a documented KVError; no password
        appears in an error's text, its chained causes, or the store's repr."""
        base_timeout = 5.0

        def check(recipe: UrlRecipe) -> None:
            text = recipe.build(url)
            secrets = _secret_forms(recipe.password) if recipe.password else []
            try:
                store = call_within(lambda: libkv.open(text), base_timeout, "open")
            except libkv.InvalidURLError as error:
                self.assert_no_secret(error, secrets)
                return
            except libkv.KVError as error:
                self.assert_no_secret(error, secrets)
                assert isinstance(error, (libkv.NotReachableError, libkv.AuthenticationError)), (
                    f"open({text!r}) raised {describe_error(error)}"
                )
                return
            except Exception as error:
                raise AssertionError(
                    f"open({text!r}) raised an undocumented {describe_error(error)}"
                ) from error
            try:
                unknown = [name for name, _ in recipe.options if name.startswith("zz")]
                assert not unknown, f"open({text!r}) accepted unknown options {unknown}"
                assert not recipe.raw_query, f"open({text!r}) accepted a malformed query"
                shown = repr(store) + str(store.url)
                assert not any(secret in shown for secret in secrets), f"password in {shown!r}"
                try:
                    call_within(
                        lambda: store.exists("k"), max(store.timeout, 1.0) + base_timeout, "exists"
                    )
                except libkv.KVError as error:
                    self.assert_no_secret(error, secrets)
                except Exception as error:
                    raise AssertionError(
                        f"{text!r}: exists() raised an undocumented {describe_error(error)}"
                    ) from error
            finally:
                close_quietly(store)

        # A password (or token) of characters HTTP headers cannot carry as latin-1.
        emoji = UrlRecipe(None, "Pw😀é@:/9z", None, (), "")
        self.run_property(url_recipes(), check, emoji)

    @staticmethod
    def assert_no_secret(error: BaseException, secrets: Sequence[str]) -> None:
        """No form of the password in the error's text, repr or chained tracebacks."""
        text = "".join(traceback.format_exception(error)) + repr(error)
        for secret in secrets:
            assert secret not in text, f"the password appears in the error:\n{text}"
