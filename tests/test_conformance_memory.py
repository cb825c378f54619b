"""The conformance suite on the in-process memory driver.

Also here: what only memory:// promises (private unless named), and checks that the
suite's own history checker (libkv.testing.history) catches histories known to be wrong.
"""

import uuid

import pytest

import libkv
from libkv import Action, Event, KVPair
from libkv.testing import StoreConformance, assert_valid_history, replay


class TestMemoryConformance(StoreConformance):
    @pytest.fixture
    def url(self) -> str:
        """A named in-process database unique to the test: every open() shares it."""
        return f"memory://conformance-{uuid.uuid4().hex}"


def test_unnamed_memory_store_is_private() -> None:
    """memory:// is private to its Store object; memory://NAME is shared by name."""
    with libkv.open("memory://") as first, libkv.open("memory://") as second:
        first.put("k", b"1")
        assert not second.exists("k")
    name = f"memory://shared-{uuid.uuid4().hex}"
    with libkv.open(name) as first, libkv.open(name) as second:
        first.put("k", b"1")
        assert second.get("k").value == b"1"


# -- the suite's own history checker, exercised on histories known to be wrong ---------


def _update(key: str, version: int) -> Event:
    return Event(Action.UPDATE, key, KVPair(key, b"v", version), version)


def _delete(key: str, revision: int) -> Event:
    return Event(Action.DELETE, key, None, revision)


INIT = Event(Action.INIT, "p", None, 10, (KVPair("p/a", b"v", 5), KVPair("p/b", b"v", 9)))


def _violations(events: list[Event], *, every_change: bool = True) -> str:
    try:
        assert_valid_history(INIT, events, watched="p", recursive=True, every_change=every_change)
    except AssertionError as error:
        return str(error)
    return ""


def test_history_checker_accepts_a_valid_history() -> None:
    """A well-formed history passes, and replay rebuilds the final state."""
    events = [_update("p/a", 11), _delete("p/b", 12), _update("p/c", 12), _update("p/a", 13)]
    assert _violations(events) == ""
    assert replay(INIT, events) == {
        "p/a": KVPair("p/a", b"v", 13),
        "p/c": KVPair("p/c", b"v", 12),
    }


@pytest.mark.parametrize(
    ("events", "violation"),
    [
        pytest.param([_update("p/a", 11), _update("p/a", 11)], "repeats", id="duplicate"),
        pytest.param([_update("p/a", 12), _update("p/a", 11)], "follows", id="per-key-order"),
        pytest.param([_update("p/a", 5)], "not after revision 10", id="before-snapshot"),
        pytest.param([_delete("p/c", 11)], "does not hold", id="delete-of-absent-key"),
        pytest.param([_update("q/a", 11)], "outside", id="out-of-scope"),
        pytest.param([_update("p/a", 12), _update("p/b", 11)], "comes after", id="global-order"),
        pytest.param(
            [Event(Action.UPDATE, "p/a", KVPair("p/a", b"v", 11), 12)],
            "differs from the event revision",
            id="version-not-revision",
        ),
        pytest.param([Event(Action.DELETE, "p/a", None, 10)], "not after", id="stale-delete"),
        pytest.param([INIT], "INIT after the first event", id="second-init"),
    ],
)
def test_history_checker_reports_each_violation(events: list[Event], violation: str) -> None:
    """Each property of a watch history is actually checked."""
    assert violation in _violations(events)


def test_history_checker_reports_an_update_without_a_version_change() -> None:
    """An UPDATE repeating the known version (a spurious wake-up) is a violation, even when
    it comes from a merged-state driver and carries a later event revision."""
    spurious = Event(Action.UPDATE, "p/b", KVPair("p/b", b"v", 9), 11)
    found = _violations([spurious], every_change=False)
    assert "without a version change" in found


def test_history_checker_allows_merged_order_only_without_every_change() -> None:
    """Global revision order is required only of watch_every_change drivers."""
    events = [_update("p/a", 12), _update("p/b", 11)]
    assert _violations(events, every_change=False) == ""
