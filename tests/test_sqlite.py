"""SQLite specifics: several processes on one file, expiry with the writer gone, trimming."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import libkv
from libkv import Action, HistoryLostError
from libkv.testing import wait_until


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_a_watch_sees_another_process_writes_in_order(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/kv.db"
    with libkv.open(url) as store, store.watch("jobs", recursive=True) as watch:
        assert watch.next_event(5).action is Action.INIT  # type: ignore[union-attr]
        result = run_python(f"""
            import libkv
            with libkv.open({url!r}) as store:
                for index in range(20):
                    store.put(f"jobs/{{index % 3}}", str(index))
                store.delete("jobs/0")
        """)
        assert result.returncode == 0, result.stderr
        events = [watch.next_event(5) for _ in range(21)]
    assert [event.pair.value for event in events[:20] if event and event.pair] == [
        str(index).encode() for index in range(20)
    ]
    assert events[20] is not None and (events[20].action, events[20].key) == (
        Action.DELETE,
        "jobs/0",
    )
    revisions = [event.revision for event in events if event]
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)


def test_ttl_expires_with_a_delete_event_after_the_writer_exited(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/kv.db"
    with libkv.open(url) as store, store.watch("session") as watch:
        watch.next_event(5)
        result = run_python(f"""
            import libkv
            with libkv.open({url!r}) as store:
                store.put("session", "alive", ttl=0.5)
        """)
        assert result.returncode == 0, result.stderr
        update = watch.next_event(5)
        assert update is not None and update.action is Action.UPDATE
        delete = watch.next_event(0.5 + store.capabilities.ttl_slack + 1)
        assert delete is not None and delete.action is Action.DELETE
        assert not store.exists("session")


def test_lock_excludes_another_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/kv.db"
    with libkv.open(url) as store, store.lock("resource", ttl=5) as lock:
        result = run_python(f"""
            import libkv
            with libkv.open({url!r}) as store:
                print(store.lock("resource", ttl=5).acquire(blocking=False))
        """)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "False"
        assert lock.locked()


def test_trimmed_log_raises_history_lost(tmp_path: Path) -> None:
    with libkv.open(f"sqlite:///{tmp_path}/kv.db?history=4") as store:
        first = store.put("a", "0")
        for index in range(20):
            store.put("a", str(index))
        with pytest.raises(HistoryLostError), store.watch("a", since=first.version) as watch:
            watch.next_event(2)
        latest = store.get("a").version
        with store.watch("a", since=latest - 1) as watch:
            event = watch.next_event(2)
            assert event is not None and event.pair == store.get("a")


def test_data_persists_across_reopen_and_revisions_continue(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/kv.db"
    with libkv.open(url) as store:
        before = store.put("k", "v")
    with libkv.open(url) as store:
        assert store.get("k") == before
        assert store.put("k", "w").version > before.version


def test_unwritable_location_is_a_typed_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(libkv.NotReachableError):
        libkv.open(f"sqlite:///{blocker}/sub/kv.db")


def test_many_stores_converge(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/kv.db"
    with libkv.open(url) as first, libkv.open(url) as second:
        first.put("x", "1")
        wait_until(lambda: second.exists("x"), timeout=2)
