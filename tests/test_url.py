"""StoreURL parsing, rendering and option validation."""

from __future__ import annotations

import pytest

import libkv
from libkv import InvalidURLError, StoreURL
from libkv.url import parse_bool


def test_multiple_hosts_path_and_query() -> None:
    url = StoreURL.parse("etcd://127.0.0.1:2379,127.0.0.1:22379/myapp?timeout=5")
    assert url.scheme == "etcd"
    assert url.hosts == (("127.0.0.1", 2379), ("127.0.0.1", 22379))
    assert url.path == "/myapp"
    assert dict(url.options) == {"timeout": "5"}


def test_credentials_are_decoded_and_the_password_never_rendered() -> None:
    url = StoreURL.parse("redis://user:p%40ss@h:6379/0")
    assert (url.username, url.password) == ("user", "p@ss")
    assert "p@ss" not in str(url) and "p%40ss" not in str(url) and "p@ss" not in repr(url)
    assert str(url) == "redis://user:***@h:6379/0"
    assert url.render(hide_password=False) == "redis://user:p%40ss@h:6379/0"


def test_ipv6_and_no_port() -> None:
    url = StoreURL.parse("etcd://[::1]:2379,example.org")
    assert url.hosts == (("::1", 2379), ("example.org", None))
    assert str(url) == "etcd://[::1]:2379,example.org"


def test_sqlite_absolute_path_and_memory_name() -> None:
    assert StoreURL.parse("sqlite:///abs/path.db").path == "/abs/path.db"
    assert StoreURL.parse("memory://NAME").host == "NAME"


@pytest.mark.parametrize(
    "text",
    [
        "no-scheme",
        "etcd://h:0",
        "etcd://h:99999",
        "etcd://h:port",
        "etcd://h?a=1&a=2",
        "etcd://[::1",
    ],
)
def test_malformed_urls(text: str) -> None:
    with pytest.raises(InvalidURLError):
        StoreURL.parse(text)


def test_read_options_rejects_unknown_and_malformed_options_by_name() -> None:
    url = StoreURL.parse("x://h?timeout=abc")
    with pytest.raises(InvalidURLError, match="timeout"):
        url.read_options({"timeout": float})
    with pytest.raises(InvalidURLError, match="timout"):
        StoreURL.parse("x://h?timout=1").read_options({"timeout": float})
    assert StoreURL.parse("x://h?prefix=a&timeout=2").read_options({"timeout": float}) == {
        "prefix": "a",
        "timeout": 2.0,
    }


def test_keywords_override_the_query() -> None:
    url = StoreURL.parse("x://h?timeout=1").with_options(timeout=3)
    assert url.options["timeout"] == 3


def test_open_rejects_unknown_options_for_builtin_drivers(tmp_path: object) -> None:
    with pytest.raises(InvalidURLError, match="bogus"):
        libkv.open("memory://?bogus=1")
    with pytest.raises(InvalidURLError, match="history"):
        libkv.open("memory://", history="many")
    with pytest.raises(InvalidURLError):
        libkv.open("sqlite://somehost/x.db")


@pytest.mark.parametrize(("text", "expected"), [("1", True), ("off", False), (True, True)])
def test_parse_bool(text: object, expected: bool) -> None:
    assert parse_bool(text) is expected
