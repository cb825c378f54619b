"""Testing support for libkv drivers: the conformance suite and its helpers.

A driver proves it honours the contract by subclassing `StoreConformance` in a test
module and providing a function-scoped `url` fixture (see `libkv.testing.conformance`);
a driver whose URL another process can open subclasses `CrossProcessConformance`, the
same suite plus the tests that need a second process. A driver whose test can kill,
freeze and restart its server also runs `FaultConformance` (see `libkv.testing.faults`).
"""

from libkv.testing.conformance import StoreConformance
from libkv.testing.cross_process import CrossProcessConformance
from libkv.testing.faults import FaultConformance, FaultServer
from libkv.testing.history import WatchRecorder, assert_valid_history, replay
from libkv.testing.polling import assert_holds_until, wait_until
from libkv.testing.properties import PropertyConformance
from libkv.testing.recipes import CrossProcessRecipeConformance, RecipeConformance

__all__ = [
    "CrossProcessConformance",
    "CrossProcessRecipeConformance",
    "FaultConformance",
    "FaultServer",
    "PropertyConformance",
    "RecipeConformance",
    "StoreConformance",
    "WatchRecorder",
    "assert_holds_until",
    "assert_valid_history",
    "replay",
    "wait_until",
]
