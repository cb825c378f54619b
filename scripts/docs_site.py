"""The documentation site's sources, and the MkDocs hooks that build it from them.

The site is built from the repository's own files, one source each: the pages under
``docs/``, and the READMEs that live beside their code (the project's README is the
home page, each plugin's README its backend page, bench/README.md the benchmarks page),
which ``on_files`` adds to the site where ``PLACES`` puts them. Links between these
files are written for the repository (they work on a forge and in an editor), so
``on_page_markdown`` rewrites each relative link to where its target lands on the site;
a link to a file the site does not carry is left as it is, and the strict build fails
on it. The CLI page's reference is generated from ``libkv.cli.build_parser()``.
The docstrings use Sphinx's cross-reference roles (``:class:`~libkv.Watch` ``), which
Markdown would print as written: ``SphinxRoles``, a griffe extension that mkdocs.yml
gives mkdocstrings, turns each into inline code.

``mkdocs.yml`` names this file as a hook; ``tests/test_doc_pages.py`` imports it for
the list of pages whose Python blocks it runs.
"""

from __future__ import annotations

import argparse
import posixpath
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import griffe

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

PLACES = {
    "README.md": "index.md",
    "plugins/redis/README.md": "backends/redis.md",
    "plugins/etcd/README.md": "backends/etcd.md",
    "plugins/zookeeper/README.md": "backends/zookeeper.md",
    "plugins/consul/README.md": "backends/consul.md",
    "bench/README.md": "benchmarks.md",
    "bench/compare.png": "assets/compare.png",
    "bench/compare.json": "assets/compare.json",
    "integration/README.md": "test-servers.md",
}
"""Repository path -> site path of every file the site carries from outside docs/."""

CLI_MARKER = "<!-- libkv --help: generated from libkv.cli.build_parser() -->"
"""The line of docs/cli.md that the build replaces with the command's reference."""

CLI_WIDTH = 88
"""Columns of the generated help: wide enough for every line of the CLI without wrapping."""

NOT_RUN = "# not run by the tests:"
"""The first line of a Python block that cannot run standalone, followed by the reason."""

_FENCE = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_ROLE = re.compile(r":(?:func|class|meth|attr|mod|exc|data|obj):`(~?)([^`<]*?)\s*(?:<[^`>]*>)?`")
_LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")


def page_sources() -> list[Path]:
    """Every Markdown file the site renders as a page, as repository paths."""
    outside = [ROOT / path for path in PLACES if path.endswith(".md")]
    return sorted(outside) + sorted(DOCS.rglob("*.md"))


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """(line number, code) of every fenced ```python block of one page."""
    text = page.read_text()
    return [
        (text.count("\n", 0, match.start()) + 1, match.group(1)) for match in _FENCE.finditer(text)
    ]


def site_path(repository_path: str) -> str | None:
    """Where a repository file lands on the site, or None when the site does not carry it."""
    if repository_path in PLACES:
        return PLACES[repository_path]
    if repository_path.startswith("docs/"):
        return repository_path.removeprefix("docs/")
    return None


def rewrite_links(markdown: str, origin: str, destination: str) -> str:
    """The page's relative links, written for its repository path ``origin``, pointed at
    their targets' site paths from the page's site path ``destination``."""

    def rewrite(match: re.Match[str]) -> str:
        opening, target, anchor, closing = match.groups()
        if ":" in target or target.startswith("/"):
            return match.group(0)  # a URL or an absolute path: not a repository file
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(origin), target))
        landing = site_path(resolved)
        if landing is None:
            return match.group(0)  # not on the site: the strict build reports it
        relative = posixpath.relpath(landing, posixpath.dirname(destination) or ".")
        return f"{opening}{relative}{anchor or ''}{closing}"

    return _LINK.sub(rewrite, markdown)


def cli_reference(parser: argparse.ArgumentParser) -> str:
    """The help of the command and of each subcommand, as Markdown sections."""
    sections = [_help_section(parser.prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                sections.append(_help_section(f"{parser.prog} {name}", subparser))
    return "\n".join(sections)


def _help_section(title: str, parser: argparse.ArgumentParser) -> str:
    parser.formatter_class = _fixed_width_formatter
    return f"### `{title}`\n\n```text\n{parser.format_help().rstrip()}\n```\n"


def _fixed_width_formatter(prog: str) -> argparse.HelpFormatter:
    # argparse wraps to the terminal's width by default: the page must not depend on it.
    return argparse.HelpFormatter(prog, width=CLI_WIDTH)


def plain_roles(docstring: str) -> str:
    """Sphinx's cross-reference roles as inline code: ``:class:`~libkv.Watch` `` ->
    `` `Watch` ``, ``:meth:`close <libkv.Watch.close>` `` -> `` `close` ``."""

    def code(match: re.Match[str]) -> str:
        short, text = match.groups()  # "~" shows the last component only
        return f"`{text.rpartition('.')[2] if short else text}`"

    return _ROLE.sub(code, docstring)


class SphinxRoles(griffe.Extension):
    """A griffe extension: every docstring's Sphinx roles rendered as inline code."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(obj.docstring.value)


# -- MkDocs hooks ------------------------------------------------------------------------


def on_files(files: Files, *, config: MkDocsConfig) -> Files:
    """Add the files kept outside docs/ at their site paths."""
    from mkdocs.structure.files import File

    for repository_path, place in PLACES.items():
        files.append(File.generated(config, place, abs_src_path=str(ROOT / repository_path)))
    return files


def on_page_markdown(markdown: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Point repository links at the site; fill in the CLI reference."""
    source = page.file.abs_src_path
    if source is None:
        raise ValueError(f"{page.file.src_uri}: a page with no source file")
    origin = Path(source).resolve().relative_to(ROOT).as_posix()
    markdown = rewrite_links(markdown, origin, page.file.src_uri)
    if page.file.src_uri == "cli.md":
        from libkv.cli import build_parser

        if CLI_MARKER not in markdown:
            raise ValueError(f"docs/cli.md: no {CLI_MARKER!r} line to fill in")
        markdown = markdown.replace(CLI_MARKER, cli_reference(build_parser()))
    return markdown
