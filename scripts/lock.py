"""Resolve the locked set of packages that scripts/test installs.

    python scripts/lock.py update OUT   keep the versions in requirements/lock.txt; resolve
                                        only what a changed requirement needs
    python scripts/lock.py latest OUT   the newest versions the registries serve today
    python scripts/lock.py lowest OUT   the library's runtime dependencies at the lowest
                                        versions their declared ranges allow; everything
                                        else as close to requirements/lock.txt as they let

The input is requirements/ci.in (the core with its extras, every plugin, the installers);
`requirements/lock.txt` is the `latest` output, refreshed by `scripts/test --latest`.
Resolution is uv's (`uv pip compile`), run from the venv that scripts/test bootstrapped
with the uv version pinned in the lock. Standard library only: it runs before the
project's packages are installed, and tests/test_lock.py imports its parsing.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INPUT = ROOT / "requirements" / "ci.in"
LOCK = ROOT / "requirements" / "lock.txt"
PYTHON_VERSION = "3.11"
REFRESH_COMMAND = "scripts/test --latest"

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_LOWER_BOUND = re.compile(r"(?:>=|==|~=)\s*([0-9][0-9A-Za-z.+!-]*)")


def normalize(name: str) -> str:
    """The PEP 503 form of a distribution name (`Py_Consul` -> `py-consul`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions() -> list[Path]:
    """The setup.cfg of the core and of every plugin."""
    return [ROOT / "setup.cfg", *sorted(ROOT.glob("plugins/*/setup.cfg"))]


def declared_requirements(setup_cfg: Path, *, extras: bool = True) -> list[str]:
    """The requirement strings of one distribution: install_requires, then its extras."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(setup_cfg)
    sections = [parser.get("options", "install_requires", fallback="")]
    if extras and parser.has_section("options.extras_require"):
        sections.extend(value for _, value in parser.items("options.extras_require"))
    return [
        line.strip()
        for section in sections
        for line in section.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def local_distributions() -> set[str]:
    """The names of the distributions this repository builds (libkv and its plugins)."""
    names = set()
    for setup_cfg in distributions():
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(setup_cfg)
        names.add(normalize(parser.get("metadata", "name")))
    return names


def lowest_pins() -> list[str]:
    """`name==lower-bound` for every runtime dependency of the core and the plugins."""
    local = local_distributions()
    pins = {}
    for setup_cfg in distributions():
        for requirement in declared_requirements(setup_cfg, extras=False):
            name, bound = _NAME.match(requirement), _LOWER_BOUND.search(requirement)
            if name is None:
                raise SystemExit(f"{setup_cfg}: cannot read the requirement {requirement!r}")
            if normalize(name.group(1)) in local:
                continue
            if bound is None:
                raise SystemExit(f"{setup_cfg}: {requirement!r} declares no lower bound")
            pins[normalize(name.group(1))] = f"{normalize(name.group(1))}=={bound.group(1)}"
    return sorted(pins.values())


def compile_lock(output: Path, *extra: str) -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        raise SystemExit("uv not found: scripts/test installs the pinned uv first")
    command = [
        uv, "pip", "compile", str(INPUT.relative_to(ROOT)),
        "--python-version", PYTHON_VERSION,
        "--custom-compile-command", REFRESH_COMMAND,
        "--output-file", str(output),
        "--quiet",
        *extra,
    ]  # fmt: skip
    try:
        subprocess.run(command, cwd=ROOT, check=True)
    except subprocess.CalledProcessError as error:
        message = f"uv could not resolve {INPUT.name} {' '.join(extra)}: see above"
        raise SystemExit(message) from error


def main(arguments: list[str]) -> None:
    if len(arguments) != 2 or arguments[0] not in ("update", "latest", "lowest"):
        raise SystemExit(__doc__)
    mode, output = arguments[0], Path(arguments[1]).resolve()
    if output != LOCK:
        # uv keeps the versions already in its output file where the requirements allow.
        shutil.copyfile(LOCK, output)
    if mode == "update":
        compile_lock(output)
    elif mode == "latest":
        compile_lock(output, "--upgrade")
    else:
        with tempfile.TemporaryDirectory() as directory:
            constraints = Path(directory) / "lowest.txt"
            constraints.write_text("\n".join(lowest_pins()) + "\n")
            compile_lock(output, "--constraint", str(constraints))


if __name__ == "__main__":
    main(sys.argv[1:])
