"""The calls an example makes: `Call`, one Store call with possibly bad arguments, and
the `Symbol`s in it that are resolved against the store or the model when it runs."""

from __future__ import annotations

import dataclasses
import math

from libkv import Capabilities

LONG_TTL = 3600.0
"""A ttl no example outlives: a key written with it is as good as permanent here."""


@dataclasses.dataclass(frozen=True)
class Symbol:
    """An input resolved against the store or the model when the example runs
    (`ttl_min`, `current version`, ...); shown by name in a falsifying example."""

    name: str

    def __repr__(self) -> str:
        return self.name


AT_MAX = Symbol("<value of exactly max_value_size bytes>")
OVER_MAX = Symbol("<value of max_value_size + 1 bytes>")
CURRENT = Symbol("<the key's current version>")
STALE = Symbol("<a version the key is not at>")


def resolve_ttl(ttl: object, capabilities: Capabilities) -> object:
    """A ttl symbol's value for this store."""
    if not isinstance(ttl, Symbol):
        return ttl
    return {
        "ttl_min": capabilities.ttl_min,
        "just below ttl_min": math.nextafter(capabilities.ttl_min, -math.inf),
        "ttl_max": capabilities.ttl_max,
        "just above ttl_max": math.nextafter(capabilities.ttl_max, math.inf),
        "twice ttl_max": capabilities.ttl_max * 2,
    }[ttl.name]


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of the Store API with (possibly bad) arguments, readable when printed."""

    kind: str
    key: object = "a"
    value: object = b""
    version: object = None
    ttl: object = None
    items: tuple[Call, ...] = ()
    pad: bool = False

    def __repr__(self) -> str:
        containers = ("get_many", "put_many", "transaction")
        shown = {
            "key": None if self.kind in containers else self.key,
            "value": self.value,
            "version": self.version,
            "ttl": self.ttl,
            "items": self.items or None,
            "pad": self.pad or None,
        }
        arguments = ", ".join(
            f"{name}={_short(value)}"
            for name, value in shown.items()
            if value is not None and (value or name in ("key", "version", "ttl"))
        )
        return f"{self.kind}({arguments})"


def _short(value: object) -> str:
    """repr(value), with a long value (one of max_value_size bytes) cut to its length."""
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) > 64:
        return f"<{len(value)} bytes>"
    return repr(value)
