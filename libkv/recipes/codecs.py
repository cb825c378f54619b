"""The typed view's values: codecs, decoded pairs and events, and the decoding error.

Plain (no I/O), shared by both flavours of :class:`~libkv.recipes.TypedStore`, so that
``DecodeError`` and ``TypedPair`` are one class whether a value was read by
:mod:`libkv.recipes` or by :mod:`libkv.aio.recipes`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from libkv.errors import InvalidValueError, KVError
from libkv.model import Action, Event, KVPair
from libkv.ops import Op

__all__ = [
    "Codec",
    "DecodeError",
    "JSONCodec",
    "TextCodec",
    "TypedEvent",
    "TypedPair",
    "decode_event",
    "decode_pair",
    "encode_ops",
    "encode_value",
]

T = TypeVar("T")


class Codec(Protocol[T]):
    """Turns values into bytes (or ``str``, stored as UTF-8) and back."""

    def encode(self, value: T, /) -> bytes | str: ...

    def decode(self, data: bytes, /) -> T: ...


class JSONCodec:
    """JSON values (dicts, lists, strings, numbers, booleans, None) as compact UTF-8."""

    def __repr__(self) -> str:
        return "JSONCodec()"

    def encode(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, data: bytes) -> Any:
        return json.loads(data)


class TextCodec:
    """``str`` values in ``encoding`` (UTF-8 by default); anything else is refused."""

    def __init__(self, encoding: str = "utf-8") -> None:
        self.encoding = encoding

    def __repr__(self) -> str:
        return f"TextCodec({self.encoding!r})"

    def encode(self, value: str) -> bytes:
        if not isinstance(value, str):
            raise TypeError(f"TextCodec encodes str, not {type(value).__name__}")
        return value.encode(self.encoding)

    def decode(self, data: bytes) -> str:
        return data.decode(self.encoding)


class DecodeError(KVError, ValueError):
    """A stored value the codec could not decode; ``key`` and ``version`` name it."""

    def __init__(self, message: str, key: str, version: int) -> None:
        super().__init__(message)
        self.key = key
        self.version = version


@dataclass(frozen=True, slots=True)
class TypedPair(Generic[T]):
    """A key, its decoded value, and the version of its last write."""

    key: str
    value: T
    version: int


@dataclass(frozen=True, slots=True)
class TypedEvent(Generic[T]):
    """A watch :class:`~libkv.Event` with decoded pairs (same fields, same meaning)."""

    action: Action
    key: str
    pair: TypedPair[T] | None
    revision: int
    snapshot: tuple[TypedPair[T], ...] = ()


def encode_value(codec: Codec[T], key: str, value: T) -> bytes | str:
    """``value`` encoded; InvalidValueError naming ``key`` if the codec refuses it."""
    try:
        return codec.encode(value)
    except Exception as error:
        raise InvalidValueError(
            f"{codec!r} cannot encode the value for {key!r}: {error}"
        ) from error


def encode_ops(codec: Codec[Any], ops: Iterable[Op]) -> list[Op]:
    """``ops`` with the value of every write encoded (anything else passed on as is)."""
    return [
        dataclasses.replace(op, value=encode_value(codec, op.key, op.value))  # type: ignore[arg-type]
        if isinstance(op, Op) and op.kind.writes
        else op
        for op in ops
    ]


def decode_pair(codec: Codec[T], pair: KVPair) -> TypedPair[T]:
    """``pair`` with its value decoded; DecodeError naming the key and version if it fails."""
    try:
        value = codec.decode(pair.value)
    except Exception as error:
        raise DecodeError(
            f"{codec!r} cannot decode the value of {pair.key!r} (version {pair.version}): {error}",
            pair.key,
            pair.version,
        ) from error
    return TypedPair(pair.key, value, pair.version)


def decode_event(codec: Codec[T], event: Event) -> TypedEvent[T]:
    """``event`` decoded whole: never half an event (DecodeError if any value fails)."""
    pair = None if event.pair is None else decode_pair(codec, event.pair)
    snapshot = tuple(decode_pair(codec, item) for item in event.snapshot)
    return TypedEvent(event.action, event.key, pair, event.revision, snapshot)
