"""Bad input, fuzzed: property-based tests (hypothesis) that every driver runs.

Random keys, values, ttls, versions, transactions, glob patterns and URLs are thrown
at a real store, and four properties are checked on every example:

1. Only documented libkv errors are raised: `KVError` subclasses, and for a bad
   argument (ttl, version, glob, transaction size or shape) a `KVError` that is also a
   `ValueError`. Nothing else escapes.
2. A rejected operation writes nothing: `list("")` is unchanged, and the watch open
   meanwhile reports no change that an accepted call did not make.
3. An accepted operation behaves like a model: a plain dict of the store's pairs,
   maintained here from the contract alone (an independent oracle for key validity,
   value encoding, ttl ranges, version ranges, conditions and glob matching), predicts
   the result or the condition error of every call, and `list("")` equals it after
   every call.
4. A recursive watch open over each example stays consistent: its history passes
   `libkv.testing.history.assert_valid_history`, every UPDATE it reports is a pair an
   accepted write returned, every DELETE one an accepted delete (or an expiry) made,
   and INIT + events replayed equals `list("")` within the convergence bound. Where
   `capabilities.watch_every_change`, every accepted write is reported and every
   delete exactly once.

A driver's test class subclasses `PropertyConformance` next to `StoreConformance`
and provides the same function-scoped `url` fixture. Each test opens its own clients
of that URL and runs an inner hypothesis property; every example starts by emptying
the namespace, so examples are independent and no function-scoped fixture is shared
across them. Example counts are small (`property_examples`, default 25; a driver
class may raise it), `deadline=None` (a network round trip is not a bug), and with
the `CI` environment variable set the examples are derandomized so that a failure on
CI reproduces by re-running the same test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar, TypeVar
from urllib.parse import quote

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import libkv
from libkv import Action, Capabilities, Event, KVPair, Store, ops
from libkv.ops import Op
from libkv.testing.conformance.base import (
    CONVERGENCE_BOUND,
    DELIVERY_MARGIN,
    ConformanceBase,
    call_within,
    close_quietly,
)
from libkv.testing.conformance.bounds import LARGEST_VERSION, is_argument_error
from libkv.testing.history import WatchRecorder, assert_valid_history, describe, replay
from libkv.testing.polling import wait_until

__all__ = ["PropertyConformance"]

T = TypeVar("T")

MAX_KEY_BYTES = 1024
LONG_TTL = 3600.0
"""A ttl no example outlives: a key written with it is as good as permanent here."""

# -- the oracle: what the contract says, written independently of libkv.keys ----------


def normalized_key(key: object, *, prefix: bool = False) -> str | None:
    """The key the contract makes of `key`, or None if it must raise InvalidKeyError.

    Leading and trailing `/` are stripped; empty (unless a prefix), an empty, `.` or
    `..` segment, a C0/DEL/C1 control character, invalid Unicode or more than 1024
    UTF-8 bytes is invalid, and so is anything but a `str`.
    """
    if type(key) is not str:
        return None
    text = key.strip("/")
    if not text:
        return "" if prefix else None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None
    if size > MAX_KEY_BYTES:
        return None
    if any(ord(character) < 0x20 or 0x7F <= ord(character) <= 0x9F for character in text):
        return None
    if any(segment in ("", ".", "..") for segment in text.split("/")):
        return None
    return text


def encoded_value(value: object) -> bytes | None:
    """The bytes the contract stores for `value`, or None if it must raise InvalidValueError."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            return None
    return None


def valid_ttl(ttl: object, capabilities: Capabilities) -> bool:
    """A finite number (not a bool), > 0, from ttl_min to ttl_max."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        return False
    return math.isfinite(ttl) and ttl > 0 and capabilities.ttl_min <= ttl <= capabilities.ttl_max


def valid_version(version: object) -> bool:
    """An int (not a bool) from 0 to 2**63 - 1."""
    return type(version) is int and 0 <= version <= LARGEST_VERSION


def under(key: str, prefix: str) -> bool:
    """Whether `key` is under `prefix` in the contract's sense."""
    return not prefix or key == prefix or key.startswith(prefix + "/")


class GlobError(Exception):
    """The oracle found the pattern malformed."""


def _parse_class(pattern: str, start: int) -> tuple[tuple[bool, list[tuple[str, str]]], int]:
    """A `[...]` class starting at `start`: ((negated, ranges), index after it)."""
    index = start + 1
    negated = pattern[index : index + 1] == "!"
    if negated:
        index += 1
    end = pattern.find("]", index)
    if end == -1:
        raise GlobError("unterminated class")
    body = pattern[index:end]
    if not body:
        raise GlobError("empty class")
    ranges: list[tuple[str, str]] = []
    position = 0
    while position < len(body):
        if position + 2 < len(body) and body[position + 1] == "-":
            low, high = body[position], body[position + 2]
            if low > high:
                raise GlobError("reversed range")
            ranges.append((low, high))
            position += 3
        else:
            ranges.append((body[position], body[position]))
            position += 1
    return (negated, ranges), end + 1


def glob_matcher(pattern: str) -> Callable[[str], bool]:
    """The contract's glob: `*`/`?`/classes within a segment, `**` across segments,
    and a whole `**/` segment also matching zero segments. GlobError if malformed."""
    text = pattern.strip("/")
    tokens: list[tuple[str, object]] = []
    index = 0
    while index < len(text):
        character = text[index]
        if text.startswith("**", index):
            segment_start = index == 0 or text[index - 1] == "/"
            if segment_start and text[index + 2 : index + 3] == "/":
                tokens.append(("segments", None))
                index += 3
            else:
                tokens.append(("span", None))
                index += 2
        elif character == "*":
            tokens.append(("star", None))
            index += 1
        elif character == "?":
            tokens.append(("one", None))
            index += 1
        elif character == "[":
            parsed, index = _parse_class(text, index)
            tokens.append(("class", parsed))
        else:
            tokens.append(("literal", character))
            index += 1

    @functools.cache
    def match(token: int, position: int, key: str) -> bool:
        if token == len(tokens):
            return position == len(key)
        kind, argument = tokens[token]
        if kind == "literal":
            return key[position : position + 1] == argument and match(token + 1, position + 1, key)
        if kind in ("one", "class"):
            if position >= len(key) or key[position] == "/":
                return False
            if kind == "class":
                assert isinstance(argument, tuple)
                negated, ranges = argument
                inside = any(low <= key[position] <= high for low, high in ranges)
                if inside == negated:
                    return False
            return match(token + 1, position + 1, key)
        if kind == "star":
            end = key.find("/", position)
            end = len(key) if end == -1 else end
            return any(match(token + 1, stop, key) for stop in range(position, end + 1))
        if kind == "span":
            return any(match(token + 1, stop, key) for stop in range(position, len(key) + 1))
        # "segments": zero or more whole segments, each ending with "/".
        if match(token + 1, position, key):
            return True
        return any(
            key[stop] == "/" and match(token + 1, stop + 1, key)
            for stop in range(position, len(key))
        )

    return lambda key: match(0, 0, key)


# -- inputs -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Symbol:
    """An input resolved against the store or the model when the example runs
    (`ttl_min`, `current version`, ...); shown by name in a falsifying example."""

    name: str

    def __repr__(self) -> str:
        return self.name


AT_MAX = Symbol("<value of exactly max_value_size bytes>")
OVER_MAX = Symbol("<value of max_value_size + 1 bytes>")
CURRENT = Symbol("<the key's current version>")
STALE = Symbol("<a version the key is not at>")

KEY_POOL = ("a", "a/b", "a/b/c", "b", "ab", "a-b", "ü/ß", "x y", "...", "a.b", "emoji😀")
"""Valid keys that examples share, so writes collide and prefixes nest."""

KEY_CHARACTERS = "ab/.é😀 *?[]\\-\x00\x1f\x7f\x85\u2028\ud800"
"""Characters random keys are made of: separators, dots, non-ASCII, glob characters,
C0, DEL and C1 controls, a Unicode line separator (valid) and a lone surrogate."""


@st.composite
def _long_key(draw: st.DrawFn) -> str:
    """A key of 1016..1032 UTF-8 bytes made of 1-, 2-, 3- or 4-byte characters."""
    character = draw(st.sampled_from(["x", "é", "€", "😀"]))
    size = draw(st.integers(MAX_KEY_BYTES - 8, MAX_KEY_BYTES + 8))
    width = len(character.encode())
    head = draw(st.sampled_from(["", "p/"]))
    size -= len(head)
    return head + character * (size // width) + "x" * (size % width)


@st.composite
def _decorated_key(draw: st.DrawFn) -> str:
    """A pool key with slashes around or inside it, or a dot segment."""
    key = draw(st.sampled_from(KEY_POOL))
    lead = draw(st.sampled_from(["", "/", "//"]))
    trail = draw(st.sampled_from(["", "/", "//"]))
    inner = draw(st.sampled_from(["", "//", "/./", "/../", "/.../"]))
    if inner:
        key = key + inner + draw(st.sampled_from(KEY_POOL))
    return lead + key + trail


def keys() -> st.SearchStrategy[object]:
    """Valid and invalid keys: the pool, decorated pool keys, random text, long keys
    around 1024 bytes, and a few non-strings."""
    pool = st.sampled_from(KEY_POOL)
    return st.one_of(
        pool,  # thrice as likely: calls on one key must meet often
        pool,
        pool,
        _decorated_key(),
        st.text(alphabet=st.sampled_from(KEY_CHARACTERS), max_size=10),
        _long_key(),
        st.sampled_from([".", "..", "/", "", 1, None, b"a"]),
    )


def values() -> st.SearchStrategy[object]:
    """Bytes-like values and str (some not valid Unicode), and values of other types."""
    return st.one_of(
        st.binary(max_size=40),
        st.binary(max_size=16).map(bytearray),
        st.binary(max_size=16).map(lambda data: memoryview(data)),
        st.text(max_size=12),
        st.sampled_from(["", "\ud800", "a\udfffb", 1, 1.5, None, ["a"], True]),
    )


def ttls() -> st.SearchStrategy[object]:
    """Out-of-range and in-range ttls, some relative to the store's ttl_min and ttl_max."""
    return st.one_of(
        st.sampled_from(
            [
                math.nan,
                math.inf,
                -math.inf,
                -1.0,
                0,
                0.0,
                True,
                "5",
                1e15,
                1e300,
                LONG_TTL,
                Symbol("ttl_min"),
                Symbol("just below ttl_min"),
                Symbol("ttl_max"),
                Symbol("just above ttl_max"),
                Symbol("twice ttl_max"),
            ]
        ),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(2**70), 2**70),
    )


def versions() -> st.SearchStrategy[object]:
    """Versions that match, mismatch, or are out of range or of the wrong type."""
    return st.one_of(
        st.sampled_from(
            [CURRENT, CURRENT, STALE, 0, -1, 1, LARGEST_VERSION, 2**63, 2**63 + 1, 2**64]
        ),
        st.sampled_from([True, False, 1.0, "1"]),
        st.integers(-(2**70), 2**70),
    )


def resolve_ttl(ttl: object, capabilities: Capabilities) -> object:
    """A ttl symbol's value for this store."""
    if not isinstance(ttl, Symbol):
        return ttl
    return {
        "ttl_min": capabilities.ttl_min,
        "just below ttl_min": math.nextafter(capabilities.ttl_min, -math.inf),
        "ttl_max": capabilities.ttl_max,
        "just above ttl_max": math.nextafter(capabilities.ttl_max, math.inf),
        "twice ttl_max": capabilities.ttl_max * 2,
    }[ttl.name]


# -- calls and the model ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of the Store API with (possibly bad) arguments, readable when printed."""

    kind: str
    key: object = "a"
    value: object = b""
    version: object = None
    ttl: object = None
    items: tuple[Call, ...] = ()
    pad: bool = False

    def __repr__(self) -> str:
        containers = ("get_many", "put_many", "transaction")
        shown = {
            "key": None if self.kind in containers else self.key,
            "value": self.value,
            "version": self.version,
            "ttl": self.ttl,
            "items": self.items or None,
            "pad": self.pad or None,
        }
        arguments = ", ".join(
            f"{name}={_short(value)}"
            for name, value in shown.items()
            if value is not None and (value or name in ("key", "version", "ttl"))
        )
        return f"{self.kind}({arguments})"


def _short(value: object) -> str:
    """repr(value), with a long value (one of max_value_size bytes) cut to its length."""
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) > 64:
        return f"<{len(value)} bytes>"
    return repr(value)


REFUSALS: dict[str, Callable[[BaseException], bool]] = {
    "key": lambda error: isinstance(error, libkv.InvalidKeyError),
    "value": lambda error: isinstance(error, libkv.InvalidValueError),
    "size": lambda error: isinstance(error, libkv.ValueTooLargeError),
    "argument": lambda error: (
        is_argument_error(error)
        and not isinstance(
            error,
            (libkv.InvalidKeyError, libkv.InvalidValueError, libkv.ValueTooLargeError),
        )
        and isinstance(error, getattr(libkv, "InvalidArgumentError", libkv.KVError))
    ),
}
"""How the contract refuses each kind of bad input (the core may find any one of an
operation's problems first)."""

Condition = tuple[type[libkv.KVError], str, int]


@dataclasses.dataclass
class Expected:
    """What the model predicts for one call: refusal reasons, a condition error, or success."""

    refusals: set[str] = dataclasses.field(default_factory=set)
    condition: Condition | None = None
    may_have_expired: bool = False


class Model:
    """The store's pairs as the contract says they must be, maintained from results."""

    def __init__(self, capabilities: Capabilities) -> None:
        self.capabilities = capabilities
        self.pairs: dict[str, KVPair] = {}
        self.expiring: dict[str, float] = {}  # key -> earliest time it may vanish
        self.ever_expiring: set[str] = set()
        self.written: list[KVPair] = []
        self.deletions: Counter[str] = Counter()
        self.highest = 0

    # -- validation shared by every write -------------------------------------------

    def check_op(self, expected: Expected, call: Call, ttl: object) -> str | None:
        """Add the refusals the contract owes one operation; return its normalized key."""
        key = normalized_key(call.key)
        if key is None:
            expected.refusals.add("key")
        if call.kind in ("put", "create", "update"):
            data = encoded_value(call.value)
            if data is None:
                expected.refusals.add("value")
            elif len(data) > self.capabilities.max_value_size:
                expected.refusals.add("size")
            if ttl is not None and not valid_ttl(ttl, self.capabilities):
                expected.refusals.add("argument")
        versioned = call.kind in ("update", "check") or call.version is not None
        if versioned and not valid_version(call.version):
            expected.refusals.add("argument")
        return key

    def condition(self, call: Call, key: str, index: int) -> Condition | None:
        """The condition error of a valid op on `key` (as op `index`), or None."""
        pair = self.pairs.get(key)
        if call.kind == "create" or (call.kind == "check" and call.version == 0):
            return (libkv.KeyExistsError, key, index) if pair is not None else None
        if call.kind in ("put",):
            return None
        if pair is None:
            return (libkv.KeyNotFoundError, key, index)
        if call.version is not None and call.version != pair.version:
            return (libkv.KeyModifiedError, key, index)
        return None

    def expect(self, call: Call) -> Expected:
        expected = Expected()
        if call.kind in ("put", "create", "update", "delete"):
            key = self.check_op(expected, call, call.ttl)
            if not expected.refusals and key is not None:
                expected.condition = self.condition(call, key, 0)
        elif call.kind in ("get", "exists"):
            key = normalized_key(call.key)
            if key is None:
                expected.refusals.add("key")
            elif call.kind == "get" and key not in self.pairs:
                expected.condition = (libkv.KeyNotFoundError, key, 0)
            elif call.kind == "get" and key in self.expiring:
                expected.may_have_expired = True
        elif call.kind in ("list", "delete_tree"):
            if normalized_key(call.key, prefix=True) is None:
                expected.refusals.add("key")
        elif call.kind == "get_many":
            if any(normalized_key(item.key) is None for item in call.items):
                expected.refusals.add("key")
        elif call.kind in ("put_many", "transaction"):
            self.expect_transaction(expected, call)
        else:
            raise AssertionError(f"unknown call kind {call.kind}")
        return expected

    def expect_transaction(self, expected: Expected, call: Call) -> None:
        normalized: list[str | None] = []
        for item in call.items:
            ttl = call.ttl if call.kind == "put_many" else item.ttl
            normalized.append(self.check_op(expected, item, ttl))
        count = len(call.items) + (self.padding(call) if call.pad else 0)
        valid = [key for key in normalized if key is not None]
        if count > self.capabilities.max_transaction_ops or len(set(valid)) < len(valid):
            expected.refusals.add("argument")
        if expected.refusals:
            return
        for index, (item, key) in enumerate(zip(call.items, normalized, strict=True)):
            assert key is not None
            failure = self.condition(item, key, index)
            if failure is not None:
                expected.condition = failure
                return

    def padding(self, call: Call) -> int:
        """How many puts pad a transaction past max_transaction_ops."""
        return max(self.capabilities.max_transaction_ops + 1 - len(call.items), 1)

    # -- applying results ---------------------------------------------------------------

    def wrote(self, pair: KVPair, key: str, data: bytes, ttl: object, started: float) -> None:
        assert (pair.key, pair.value) == (key, data), f"wrote {pair}, expected {key!r}={data!r}"
        assert pair.version > self.highest, (
            f"version {pair.version} of {key!r} is not above {self.highest}, an earlier write's"
        )
        self.highest = pair.version
        self.pairs[key] = pair
        self.written.append(pair)
        self.expiring.pop(key, None)
        if isinstance(ttl, (int, float)) and ttl < LONG_TTL:
            self.expiring[key] = started + float(ttl)
            self.ever_expiring.add(key)

    def deleted(self, key: str) -> None:
        del self.pairs[key]
        self.expiring.pop(key, None)
        self.deletions[key] += 1

    def under(self, prefix: str) -> list[KVPair]:
        return [self.pairs[key] for key in sorted(self.pairs) if under(key, prefix)]

    def compare(self, listed: Sequence[KVPair], started: float) -> None:
        """list("") (which started at `started`) equals the model; a key written with a
        short ttl may have expired, but not before its ttl passed."""
        actual = {pair.key: pair for pair in listed}
        for key, earliest in list(self.expiring.items()):
            if key not in actual:
                assert started >= earliest, (
                    f"{key!r} vanished {earliest - started:.3f} s before its ttl passed"
                )
                del self.pairs[key]
                del self.expiring[key]
        assert [pair.key for pair in listed] == sorted(actual), f"list is not sorted: {listed}"
        assert actual == self.pairs, _difference(self.pairs, actual)


def _difference(model: dict[str, KVPair], actual: dict[str, KVPair]) -> str:
    keys = sorted(set(model) | set(actual))
    lines = [
        f"  {key!r}: model {model.get(key)} store {actual.get(key)}"
        for key in keys
        if model.get(key) != actual.get(key)
    ]
    return "list('') differs from the model:\n" + "\n".join(lines)


def _describe_error(error: BaseException) -> str:
    return f"{type(error).__module__}.{type(error).__qualname__}({error})"


# -- one example ------------------------------------------------------------------------


class Trial:
    """One example: a store emptied at the start, a recursive watch over it (through a
    second client), and the model. `apply` runs a call and checks it against the model;
    `finish` checks the watch's history."""

    def __init__(self, store: Store, watcher: Store) -> None:
        self.store = store
        self.capabilities = store.capabilities
        store.delete_tree("")
        assert store.list("") == [], "the namespace is not empty after delete_tree('')"
        self.model = Model(self.capabilities)
        self.watch = watcher.watch("", recursive=True)
        self.recorder = WatchRecorder(self.watch)
        self.recorder.__enter__()
        self.init = ConformanceBase.recorded_init(self.recorder)
        assert self.init.snapshot == (), f"INIT of an empty namespace: {self.init}"

    def close(self) -> None:
        self.recorder.stop()
        self.watch.close()

    def resolve(self, call: Call) -> Call:
        """Replace symbols by values for this store and this state."""
        ttl = resolve_ttl(call.ttl, self.capabilities)
        value: object = call.value
        if value is AT_MAX:
            value = b"m" * self.capabilities.max_value_size
        elif value is OVER_MAX:
            value = b"m" * (self.capabilities.max_value_size + 1)
        version = call.version
        if isinstance(version, Symbol):
            key = normalized_key(call.key)
            pair = self.model.pairs.get(key) if key is not None else None
            current = pair.version if pair is not None else 1
            version = current if version is CURRENT else (current - 1 if current > 1 else 2)
        items = tuple(self.resolve(item) for item in call.items)
        return dataclasses.replace(call, ttl=ttl, value=value, version=version, items=items)

    def apply(self, call: Call) -> None:
        """Run `call`, check its outcome against the model, then list("") against it."""
        expected = self.model.expect(call)
        started = time.monotonic()
        try:
            result = self.invoke(call)
        except Exception as error:
            self.check_error(call, expected, error)
        else:
            assert not expected.refusals, (
                f"{call!r} returned {result!r:.200} instead of refusing ({expected.refusals})"
            )
            assert expected.condition is None, (
                f"{call!r} returned {result!r:.200} instead of raising "
                f"{expected.condition[0].__name__}"
            )
            self.check_result(call, result, started)
        listing_started = time.monotonic()
        self.model.compare(self.store.list(""), listing_started)

    def invoke(self, call: Call) -> object:
        store = self.store
        key, value, version, ttl = call.key, call.value, call.version, call.ttl
        if call.kind == "put":
            return store.put(key, value, ttl=ttl)  # type: ignore[arg-type]
        if call.kind == "create":
            return store.create(key, value, ttl=ttl)  # type: ignore[arg-type]
        if call.kind == "update":
            return store.update(key, value, version=version, ttl=ttl)  # type: ignore[arg-type]
        if call.kind == "delete":
            store.delete(key, version=version)  # type: ignore[arg-type]
            return None
        if call.kind == "get":
            return store.get(key)  # type: ignore[arg-type]
        if call.kind == "exists":
            return store.exists(key)  # type: ignore[arg-type]
        if call.kind == "list":
            return store.list(key)  # type: ignore[arg-type]
        if call.kind == "delete_tree":
            return store.delete_tree(key)  # type: ignore[arg-type]
        if call.kind == "get_many":
            return store.get_many([item.key for item in call.items])  # type: ignore[misc]
        if call.kind == "put_many":
            items = [(item.key, item.value) for item in call.items]
            if call.pad:
                items += [(f"pad/{index}", b"") for index in range(self.model.padding(call))]
            keys = [item for item, _ in items]
            if len(set(map(repr, keys))) == len(keys) and all(type(k) is str for k in keys):
                return store.put_many(dict(items), ttl=ttl)  # type: ignore[arg-type]
            return store.put_many(items, ttl=ttl)  # type: ignore[arg-type]
        assert call.kind == "transaction", call.kind
        operations = [self.operation(item) for item in call.items]
        if call.pad:
            operations += [
                ops.put(f"pad/{index}", b"") for index in range(self.model.padding(call))
            ]
        return store.transaction(operations)

    @staticmethod
    def operation(item: Call) -> Op:
        key, value, version, ttl = item.key, item.value, item.version, item.ttl
        if item.kind == "put":
            return ops.put(key, value, ttl=ttl)  # type: ignore[arg-type]
        if item.kind == "create":
            return ops.create(key, value, ttl=ttl)  # type: ignore[arg-type]
        if item.kind == "update":
            return ops.update(key, value, version, ttl=ttl)  # type: ignore[arg-type]
        if item.kind == "delete":
            return ops.delete(key, version)  # type: ignore[arg-type]
        assert item.kind == "check", item.kind
        return ops.check(key, version)  # type: ignore[arg-type]

    def check_error(self, call: Call, expected: Expected, error: Exception) -> None:
        """The error is the one the model predicts (a refusal or a condition)."""
        if not isinstance(error, libkv.KVError):
            raise AssertionError(f"{call!r} raised an undocumented {_describe_error(error)}")
        if expected.refusals:
            accepted = [reason for reason in expected.refusals if REFUSALS[reason](error)]
            assert accepted, (
                f"{call!r} raised {_describe_error(error)}; expected a refusal for "
                f"{sorted(expected.refusals)}"
            )
            return
        if expected.may_have_expired and isinstance(error, libkv.KeyNotFoundError):
            return
        if expected.condition is None:
            raise AssertionError(f"{call!r} raised {_describe_error(error)}; expected success")
        kind, key, index = expected.condition
        assert type(error) is kind, (
            f"{call!r} raised {_describe_error(error)}; expected {kind.__name__}"
        )
        assert (getattr(error, "key", None), getattr(error, "index", None)) == (key, index), (
            f"{call!r} raised {_describe_error(error)} with key={getattr(error, 'key', None)!r} "
            f"index={getattr(error, 'index', None)}; expected key={key!r} index={index}"
        )

    def check_result(self, call: Call, result: object, started: float) -> None:
        """The result equals the model's prediction; the model takes the writes in."""
        model = self.model
        if call.kind in ("put", "create", "update"):
            key, data = normalized_key(call.key), encoded_value(call.value)
            assert isinstance(result, KVPair) and key is not None and data is not None
            model.wrote(result, key, data, call.ttl, started)
        elif call.kind == "delete":
            key = normalized_key(call.key)
            assert result is None and key is not None, result
            model.deleted(key)
        elif call.kind == "get":
            key = normalized_key(call.key)
            assert key is not None
            pair = model.pairs.get(key)
            if pair is None or key in model.expiring:
                assert result == pair or key in model.expiring, f"get({key!r}) -> {result}"
            else:
                assert result == pair, f"get({key!r}) returned {result}, the model has {pair}"
        elif call.kind == "exists":
            key = normalized_key(call.key)
            assert key is not None
            if key not in model.expiring:
                assert result == (key in model.pairs), f"exists({key!r}) -> {result}"
        elif call.kind == "list":
            prefix = normalized_key(call.key, prefix=True)
            assert prefix is not None
            if not any(under(key, prefix) for key in model.expiring):
                assert result == model.under(prefix), f"list({prefix!r}) -> {result}"
        elif call.kind == "delete_tree":
            prefix = normalized_key(call.key, prefix=True)
            assert prefix is not None
            doomed = [pair.key for pair in model.under(prefix)]
            if not any(key in model.expiring for key in doomed):
                assert result == len(doomed), f"delete_tree({prefix!r}) -> {result}, {doomed}"
            for key in doomed:
                model.deleted(key)
        elif call.kind == "get_many":
            asked = [normalized_key(item.key) for item in call.items]
            wanted = [model.pairs[key] for key in asked if key is not None and key in model.pairs]
            if not any(key in model.expiring for key in asked):
                assert result == wanted, f"get_many({asked}) -> {result}, the model has {wanted}"
        else:
            self.check_transaction(call, result, started)

    def check_transaction(self, call: Call, result: object, started: float) -> None:
        assert isinstance(result, list), result
        items = list(call.items)
        assert len(result) == len(items), f"{call!r} returned {len(result)} results"
        highest = self.model.highest
        for item, outcome in zip(items, result, strict=True):
            key = normalized_key(item.key)
            assert key is not None
            if call.kind == "transaction" and item.kind in ("delete", "check"):
                assert outcome is None, f"{item!r} in a transaction returned {outcome}"
                if item.kind == "delete":
                    self.model.deleted(key)
                continue
            data = encoded_value(item.value)
            assert isinstance(outcome, KVPair) and data is not None, outcome
            ttl = call.ttl if call.kind == "put_many" else item.ttl
            self.model.highest = highest  # writes of one transaction may share a version
            self.model.wrote(outcome, key, data, ttl, started)
        self.model.highest = max([highest, *(p.version for p in result if p is not None)])

    def finish(self) -> None:
        """The watch converges on list(""), and again after an accepted delete_tree("")
        (so every example also checks that each deletion is reported); its history is
        valid, and it reports only (and, where watch_every_change, every one of) the
        accepted writes and deletes."""
        model, recorder = self.model, self.recorder
        try:
            self.await_watch()
            self.apply(Call("delete_tree", ""))
            self.await_watch()
        finally:
            self.close()
        assert recorder.error is None, f"the watch raised {recorder.error!r}"
        events = recorder.events[1:]
        assert_valid_history(
            self.init,
            events,
            watched="",
            recursive=True,
            every_change=self.capabilities.watch_every_change,
        )
        written = set(model.written)
        phantoms = [
            describe(event)
            for event in events
            if event.action is Action.UPDATE and event.pair not in written
        ]
        assert not phantoms, "the watch reported writes no accepted call made:\n" + "\n".join(
            phantoms
        )
        reported = Counter(event.key for event in events if event.action is Action.DELETE)
        for key, count in reported.items():
            allowed = model.deletions[key] + (1 if key in model.ever_expiring else 0)
            assert count <= allowed, f"{count} DELETEs of {key!r}; accepted calls made {allowed}"

    def await_watch(self) -> None:
        """Wait (within the convergence bound) until INIT + events equals list("") and,
        where watch_every_change, every accepted write and delete has been reported."""
        recorder = self.recorder

        def state_reached() -> bool:
            events = recorder.events[1:]
            listed = {pair.key: pair for pair in self.store.list("")}
            if replay(self.init, events) != listed:
                return False
            return not self.capabilities.watch_every_change or not self.unreported(events)

        wait_until(
            lambda: state_reached() or recorder.error is not None,
            CONVERGENCE_BOUND + DELIVERY_MARGIN,
            message=lambda: (
                "the watch did not converge on list(''), or (watch_every_change)"
                f" missed {self.unreported(recorder.events[1:])}:\n"
                + "\n".join(map(describe, recorder.events))
            ),
        )

    def unreported(self, events: Sequence[Event]) -> list[str]:
        """Accepted writes and deletes the events do not (yet) report."""
        updates = {event.pair for event in events if event.action is Action.UPDATE}
        missing = [f"UPDATE {pair}" for pair in self.model.written if pair not in updates]
        reported = Counter(event.key for event in events if event.action is Action.DELETE)
        for key, count in self.model.deletions.items():
            # A key with a short ttl may have expired before the delete: one DELETE less.
            least = count - (1 if key in self.model.ever_expiring else 0)
            if reported[key] < least:
                missing.append(f"{least} DELETE of {key!r} ({reported[key]} seen)")
        return missing


# -- strategies for calls -----------------------------------------------------------------


def _single_calls(
    key: st.SearchStrategy[object], value: st.SearchStrategy[object]
) -> st.SearchStrategy[Call]:
    return st.one_of(
        st.builds(Call, st.just("put"), key, value),
        st.builds(Call, st.just("create"), key, value),
        st.builds(Call, st.just("update"), key, value, st.sampled_from([CURRENT, STALE])),
        st.builds(Call, st.just("delete"), key, version=st.sampled_from([None, CURRENT, STALE])),
        st.builds(Call, st.just("get"), key),
        st.builds(Call, st.just("exists"), key),
        st.builds(Call, st.just("list"), key),
        st.builds(Call, st.just("delete_tree"), key),
        st.builds(
            Call,
            st.just("get_many"),
            items=st.lists(st.builds(Call, st.just("get"), key), max_size=3).map(tuple),
        ),
        st.builds(
            Call,
            st.just("put_many"),
            items=st.lists(st.builds(Call, st.just("put"), key, value), max_size=3).map(tuple),
        ),
    )


def _op(
    key: st.SearchStrategy[object], version: st.SearchStrategy[object]
) -> st.SearchStrategy[Call]:
    value = st.binary(max_size=8)
    return st.one_of(
        st.builds(Call, st.just("put"), key, value),
        st.builds(Call, st.just("create"), key, value),
        st.builds(Call, st.just("update"), key, value, version),
        st.builds(Call, st.just("delete"), key, version=st.one_of(st.none(), version)),
        st.builds(Call, st.just("check"), key, version=version),
    )


TRANSACTION_KEYS = ("k0", "k1", "k2", "k0/x", "/k1/")
"""A small pool, with a nested key and a spelling of k1 that normalises to it."""


def _transactions(version: st.SearchStrategy[object]) -> st.SearchStrategy[Call]:
    key = st.sampled_from(TRANSACTION_KEYS)
    return st.builds(
        Call,
        st.just("transaction"),
        items=st.lists(_op(key, version), max_size=5).map(tuple),
        pad=st.sampled_from([False, False, False, False, True]),
    )


def _setup_writes() -> st.SearchStrategy[list[Call]]:
    return st.lists(
        st.builds(Call, st.just("put"), st.sampled_from(TRANSACTION_KEYS), st.binary(max_size=4)),
        max_size=4,
    )


GLOB_KEYS = (
    "a", "b", "ab", "ba", "abc", "a.b", "-", "\\", "a\\b", "a/b", "a/c", "a/b/c",
    "a/c/b", "b/a", "c/a/b/c", "a/a/a", "]", "!", "5", "Z",
)  # fmt: skip


def _glob_piece() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["a", "b", "c", ".", "-", "\\", "!", "]"]),
        st.sampled_from(["*", "?", "**"]),
        st.builds(
            lambda negated, body: "[" + ("!" if negated else "") + body + "]",
            st.booleans(),
            st.text(alphabet="abc-\\!", max_size=4),
        ),
        st.sampled_from(["[", "[!", "[]", "[]]", "[z-a]", "[c-a]", "[a-c]", "[!a-b]"]),
    )


def globs() -> st.SearchStrategy[str]:
    """Glob patterns, some malformed; no empty, `.` or `..` segment (no key has one)."""
    segment = st.lists(_glob_piece(), min_size=1, max_size=3).map("".join)
    segment = segment.filter(lambda text: text not in (".", ".."))
    return st.lists(segment, min_size=1, max_size=3).map("/".join)


# -- URLs -------------------------------------------------------------------------------

PASSWORD_CHARACTERS = "@:/?#%&=+ ;,[]~!$'()*\\é😀"


@dataclasses.dataclass(frozen=True)
class UrlRecipe:
    """How to change the test's URL: credentials, a host replacement, extra options."""

    username: str | None
    password: str | None
    host: str | None
    options: tuple[tuple[str, str], ...]
    raw_query: str

    def build(self, base: str) -> str:
        parsed = libkv.StoreURL.parse(base)
        credentials = ""
        if self.username is not None or self.password is not None:
            credentials = quote(self.username or "", safe="")
            if self.password is not None:
                credentials += ":" + quote(self.password, safe="")
            credentials += "@"
        hosts = self.host if self.host is not None else _hosts_of(base)
        query = "&".join(
            [
                f"{quote(name, safe='')}={quote(str(value), safe='/')}"
                for name, value in parsed.options.items()
            ]
            + [f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in self.options]
            + ([self.raw_query] if self.raw_query else [])
        )
        path = quote(parsed.path, safe="/")
        return f"{parsed.scheme}://{credentials}{hosts}{path}" + (f"?{query}" if query else "")


def _hosts_of(url: str) -> str:
    """The host list of `url` as written."""
    authority = url.split("://", 1)[1].split("?", 1)[0].split("/", 1)[0]
    return authority.rpartition("@")[2]


MALFORMED_HOSTS = [
    "127.0.0.1:0",
    "127.0.0.1:65536",
    "127.0.0.1:99999",
    "127.0.0.1:-1",
    "127.0.0.1:http",
    "127.0.0.1:1:2",
    "[::1",
    "[::1]x",
    "[::1]:port",
    "127.0.0.1: 80",
]


def url_recipes() -> st.SearchStrategy[UrlRecipe]:
    secret = st.text(alphabet=PASSWORD_CHARACTERS, min_size=1, max_size=8).map(
        lambda text: f"Pw{text}9z"
    )
    option_value = st.one_of(
        st.text(alphabet="ab01.-/%&=#? é", max_size=6),
        st.sampled_from(["0", "-1", "nan", "inf", "1e999", "0.5", "true", ""]),
    )
    return st.builds(
        UrlRecipe,
        username=st.one_of(st.none(), st.sampled_from(["user", "", "u@x", "ü"])),
        password=st.one_of(st.none(), secret),
        host=st.one_of(st.none(), st.none(), st.sampled_from(MALFORMED_HOSTS)),
        options=st.lists(
            st.tuples(
                st.one_of(
                    st.sampled_from(["prefix", "timeout"]),
                    st.text(alphabet="abcxyz_", min_size=1, max_size=6).map(
                        lambda name: f"zz{name}"
                    ),
                ),
                option_value,
            ),
            max_size=2,
            unique_by=lambda option: option[0],
        ),
        raw_query=st.sampled_from(["", "", "", "&&", "=x", "prefix=a&prefix=b", "%zz=1"]),
    )


def _secret_forms(password: str) -> list[str]:
    return [password, quote(password, safe=""), quote(password)]


# -- the mixin ----------------------------------------------------------------------------


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

    @contextlib.contextmanager
    def clients(self, url: str) -> Iterator[tuple[Store, Store]]:
        """A writer and a watcher of the test's store, closed afterwards."""
        store = libkv.open(url)
        try:
            watcher = libkv.open(url)
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
        self.run_calls(url, st.lists(_single_calls(keys(), st.binary(max_size=8)), max_size=6))

    def test_random_values_are_refused_or_read_back_as_bytes(self, url: str) -> None:
        """Random values (empty, binary, str, invalid Unicode, other types, and exactly
        max_value_size and one byte more): InvalidValueError / ValueTooLargeError and
        nothing written, or read back as the model's bytes."""
        self.run_calls(
            url,
            st.lists(_single_calls(st.sampled_from(KEY_POOL), values()), max_size=6),
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
            assert not valid, f"{kind}(ttl={ttl!r}) raised {_describe_error(error)}"
            assert REFUSALS["argument"](error), (
                f"{kind}(ttl={ttl!r}) raised {_describe_error(error)}; expected an argument error"
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
                _setup_writes(),
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
                _setup_writes(),
                st.lists(
                    _transactions(st.sampled_from([CURRENT, CURRENT, STALE, 0])),
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
                    assert expected is None, f"keys({pattern!r}) raised {_describe_error(error)}"
                    assert is_argument_error(error), (
                        f"keys({pattern!r}) raised {_describe_error(error)}; "
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
                    f"open({text!r}) raised {_describe_error(error)}"
                )
                return
            except Exception as error:
                raise AssertionError(
                    f"open({text!r}) raised an undocumented {_describe_error(error)}"
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
                        f"{text!r}: exists() raised an undocumented {_describe_error(error)}"
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
