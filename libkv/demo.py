"""``libkv demo``: a short guided tour of the libkv API, printed as a transcript.

Usage::

    libkv demo                            # on the default store ($LIBKV_URL or SQLite file)
    libkv --url memory://tour demo
    python -c 'import sys, libkv.demo; libkv.demo.run(None, sys.stdout)'

It works in a fresh namespace ``demo-<random>`` (under the URL's own namespace, if it
has one) that is deleted at the end, so existing keys are never touched. Two clients
(two ``libkv.open`` of the same URL) show put/get, a compare-and-set conflict, a
transaction, a watch receiving the other client's writes, a TTL expiring and a lock
handed from one client to the other. It takes a few seconds; every wait is bounded
and a step that does not happen in time raises TimeoutError.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections.abc import Callable
from typing import TextIO

import libkv
from libkv import ops
from libkv.defaults import resolve_url

__all__ = ["run"]

_WAIT = 10.0  # seconds: the bound on every wait for another client's action


def run(url: str | None, out: TextIO) -> None:
    """Run the tour on ``url`` (None: as the CLI, ``$LIBKV_URL`` or the default file)."""
    started = time.monotonic()
    target = libkv.StoreURL.parse(resolve_url(url))
    name = f"demo-{secrets.token_hex(4)}"

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    if target.scheme == "memory" and not target.host:
        # memory:// is private to one Store; the tour needs two clients on one database.
        target = dataclasses.replace(target, hosts=((name, None),))
    with libkv.open(target) as admin:
        namespace = f"{admin.namespace}/{name}" if admin.namespace else name
        say(f"libkv demo on {target}, in the temporary namespace {namespace!r}")
        try:
            with (
                libkv.open(target, prefix=namespace) as a,
                libkv.open(target, prefix=namespace) as b,
            ):
                _put_and_get(a, b, say)
                _compare_and_set(a, b, say)
                _transaction(a, say)
                _watch(a, b, say)
                _ttl(a, b, say)
                _lock(a, b, say)
        finally:
            removed = admin.delete_tree(name)
            say()
            say(f"== cleanup: deleted the namespace {namespace!r} ({removed} keys)")
    say(f"done in {time.monotonic() - started:.1f} s")


Say = Callable[..., None]


def _put_and_get(a: libkv.Store, b: libkv.Store, say: Say) -> None:
    say()
    say("== 1. put and get (client A writes, client B reads)")
    pair = a.put("greeting", "hello, world")
    say(f"A: put('greeting', 'hello, world') -> version {pair.version}")
    seen = b.get("greeting")
    say(f"B: get('greeting') -> {seen.value!r} at version {seen.version}")
    try:
        b.get("missing")
    except libkv.KeyNotFoundError as error:
        say(f"B: get('missing') -> KeyNotFoundError: {error}")


def _compare_and_set(a: libkv.Store, b: libkv.Store, say: Say) -> None:
    say()
    say("== 2. compare-and-set: update only if nobody wrote in between")
    first = a.put("counter", "1")
    say(f"A: put('counter', '1') -> version {first.version}")
    second = b.update("counter", "2", version=first.version)
    say(f"B: update('counter', '2', version={first.version}) -> version {second.version}")
    try:
        a.update("counter", "2", version=first.version)
    except libkv.KeyModifiedError as error:
        say(f"A: update('counter', '2', version={first.version}) -> KeyModifiedError: {error}")
        current = a.get("counter")
        say(f"A: re-reads: {current.value!r} at version {current.version}; A retries from there")


def _transaction(a: libkv.Store, say: Say) -> None:
    say()
    say("== 3. transactions: all operations or none")
    counter = a.get("counter")
    results = a.transaction(
        [ops.check("counter", counter.version), ops.put("audit/last", "counter is 2")]
    )
    written = results[1]
    assert written is not None
    say(
        f"A: transaction([check('counter', {counter.version}), put('audit/last', ...)])"
        f" -> committed, audit/last at version {written.version}"
    )
    try:
        a.transaction([ops.put("audit/last", "overwritten?"), ops.check("counter", 1)])
    except libkv.KeyModifiedError as error:
        say(
            "A: transaction([put('audit/last', ...), check('counter', 1)])"
            f" -> KeyModifiedError at index {error.index}: {error}"
        )
    kept = a.get("audit/last")
    say(f"A: get('audit/last') -> {kept.value!r}: the failed transaction wrote nothing")


def _watch(a: libkv.Store, b: libkv.Store, say: Say) -> None:
    say()
    say("== 4. watch: A watches 'config/' while B writes from another thread")
    b.put("config/size", "large")
    with a.watch("config", recursive=True) as watch:
        _show(_next(watch, "INIT"), say)

        def write() -> None:
            b.put("config/color", "blue")
            b.put("config/color", "green")
            b.delete("config/color")

        say("B: put color=blue, put color=green, delete color")
        writer = threading.Thread(target=write, name="demo-writer")
        writer.start()
        try:
            for _ in range(3):
                _show(_next(watch, "B's writes"), say)
        finally:
            writer.join(_WAIT)


def _ttl(a: libkv.Store, b: libkv.Store, say: Say) -> None:
    say()
    say("== 5. TTL: a key that deletes itself")
    ttl = max(1.0, b.capabilities.ttl_min)
    with a.watch("session") as watch:
        _show(_next(watch, "INIT"), say)
        pair = b.put("session", "token-123", ttl=ttl)
        say(f"B: put('session', 'token-123', ttl={ttl:g}) -> version {pair.version}")
        written = time.monotonic()
        _show(_next(watch, "the UPDATE"), say)
        bound = ttl + b.capabilities.ttl_slack + _WAIT
        event = _next(watch, "the expiry", timeout=bound)
        _show(event, say)
        if event.action is not libkv.Action.DELETE:
            raise RuntimeError(f"expected the expiry's DELETE, got {event}")
        say(f"   (expired after {time.monotonic() - written:.1f} s)")
    try:
        a.get("session")
    except libkv.KeyNotFoundError as error:
        say(f"A: get('session') -> KeyNotFoundError: {error}")


def _lock(a: libkv.Store, b: libkv.Store, say: Say) -> None:
    say()
    say("== 6. a lock handed from client A to client B")
    lock_a = a.lock("jobs/nightly", ttl=10, value="held by A")
    lock_b = b.lock("jobs/nightly", ttl=10, value="held by B")
    lock_a.acquire()
    say(f"A: acquired 'jobs/nightly', fencing token {lock_a.token}")
    say(f"B: acquire(blocking=False) -> {lock_b.acquire(blocking=False)}")
    acquired_at: list[float] = []
    waiting = threading.Event()

    def wait_for_lock() -> None:
        waiting.set()
        if lock_b.acquire(timeout=_WAIT):
            acquired_at.append(time.monotonic())

    waiter = threading.Thread(target=wait_for_lock, name="demo-lock-waiter")
    waiter.start()
    waiting.wait(_WAIT)
    time.sleep(0.3)  # a pause for the transcript: B is now blocked in acquire()
    say("B: acquire() is waiting in a thread...")
    token_a = lock_a.token
    released_at = time.monotonic()
    lock_a.release()
    say("A: release()")
    waiter.join(_WAIT)
    if not acquired_at or lock_b.token is None or token_a is None:
        raise TimeoutError(f"client B did not get the lock within {_WAIT:g} s")
    say(
        f"B: acquired it {acquired_at[0] - released_at:.2f} s after the release, "
        f"fencing token {lock_b.token} > {token_a}"
    )
    say(f"A: get('jobs/nightly') -> {a.get('jobs/nightly').value!r}")
    lock_b.release()
    say(f"B: release(); the lock key exists: {a.exists('jobs/nightly')}")


def _next(watch: libkv.Watch, what: str, timeout: float = _WAIT) -> libkv.Event:
    event = watch.next_event(timeout)
    if event is None:
        raise TimeoutError(f"the watch saw no event ({what}) within {timeout:g} s")
    return event


def _show(event: libkv.Event, say: Say) -> None:
    action = event.action.name
    if event.action is libkv.Action.INIT:
        if event.snapshot:
            items = ", ".join(f"{pair.key}={pair.value!r}" for pair in event.snapshot)
        else:
            items = "nothing yet"
        say(f"A sees {action:<6} {event.key!r} at revision {event.revision}: {items}")
    elif event.pair is not None:
        say(f"A sees {action:<6} {event.key}={event.pair.value!r} (version {event.pair.version})")
    else:
        say(f"A sees {action:<6} {event.key} (revision {event.revision})")
