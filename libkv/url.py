"""StoreURL: an immutable, validated store URL.

``scheme://[user[:password]@]host[:port][,host[:port]...][/path][?option=value&...]``

The password is never rendered by ``str()`` or ``repr()``; use
``render(hide_password=False)`` to get it back.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote

from libkv.errors import InvalidURLError

__all__ = ["StoreURL", "parse_bool", "parse_positive_int", "parse_seconds"]

T = TypeVar("T")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://(.*)$", re.DOTALL)


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL. Options hold strings from the query or objects from keywords."""

    scheme: str
    hosts: tuple[tuple[str, int | None], ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    path: str = ""
    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def parse(cls, text: str) -> StoreURL:
        """Parse ``text``; raise InvalidURLError if it is not a store URL."""
        if not isinstance(text, str):
            raise InvalidURLError(f"store URL must be str, not {type(text).__name__}")
        match = _SCHEME.match(text.strip())
        if not match:
            raise InvalidURLError(f"not a store URL (expected scheme://...): {_redact(text)!r}")
        scheme, rest = match.group(1).lower(), match.group(2)
        rest, _, query = rest.partition("?")
        rest, _, fragment = rest.partition("#")
        if fragment:
            raise InvalidURLError("store URLs take no #fragment")
        authority, slash, path = rest.partition("/")
        username = password = None
        if "@" in authority:
            credentials, _, authority = authority.rpartition("@")
            user, colon, secret = credentials.partition(":")
            username = unquote(user)
            password = unquote(secret) if colon else None
        hosts = (
            tuple(_parse_host(part, text) for part in authority.split(",") if part)
            if authority
            else ()
        )
        options: dict[str, object] = {}
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError as error:
            raise InvalidURLError(f"malformed query in store URL: {query!r}") from error
        for name, value in pairs:
            if name in options:
                raise InvalidURLError(f"option {name!r} given twice")
            options[name] = value
        return cls(
            scheme=scheme,
            hosts=hosts,
            username=username,
            password=password,
            path=unquote(slash + path) if slash else "",
            options=MappingProxyType(options),
        )

    def with_options(self, **options: object) -> StoreURL:
        """A copy whose options are updated by ``options`` (keywords win over the query)."""
        if not options:
            return self
        merged = dict(self.options)
        merged.update(options)
        return dataclasses.replace(self, options=MappingProxyType(merged))

    @property
    def host(self) -> str | None:
        """The first host, or None."""
        return self.hosts[0][0] if self.hosts else None

    @property
    def port(self) -> int | None:
        """The first host's port, or None."""
        return self.hosts[0][1] if self.hosts else None

    def read_options(self, spec: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
        """Convert every option with the parser ``spec`` names for it.

        Raises InvalidURLError naming any option not in ``spec`` (``prefix`` is
        always accepted) and any value its parser rejects. Options absent from the
        URL are absent from the result.
        """
        accepted: dict[str, Callable[[Any], Any]] = {"prefix": str, **spec}
        result: dict[str, Any] = {}
        for name, raw in self.options.items():
            parser = accepted.get(name)
            if parser is None:
                known = ", ".join(sorted(accepted))
                raise InvalidURLError(
                    f"unknown option {name!r} for {self.scheme}:// (accepted: {known})"
                )
            try:
                result[name] = parser(raw)
            except (TypeError, ValueError) as error:
                raise InvalidURLError(
                    f"invalid value for option {name!r}: {raw!r} ({error})"
                ) from error
        return result

    def render(self, *, hide_password: bool = True) -> str:
        """The URL as text; the password is shown as ``***`` unless asked for."""
        credentials = ""
        if self.username is not None or self.password is not None:
            credentials = quote(self.username or "", safe="")
            if self.password is not None:
                credentials += ":" + ("***" if hide_password else quote(self.password, safe=""))
            credentials += "@"
        hosts = ",".join(_render_host(host, port) for host, port in self.hosts)
        query = "&".join(
            f"{quote(name, safe='')}={quote(str(value), safe='/:,')}"
            for name, value in self.options.items()
        )
        return f"{self.scheme}://{credentials}{hosts}{quote(self.path, safe='/:@')}" + (
            f"?{query}" if query else ""
        )

    def __str__(self) -> str:
        return self.render()


def _parse_host(part: str, text: str) -> tuple[str, int | None]:
    if part.startswith("["):
        end = part.find("]")
        if end == -1:
            raise InvalidURLError(f"unterminated IPv6 address in store URL: {_redact(text)!r}")
        host, rest = part[1:end], part[end + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidURLError(f"malformed host {part!r} in store URL")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = part.partition(":")
    host = unquote(host)
    if not host:
        raise InvalidURLError(f"empty host in {part!r}")
    if port_text == "":
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidURLError(f"invalid port {port_text!r} for host {host!r}")
    return host, int(port_text)


def _render_host(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else quote(host, safe=".-_~")
    return shown if port is None else f"{shown}:{port}"


def _redact(text: str) -> str:
    return re.sub(r"(//[^/@:]*:)[^@/]*@", r"\1***@", text)


def parse_bool(value: object) -> bool:
    """Accept a bool, or ``1/0``, ``true/false``, ``yes/no``, ``on/off`` as text."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def parse_seconds(value: object) -> float:
    """A positive, finite number of seconds."""
    seconds = float(value)  # type: ignore[arg-type]
    if not 0 < seconds < float("inf"):
        raise ValueError("expected a positive number of seconds")
    return seconds


def parse_positive_int(value: object) -> int:
    """A whole number > 0."""
    number = int(str(value))
    if number <= 0:
        raise ValueError("expected a positive integer")
    return number
