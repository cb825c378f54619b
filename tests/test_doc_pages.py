"""Every Python block of every page of the documentation site runs as written.

The pages are the site's sources (``scripts/docs_site.py``: docs/ and the READMEs it
carries, the project's README among them). Each block runs in a fresh interpreter whose
temporary directory, data directory (where ``sqlite://`` keeps its default file) and
home are one pytest temporary directory, so the blocks write nothing outside it. A block
that cannot run standalone says so on its first line, visibly, with the reason
(``# not run by the tests: needs a running Redis server``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.docs_site import NOT_RUN, ROOT, page_sources, python_blocks, rewrite_links

README = ROOT / "README.md"
BLOCK_TIMEOUT = 120.0
"""Seconds one block may run: the quick start takes well under one, even on a busy machine."""


def every_block() -> list[tuple[Path, int, str]]:
    return [(page, line, code) for page in page_sources() for line, code in python_blocks(page)]


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


def readme_blocks() -> list[tuple[int, str]]:
    return python_blocks(README)


def test_the_readme_has_a_quick_start_in_python() -> None:
    blocks = readme_blocks()
    headings = README.read_text().splitlines()
    quick_start = headings.index("## Quick start") + 1
    assert blocks, "no ```python block in README.md"
    assert any(line > quick_start and "libkv.open(" in code for line, code in blocks)


def test_the_pages_include_the_readmes_and_docs() -> None:
    pages = {page.relative_to(ROOT).as_posix() for page in page_sources()}
    assert {"README.md", "plugins/redis/README.md", "docs/contract.md", "docs/cli.md"} <= pages


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("[c](../../docs/contract.md#locks)", "[c](../contract.md#locks)"),
        ("[libkv](../../README.md)", "[libkv](../index.md)"),
        ("![chart](compare.png)", "![chart](assets/compare.png)"),
        ("[etcd](https://etcd.io) [up](#url)", "[etcd](https://etcd.io) [up](#url)"),
        ("[tests](../../tests/test_docs.py)", "[tests](../../tests/test_docs.py)"),
    ],
)
def test_repository_links_point_at_the_site(markdown: str, expected: str) -> None:
    """A link written for the repository leads to its target's page; a URL, an anchor and a
    file the site does not carry are left for the strict build to judge."""
    origin = "bench/README.md" if "compare.png" in markdown else "plugins/redis/README.md"
    destination = "benchmarks.md" if origin == "bench/README.md" else "backends/redis.md"
    assert rewrite_links(markdown, origin, destination) == expected


@pytest.mark.parametrize(
    ("page", "line", "code"),
    every_block(),
    ids=[f"{page.relative_to(ROOT).as_posix()}:{line}" for page, line, _ in every_block()],
)
def test_python_block_runs_as_written(page: Path, line: int, code: str, tmp_path: Path) -> None:
    where = f"{page.relative_to(ROOT)} block at line {line}"
    first_line = code.partition("\n")[0]
    if first_line.startswith(NOT_RUN):
        assert first_line.removeprefix(NOT_RUN).strip(), f"{where}: {NOT_RUN!r} gives no reason"
        compile(code, where, "exec")  # not run, but still Python
        return
    result = run_block(code, tmp_path)
    assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"


def test_async_quick_start_runs_against_sqlite_in_the_temporary_directory(
    tmp_path: Path,
) -> None:
    """The async quick start (libkv.aio) ran every step on a SQLite file under TMPDIR."""
    line, code = next((line, code) for line, code in readme_blocks() if "libkv.aio.open(" in code)
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
    line, code = next((line, code) for line, code in readme_blocks() if "libkv.open(" in code)
    result = run_block(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.rglob("*.db")), "the quick start wrote no SQLite file in TMPDIR"
    output = result.stdout
    for expected in ["value=b'green'", "refused:", "Action.INIT", "Action.UPDATE", "fencing token"]:
        assert expected in output, f"quick start (line {line}) printed no {expected!r}:\n{output}"
