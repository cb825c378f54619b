"""One keep-alive scheduler per store: every lease of the store refreshed by one worker.

A store holding 1,000 leases runs one worker, as one holding a single lease does: a
task in the async flavour, a thread in the sync one, started by the first lease and
ended once no lease has been scheduled for ``IDLE_LINGER`` seconds (or by
``store.close()``), so a lock taken and released over and over starts it once, not
once per cycle. The worker sleeps until the earliest lease is due, then runs each due
lease's :meth:`~libkv.lease.Lease._refresh` (async: side by side, one short task each,
so a slow backend delays no lease by more than one call; sync: one after another, and
once the backend is found unreachable the round's other leases only check their
deadline, so a dead server costs one timeout per round, not one per lease).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import threading
import time
from typing import TYPE_CHECKING

from libkv import concurrency

if TYPE_CHECKING:
    from libkv._async.lease import AsyncLease

__all__ = ["AsyncKeepalive", "IDLE_LINGER"]

IDLE_LINGER = 5.0
"""Seconds the worker stays after the last lease is gone, waiting for the next one."""


class AsyncKeepalive:
    """The keep-alive worker of one store (see the module's docstring)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._due: list[tuple[float, int, AsyncLease]] = []  # a heap by due time
        self._order = itertools.count()  # ties keep the order of scheduling
        self._mutex = threading.Lock()  # sync leases are scheduled from any thread
        self._wake = concurrency.AsyncEvent()
        self._stopped = False
        self._worker: asyncio.Task[None] | None = None  # async-only
        # sync-only: self._worker: threading.Thread | None = None

    def schedule(self, lease: AsyncLease, due: float) -> None:
        """Refresh ``lease`` at ``due`` (``time.monotonic()``); starts the worker."""
        with self._mutex:
            if self._stopped:
                return
            heapq.heappush(self._due, (due, next(self._order), lease))
            if not concurrency.async_running(self._worker):
                # A new worker (the last one ended idle, or with the loop that ran it)
                # gets a new event: an asyncio.Event belongs to one loop.
                self._wake = concurrency.AsyncEvent()
                self._worker = concurrency.async_spawn(self._run, name=self._name)
        self._wake.set()

    def cancel(self, lease: AsyncLease) -> None:
        """Refresh ``lease`` no more (it is revoked, abandoned or its store closing)."""
        with self._mutex:
            self._due = [entry for entry in self._due if entry[2] is not lease]
            heapq.heapify(self._due)
        self._wake.set()

    async def close(self) -> None:
        """Stop the worker and wait for it; later leases are not refreshed."""
        with self._mutex:
            self._stopped = True
            self._due.clear()
            worker = self._worker
        self._wake.set()
        await concurrency.async_finish(worker)

    def _take_due(self) -> tuple[list[AsyncLease], float | None]:
        """The leases due now, and how long until the next one (None: none left)."""
        now = time.monotonic()
        due: list[AsyncLease] = []
        with self._mutex:
            while self._due and self._due[0][0] <= now:
                due.append(heapq.heappop(self._due)[2])
            wait = self._due[0][0] - now if self._due else None
        return due, wait

    async def _run(self) -> None:
        while await self._linger():
            due, wait = self._take_due()
            if due:
                await self._refresh(due)
                continue
            self._wake.clear()
            # Anything scheduled or cancelled between _take_due and clear() set _wake
            # before it: look again rather than sleep through it.
            if self._take_due()[0] or self._stopped or not self._due:
                self._wake.set()
                continue
            await concurrency.async_wait(self._wake, wait)

    async def _linger(self) -> bool:
        """Whether to go on: True once a lease is scheduled; False when the store
        closes, or when none has been for IDLE_LINGER seconds (the worker then ends)."""
        deadline = time.monotonic() + IDLE_LINGER
        while True:
            with self._mutex:
                if self._stopped or (not self._due and time.monotonic() >= deadline):
                    self._worker = None  # the next lease starts a new worker
                    return False
                if self._due:
                    return True
                # schedule() and close() change what is checked above before they set
                # _wake, so clearing it here misses neither (cancel() wakes us for nothing).
                self._wake.clear()
            await concurrency.async_wait(self._wake, deadline - time.monotonic())

    # async-only: begin
    async def _refresh(self, due: list[AsyncLease]) -> None:
        for lease in due:
            lease._refreshing = concurrency.async_spawn(
                functools.partial(self._refresh_alone, lease),
                name=f"libkv-keepalive-{lease.id}",
            )
        running = [lease._refreshing for lease in due if lease._refreshing is not None]
        await asyncio.wait(running)

    # async-only: end
    # sync-only: begin
    # def _refresh(self, due: list[Lease]) -> None:
    #     reachable = True
    #     for lease in due:
    #         reachable = self._refresh_one(lease, reachable)
    # sync-only: end

    # async-only: begin
    async def _refresh_alone(self, lease: AsyncLease) -> None:
        await self._refresh_one(lease, True)

    # async-only: end
    async def _refresh_one(self, lease: AsyncLease, reachable: bool) -> bool:
        """Refresh ``lease`` and schedule its next turn; whether the backend answered."""
        next_due, reachable = await lease._refresh(reachable)
        if next_due is not None:
            self.schedule(lease, next_due)
        return reachable
