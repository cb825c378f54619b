"""Bounded polling: wait for a condition, never for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

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
    polling = _Polling(predicate, timeout, interval, message, error)
    for pause in polling:
        time.sleep(pause)
    return polling.result


async def async_wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.01,
    *,
    message: str | Callable[[], str] = "",
    error: Callable[[str], Exception] = AssertionError,
) -> T:
    """:func:`wait_until` for asyncio: the loop runs other tasks between evaluations."""
    polling = _Polling(predicate, timeout, interval, message, error)
    for pause in polling:
        await asyncio.sleep(pause)
    return polling.result


class _Polling(Generic[T]):
    """The polling both flavours share: iterating yields how long to pause before the
    next evaluation and ends once ``result`` holds the truthy value; raises ``error``
    at the deadline."""

    def __init__(
        self,
        predicate: Callable[[], T],
        timeout: float,
        interval: float,
        message: str | Callable[[], str],
        error: Callable[[str], Exception],
    ) -> None:
        self._predicate = predicate
        self._timeout = timeout
        self._interval = interval
        self._message = message
        self._error = error
        self.result: T

    def __iter__(self) -> Iterator[float]:
        deadline = time.monotonic() + self._timeout
        while not self._holds():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if self._holds():  # once more at the deadline
                    return
                detail = self._message() if callable(self._message) else self._message
                raise self._error(
                    f"condition still false after {self._timeout:.2f} s"
                    + (f": {detail}" if detail else "")
                )
            yield min(self._interval, remaining)

    def _holds(self) -> bool:
        self.result = self._predicate()
        return bool(self.result)


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
