"""StoreURL parsing, rendering and option validation."""

from __future__ import annotations

import pytest

import libkv
from libkv import InvalidURLError, StoreURL
from libkv.url import parse_bool, redact_url, secrets_in_url


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


SECRET = "hunter2xx"

# Every shape a URL with a password can be mistyped in; each must be refused (or
# parsed) without the password, or any part of it, in what libkv shows.
SECRET_URLS = [
    f"redis:/user:{SECRET}@127.0.0.1:46379/0",  # one slash
    f"redis:user:{SECRET}@127.0.0.1/0",  # no slash
    f"redis:///user:{SECRET}@127.0.0.1/0",  # three slashes: a path
    "redis:///user:hun/ter2xx@127.0.0.1/0",  # three slashes and an unencoded '/'
    "redis://user:hun/ter2xx@127.0.0.1:46379/0",  # unencoded '/'
    f"redis://user:12/{SECRET}@127.0.0.1/0",  # '/' after digits: reads as a port
    "redis://user:hun?ter2xx@127.0.0.1/0",  # unencoded '?'
    "redis://user:hun?x=ter2xx@127.0.0.1/0",  # unencoded '?', then an option
    "redis://user:hun#ter2xx@127.0.0.1/0",  # unencoded '#'
    "redis://user:hun@ter2xx@127.0.0.1:99999/0",  # unencoded '@', bad port
    f"redis://user:{SECRET}@127.0.0.1:port/0",  # unparsable port
    f"redis://user:{SECRET}@[::1/0",  # unterminated IPv6
    f"memory://user:{SECRET}@/x",  # no host
    f"redis://user:{SECRET}@h/0?a=1&a=2",  # an option twice
    f"redis://user:{SECRET}@h/0?novalue",  # a malformed query
    f"redis://user:{SECRET}@h/0?token={SECRET}",  # a token option too
    f"1redis://user:{SECRET}@h/0",  # a bad scheme
    f" user:{SECRET}@h ",  # no scheme at all
    f"memory://user:{SECRET}@h",  # a driver refusing credentials
    f"sqlite://user:{SECRET}@h/x.db",  # a driver refusing a host
    f"memory://h?token={SECRET}",  # a secret option a driver does not know
    f"memory://h?password=%2F{SECRET}",  # ...percent-encoded
]
PIECES = [SECRET, "hun/ter2", "ter2xx", "hunter2"]


def assert_no_secret(text: str) -> None:
    for piece in PIECES:
        assert piece not in text, text


@pytest.mark.parametrize("text", SECRET_URLS)
def test_no_error_or_rendering_shows_a_password(text: str) -> None:
    try:
        url = StoreURL.parse(text)
    except InvalidURLError as error:
        assert_no_secret(str(error))
        assert_no_secret(repr(error))
    else:
        assert_no_secret(str(url))
        assert_no_secret(repr(url))
    try:
        store = libkv.open(text)  # a driver may connect lazily: then nothing is refused yet
    except libkv.KVError as error:
        assert_no_secret(str(error))
        assert_no_secret(repr(error))
        assert error.__cause__ is None or SECRET not in str(error.__cause__)
    else:
        with store:
            assert_no_secret(repr(store))
            assert_no_secret(str(store.url))


def test_secret_options_are_hidden_and_given_back_on_request() -> None:
    url = StoreURL.parse(f"consul://h?token={SECRET}&acl_token=x&datacenter=dc1")
    assert str(url) == "consul://h?token=***&acl_token=***&datacenter=dc1"
    assert SECRET not in repr(url)
    assert SECRET in url.render(hide_password=False)
    with pytest.raises(InvalidURLError) as raised:
        url.read_options({"token": int})
    assert SECRET not in str(raised.value) and raised.value.__cause__ is None


def test_an_at_sign_after_the_host_is_refused_with_a_hint() -> None:
    with pytest.raises(InvalidURLError, match="percent-encode"):
        StoreURL.parse("redis://user:pa/ss@h/0")
    assert StoreURL.parse("redis://user:pa%2Fss%40@h/0").password == "pa/ss@"
    # Without a host, '@' may be part of a file name.
    assert StoreURL.parse("sqlite:///tmp/a@b.db").path == "/tmp/a@b.db"


def test_redact_url_and_secrets_in_url() -> None:
    assert redact_url(f"redis:/u:{SECRET}@h:1/0") == "redis:/***@h:1/0"
    assert redact_url(f"x://h/0?a=1&api_token={SECRET}&b=2") == "x://h/0?a=1&api_token=***&b=2"
    found = secrets_in_url(f"redis://u:hun%2Fter@h?token={SECRET}")
    assert set(found) == {"hun%2Fter", SECRET, "hun/ter"}
    assert found[-1] == "hun/ter"  # longest first, so no secret is cut by a shorter one
