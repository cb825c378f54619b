"""The built documentation site, opened in headless Chromium.

The site is built (strict) into a temporary directory and served over HTTP on a
loopback port from a thread (the search runs in a web worker, which file:// URLs do not
allow). Debian's ``chromium`` and ``chromium-driver``, installed by
``integration/install.sh``, are driven through Selenium. Each check saves a screenshot
in one temporary directory, whose path the test prints (``pytest -rP`` shows it).
A missing browser fails the test: CI installs it, so its absence is a broken machine.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from libkv.cli import build_parser
from libkv.testing.polling import wait_until
from scripts.docs_site import ROOT

PAGE_TIMEOUT = 30.0
"""Seconds a page or the search index may take to appear: well under one when idle."""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("site")
    environment = os.environ | {"NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(directory)]
    result = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"the strict build failed:\n{result.stderr}"
    return directory


@pytest.fixture(scope="module")
def address(site: Path) -> Iterator[str]:
    """The site served on a free loopback port by a thread of this process."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *arguments: object) -> None:
            pass  # one line per request would drown pytest's output

    handler = functools.partial(QuietHandler, directory=str(site))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, name="docs-site", daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail(
            "Debian's chromium and chromium-driver are needed (chromium: "
            f"{chromium}, chromedriver: {driver}): run `bash integration/install.sh`"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in [
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--window-size=1280,900",  # wide enough for Material's navigation sidebar
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ]:
        options.add_argument(argument)
    try:
        chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    except WebDriverException as error:
        pytest.fail(f"headless Chromium did not start: {error.msg}")
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("screenshots")
    print(f"screenshots of the documentation site: {directory}")
    return directory


def open_page(browser: webdriver.Chrome, url: str) -> None:
    browser.get(url)
    wait_until(
        lambda: browser.execute_script("return document.readyState") == "complete",
        PAGE_TIMEOUT,
        0.05,
        message=f"{url} did not finish loading",
    )


def visible(browser: webdriver.Chrome, selector: str) -> list[WebElement]:
    return [
        element
        for element in browser.find_elements(By.CSS_SELECTOR, selector)
        if element.is_displayed()
    ]


def navigation_links(browser: webdriver.Chrome) -> set[str]:
    """The labels of the primary navigation's entries (pages and sections) shown."""
    return {link.text.strip() for link in visible(browser, "nav.md-nav--primary .md-nav__link")}


def active_link(browser: webdriver.Chrome) -> str:
    links = visible(browser, "nav.md-nav--primary a.md-nav__link--active")
    return links[0].text.strip() if links else ""


def save(browser: webdriver.Chrome, directory: Path, name: str) -> None:
    path = directory / f"{name}.png"
    assert browser.save_screenshot(str(path)), f"no screenshot saved at {path}"
    print(f"  {path}")


def test_cli_page_is_the_parsers_help(site: Path) -> None:
    """The command line page holds the help of every subcommand the parser has."""
    page = (site / "cli" / "index.html").read_text()
    assert "<!-- libkv --help" not in page, "the CLI reference was not filled in"
    parser = build_parser()
    commands = next(
        action.choices for action in parser._actions if isinstance(action.choices, dict)
    )
    assert {"get", "watch", "lock", "services"} <= set(commands)
    for name, subparser in commands.items():
        assert f"<code>libkv {name}</code>" in page, f"no section for `libkv {name}`"
        assert subparser.description in page
    assert "--since REVISION" in page


def test_home_page_renders_with_its_navigation(
    browser: webdriver.Chrome, address: str, screenshots: Path
) -> None:
    open_page(browser, f"{address}/")
    assert browser.title.startswith("libkv")
    heading = browser.find_element(By.CSS_SELECTOR, "article h1")
    assert heading.text.strip() == "libkv"
    assert {"Getting started", "Backends", "The contract", "API reference", "Changelog"} <= (
        navigation_links(browser)
    )
    assert active_link(browser) == "Getting started"
    code = visible(browser, "article pre code")
    assert any("libkv.open(" in block.text for block in code), "no quick start shown"
    save(browser, screenshots, "home")


def test_backend_page_renders_with_its_navigation(
    browser: webdriver.Chrome, address: str, screenshots: Path
) -> None:
    open_page(browser, f"{address}/backends/redis/")
    assert browser.find_element(By.CSS_SELECTOR, "article h1").text.strip() == "libkv-redis"
    assert {"Redis", "etcd", "ZooKeeper", "Consul"} <= navigation_links(browser)
    assert active_link(browser) == "Redis"
    assert visible(browser, "article table"), "the Redis page shows no table"
    # The README's link to the contract, written for the repository, leads to its page.
    contract_links = browser.find_elements(By.CSS_SELECTOR, "article a[href$='contract/']")
    assert contract_links, "the Redis page links to no contract page"
    save(browser, screenshots, "backend-redis")


def test_api_page_of_store_watch_renders_with_its_navigation(
    browser: webdriver.Chrome, address: str, screenshots: Path
) -> None:
    open_page(browser, f"{address}/api/libkv/#libkv.Store.watch")
    heading = browser.find_element(By.ID, "libkv.Store.watch")
    assert heading.is_displayed()
    assert "watch" in heading.text
    assert active_link(browser) == "libkv"
    assert {"libkv.aio", "libkv.recipes", "libkv.driver", "libkv.testing"} <= (
        navigation_links(browser)
    )
    # The heading's method: its signature and its docstring, rendered (no Sphinx role left).
    signature = heading.find_element(
        By.XPATH, "following-sibling::div[contains(@class, 'doc-signature')][1]"
    )
    assert "recursive" in signature.text and "since" in signature.text, signature.text
    docstring = heading.find_element(
        By.XPATH, "following-sibling::div[contains(@class, 'doc-contents')][1]"
    )
    assert "Watch key" in docstring.text and ":class:" not in docstring.text, docstring.text
    wait_until(
        lambda: browser.execute_script(
            "const box = arguments[0].getBoundingClientRect();"
            " return box.top >= 0 && box.top < innerHeight;",
            heading,
        ),
        PAGE_TIMEOUT,
        0.05,
        message="Store.watch's heading was not scrolled into view",
    )
    save(browser, screenshots, "api-store-watch")


def test_search_finds_fencing_token(
    browser: webdriver.Chrome, address: str, screenshots: Path
) -> None:
    open_page(browser, f"{address}/")
    browser.find_element(By.CSS_SELECTOR, "label.md-search__icon, .md-search__input").click()
    search = browser.find_element(By.CSS_SELECTOR, "input.md-search__input")
    wait_until(search.is_displayed, PAGE_TIMEOUT, 0.05, message="the search box is not shown")
    search.send_keys("fencing token")

    def results() -> list[WebElement]:
        return visible(browser, "li.md-search-result__item")

    found = wait_until(
        results,
        PAGE_TIMEOUT,
        0.1,
        message=lambda: (
            "no search result for 'fencing token': "
            + browser.find_element(By.CSS_SELECTOR, ".md-search-result__meta").text
        ),
    )
    assert any("fencing token" in result.text.lower() for result in found), [
        result.text[:200] for result in found
    ]
    highlighted = {
        mark.text.lower()
        for mark in browser.find_elements(By.CSS_SELECTOR, ".md-search-result mark")
    }
    assert {"fencing", "token"} & highlighted, highlighted
    save(browser, screenshots, "search-fencing-token")
