"""The oracle: what the contract says about keys, values, ttls, versions and globs.

Written from the contract alone, independently of `libkv.keys` and the core's
validation, so that the property tests compare the store against a second reading of
the contract rather than against the code under test.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

from libkv import Capabilities
from libkv.testing.conformance.bounds import LARGEST_VERSION

MAX_KEY_BYTES = 1024


def normalized_key(key: object, *, prefix: bool = False) -> str | None:
    """The key the contract makes of `key`, or None if it must raise InvalidKeyError.

    Leading and trailing `/` are stripped; empty (unless a prefix), an empty, `.` or
    `..` segment, a C0/DEL/C1 control character, invalid Unicode or more than 1024
    UTF-8 bytes is invalid, and so is anything but a `str`.
    """
    if type(key) is not str:
        return None
    text = key.strip("/")
    if not text:
        return "" if prefix else None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None
    if size > MAX_KEY_BYTES:
        return None
    if any(ord(character) < 0x20 or 0x7F <= ord(character) <= 0x9F for character in text):
        return None
    if any(segment in ("", ".", "..") for segment in text.split("/")):
        return None
    return text


def encoded_value(value: object) -> bytes | None:
    """The bytes the contract stores for `value`, or None if it must raise InvalidValueError."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            return None
    return None


def valid_ttl(ttl: object, capabilities: Capabilities) -> bool:
    """A finite number (not a bool), > 0, from ttl_min to ttl_max."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        return False
    return math.isfinite(ttl) and ttl > 0 and capabilities.ttl_min <= ttl <= capabilities.ttl_max


def valid_version(version: object) -> bool:
    """An int (not a bool) from 0 to 2**63 - 1."""
    return type(version) is int and 0 <= version <= LARGEST_VERSION


def under(key: str, prefix: str) -> bool:
    """Whether `key` is under `prefix` in the contract's sense."""
    return not prefix or key == prefix or key.startswith(prefix + "/")


class GlobError(Exception):
    """The oracle found the pattern malformed."""


def _parse_class(pattern: str, start: int) -> tuple[tuple[bool, list[tuple[str, str]]], int]:
    """A `[...]` class starting at `start`: ((negated, ranges), index after it)."""
    index = start + 1
    negated = pattern[index : index + 1] == "!"
    if negated:
        index += 1
    end = pattern.find("]", index)
    if end == -1:
        raise GlobError("unterminated class")
    body = pattern[index:end]
    if not body:
        raise GlobError("empty class")
    ranges: list[tuple[str, str]] = []
    position = 0
    while position < len(body):
        if position + 2 < len(body) and body[position + 1] == "-":
            low, high = body[position], body[position + 2]
            if low > high:
                raise GlobError("reversed range")
            ranges.append((low, high))
            position += 3
        else:
            ranges.append((body[position], body[position]))
            position += 1
    return (negated, ranges), end + 1


def glob_matcher(pattern: str) -> Callable[[str], bool]:
    """The contract's glob: `*`/`?`/classes within a segment, `**` across segments,
    and a whole `**/` segment also matching zero segments. GlobError if malformed."""
    text = pattern.strip("/")
    tokens: list[tuple[str, object]] = []
    index = 0
    while index < len(text):
        character = text[index]
        if text.startswith("**", index):
            segment_start = index == 0 or text[index - 1] == "/"
            if segment_start and text[index + 2 : index + 3] == "/":
                tokens.append(("segments", None))
                index += 3
            else:
                tokens.append(("span", None))
                index += 2
        elif character == "*":
            tokens.append(("star", None))
            index += 1
        elif character == "?":
            tokens.append(("one", None))
            index += 1
        elif character == "[":
            parsed, index = _parse_class(text, index)
            tokens.append(("class", parsed))
        else:
            tokens.append(("literal", character))
            index += 1

    @functools.cache
    def match(token: int, position: int, key: str) -> bool:
        if token == len(tokens):
            return position == len(key)
        kind, argument = tokens[token]
        if kind == "literal":
            return key[position : position + 1] == argument and match(token + 1, position + 1, key)
        if kind in ("one", "class"):
            if position >= len(key) or key[position] == "/":
                return False
            if kind == "class":
                assert isinstance(argument, tuple)
                negated, ranges = argument
                inside = any(low <= key[position] <= high for low, high in ranges)
                if inside == negated:
                    return False
            return match(token + 1, position + 1, key)
        if kind == "star":
            end = key.find("/", position)
            end = len(key) if end == -1 else end
            return any(match(token + 1, stop, key) for stop in range(position, end + 1))
        if kind == "span":
            return any(match(token + 1, stop, key) for stop in range(position, len(key) + 1))
        # "segments": zero or more whole segments, each ending with "/".
        if match(token + 1, position, key):
            return True
        return any(
            key[stop] == "/" and match(token + 1, stop + 1, key)
            for stop in range(position, len(key))
        )

    return lambda key: match(0, 0, key)
