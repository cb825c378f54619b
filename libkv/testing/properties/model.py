"""The model of the store and the checks of one example against it.

`Model` holds the store's pairs as the contract says they must be and predicts each
call's refusal, condition error or result; `Trial` runs one example's calls on a real
store, checks every outcome and `list("")` against the model, and at the end checks
the history of a recursive watch open meanwhile.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Sequence

import libkv
from libkv import Action, Capabilities, Event, KVPair, Store, ops
from libkv.ops import Op
from libkv.testing.conformance.base import CONVERGENCE_BOUND, DELIVERY_MARGIN, ConformanceBase
from libkv.testing.conformance.bounds import is_argument_error
from libkv.testing.history import WatchRecorder, assert_valid_history, describe, replay
from libkv.testing.polling import wait_until
from libkv.testing.properties.calls import (
    AT_MAX,
    CURRENT,
    LONG_TTL,
    OVER_MAX,
    Call,
    Symbol,
    resolve_ttl,
)
from libkv.testing.properties.oracle import (
    encoded_value,
    normalized_key,
    under,
    valid_ttl,
    valid_version,
)

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


def describe_error(error: BaseException) -> str:
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
            raise AssertionError(f"{call!r} raised an undocumented {describe_error(error)}")
        if expected.refusals:
            accepted = [reason for reason in expected.refusals if REFUSALS[reason](error)]
            assert accepted, (
                f"{call!r} raised {describe_error(error)}; expected a refusal for "
                f"{sorted(expected.refusals)}"
            )
            return
        if expected.may_have_expired and isinstance(error, libkv.KeyNotFoundError):
            return
        if expected.condition is None:
            raise AssertionError(f"{call!r} raised {describe_error(error)}; expected success")
        kind, key, index = expected.condition
        assert type(error) is kind, (
            f"{call!r} raised {describe_error(error)}; expected {kind.__name__}"
        )
        assert (getattr(error, "key", None), getattr(error, "index", None)) == (key, index), (
            f"{call!r} raised {describe_error(error)} with key={getattr(error, 'key', None)!r} "
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
