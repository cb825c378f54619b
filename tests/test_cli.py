"""The ``libkv`` command line: in-process through ``main()``, and as real processes.

In-process tests run on a named memory database (kept alive by a store the test holds
open); the watch, lock and demo tests also run ``python -m libkv`` as subprocesses on a
temporary SQLite file, which every process shares.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_url import SECRET_URLS, assert_no_secret

import libkv
from libkv import cli, defaults
from libkv.driver import Backend
from libkv.testing.polling import wait_until

SECRET = "s3cr3t-Pa55"


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[libkv.Store]:
    """A named memory database that ``LIBKV_URL`` points at, alive for the whole test."""
    url = f"memory://cli-{uuid.uuid4().hex}"
    monkeypatch.setenv("LIBKV_URL", url)
    with libkv.open(url) as opened:
        yield opened


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'cli.db'}"


@pytest.fixture(scope="module")
def unreachable_scheme() -> str:
    """A scheme whose driver always fails to connect, quoting the URL *with* its password."""
    scheme = f"unreachable{uuid.uuid4().hex[:8]}"

    def initializer(url: libkv.StoreURL) -> Backend:
        raise libkv.NotReachableError(f"cannot connect to {url.render(hide_password=False)}")

    libkv.register(scheme, initializer)
    return scheme


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def spawn(url: str, *argv: str) -> subprocess.Popen[str]:
    # Started in the background by a non-interactive shell (two test runs at once),
    # pytest ignores SIGINT, and an ignored signal stays ignored across exec: libkv would
    # never see the Ctrl-C these tests send. A handled signal is reset to the default.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "libkv", *argv],
            env=dict(os.environ, LIBKV_URL=url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def assert_one_line_error(err: str, fragment: str) -> None:
    assert err.startswith("libkv: error: "), err
    assert err.count("\n") == 1, err
    assert fragment in err
    assert "Traceback" not in err


# -- in-process ------------------------------------------------------------------------


def test_put_get_and_versions(store: libkv.Store, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "put", "app/name", "hello")
    assert status == 0
    version = int(out)
    assert store.get("app/name") == libkv.KVPair("app/name", b"hello", version)

    status, out, err = run(capsys, "get", "app/name")
    assert (status, out, err) == (0, "hello", "")  # no newline: stdout is not a terminal

    status, out, _ = run(capsys, "put", "app/name", "world", "--version", str(version))
    assert status == 0 and int(out) > version
    status, out, err = run(capsys, "put", "app/name", "stale", "--version", str(version))
    assert (status, out) == (1, "")
    assert_one_line_error(err, "key modified: 'app/name'")
    status, _, err = run(capsys, "put", "--create", "app/name", "again")
    assert status == 1
    assert_one_line_error(err, "key exists: 'app/name'")
    assert store.get("app/name").value == b"world"


def test_get_writes_raw_bytes_and_put_reads_stdin(
    store: libkv.Store, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    value = b"\x00binary\xff\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(value)))
    assert cli.main(["put", "blob", "-"]) == 0
    capsysbinary.readouterr()
    assert store.get("blob").value == value
    assert cli.main(["get", "blob"]) == 0
    assert capsysbinary.readouterr().out == value


def test_put_with_ttl_expires(store: libkv.Store, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, _ = run(capsys, "put", "--ttl", "0.2", "session", "x")
    assert status == 0 and store.exists("session")
    wait_until(lambda: not store.exists("session"), 5)


def test_rm(store: libkv.Store, capsys: pytest.CaptureFixture[str]) -> None:
    store.put_many({"a": "1", "a/b": "2", "a/b/c": "3", "ab": "4"})
    version = store.get("ab").version
    status, _, err = run(capsys, "rm", "ab", "--version", str(version + 1))
    assert status == 1
    assert_one_line_error(err, "key modified")
    assert run(capsys, "rm", "ab", "--version", str(version)) == (0, "", "")
    status, out, _ = run(capsys, "rm", "--recursive", "a")
    assert (status, out) == (0, "3\n")
    assert store.list() == []
    status, _, err = run(capsys, "rm", "a")
    assert status == 1
    assert_one_line_error(err, "key not found: 'a'")


def test_ls(store: libkv.Store, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = store.put_many({"web/1": "one", "web/2": "two!", "db/1": "x", "web": "root"})
    assert run(capsys, "ls") == (0, "db/1\nweb\nweb/1\nweb/2\n", "")
    assert run(capsys, "ls", "web") == (0, "web\nweb/1\nweb/2\n", "")
    assert run(capsys, "ls", "--glob", "*/1") == (0, "db/1\nweb/1\n", "")
    assert run(capsys, "ls", "nothing") == (0, "", "")
    status, out, _ = run(capsys, "ls", "--long", "--glob", "web/*")
    assert status == 0
    rows = [line.split() for line in out.splitlines()]
    assert rows == [[str(pair.version), str(len(pair.value)), pair.key] for pair in pairs[:2]]
    status, _, err = run(capsys, "ls", "web", "--glob", "*")
    assert status == 2
    assert_one_line_error(err, "not both")


def test_watch_since_json_and_text(store: libkv.Store, capsys: pytest.CaptureFixture[str]) -> None:
    first = store.put("cfg/a", "1")
    store.put("cfg/bin", b"\xff\x00")
    store.delete("cfg/a")
    since = str(first.version - 1)
    status, out, err = run(capsys, "watch", "-r", "cfg", "--since", since, "--json", "--count", "3")
    assert (status, err) == (0, "")
    events = [json.loads(line) for line in out.splitlines()]
    assert [event["action"] for event in events] == ["update", "update", "delete"]
    assert events[0] == {
        "action": "update",
        "key": "cfg/a",
        "value": "1",
        "version": first.version,
        "revision": first.version,
    }
    assert events[1]["encoding"] == "base64" and events[1]["value"] == "/wA="
    assert events[2]["value"] is None and events[2]["key"] == "cfg/a"

    status, out, _ = run(capsys, "watch", "cfg/bin", "--count", "1", "--json")
    init = json.loads(out)
    assert init["action"] == "init" and init["snapshot"][0]["key"] == "cfg/bin"

    status, out, _ = run(capsys, "watch", "-r", "cfg", "--since", since, "--count", "3")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("UPDATE") and 'cfg/a = "1"' in lines[0]
    assert lines[2].startswith("DELETE") and "cfg/a" in lines[2]


def test_watch_sees_concurrent_writes(
    store: libkv.Store, capsys: pytest.CaptureFixture[str]
) -> None:
    def write() -> None:
        # Both writes land after the INIT or are in its snapshot; the count covers both.
        store.put("live", "1")
        store.put("live", "2")

    status_box: list[int] = []
    watcher = threading.Thread(
        target=lambda: status_box.append(
            cli.main(["watch", "live", "--since", "0", "--count", "2"])
        )
    )
    writer = threading.Thread(target=write)
    watcher.start()
    writer.start()
    writer.join(5)
    watcher.join(5)
    assert status_box == [0]
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == ["UPDATE", "UPDATE"]


@pytest.mark.parametrize(
    ("argv", "status", "fragment"),
    [
        (["get", "a//b"], 2, "empty, '.' or '..' segment"),
        (["get", "missing"], 1, "key not found: 'missing'"),
        (["put", "k", "v", "--ttl", "-1"], 2, "argument --ttl"),
        (["put", "k", "v", "--create", "--version", "3"], 2, "not allowed with"),
        (["frobnicate"], 2, "invalid choice"),
        (["get"], 2, "required: key"),
        (["watch", "k", "--count", "0"], 2, "argument --count"),
        (["--url", "nosuch://h/", "get", "k"], 2, "unknown store scheme 'nosuch'"),
        (["--url", "not a url", "get", "k"], 2, "not a store URL"),
        (["--url", "memory://x?bogus=1", "get", "k"], 2, "unknown option 'bogus'"),
        (["lock", "k"], 2, "COMMAND"),
        (["ls", "--glob", "[]"], 2, "empty character class in glob pattern: '[]'"),
        (["ls", "--glob", "a/[z-a]"], 2, "malformed glob pattern 'a/[z-a]'"),
        (["put", "k", "v", "--version", str(2**70)], 2, "version must be an int in 0..2**63-1"),
        (["watch", "k", "--since", str(2**64)], 2, "since must be an int in 0..2**63-1"),
        (["--url", "memory://x?prefix=a//b", "get", "k"], 2, "invalid namespace"),
    ],
)
def test_errors_are_one_line_with_status(
    store: libkv.Store,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    status: int,
    fragment: str,
) -> None:
    got, out, err = run(capsys, *argv)
    assert got == status
    assert out == ""
    assert_one_line_error(err, fragment)


def test_url_after_the_command_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"memory://cli-{uuid.uuid4().hex}"
    with libkv.open(url):
        assert run(capsys, "put", "k", "v", "--url", url)[0] == 0
        assert run(capsys, "--url", url, "get", "k") == (0, "v", "")
    status, out, _ = run(capsys, "--help")
    assert status == 0 and "exit status" in out


def test_unreachable_is_status_3_and_hides_the_password(
    unreachable_scheme: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{unreachable_scheme}://admin:{SECRET}@db.example:9/app"
    status, out, err = run(capsys, "--url", url, "get", "k")
    assert (status, out) == (3, "")
    assert_one_line_error(err, "cannot connect to")
    assert SECRET not in err and "***" in err
    monkeypatch.setenv("LIBKV_URL", url)
    status, _, err = run(capsys, "ls")
    assert status == 3 and SECRET not in err
    # A driver's own URL error renders the URL through StoreURL: hidden too.
    status, _, err = run(capsys, "--url", f"memory://admin:{SECRET}@h", "get", "k")
    assert status == 2 and SECRET not in err and "***" in err


@pytest.mark.parametrize("url", SECRET_URLS)
@pytest.mark.parametrize("how", ["--url", "LIBKV_URL"])
def test_no_shape_of_url_makes_the_cli_print_a_password(
    url: str, how: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if how == "--url":
        status, out, err = run(capsys, "--url", url, "put", "k", "v")
    else:
        monkeypatch.setenv("LIBKV_URL", url)
        status, out, err = run(capsys, "put", "k", "v")
    assert status in (0, 2, 3), err  # stored, refused as invalid, or unreachable
    assert_no_secret(out)
    assert_no_secret(err)


def test_log_lines_on_the_cli_hide_the_password(
    unreachable_scheme: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"memory://admin:{SECRET}@h"

    def warn(arguments: object) -> int:
        logging.getLogger("libkv.test").warning("opening %s", url)
        return 0

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "_schemes", warn)
        status, _, err = run(capsys, "--url", url, "schemes")
    assert status == 0
    assert err == "libkv: warning: opening memory://admin:***@h\n"


def test_schemes(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "schemes")
    assert status == 0
    assert {"memory", "sqlite"} <= set(out.split())
    assert out.split() == sorted(out.split())


def test_default_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data home"))
    url = defaults.default_url()
    expected = tmp_path / "data home" / "libkv" / "libkv.db"
    assert url == "sqlite:///" + str(expected).lstrip("/").replace(" ", "%20")
    assert libkv.StoreURL.parse(url).path == str(expected)
    with libkv.open(url):  # opening the default store creates its directory
        assert expected.is_file()
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert defaults.default_url().endswith("/home/.local/share/libkv/libkv.db")
    monkeypatch.delenv("LIBKV_URL", raising=False)
    assert defaults.resolve_url(None) == defaults.default_url()
    monkeypatch.setenv("LIBKV_URL", "memory://x")
    assert defaults.resolve_url(None) == "memory://x"
    assert defaults.resolve_url("sqlite:///a.db") == "sqlite:///a.db"


def test_demo_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "--url", "memory://", "demo")
    assert (status, err) == (0, "")
    assert "KeyModifiedError at index 1" in out


# -- real processes on SQLite ----------------------------------------------------------


def test_lock_runs_the_command_and_propagates_its_status(sqlite_url: str) -> None:
    child = spawn(
        sqlite_url, "lock", "jobs/x", "--", "sh", "-c", 'echo "$LIBKV_LOCK_TOKEN"; exit 7'
    )
    out, err = child.communicate(timeout=15)
    assert child.returncode == 7, err
    assert int(out) > 0 and err == ""
    with libkv.open(sqlite_url) as store:
        assert not store.exists("jobs/x")  # released


def test_lock_timeout_and_missing_command(sqlite_url: str) -> None:
    with libkv.open(sqlite_url) as store, store.lock("busy"):
        child = spawn(sqlite_url, "lock", "busy", "--timeout", "0.3", "--", "true")
        _, err = child.communicate(timeout=15)
        assert child.returncode == 1
        assert_one_line_error(err, "not acquired within 0.3 s")
    child = spawn(sqlite_url, "lock", "busy", "--", "no-such-command-libkv")
    _, err = child.communicate(timeout=15)
    assert child.returncode == 127
    assert_one_line_error(err, "command not found")


def test_lock_interrupted_passes_the_signal_on_and_releases(
    sqlite_url: str, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    # The marker is written once the trap is in place: a SIGINT before that would kill
    # the shell by default (status 130), which is not what this test is about.
    script = f'trap "exit 5" INT; : > {ready}; while :; do sleep 0.05; done'
    with libkv.open(sqlite_url) as store:
        child = spawn(sqlite_url, "lock", "held", "--", "sh", "-c", script)
        wait_until(ready.exists, 10)
        assert store.exists("held")
        child.send_signal(signal.SIGINT)  # to libkv alone, as `kill -INT` would
        _, err = child.communicate(timeout=15)
        assert child.returncode == 5, err
        assert "Traceback" not in err
        assert not store.exists("held")


def test_a_sigint_while_the_command_starts_is_passed_on_not_raised(
    store: libkv.Store,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A SIGINT landing inside Popen (the child exists, Popen has not returned) must not
    leave COMMAND running, orphaned, after libkv released the lock and exited."""
    ready = tmp_path / "ready"
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen_then_interrupted(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        child = real_popen(*args, **kwargs)  # type: ignore[call-overload]
        started.append(child)
        wait_until(ready.exists, 10)
        os.kill(os.getpid(), signal.SIGINT)  # handled at the next bytecode, still in here
        return child  # type: ignore[no-any-return]

    monkeypatch.setattr(subprocess, "Popen", popen_then_interrupted)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        script = f'trap "exit 5" INT; : > {ready}; while :; do sleep 0.05; done'
        status, _, err = run(capsys, "lock", "starting", "--", "sh", "-c", script)
    finally:
        signal.signal(signal.SIGINT, previous)
        for child in started:
            if child.poll() is None:  # only when the test fails: no orphan left behind
                child.kill()
                child.wait()
    assert (status, err) == (5, "")  # the command's own status: it got the SIGINT
    assert started[0].returncode == 5
    assert not store.exists("starting")


def test_lock_lost_terminates_the_command(sqlite_url: str) -> None:
    with libkv.open(sqlite_url) as store:
        child = spawn(sqlite_url, "lock", "fragile", "--ttl", "0.6", "--", "sleep", "30")
        wait_until(lambda: store.exists("fragile"), 10)
        assert b"libkv lock pid=" in store.get("fragile").value
        store.delete("fragile")  # someone else breaks the lock
        _, err = child.communicate(timeout=15)
        assert child.returncode == 1
        assert_one_line_error(err, "was lost while the command ran; the command was terminated")


def test_lock_excludes_concurrent_commands(sqlite_url: str, tmp_path: Path) -> None:
    log = tmp_path / "log"
    script = (
        f'echo "begin $LIBKV_LOCK_TOKEN" >> {log}; sleep 0.3; echo "end $LIBKV_LOCK_TOKEN" >> {log}'
    )
    children = [spawn(sqlite_url, "lock", "shared", "--", "sh", "-c", script) for _ in range(3)]
    for child in children:
        _, err = child.communicate(timeout=15)
        assert child.returncode == 0, err
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [action for action, _ in lines] == ["begin", "end"] * 3  # never overlapping
    tokens = [int(token) for _, token in lines]
    assert tokens[0::2] == tokens[1::2]  # each end matches its begin
    assert tokens[0::2] == sorted(set(tokens[0::2]))  # fencing tokens strictly increase


def test_watch_process_prints_other_writers_and_stops_on_interrupt(sqlite_url: str) -> None:
    with libkv.open(sqlite_url) as store:
        counted = spawn(sqlite_url, "watch", "-r", "svc", "--json", "--count", "3")
        endless = spawn(sqlite_url, "watch", "svc/a")
        assert counted.stdout is not None and endless.stdout is not None
        init = json.loads(counted.stdout.readline())
        assert init["action"] == "init" and init["snapshot"] == []
        assert endless.stdout.readline().startswith("INIT")
        store.put("svc/a", "10.0.0.1")
        store.delete("svc/a")
        out, err = counted.communicate(timeout=15)
        assert counted.returncode == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        assert [(event["action"], event["key"]) for event in events] == [
            ("update", "svc/a"),
            ("delete", "svc/a"),
        ]
        assert events[0]["value"] == "10.0.0.1" and events[1]["revision"] > events[0]["revision"]
        assert endless.stdout.readline().startswith("UPDATE  svc/a")
        assert endless.stdout.readline().startswith("DELETE  svc/a")
        endless.send_signal(signal.SIGINT)
        _, err = endless.communicate(timeout=15)
        assert endless.returncode == 0
        assert err == ""


def test_demo_process(sqlite_url: str) -> None:
    started = time.monotonic()
    child = spawn(sqlite_url, "demo")
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert err == ""
    for heading in ("put and get", "compare-and-set", "transactions", "watch", "TTL", "lock"):
        assert heading in out
    assert "KeyModifiedError" in out and "A sees DELETE session" in out
    assert time.monotonic() - started < 15
    with libkv.open(sqlite_url) as store:
        assert store.list() == []  # the demo namespace is gone
