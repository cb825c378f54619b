"""Every Python block of the README runs as written against the embedded default.

Each block runs in a fresh interpreter whose temporary directory, data directory
(where ``sqlite://`` keeps its default file) and home are one pytest temporary
directory, so the blocks write nothing outside it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK_TIMEOUT = 120.0
"""Seconds one block may run: the quick start takes well under one, even on a busy machine."""

_FENCE = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of every fenced ```python block of the README."""
    text = README.read_text()
    return [
        (text.count("\n", 0, match.start()) + 1, match.group(1)) for match in _FENCE.finditer(text)
    ]


def run_block(code: str, directory: Path) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LIBKV_", "XDG_")) and key not in ("TMPDIR", "HOME")
    }
    environment |= {
        "TMPDIR": str(directory),
        "XDG_DATA_HOME": str(directory / "data"),
        "HOME": str(directory / "home"),
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )


def test_the_readme_has_a_quick_start_in_python() -> None:
    blocks = python_blocks()
    headings = README.read_text().splitlines()
    quick_start = headings.index("## Quick start") + 1
    assert blocks, "no ```python block in README.md"
    assert any(line > quick_start and "libkv.open(" in code for line, code in blocks)


@pytest.mark.parametrize(
    ("line", "code"), python_blocks(), ids=[f"line-{line}" for line, _ in python_blocks()]
)
def test_python_block_runs_as_written(line: int, code: str, tmp_path: Path) -> None:
    result = run_block(code, tmp_path)
    assert result.returncode == 0, (
        f"README.md block at line {line} failed:\n{result.stdout}\n{result.stderr}"
    )


def test_async_quick_start_runs_against_sqlite_in_the_temporary_directory(
    tmp_path: Path,
) -> None:
    """The async quick start (libkv.aio) ran every step on a SQLite file under TMPDIR."""
    line, code = next((line, code) for line, code in python_blocks() if "libkv.aio.open(" in code)
    result = run_block(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.rglob("*.db")), "the async quick start wrote no SQLite file in TMPDIR"
    output = result.stdout
    for expected in [
        "value=b'green'",
        "Action.INIT",
        "Action.UPDATE config/size",
        "fencing token",
        "no change within 0.5 s",
    ]:
        assert expected in output, (
            f"async quick start (line {line}) printed no {expected!r}:\n{output}"
        )


def test_quick_start_runs_against_sqlite_in_the_temporary_directory(tmp_path: Path) -> None:
    """The quick start's store is a SQLite file under the temporary directory, and every
    step (compare-and-swap, the refused transaction, watch, lease, lock) ran."""
    line, code = next((line, code) for line, code in python_blocks() if "libkv.open(" in code)
    result = run_block(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.rglob("*.db")), "the quick start wrote no SQLite file in TMPDIR"
    output = result.stdout
    for expected in ["value=b'green'", "refused:", "Action.INIT", "Action.UPDATE", "fencing token"]:
        assert expected in output, f"quick start (line {line}) printed no {expected!r}:\n{output}"
