"""What every recipe mixin shares: the conformance suite's `store` and `other_store`
fixtures and TTL helpers, and campaigning in a thread.

`RecipeConformanceBase` is the root of every recipe mixin; a driver never subclasses it
directly (it subclasses `RecipeConformance` or `CrossProcessRecipeConformance`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

import libkv
from libkv.recipes import Election
from libkv.testing.conformance import StoreConformance
from libkv.testing.conformance.base import close_quietly

__all__ = ["RecipeConformanceBase"]


class RecipeConformanceBase:
    """Fixtures and helpers every recipe mixin uses; a driver provides the `url` fixture."""

    ttl_for = staticmethod(StoreConformance.ttl_for)
    expiry_bound = staticmethod(StoreConformance.expiry_bound)

    # The recipes' suite runs in the sync flavour; libkv.aio.recipes are held to the
    # same behaviours by tests/test_aio_recipes.py.
    @pytest.fixture
    def store(self, url: str) -> Iterator[libkv.Store]:
        """The client most tests act through, closed after the test."""
        client = libkv.open(url)
        yield client
        close_quietly(client)

    @pytest.fixture
    def other_store(self, url: str) -> Iterator[libkv.Store]:
        """A second client of the same data, closed after the test."""
        client = libkv.open(url)
        yield client
        close_quietly(client)

    @staticmethod
    def campaign_in_thread(election: Election) -> tuple[threading.Thread, list[float]]:
        """Campaign in a thread; the list gets the time of the election."""
        elected: list[float] = []

        def run() -> None:
            if election.campaign(timeout=30):
                elected.append(time.monotonic())

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread, elected
