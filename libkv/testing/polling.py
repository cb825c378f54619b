"""Bounded polling: wait for a condition, never for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["assert_holds_until", "async_wait_until", "wait_until"]

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.01,
    *,
    message: str | Callable[[], str] = "",
    error: Callable[[str], Exception] = AssertionError,
) -> T:
    """Poll `predicate` until it returns a truthy value, and return that value.

    The predicate is evaluated at least once, and once more at the deadline, so a
    condition that became true just in time is not reported as a timeout. Raises
    `error` (AssertionError by default) naming the timeout (and `message`, called if it
    is a function, so it can describe the state at the time of failure) when the
    predicate stayed falsy.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
    result = predicate()
    if result:
        return result
    raise _timed_out(timeout, message, error)


async def async_wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.01,
    *,
    message: str | Callable[[], str] = "",
    error: Callable[[str], Exception] = AssertionError,
) -> T:
    """:func:`wait_until` for asyncio: the loop runs other tasks between evaluations."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await asyncio.sleep(min(interval, remaining))
    result = predicate()
    if result:
        return result
    raise _timed_out(timeout, message, error)


def _timed_out(
    timeout: float, message: str | Callable[[], str], error: Callable[[str], Exception]
) -> Exception:
    detail = message() if callable(message) else message
    return error(f"condition still false after {timeout:.2f} s" + (f": {detail}" if detail else ""))


def assert_holds_until(
    predicate: Callable[[], object],
    deadline: float,
    interval: float = 0.02,
    *,
    message: str | Callable[[], str] = "",
) -> None:
    """Check that `predicate` stays truthy for every evaluation that ends before `deadline`.

    `deadline` is a `time.monotonic()` value. This is the bounded form of "not sooner
    than": an evaluation that started before the deadline but finished after it proves
    nothing either way, so its result is ignored.
    """
    while True:
        result = predicate()
        finished = time.monotonic()
        if finished >= deadline:
            return
        if not result:
            detail = message() if callable(message) else message
            raise AssertionError(
                f"condition became false {deadline - finished:.3f} s before it was allowed to"
                + (f": {detail}" if detail else "")
            )
        time.sleep(min(interval, deadline - finished))
