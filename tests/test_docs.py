"""The capability table (docs/backends/index.md) says what the drivers' code declares."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest

from libkv import Capabilities

CAPABILITIES_PAGE = Path(__file__).resolve().parent.parent / "docs" / "backends" / "index.md"

DRIVERS = {
    "memory": "libkv.drivers.memory",
    "sqlite": "libkv.drivers.sqlite",
    "redis": "libkv_redis.driver",
    "etcd": "libkv_etcd.driver",
    "consul": "libkv_consul.driver",
    "zookeeper": "libkv_zookeeper.driver",
}


def documented() -> dict[str, list[str]]:
    """The capability table's rows: driver name -> cells, in the Capabilities field order."""
    rows: dict[str, list[str]] = {}
    lines = CAPABILITIES_PAGE.read_text().splitlines()
    start = lines.index("## Capabilities")
    for line in lines[start:]:
        if line.startswith("| `"):
            cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
        elif rows and not line.startswith("|"):
            break
    return rows


def rendered(capabilities: Capabilities) -> list[str]:
    cells = []
    for field in dataclasses.fields(capabilities):
        value = getattr(capabilities, field.name)
        cells.append(
            str(value).lower()
            if isinstance(value, bool)
            else f"{value:,}"
            if isinstance(value, int)
            else f"{value:g}"
        )
    return cells


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_capability_table_matches_code(driver: str) -> None:
    capabilities = importlib.import_module(DRIVERS[driver]).CAPABILITIES
    assert documented().get(driver) == rendered(capabilities)


def test_every_documented_driver_is_checked() -> None:
    assert set(documented()) == set(DRIVERS)
