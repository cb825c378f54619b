"""StoreURL: an immutable, validated store URL.

``scheme://[user[:password]@]host[:port][,host[:port]...][/path][?option=value&...]``

Secrets are never rendered: ``str()`` and ``repr()`` show the password, and the value
of every option whose name contains ``pass``, ``token``, ``secret`` or ``credential``,
as ``***`` (``render(hide_password=False)`` gives them back). Errors raised while
parsing quote the text only through :func:`redact_url`, whatever its shape (one
slash, an unencoded ``/``, ``?``, ``#`` or ``@`` in the password...).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote

from libkv.errors import InvalidArgumentError, InvalidURLError

__all__ = [
    "StoreURL",
    "is_scheme",
    "is_secret_option",
    "parse_bool",
    "parse_positive_int",
    "parse_seconds",
    "redact_url",
    "secrets_in_url",
]

T = TypeVar("T")

_SCHEME_NAME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")
# What redact_url keeps: a leading "scheme:" and its slashes, however many.
_SCHEME_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:/*")
_SECRET_OPTION = re.compile(r"pass|token|secret|credential", re.IGNORECASE)
_SECRET_QUERY_VALUE = re.compile(
    r"([?&;][^=&;#]*(?:pass|token|secret|credential)[^=&;#]*=)[^&;#]*", re.IGNORECASE
)
_USERINFO_LIKE = re.compile(r"/*[^/@]*:[^@]*@")
_ENCODE_HINT = "percent-encode '/', '?', '#' and '@' in a password"


def is_scheme(name: object) -> bool:
    """Whether ``name`` is a scheme name (RFC 3986: an ASCII letter, then ASCII letters,
    digits, ``+``, ``-`` or ``.``).

    The one rule for both :meth:`StoreURL.parse` and :func:`libkv.register`.
    """
    return isinstance(name, str) and _SCHEME_NAME.match(name) is not None


def is_secret_option(name: str) -> bool:
    """Whether an option's value is a credential, never to be rendered."""
    return _SECRET_OPTION.search(name) is not None


def redact_url(text: str) -> str:
    """``text`` with everything that may be a credential replaced by ``***``.

    Whatever the text's shape: everything between the scheme (with any number of
    slashes) and the last ``@`` is userinfo, and secret options' values are hidden.
    Parts of the path or query may be hidden too; that is the price of never showing
    a password.
    """
    match = _SCHEME_PREFIX.match(text)
    start = match.end() if match else 0
    head, rest = text[:start], text[start:]
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return head + _SECRET_QUERY_VALUE.sub(r"\1***", rest)


def secrets_in_url(text: str) -> list[str]:
    """The substrings of a URL text that may be credentials, longest first.

    The password (as written and decoded) of the userinfo found the way
    :func:`redact_url` finds it, and the values of secret options. For scrubbing text
    that quotes a URL by other means (a backend's error, a command line).
    """
    found: set[str] = set()
    match = _SCHEME_PREFIX.match(text)
    rest = text[match.end() if match else 0 :]
    if "@" in rest:
        userinfo = rest.rpartition("@")[0]
        found.add(userinfo.partition(":")[2] if ":" in userinfo else userinfo)
    for secret in _SECRET_QUERY_VALUE.finditer(rest):
        found.add(rest[secret.end(1) : secret.end()])
    found |= {unquote(secret) for secret in found}
    return sorted((secret for secret in found if secret), key=len, reverse=True)


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
        """Parse ``text``; raise InvalidURLError if it is not a store URL.

        The error quotes ``text`` only through :func:`redact_url`.
        """
        if not isinstance(text, str):
            raise InvalidURLError(f"store URL must be str, not {type(text).__name__}")
        text = text.strip()
        shown = redact_url(text)
        scheme, separator, rest = text.partition("://")
        if not separator or not is_scheme(scheme):
            raise InvalidURLError(f"not a store URL (expected scheme://...): {shown!r}")
        scheme = scheme.lower()
        rest, _, query = rest.partition("?")
        rest, _, fragment = rest.partition("#")
        authority, slash, path = rest.partition("/")
        if authority and "@" not in authority and "@" in text[len(scheme) + 3 + len(authority) :]:
            # user:pa/ss@host would otherwise read as host "user", port "pa".
            raise InvalidURLError(
                f"'@' after the host in store URL {shown!r}: {_ENCODE_HINT} (%40 for '@')"
            )
        if not authority and _USERINFO_LIKE.match(path):
            # redis:///user:password@host: credentials where the path starts.
            raise InvalidURLError(f"credentials in the path of store URL {shown!r}: one '//'")
        if fragment:
            raise InvalidURLError(f"store URLs take no #fragment: {shown!r}")
        username = password = None
        if "@" in authority:
            credentials, _, authority = authority.rpartition("@")
            user, colon, secret = credentials.partition(":")
            username = unquote(user)
            password = unquote(secret) if colon else None
        hosts = (
            tuple(_parse_host(part, shown) for part in authority.split(",") if part)
            if authority
            else ()
        )
        options: dict[str, object] = {}
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError as error:
            raise InvalidURLError(f"malformed query in store URL {shown!r}") from error
        for name, value in pairs:
            if name in options:
                raise InvalidURLError(f"option {_quoted(name, shown)}given twice in {shown!r}")
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
                if is_secret_option(name):
                    raise InvalidURLError(f"invalid value for option {name!r}") from None
                raise InvalidURLError(
                    f"invalid value for option {name!r}: {raw!r} ({error})"
                ) from error
        return result

    def render(self, *, hide_password: bool = True) -> str:
        """The URL as text; the password and secret options are ``***`` unless asked for."""
        credentials = ""
        if self.username is not None or self.password is not None:
            credentials = quote(self.username or "", safe="")
            if self.password is not None:
                credentials += ":" + ("***" if hide_password else quote(self.password, safe=""))
            credentials += "@"
        hosts = ",".join(_render_host(host, port) for host, port in self.hosts)
        query = "&".join(
            f"{quote(name, safe='')}="
            + ("***" if hide_password and is_secret_option(name) else quote(str(value), safe="/:,"))
            for name, value in self.options.items()
        )
        path = self.path
        if hide_password and "@" in path:
            # sqlite:///user:pw@host: a mistyped URL whose password landed in the path.
            path = path[: len(path) - len(path.lstrip("/"))] + "***@" + path.rpartition("@")[2]
        return f"{self.scheme}://{credentials}{hosts}{quote(path, safe='/:@*')}" + (
            f"?{query}" if query else ""
        )

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return f"StoreURL({self.render()!r})"


def _parse_host(part: str, shown: str) -> tuple[str, int | None]:
    """One ``host[:port]`` of the authority; errors quote only what ``shown`` shows."""
    if part.startswith("["):
        end = part.find("]")
        if end == -1:
            raise InvalidURLError(f"unterminated IPv6 address in store URL {shown!r}")
        host, rest = part[1:end], part[end + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidURLError(f"malformed host {_quoted(part, shown)}in store URL {shown!r}")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = part.partition(":")
    if not host:
        raise InvalidURLError(f"empty host in store URL {shown!r}")
    if port_text == "":
        return unquote(host), None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidURLError(f"invalid port {_quoted(port_text, shown)}in store URL {shown!r}")
    return unquote(host), int(port_text)


def _quoted(part: str, shown: str) -> str:
    """``'part' `` if the redacted text shows ``part`` anyway, else nothing."""
    return f"{part!r} " if part and part in shown else ""


def _render_host(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else quote(host, safe=".-_~")
    return shown if port is None else f"{shown}:{port}"


def parse_bool(value: object) -> bool:
    """Accept a bool, or ``1/0``, ``true/false``, ``yes/no``, ``on/off`` as text.

    InvalidArgumentError otherwise, as from every ``parse_*`` helper;
    :meth:`StoreURL.read_options` turns it into InvalidURLError naming the option.
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise InvalidArgumentError("expected true or false")


def parse_seconds(value: object) -> float:
    """A positive, finite number of seconds."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidArgumentError("expected a number of seconds") from None
    if not 0 < seconds < float("inf"):
        raise InvalidArgumentError("expected a positive number of seconds")
    return seconds


def parse_positive_int(value: object) -> int:
    """A whole number > 0."""
    try:
        number = int(str(value))
    except ValueError:
        raise InvalidArgumentError("expected a positive integer") from None
    if number <= 0:
        raise InvalidArgumentError("expected a positive integer")
    return number
