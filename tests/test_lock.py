"""The lock (requirements/lock.txt) and the declared ranges cannot disagree."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _load_lock_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock_script", ROOT / "scripts" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock_script = _load_lock_script()


def _locked_versions() -> dict[str, Version]:
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock_script.LOCK.read_text(), re.M)
    return {lock_script.normalize(name): Version(version) for name, version in pins}


def _declared() -> list[tuple[str, str]]:
    return [
        (str(setup_cfg.relative_to(ROOT)), requirement)
        for setup_cfg in lock_script.distributions()
        for requirement in lock_script.declared_requirements(setup_cfg)
    ]


@pytest.mark.parametrize(("distribution", "requirement"), _declared())
def test_every_declared_requirement_is_locked_inside_its_range(
    distribution: str, requirement: str
) -> None:
    parsed = Requirement(requirement)
    name = lock_script.normalize(parsed.name)
    if name in lock_script.local_distributions():
        return  # built from this checkout, installed editable
    locked = _locked_versions()
    assert name in locked, f"{distribution}: {requirement} is not in {lock_script.LOCK.name}"
    assert parsed.specifier.contains(locked[name], prereleases=True), (
        f"{distribution} declares {requirement}, the lock has {name}=={locked[name]}"
    )


def test_the_lock_installs_the_core_and_every_plugin() -> None:
    editable = set(re.findall(r"^-e (\S+)$", lock_script.LOCK.read_text(), re.M))
    expected = {"."} | {
        str(setup_cfg.parent.relative_to(ROOT)) for setup_cfg in lock_script.distributions()[1:]
    }
    assert editable == expected


def test_the_lowest_pins_are_the_declared_lower_bounds() -> None:
    pins = dict(pin.split("==") for pin in lock_script.lowest_pins())
    assert {"redis", "kazoo", "grpcio", "protobuf", "urllib3", "stevedore"} <= set(pins)
    for _, requirement in _declared():
        parsed = Requirement(requirement)
        name = lock_script.normalize(parsed.name)
        if name in pins:
            assert parsed.specifier.contains(pins[name], prereleases=True), requirement
