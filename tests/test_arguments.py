"""Argument errors: typed (KVError and ValueError), raised before a driver is called.

The core validates every argument in one place; these run it on a memory store whose
primitives are wrapped to record any call that reaches the driver.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

import libkv
from libkv import ops
from libkv.drivers.memory import open_memory
from libkv.testing.polling import assert_holds_until, wait_until

PRIMITIVES = ("commit", "compact", "grant_lease", "open_feed", "range", "get")


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[libkv.Store]:
    """A namespaced memory store; ``store.sent`` lists the backend primitives called."""
    with libkv.open(f"memory://arguments-{uuid.uuid4().hex}/ns") as opened:
        sent: list[str] = []
        for name in PRIMITIVES:
            original = getattr(opened.backend, name)

            def recording(
                *args: object, _name: str = name, _original: Callable[..., object] = original
            ) -> object:
                sent.append(_name)
                return _original(*args)

            monkeypatch.setattr(opened.backend, name, recording)
        opened.sent = sent  # type: ignore[attr-defined]
        yield opened


def sent(store: libkv.Store) -> list[str]:
    return store.sent  # type: ignore[attr-defined,no-any-return]


def assert_argument_error(call: Callable[[], object], fragment: str = "") -> BaseException:
    with pytest.raises(libkv.InvalidArgumentError) as raised:
        call()
    assert isinstance(raised.value, libkv.KVError) and isinstance(raised.value, ValueError)
    assert fragment in str(raised.value)
    return raised.value


BAD_TTLS = [math.nan, math.inf, -math.inf, -1, 0, 1e300, 10**400, "5", True, None]


@pytest.mark.parametrize("ttl", BAD_TTLS, ids=repr)
def test_bad_ttls_are_refused_before_anything_is_sent(store: libkv.Store, ttl: object) -> None:
    bad = ttl  # None is a valid ttl for put (no expiry), not for a lease or a lock
    calls: list[Callable[[], object]] = [
        lambda: store.lease(bad),  # type: ignore[arg-type]
        lambda: store.lock("k", ttl=bad),  # type: ignore[arg-type]
    ]
    if ttl is not None:
        calls += [
            lambda: store.put("k", "v", ttl=bad),  # type: ignore[arg-type]
            lambda: store.create("k", "v", ttl=bad),  # type: ignore[arg-type]
            lambda: store.transaction([ops.put("k", "v", ttl=bad)]),  # type: ignore[arg-type]
        ]
    for call in calls:
        assert_argument_error(call, "ttl")
    assert sent(store) == []
    assert store.list() == []


def test_lease_of_1e300_is_refused_by_ttl_max(store: libkv.Store) -> None:
    error = assert_argument_error(lambda: store.lease(1e300), "maximum")
    assert f"{store.capabilities.ttl_max:g}" in str(error)


@pytest.mark.parametrize("keepalive", [True, False])
def test_no_keepalive_thread_dies_of_a_huge_accepted_ttl(
    store: libkv.Store, monkeypatch: pytest.MonkeyPatch, keepalive: bool
) -> None:
    """Even a driver declaring ttl_max=1e300: every wait is bounded by TIMEOUT_MAX."""
    monkeypatch.setattr(
        store, "capabilities", dataclasses.replace(store.capabilities, ttl_max=1e300)
    )
    failures: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    lease = store.lease(1e300, keepalive=keepalive)
    thread = next(t for t in threading.enumerate() if t.name.startswith("libkv-keepalive"))
    assert_holds_until(lambda: thread.is_alive() and not failures, 0.3)
    assert not lease.lost.is_set()
    lease.revoke()
    store.close()  # the store's keep-alive worker ends with it
    wait_until(lambda: not thread.is_alive(), 5)
    assert failures == []


HUGE = [2**63, 2**64, 2**70]


@pytest.mark.parametrize("version", [*HUGE, -1, "1", 1.0, True, None], ids=repr)
def test_bad_versions_are_refused_before_anything_is_sent(
    store: libkv.Store, version: object
) -> None:
    bad: int = version  # type: ignore[assignment]
    calls: list[Callable[[], object]] = [
        lambda: store.update("k", "v", version=bad),
        lambda: store.transaction([ops.update("k", "v", bad)]),
        lambda: store.transaction([ops.check("k", bad)]),
    ]
    if version is not None:  # delete(version=None) is unconditional
        calls += [
            lambda: store.delete("k", version=bad),
            lambda: store.transaction([ops.delete("k", bad)]),
        ]
    for call in calls:
        assert_argument_error(call, "version")
    assert sent(store) == []


def test_the_largest_version_is_accepted(store: libkv.Store) -> None:
    with pytest.raises(libkv.KeyNotFoundError):
        store.update("k", "v", version=2**63 - 1)
    assert sent(store) == ["commit"]


@pytest.mark.parametrize("since", [*HUGE, -1, "3", 2.0, True], ids=repr)
def test_bad_since_is_refused(store: libkv.Store, since: object) -> None:
    assert_argument_error(lambda: store.watch("k", since=since), "since")  # type: ignore[arg-type]
    assert sent(store) == []


@pytest.mark.parametrize("revision", [*HUGE, -5, "x", True, 1.5, None], ids=repr)
def test_bad_compact_arguments_are_refused_before_anything_is_sent(
    store: libkv.Store, revision: object
) -> None:
    assert_argument_error(lambda: store.compact(revision), "revision")  # type: ignore[arg-type]
    assert sent(store) == []


@pytest.mark.parametrize(
    "pattern", ["[]", "[z-a]", "[!]", "a/[", "a/[b", "x[9-0]y", 5, None], ids=repr
)
def test_malformed_globs_raise_a_typed_error(store: libkv.Store, pattern: object) -> None:
    store.put("a/b", "v")
    assert_argument_error(lambda: list(store.keys(pattern)))  # type: ignore[arg-type]


def test_well_formed_classes_still_match(store: libkv.Store) -> None:
    store.put_many({"a/b": "1", "a/c": "2", "a/-": "3", "a/]": "4"})
    assert list(store.keys("a/[a-b]")) == ["a/b"]
    assert list(store.keys("a/[!a-b]")) == ["a/-", "a/]", "a/c"]
    assert list(store.keys("a/[-]")) == ["a/-"]


def test_transaction_size_and_duplicate_keys(store: libkv.Store) -> None:
    limit = store.capabilities.max_transaction_ops
    too_many = [ops.put(f"k{index}", "v") for index in range(limit + 1)]
    assert_argument_error(lambda: store.transaction(too_many), f"limit of {limit}")
    error = assert_argument_error(
        lambda: store.transaction([ops.put("dup/key", "1"), ops.delete("dup/key")]), "two"
    )
    assert "'dup/key'" in str(error)
    assert "ns/dup/key" not in str(error)  # the key as the caller named it, never namespaced
    assert_argument_error(lambda: store.transaction(["not an op"]))  # type: ignore[list-item]
    assert sent(store) == []


def test_lease_arguments(store: libkv.Store) -> None:
    with libkv.open("memory://") as other:
        foreign = other.lease(5)
        assert_argument_error(lambda: store.put("k", "v", lease=foreign), "lease")
    own = store.lease(5)
    assert_argument_error(lambda: store.put("k", "v", ttl=5, lease=own), "either ttl or lease")
    assert_argument_error(lambda: store.keepalive_lease("1"), "lease id")  # type: ignore[arg-type]
    assert store.list() == []
    own.revoke()


def test_public_lease_hooks(store: libkv.Store) -> None:
    lease = store.lease(30, keepalive=False)
    assert store.keepalive_lease(lease.id) is True
    remaining = store.lease_ttl(lease.id)
    assert remaining is not None and 0 < remaining <= 30
    store.put("k", "v", lease=lease)
    store.revoke_lease(lease.id)
    assert store.lease_ttl(lease.id) is None
    assert store.keepalive_lease(lease.id) is False
    assert not store.exists("k")
    store.revoke_lease(lease.id)  # gone already: no error


def test_lease_listeners_hear_every_keepalive_and_the_loss(store: libkv.Store) -> None:
    heard: list[bool] = []
    lease = store.lease(0.3)
    lease.add_listener(heard.append)
    lease.add_listener(lambda alive: 1 / 0)  # a failing listener stops nothing
    wait_until(lambda: heard.count(True) >= 2, 5)
    store.revoke_lease(lease.id)  # behind the Lease's back: the next keep-alive finds it gone
    wait_until(lease.lost.is_set, 5)
    assert heard[-1] is False and heard.count(False) == 1


def test_a_removed_lease_listener_hears_no_more(store: libkv.Store) -> None:
    kept: list[bool] = []
    removed: list[bool] = []
    lease = store.lease(0.3)
    lease.add_listener(kept.append)
    lease.add_listener(removed.append)
    wait_until(lambda: len(removed) >= 1, 5)
    lease.remove_listener(removed.append)
    lease.remove_listener(print)  # never added: no error
    heard = len(removed)
    wait_until(lambda: len(kept) >= heard + 2, 5)
    assert len(removed) == heard
    lease.revoke()


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("memory://x?prefix=a//b", {}),
        ("memory://x/a//b", {}),
        ("memory://x/a/../b", {}),
        ("memory://x", {"prefix": "a//b"}),
    ],
)
def test_a_malformed_namespace_is_a_url_error(url: str, options: dict[str, object]) -> None:
    with pytest.raises(libkv.InvalidURLError, match="namespace"):
        libkv.open(url, **options)


def test_the_libkv_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("libkv").handlers
    assert any(isinstance(handler, logging.NullHandler) for handler in handlers)


def test_an_expiring_lease_prints_nothing_to_stderr() -> None:
    """The library logs a warning; with no logging configured, nothing is printed."""
    script = (
        "import libkv\n"
        "store = libkv.open('memory://')\n"
        "lease = store.lease(0.05, keepalive=False)\n"
        "assert lease.lost.wait(10), 'the lease did not expire'\n"
        "store.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("scheme", "valid"),
    [
        ("myscheme", True),
        ("My-Scheme+v2.x", True),
        ("s3", True),
        ("1abc", False),
        ("-x", False),
        ("+x", False),
        ("my_scheme", False),
        ("ünï", False),
        ("a b", False),
        ("", False),
        ("x/y", False),
        ("x:y", False),
    ],
)
def test_register_accepts_exactly_the_schemes_urls_accept(scheme: str, valid: bool) -> None:
    unique = f"{scheme}{uuid.uuid4().hex[:8]}" if valid else scheme
    try:
        libkv.StoreURL.parse(f"{unique}://h")
        parses = True
    except libkv.InvalidURLError:
        parses = False
    try:
        libkv.register(unique, lambda url: open_memory(libkv.StoreURL.parse("memory://")))
        registers = True
    except libkv.InvalidURLError:
        registers = False
    assert parses == registers == valid
    if valid:
        with libkv.open(f"{unique.upper()}://h") as opened:
            assert opened.capabilities.watch_resume


@pytest.mark.parametrize("timeout", [math.nan, "1", True, [1]], ids=repr)
def test_bad_wait_timeouts_are_refused(store: libkv.Store, timeout: object) -> None:
    store.put("k", "v")
    bad: float = timeout  # type: ignore[assignment]
    assert_argument_error(lambda: store.wait_for_change("k", 1, timeout=bad), "timeout")
    assert_argument_error(lambda: store.lock("held").acquire(timeout=bad), "timeout")
    assert sent(store) == ["commit"]  # only the put: no lock key was created


def test_an_int_timeout_beyond_any_float_waits_without_bound(store: libkv.Store) -> None:
    with store.lock("free") as lock:
        assert lock.locked()
    assert store.lock("free").acquire(timeout=10**400)
    pair = store.put("k", "v")
    threading.Timer(0.1, lambda: store.put("k", "w")).start()
    assert store.wait_for_change("k", pair.version, timeout=10**400).value == b"w"


def test_a_listener_added_to_a_lost_lease_hears_of_it_once(store: libkv.Store) -> None:
    lease = store.lease(0.05, keepalive=False)
    wait_until(lease.lost.is_set, 5)
    heard: list[bool] = []
    lease.add_listener(heard.append)
    assert heard == [False]
