"""What every recipe mixin shares: the conformance suite's fixtures (`flavour`,
`store`, `other_store`, `open_url`) and TTL helpers, the `recipes` of the test's
flavour, and campaigning in a thread.

`RecipeConformanceBase` is the root of every recipe mixin; a driver never subclasses it
directly (it subclasses `RecipeConformance` or `CrossProcessRecipeConformance`).
"""

from __future__ import annotations

import threading
import time

import pytest

from libkv.recipes import Election
from libkv.testing import flavours
from libkv.testing.conformance.base import ConformanceBase

__all__ = ["RecipeConformanceBase"]


class RecipeConformanceBase(ConformanceBase):
    """Fixtures and helpers every recipe mixin uses; a driver provides the `url` fixture.

    Every test runs in both flavours, as the store conformance does (the `flavour`
    fixture of :class:`~libkv.testing.conformance.base.ConformanceBase`): "sync" on
    :mod:`libkv.recipes` over :func:`libkv.open`, "async" on :mod:`libkv.aio.recipes`
    over :func:`libkv.aio.open` behind the blocking facade, where the test also fails
    if a callback held the loop over 50 ms or a libkv task is left after close. Tests
    build recipes through the `recipes` fixture (``recipes.Cache(store, prefix)``...),
    never by importing a flavour's classes.
    """

    @pytest.fixture
    def recipes(self, flavour: str) -> flavours.Recipes:
        """The recipe classes of the test's flavour, called as libkv.recipes' are."""
        return flavours.SYNC_RECIPES if flavour == "sync" else flavours.BLOCKING_RECIPES

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
