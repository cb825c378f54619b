"""The hypothesis strategies: random and bad keys, values, ttls, versions, calls,
transactions, glob patterns and URLs."""

from __future__ import annotations

import dataclasses
import math
from urllib.parse import quote

from hypothesis import strategies as st

import libkv
from libkv.testing.conformance.bounds import LARGEST_VERSION
from libkv.testing.properties.calls import CURRENT, LONG_TTL, STALE, Call, Symbol
from libkv.testing.properties.oracle import MAX_KEY_BYTES

# -- arguments ---------------------------------------------------------------------------

KEY_POOL = ("a", "a/b", "a/b/c", "b", "ab", "a-b", "ü/ß", "x y", "...", "a.b", "emoji😀")
"""Valid keys that examples share, so writes collide and prefixes nest."""

KEY_CHARACTERS = "ab/.é😀 *?[]\\-\x00\x1f\x7f\x85\u2028\ud800"
"""Characters random keys are made of: separators, dots, non-ASCII, glob characters,
C0, DEL and C1 controls, a Unicode line separator (valid) and a lone surrogate."""


@st.composite
def _long_key(draw: st.DrawFn) -> str:
    """A key of 1016..1032 UTF-8 bytes made of 1-, 2-, 3- or 4-byte characters."""
    character = draw(st.sampled_from(["x", "é", "€", "😀"]))
    size = draw(st.integers(MAX_KEY_BYTES - 8, MAX_KEY_BYTES + 8))
    width = len(character.encode())
    head = draw(st.sampled_from(["", "p/"]))
    size -= len(head)
    return head + character * (size // width) + "x" * (size % width)


@st.composite
def _decorated_key(draw: st.DrawFn) -> str:
    """A pool key with slashes around or inside it, or a dot segment."""
    key = draw(st.sampled_from(KEY_POOL))
    lead = draw(st.sampled_from(["", "/", "//"]))
    trail = draw(st.sampled_from(["", "/", "//"]))
    inner = draw(st.sampled_from(["", "//", "/./", "/../", "/.../"]))
    if inner:
        key = key + inner + draw(st.sampled_from(KEY_POOL))
    return lead + key + trail


def keys() -> st.SearchStrategy[object]:
    """Valid and invalid keys: the pool, decorated pool keys, random text, long keys
    around 1024 bytes, and a few non-strings."""
    pool = st.sampled_from(KEY_POOL)
    return st.one_of(
        pool,  # thrice as likely: calls on one key must meet often
        pool,
        pool,
        _decorated_key(),
        st.text(alphabet=st.sampled_from(KEY_CHARACTERS), max_size=10),
        _long_key(),
        st.sampled_from([".", "..", "/", "", 1, None, b"a"]),
    )


def values() -> st.SearchStrategy[object]:
    """Bytes-like values and str (some not valid Unicode), and values of other types."""
    return st.one_of(
        st.binary(max_size=40),
        st.binary(max_size=16).map(bytearray),
        st.binary(max_size=16).map(lambda data: memoryview(data)),
        st.text(max_size=12),
        st.sampled_from(["", "\ud800", "a\udfffb", 1, 1.5, None, ["a"], True]),
    )


def ttls() -> st.SearchStrategy[object]:
    """Out-of-range and in-range ttls, some relative to the store's ttl_min and ttl_max."""
    return st.one_of(
        st.sampled_from(
            [
                math.nan,
                math.inf,
                -math.inf,
                -1.0,
                0,
                0.0,
                True,
                "5",
                1e15,
                1e300,
                LONG_TTL,
                Symbol("ttl_min"),
                Symbol("just below ttl_min"),
                Symbol("ttl_max"),
                Symbol("just above ttl_max"),
                Symbol("twice ttl_max"),
            ]
        ),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(2**70), 2**70),
    )


def versions() -> st.SearchStrategy[object]:
    """Versions that match, mismatch, or are out of range or of the wrong type."""
    return st.one_of(
        st.sampled_from(
            [CURRENT, CURRENT, STALE, 0, -1, 1, LARGEST_VERSION, 2**63, 2**63 + 1, 2**64]
        ),
        st.sampled_from([True, False, 1.0, "1"]),
        st.integers(-(2**70), 2**70),
    )


# -- calls and transactions --------------------------------------------------------------


def single_calls(
    key: st.SearchStrategy[object], value: st.SearchStrategy[object]
) -> st.SearchStrategy[Call]:
    return st.one_of(
        st.builds(Call, st.just("put"), key, value),
        st.builds(Call, st.just("create"), key, value),
        st.builds(Call, st.just("update"), key, value, st.sampled_from([CURRENT, STALE])),
        st.builds(Call, st.just("delete"), key, version=st.sampled_from([None, CURRENT, STALE])),
        st.builds(Call, st.just("get"), key),
        st.builds(Call, st.just("exists"), key),
        st.builds(Call, st.just("list"), key),
        st.builds(Call, st.just("delete_tree"), key),
        st.builds(
            Call,
            st.just("get_many"),
            items=st.lists(st.builds(Call, st.just("get"), key), max_size=3).map(tuple),
        ),
        st.builds(
            Call,
            st.just("put_many"),
            items=st.lists(st.builds(Call, st.just("put"), key, value), max_size=3).map(tuple),
        ),
    )


def _op(
    key: st.SearchStrategy[object], version: st.SearchStrategy[object]
) -> st.SearchStrategy[Call]:
    value = st.binary(max_size=8)
    return st.one_of(
        st.builds(Call, st.just("put"), key, value),
        st.builds(Call, st.just("create"), key, value),
        st.builds(Call, st.just("update"), key, value, version),
        st.builds(Call, st.just("delete"), key, version=st.one_of(st.none(), version)),
        st.builds(Call, st.just("check"), key, version=version),
    )


TRANSACTION_KEYS = ("k0", "k1", "k2", "k0/x", "/k1/")
"""A small pool, with a nested key and a spelling of k1 that normalises to it."""


def transactions(version: st.SearchStrategy[object]) -> st.SearchStrategy[Call]:
    key = st.sampled_from(TRANSACTION_KEYS)
    return st.builds(
        Call,
        st.just("transaction"),
        items=st.lists(_op(key, version), max_size=5).map(tuple),
        pad=st.sampled_from([False, False, False, False, True]),
    )


def setup_writes() -> st.SearchStrategy[list[Call]]:
    return st.lists(
        st.builds(Call, st.just("put"), st.sampled_from(TRANSACTION_KEYS), st.binary(max_size=4)),
        max_size=4,
    )


# -- globs -------------------------------------------------------------------------------

GLOB_KEYS = (
    "a", "b", "ab", "ba", "abc", "a.b", "-", "\\", "a\\b", "a/b", "a/c", "a/b/c",
    "a/c/b", "b/a", "c/a/b/c", "a/a/a", "]", "!", "5", "Z",
)  # fmt: skip


def _glob_piece() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["a", "b", "c", ".", "-", "\\", "!", "]"]),
        st.sampled_from(["*", "?", "**"]),
        st.builds(
            lambda negated, body: "[" + ("!" if negated else "") + body + "]",
            st.booleans(),
            st.text(alphabet="abc-\\!", max_size=4),
        ),
        st.sampled_from(["[", "[!", "[]", "[]]", "[z-a]", "[c-a]", "[a-c]", "[!a-b]"]),
    )


def globs() -> st.SearchStrategy[str]:
    """Glob patterns, some malformed; no empty, `.` or `..` segment (no key has one)."""
    segment = st.lists(_glob_piece(), min_size=1, max_size=3).map("".join)
    segment = segment.filter(lambda text: text not in (".", ".."))
    return st.lists(segment, min_size=1, max_size=3).map("/".join)


# -- URLs -------------------------------------------------------------------------------

PASSWORD_CHARACTERS = "@:/?#%&=+ ;,[]~!$'()*\\é😀"


@dataclasses.dataclass(frozen=True)
class UrlRecipe:
    """How to change the test's URL: credentials, a host replacement, extra options."""

    username: str | None
    password: str | None
    host: str | None
    options: tuple[tuple[str, str], ...]
    raw_query: str

    def build(self, base: str) -> str:
        parsed = libkv.StoreURL.parse(base)
        credentials = ""
        if self.username is not None or self.password is not None:
            credentials = quote(self.username or "", safe="")
            if self.password is not None:
                credentials += ":" + quote(self.password, safe="")
            credentials += "@"
        hosts = self.host if self.host is not None else _hosts_of(base)
        query = "&".join(
            [
                f"{quote(name, safe='')}={quote(str(value), safe='/')}"
                for name, value in parsed.options.items()
            ]
            + [f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in self.options]
            + ([self.raw_query] if self.raw_query else [])
        )
        path = quote(parsed.path, safe="/")
        return f"{parsed.scheme}://{credentials}{hosts}{path}" + (f"?{query}" if query else "")


def _hosts_of(url: str) -> str:
    """The host list of `url` as written."""
    authority = url.split("://", 1)[1].split("?", 1)[0].split("/", 1)[0]
    return authority.rpartition("@")[2]


MALFORMED_HOSTS = [
    "127.0.0.1:0",
    "127.0.0.1:65536",
    "127.0.0.1:99999",
    "127.0.0.1:-1",
    "127.0.0.1:http",
    "127.0.0.1:1:2",
    "[::1",
    "[::1]x",
    "[::1]:port",
    "127.0.0.1: 80",
]


def url_recipes() -> st.SearchStrategy[UrlRecipe]:
    secret = st.text(alphabet=PASSWORD_CHARACTERS, min_size=1, max_size=8).map(
        lambda text: f"Pw{text}9z"
    )
    option_value = st.one_of(
        st.text(alphabet="ab01.-/%&=#? é", max_size=6),
        st.sampled_from(["0", "-1", "nan", "inf", "1e999", "0.5", "true", ""]),
    )
    return st.builds(
        UrlRecipe,
        username=st.one_of(st.none(), st.sampled_from(["user", "", "u@x", "ü"])),
        password=st.one_of(st.none(), secret),
        host=st.one_of(st.none(), st.none(), st.sampled_from(MALFORMED_HOSTS)),
        options=st.lists(
            st.tuples(
                st.one_of(
                    st.sampled_from(["prefix", "timeout"]),
                    st.text(alphabet="abcxyz_", min_size=1, max_size=6).map(
                        lambda name: f"zz{name}"
                    ),
                ),
                option_value,
            ),
            max_size=2,
            unique_by=lambda option: option[0],
        ),
        raw_query=st.sampled_from(["", "", "", "&&", "=x", "prefix=a&prefix=b", "%zz=1"]),
    )
