"""libkv keys as znode paths, and back.

A key's segments become path segments. ZooKeeper refuses some characters in paths
(every code point outside the Basic Multilingual Plane, which Java sees as surrogates,
private-use and U+FFF0..U+FFFF, and control characters), so those, and ``%`` itself,
are percent-encoded as UTF-8 (``😀`` is ``%F0%9F%98%80``, ``%`` is ``%25``). Every other
character is kept, so the tree reads naturally in ``zkCli``.

A znode name that does not come back unchanged through decoding and encoding (such
as ``%libkv``, where the driver keeps its bookkeeping, or a foreign ``%41``) is not a
key, and nothing under it is.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

__all__ = ["decode_segment", "encode_segment", "flatten", "unflatten"]

_UNSAFE = re.compile("[%\x00-\x1f\x7f-\x9f\ud800-\uf8ff\ufff0-\U0010ffff]")


def _escape(match: re.Match[str]) -> str:
    return quote(match.group(0), safe="")


def encode_segment(segment: str) -> str:
    """The znode name of one key segment."""
    return _UNSAFE.sub(_escape, segment)


def decode_segment(name: str) -> str | None:
    """The key segment a znode name stands for, or None if it is not one."""
    if "%" not in name:
        return None if _UNSAFE.search(name) else name
    try:
        segment = unquote(name, errors="strict")
    except UnicodeDecodeError:
        return None
    return segment if encode_segment(segment) == name else None


def flatten(relative_path: str) -> str:
    """One znode name for a relative path (``a/b`` is ``a%2Fb``; segments never hold ``%2F``)."""
    return relative_path.replace("/", "%2F")


def unflatten(name: str) -> str:
    """The relative path :func:`flatten` made ``name`` from."""
    return name.replace("%2F", "/")
