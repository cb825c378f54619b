"""The conformance suite on the embedded SQLite driver."""

from pathlib import Path

import pytest

from libkv.testing import CrossProcessConformance


class TestSQLiteConformance(CrossProcessConformance):
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        """A fresh database file per test; every open() is another connection to it."""
        return f"sqlite:///{tmp_path}/kv.db"
