"""Keys: validation of keys, prefixes, values and globs, and prefix membership.

Validation runs before a driver is called, so rejected input never reaches a backend
and nothing is partially written. :func:`in_prefix` is the one definition of which
full keys a driver prefix covers, shared by the core and the drivers.
"""

from __future__ import annotations

import functools
import math
import re

from libkv.errors import InvalidArgumentError, InvalidKeyError, InvalidValueError

__all__ = [
    "MAX_KEY_BYTES",
    "check_timeout",
    "compile_glob",
    "glob_prefix",
    "in_prefix",
    "normalize_key",
    "normalize_prefix",
    "to_bytes",
]

MAX_KEY_BYTES = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@functools.lru_cache(maxsize=4096)
def _check(text: str, allow_empty: bool) -> str:
    key = text.strip("/")
    if not key:
        if allow_empty:
            return ""
        raise InvalidKeyError(f"empty key: {text!r}")
    if _CONTROL.search(key):
        raise InvalidKeyError(f"control character in key: {text!r}")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"key longer than {MAX_KEY_BYTES} UTF-8 bytes: {text[:40]!r}...")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKeyError(f"empty, '.' or '..' segment in key: {text!r}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidKeyError(f"key is not valid Unicode text: {text!r}") from error
    return key


def normalize_key(key: object) -> str:
    """Return ``key`` without leading/trailing ``/``; raise InvalidKeyError if malformed."""
    if type(key) is not str:
        raise InvalidKeyError(f"key must be str, not {type(key).__name__}")
    return _check(key, False)


def normalize_prefix(prefix: object) -> str:
    """Like :func:`normalize_key`, but ``""`` (the whole namespace) is allowed."""
    if type(prefix) is not str:
        raise InvalidKeyError(f"prefix must be str, not {type(prefix).__name__}")
    return _check(prefix, True)


def to_bytes(value: object) -> bytes:
    """Return ``value`` as bytes: bytes-like values copied, ``str`` encoded as UTF-8."""
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InvalidValueError(f"value is not valid Unicode text: {error}") from error
    raise InvalidValueError(f"value must be bytes-like or str, not {type(value).__name__}")


def in_prefix(key: str, prefix: str) -> bool:
    """Whether ``key`` is under the driver prefix ``prefix``.

    ``""`` covers every key, ``"p/"`` every key starting with ``p/``, and ``"p"`` the
    key ``p`` itself and every key starting with ``p/`` (never ``pq``).
    """
    if not prefix:
        return True
    if prefix[-1] == "/":
        return key.startswith(prefix)
    return key == prefix or key.startswith(prefix + "/")


def check_timeout(timeout: object) -> float | None:
    """A wait's timeout: None (no bound) or a number of seconds, not NaN.

    Raises InvalidArgumentError for anything else. What a negative or infinite
    timeout means is the caller's to say.
    """
    if timeout is None:
        return None
    if not isinstance(timeout, bool) and isinstance(timeout, (int, float)):
        try:
            seconds = float(timeout)
        except OverflowError:  # an int beyond any float: no bound, in effect
            seconds = math.inf if timeout > 0 else -math.inf
        if not math.isnan(seconds):
            return seconds
    raise InvalidArgumentError(f"timeout must be a number of seconds or None, not {timeout!r:.60}")


def glob_prefix(pattern: str) -> str:
    """The longest run of whole literal segments a glob pattern starts with."""
    literal: list[str] = []
    for segment in pattern.split("/"):
        if any(character in segment for character in "*?["):
            break
        literal.append(segment)
    return "/".join(literal)


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a key glob: ``*``/``?`` stay within a segment, ``**`` spans segments.

    ``[abc]``/``[!abc]`` are character classes (never matching ``/``). A ``**``
    segment also matches zero segments, so ``a/**/b`` matches ``a/b``. A malformed
    pattern (not str, a control character, an empty, unterminated or reversed
    class such as ``[]`` or ``[z-a]``) raises InvalidArgumentError.
    """
    if type(pattern) is not str:
        raise InvalidArgumentError(f"glob pattern must be str, not {type(pattern).__name__}")
    pattern = pattern.strip("/")
    if _CONTROL.search(pattern):
        raise InvalidArgumentError(f"control character in glob pattern: {pattern!r}")
    out: list[str] = []
    index = 0
    length = len(pattern)
    while index < length:
        character = pattern[index]
        if pattern.startswith("**", index):
            at_segment_start = index == 0 or pattern[index - 1] == "/"
            at_segment_end = index + 2 == length or pattern[index + 2] == "/"
            if at_segment_start and at_segment_end and index + 2 < length:
                out.append("(?:.*/)?")  # '**/' : zero or more whole segments
                index += 3
            else:
                out.append(".*")
                index += 2
        elif character == "*":
            out.append("[^/]*")
            index += 1
        elif character == "?":
            out.append("[^/]")
            index += 1
        elif character == "[":
            regex, index = _character_class(pattern, index)
            out.append(regex)
        else:
            out.append(re.escape(character))
            index += 1
    try:
        return re.compile("".join(out) + r"\Z", re.DOTALL)
    except re.error as error:  # e.g. a range whose ends are reversed: [z-a]
        raise InvalidArgumentError(f"malformed glob pattern {pattern!r}: {error}") from None


def _character_class(pattern: str, start: int) -> tuple[str, int]:
    """The regex for the class ``[...]`` opening at ``pattern[start]``, and where it ends."""
    end = pattern.find("]", start + 1)
    if end == -1:
        raise InvalidArgumentError(f"unterminated character class in glob pattern: {pattern!r}")
    body = pattern[start + 1 : end]
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    if not body:
        raise InvalidArgumentError(f"empty character class in glob pattern: {pattern!r}")
    items: list[str] = []
    index = 0
    while index < len(body):  # single characters and ranges, each escaped for a class
        if index + 2 < len(body) and body[index + 1] == "-":
            first, last = body[index], body[index + 2]
            if first > last:
                raise InvalidArgumentError(
                    f"malformed glob pattern {pattern!r}: reversed range {first}-{last}"
                )
            items.append(f"{_class_character(first)}-{_class_character(last)}")
            index += 3
        else:  # a '-' that opens or closes the class is the character itself
            items.append(_class_character(body[index]))
            index += 1
    members = "".join(items)
    return (f"[^/{members}]" if negate else f"(?!/)[{members}]"), end + 1


def _class_character(character: str) -> str:
    """``character`` as a literal member of a regex character class."""
    return "\\" + character if character in "\\]-^[" else character
