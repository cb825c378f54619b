"""Property-based bad-input tests (libkv.testing.PropertyConformance) on memory and SQLite."""

import uuid
from pathlib import Path

import pytest

from libkv.testing import PropertyConformance


class TestMemoryProperties(PropertyConformance):
    property_examples = 50

    @pytest.fixture
    def url(self) -> str:
        """A named in-process database unique to the test: every open() shares it."""
        return f"memory://properties-{uuid.uuid4().hex}"


class TestSQLiteProperties(PropertyConformance):
    property_examples = 50

    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        """A fresh database file per test; every open() is another connection to it."""
        return f"sqlite:///{tmp_path}/kv.db"
