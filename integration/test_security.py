"""Security on every network backend, against real servers configured to require it.

For each backend in ``BACKENDS``:

- TLS with a client certificate round-trips; without an accepted client certificate the
  server's refusal is a typed error (``AuthenticationError`` or ``NotReachableError``,
  never ``UnknownOutcomeError``: the server ran nothing).
- A server whose certificate was not signed by the CA the client trusts is refused with
  ``NotReachableError`` (on every backend: the client ends the TLS handshake before a
  request is sent, exactly as if nothing answered, so a write is not
  ``UnknownOutcomeError`` either), within the store's timeout, and the message says
  it is about the certificate.
- The right credentials work; a wrong password or token raises ``AuthenticationError``
  and writes nothing.
- The secrets (the right ones and the wrong ones, raw and URL-encoded) appear nowhere:
  not in ``repr(store)``, ``str(store.url)``, any error's text or its ``__cause__`` /
  ``__context__`` chain, any log record (everything at DEBUG, libkv's and the client
  libraries'), anything the process writes to its stdout/stderr file descriptors, nor
  the CLI's output (``python -m libkv --url URL get x`` and ``ls``).

A backend is one ``Backend`` entry: the session fixture of its TLS server, a factory of
a server that requires a given secret, and how to spell its URLs.
"""

from __future__ import annotations

import logging
import secrets
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

import pytest

import libkv
from integration.servers import (
    Certificates,
    ConsulServer,
    EtcdServer,
    RedisServer,
    ServerProcess,
    ZooKeeperServer,
    free_port,
    make_test_certificates,
)

TIMEOUT = 2.0  # the stores' timeout (seconds)
# What a refusal may take beyond the store's timeout on a loaded 2-core machine
# (scheduling, thread hand-offs); a refusal that waits for the timeout is still within it.
SCHEDULING_SLACK = 1.0
CLI_TIMEOUT = 60.0
# Characters a URL must encode, a space and quotes: a secret that is not encoded right
# breaks the URL, and one that is leaked shows in any of its encodings.
SPECIAL = "/@:?#%&+= '\";"


def make_secret(label: str) -> str:
    """A distinctive secret: ``S3cr3t-<label>-<random>`` and characters that need
    URL-encoding."""
    return f"S3cr3t-{label}-{secrets.token_hex(4)}{SPECIAL}"


def secret_forms(secret: str) -> list[str]:
    """Every spelling of ``secret`` a leak could take: raw, URL-encoded (path and query
    style) and its distinctive ASCII core, which every encoding keeps intact."""
    core = secret.removesuffix(SPECIAL)
    return [secret, quote(secret, safe=""), quote(secret), quote_plus(secret), core]


def assert_no_secret(text: str, *secrets_: str, where: str) -> None:
    for secret in secrets_:
        for form in secret_forms(secret):
            assert form not in text, f"a secret ({form[:10]}...) appears in {where}:\n{text}"


def url_with(base: str, credentials: str, prefix: str, **options: object) -> str:
    """``base`` (``scheme://host:port``) with ``credentials`` (``user:password@``,
    ``token@`` or empty, already encoded), the namespace ``prefix``, the store timeout and
    ``options``."""
    scheme, _, address = base.partition("://")
    query = urlencode({"prefix": prefix, "timeout": TIMEOUT, **options})
    return f"{scheme}://{credentials}{address}?{query}"


TLSURL = Callable[[Any, Path, Certificates | None, str], str]


@dataclass(frozen=True)
class Backend:
    """How the security tests reach one backend.

    ``tls_fixture`` names the session fixture of a server that serves only TLS and
    requires a client certificate signed by its ``certificates.ca``; ``tls_url(server,
    ca, client, prefix)`` is a URL trusting ``ca`` and presenting ``client`` (None: no
    client certificate). ``auth_server(secret)`` makes a server that requires ``secret``
    (a password or token); ``auth_url(server, secret, prefix)`` is a URL presenting
    ``secret``; ``anonymous_url(server, prefix)`` presents none.
    """

    name: str
    tls_fixture: str
    tls_url: TLSURL
    auth_server: Callable[[str], ServerProcess]
    auth_url: Callable[[Any, str, str], str]
    anonymous_url: Callable[[Any, str], str]
    # A URL with the right secret for keys the server's user may not touch (None where
    # the server's credential is not limited to some keys).
    forbidden_url: Callable[[Any, str, str], str] | None = None


def tls_urls(ca: str, cert: str, key: str, **options: object) -> TLSURL:
    """``Backend.tls_url`` for a driver whose URL options for the CA, the client
    certificate and its key are named ``ca``, ``cert`` and ``key``."""

    def tls_url(server: Any, trusted: Path, client: Certificates | None, prefix: str) -> str:
        files = {} if client is None else {cert: client.client, key: client.client_key}
        return url_with(server.url, "", prefix, **options, **{ca: trusted}, **files)

    return tls_url


def user_part(user: str | None, secret: str) -> str:
    """``user:secret@`` (or ``secret@`` without a user), URL-encoded."""
    return ("" if user is None else quote(user, safe="") + ":") + quote(secret, safe="") + "@"


BACKENDS = [
    Backend(
        "redis",
        tls_fixture="redis_tls_server",
        tls_url=tls_urls("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"),
        # An ACL user (the default user is off) limited to libkv's hash tag.
        auth_server=lambda secret: RedisServer(acl=True, password=secret),
        auth_url=lambda server, secret, prefix: url_with(
            server.url, user_part(server.username, secret), prefix
        ),
        anonymous_url=lambda server, prefix: url_with(server.url, "", prefix),
        forbidden_url=lambda server, secret, prefix: url_with(
            server.url, user_part(server.username, secret), prefix, hashtag="other"
        ),
    ),
    Backend(
        "etcd",
        tls_fixture="etcd_tls_server",
        tls_url=tls_urls("ca", "cert", "key"),
        # A user whose role may read and write under key_prefix only (and a root user).
        auth_server=lambda secret: EtcdServer(auth=True, password=secret),
        auth_url=lambda server, secret, prefix: url_with(
            server.url, user_part(server.username, secret), server.key_prefix + prefix
        ),
        anonymous_url=lambda server, prefix: url_with(server.url, "", server.key_prefix + prefix),
        forbidden_url=lambda server, secret, prefix: url_with(
            server.url, user_part(server.username, secret), "other/" + prefix
        ),
    ),
    Backend(
        "consul",
        tls_fixture="consul_tls_server",
        tls_url=tls_urls("ca", "cert", "key", session_ttl_min=1),
        # ACLs on with default deny; the secret is the management token (the user part).
        auth_server=lambda secret: ConsulServer(acl=True, token=secret),
        auth_url=lambda server, secret, prefix: url_with(
            server.url, user_part(None, secret), prefix, session_ttl_min=1
        ),
        anonymous_url=lambda server, prefix: url_with(server.url, "", prefix, session_ttl_min=1),
    ),
    Backend(
        "zookeeper",
        tls_fixture="zookeeper_tls_server",
        tls_url=tls_urls("ca", "cert", "key"),
        # Digest authentication enforced; the chroot's ACL gives the user every right and
        # nobody else any.
        auth_server=lambda secret: ZooKeeperServer(auth=True, password=secret),
        auth_url=lambda server, secret, prefix: url_with(
            server.url + server.chroot, user_part(server.username, secret), prefix
        ),
        anonymous_url=lambda server, prefix: url_with(server.url + server.chroot, "", prefix),
    ),
]

SECRETS = {backend.name: make_secret(backend.name) for backend in BACKENDS}
WRONG_SECRETS = {backend.name: make_secret(f"wrong-{backend.name}") for backend in BACKENDS}


@pytest.fixture(scope="module", params=BACKENDS, ids=lambda backend: backend.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def auth_server(backend: Backend) -> Iterator[ServerProcess]:
    """A server of ``backend`` that requires ``SECRETS[backend.name]``."""
    server = backend.auth_server(SECRETS[backend.name])
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def tls_server(backend: Backend, request: pytest.FixtureRequest) -> ServerProcess:
    server = request.getfixturevalue(backend.tls_fixture)
    assert isinstance(server, ServerProcess) and server.certificates is not None
    return server


@pytest.fixture
def foreign(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Certificates of another CA: it signed neither the servers' nor their clients'."""
    return make_test_certificates(tmp_path_factory.mktemp("foreign-ca"))


class Records(logging.Handler):
    """Every log record, formatted with its exception, as one text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def records() -> Iterator[Records]:
    """All logging (libkv's, its drivers' and the client libraries') at DEBUG."""
    handler = Records()
    root = logging.getLogger()
    # The root logger and libkv's own (also the drivers', libkv_*), so that no level
    # set on one of them filters a record out before it reaches the handler.
    loggers = [root, logging.getLogger("libkv")] + [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name.startswith("libkv_")
    ]
    levels = [logger.level for logger in loggers]
    root.addHandler(handler)
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def namespace() -> str:
    return f"t{uuid.uuid4().hex}"


def error_text(error: BaseException) -> str:
    """``str``, ``repr`` and the formatted traceback of ``error`` and of every exception
    in its ``__cause__`` / ``__context__`` chain."""
    texts = ["".join(traceback.format_exception(error))]
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), *(repr(argument) for argument in current.args)]
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


def raised_by(call: Callable[[], object]) -> BaseException:
    """The exception ``call`` raises (failing the test if it returns)."""
    with pytest.raises(Exception) as raised:
        call()
    return raised.value


def run_cli(url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "libkv", "--url", url, *arguments],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )


# -- TLS --------------------------------------------------------------------------------


def test_tls_with_a_client_certificate_round_trips(
    backend: Backend, tls_server: ServerProcess
) -> None:
    certificates = tls_server.certificates
    assert certificates is not None
    url = backend.tls_url(tls_server, certificates.ca, certificates, namespace())
    with libkv.open(url) as store:
        written = store.put("dir/k", b"over-tls")
        assert store.get("dir/k") == written
        assert store.list("dir") == [written]
        with store.watch("dir", recursive=True) as watch:
            init = watch.next_event(timeout=5)
            assert init is not None and init.snapshot == (written,)
            updated = store.put("dir/k", b"again")
            event = watch.next_event(timeout=5)
            assert event is not None and event.pair == updated
        store.delete("dir/k")
        assert not store.exists("dir/k")


@pytest.mark.parametrize("client", ["none", "foreign"])
def test_tls_without_an_accepted_client_certificate_is_refused(
    backend: Backend, tls_server: ServerProcess, foreign: Certificates, client: str
) -> None:
    """The server requires a client certificate signed by its CA: none, or one of
    another CA, is refused with AuthenticationError or NotReachableError (TLS 1.3
    reports the server's alert at the first read), never UnknownOutcomeError; the
    refused write is not applied."""
    certificates = tls_server.certificates
    assert certificates is not None
    prefix = namespace()
    presented = None if client == "none" else foreign
    with libkv.open(backend.tls_url(tls_server, certificates.ca, presented, prefix)) as store:
        for operation in (lambda: store.get("k"), lambda: store.put("k", b"v")):
            started = time.monotonic()
            error = raised_by(operation)
            assert time.monotonic() - started < TIMEOUT + SCHEDULING_SLACK
            assert isinstance(error, libkv.AuthenticationError | libkv.NotReachableError), repr(
                error
            )
            assert not isinstance(error, libkv.UnknownOutcomeError)
            assert error.__cause__ is not None
    with libkv.open(backend.tls_url(tls_server, certificates.ca, certificates, prefix)) as store:
        assert not store.exists("k")


def test_untrusted_server_certificate_is_not_reachable(
    backend: Backend, tls_server: ServerProcess, foreign: Certificates
) -> None:
    """A server whose certificate the trusted CA did not sign: NotReachableError within
    the timeout, saying it is the certificate, for reads and writes alike."""
    certificates = tls_server.certificates
    assert certificates is not None
    url = backend.tls_url(tls_server, foreign.ca, certificates, namespace())
    with libkv.open(url) as store:
        for operation in (lambda: store.get("k"), lambda: store.put("k", b"v")):
            started = time.monotonic()
            error = raised_by(operation)
            assert time.monotonic() - started < TIMEOUT + SCHEDULING_SLACK
            assert isinstance(error, libkv.NotReachableError), repr(error)
            assert not isinstance(error, libkv.UnknownOutcomeError)
            assert "certificate" in str(error).lower(), str(error)
            assert error.__cause__ is not None


# -- authentication ---------------------------------------------------------------------


def test_right_credentials_work(backend: Backend, auth_server: ServerProcess) -> None:
    url = backend.auth_url(auth_server, SECRETS[backend.name], namespace())
    with libkv.open(url) as store:
        written = store.create("dir/k", b"v")
        assert store.get("dir/k") == written
        assert store.list("dir") == [written]
        with store.watch("dir", recursive=True) as watch:
            init = watch.next_event(timeout=5)
            assert init is not None and init.snapshot == (written,)
            updated = store.update("dir/k", b"w", version=written.version)
            event = watch.next_event(timeout=5)
            assert event is not None and event.pair == updated
        with store.lease(max(store.capabilities.ttl_min, 2.0)) as lease:
            store.put("leased", b"v", lease=lease)
            assert store.exists("leased")
        assert store.delete_tree("") >= 1


@pytest.mark.parametrize("credentials", ["wrong", "none"])
def test_wrong_or_missing_credentials_raise_authentication_error(
    backend: Backend, auth_server: ServerProcess, credentials: str
) -> None:
    prefix = namespace()
    if credentials == "wrong":
        url = backend.auth_url(auth_server, WRONG_SECRETS[backend.name], prefix)
    else:
        url = backend.anonymous_url(auth_server, prefix)
    with libkv.open(backend.auth_url(auth_server, SECRETS[backend.name], prefix)) as owner:
        owner.put("existing", b"v")
    with libkv.open(url) as store:
        operations: list[Callable[[], object]] = [
            lambda: store.get("existing"),
            lambda: store.put("k", b"v"),
            lambda: store.create("k", b"v"),
            lambda: store.delete("existing"),
            lambda: store.transaction([libkv.ops.create("k", b"v")]),
            lambda: store.put("k", b"v", ttl=max(store.capabilities.ttl_min, 2.0)),
        ]
        if credentials == "wrong":
            # Without credentials etcd 3.4 grants a lease (no key is involved, so no
            # permission is checked); wrong credentials are refused before any request.
            operations.append(lambda: store.lease(max(store.capabilities.ttl_min, 2.0)))
        for operation in operations:
            error = raised_by(operation)
            assert isinstance(error, libkv.AuthenticationError), repr(error)
            assert isinstance(error, PermissionError)
    with libkv.open(backend.auth_url(auth_server, SECRETS[backend.name], prefix)) as owner:
        assert [pair.key for pair in owner.list()] == ["existing"]


@pytest.mark.parametrize(
    "backend",
    [backend for backend in BACKENDS if backend.forbidden_url is not None],
    ids=lambda backend: backend.name,
    indirect=True,
)
def test_keys_outside_the_users_permissions_raise_authentication_error(
    backend: Backend, auth_server: ServerProcess
) -> None:
    """The right secret of a user limited to some keys: other keys are refused."""
    assert backend.forbidden_url is not None
    with libkv.open(
        backend.forbidden_url(auth_server, SECRETS[backend.name], namespace())
    ) as store:
        for operation in (lambda: store.get("k"), lambda: store.put("k", b"v")):
            error = raised_by(operation)
            assert isinstance(error, libkv.AuthenticationError), repr(error)
            assert_no_secret(error_text(error), SECRETS[backend.name], where="the error")


# -- secrets appear nowhere -------------------------------------------------------------


@pytest.mark.parametrize("credentials", ["right", "wrong"])
def test_secrets_appear_nowhere(
    backend: Backend,
    auth_server: ServerProcess,
    credentials: str,
    records: Records,
    capfd: pytest.CaptureFixture[str],
) -> None:
    right, wrong = SECRETS[backend.name], WRONG_SECRETS[backend.name]
    secret = right if credentials == "right" else wrong
    prefix = namespace()
    url = backend.auth_url(auth_server, secret, prefix)
    texts: list[tuple[str, str]] = []
    logging.getLogger("libkv_capture_check").debug("capture check")
    with libkv.open(backend.auth_url(auth_server, right, prefix)) as owner:
        owner.put("x", b"value-of-x")

    store = libkv.open(url)
    with store:
        texts += [("repr(store)", repr(store)), ("str(store.url)", str(store.url))]
        texts += [("repr(store.url)", repr(store.url))]
        if credentials == "right":
            assert store.get("x").value == b"value-of-x"
            with store.watch("", recursive=True) as watch:
                assert watch.next_event(timeout=5) is not None
                texts.append(("repr(watch)", repr(watch)))
            with store.lease(max(store.capabilities.ttl_min, 2.0)) as lease:
                texts.append(("repr(lease)", repr(lease)))
            # Errors of an authenticated store must not carry its secret either.
            texts.append(("KeyExistsError", error_text(raised_by(lambda: store.create("x", b"")))))
        else:
            failures = [
                lambda: store.get("x"),
                lambda: store.put("x", b"v"),
                lambda: store.list(),
                lambda: store.lease(max(store.capabilities.ttl_min, 2.0)),
            ]
            for failure in failures:
                error = raised_by(failure)
                assert isinstance(error, libkv.AuthenticationError), repr(error)
                texts.append((f"the error {type(error).__name__}", error_text(error)))

            def watch_first_event() -> None:
                with store.watch("", recursive=True) as watch:
                    watch.next_event(timeout=5)

            error = raised_by(watch_first_event)
            assert isinstance(error, libkv.AuthenticationError), repr(error)
            texts.append(("the watch's error", error_text(error)))
    texts.append(("repr(closed store)", repr(store)))
    texts.append(("the closed store's error", error_text(raised_by(lambda: store.get("x")))))

    for command in (["get", "x"], ["ls"]):
        result = run_cli(url, *command)
        where = f"`libkv {' '.join(command)}`"
        if credentials == "right":
            assert result.returncode == 0, result.stderr
            assert result.stdout.split() == (["value-of-x"] if command[0] == "get" else ["x"])
        else:
            assert result.returncode == 1, result
            assert result.stderr.startswith("libkv: error: "), result.stderr
        texts += [(f"{where} stdout", result.stdout), (f"{where} stderr", result.stderr)]

    captured = capfd.readouterr()
    texts += [("stdout", captured.out), ("stderr", captured.err), ("the log", records.text)]
    # The capture sees DEBUG records of every logger (libkv, its drivers, client libraries).
    assert any(line.endswith(" DEBUG capture check") for line in records.lines)
    for where, text in texts:
        assert_no_secret(text, right, wrong, where=where)


MALFORMED_URLS = [
    "consul://{token}@[::1",  # unterminated IPv6 address, a token alone
    "redis://user:{password}@[::1",
    "consul//{token}@host",  # no scheme://
    "consul:{token}@host",
    "etcd:/user:{password}@host",
    "redis://user:{password}@host:bad-port",
    "consul://{token}@host?timeout=never",
    "redis://user:{password}@h1,h2",
    "nosuch://user:{password}@host",
]


@pytest.mark.parametrize("template", MALFORMED_URLS)
@pytest.mark.parametrize("encoded", [True, False], ids=["encoded", "raw"])
def test_malformed_urls_do_not_show_their_secret(template: str, encoded: bool) -> None:
    """A URL refused before any server is contacted: InvalidURLError, and neither its
    message nor the CLI's output shows the password or token, URL-encoded or not (a raw
    secret with "/" or "@" is itself what makes a URL malformed)."""
    secret = make_secret("url")
    spelled = quote(secret, safe="") if encoded else secret
    url = template.format(token=spelled, password=spelled)
    error = raised_by(lambda: libkv.open(url))
    assert isinstance(error, libkv.InvalidURLError), repr(error)
    assert_no_secret(error_text(error), secret, where="the error")
    result = run_cli(url, "get", "x")
    assert result.returncode == 2, result
    assert_no_secret(result.stdout + result.stderr, secret, where="the CLI output")


def test_unreachable_server_does_not_show_the_secret(
    backend: Backend, auth_server: ServerProcess, records: Records
) -> None:
    """Credentials for a port nobody listens on: NotReachableError within the timeout,
    and neither it, the log nor the CLI shows the secret."""
    secret = SECRETS[backend.name]
    url = backend.auth_url(auth_server, secret, namespace())
    closed = url.replace(f":{auth_server.port}", f":{free_port()}", 1)
    assert closed != url
    with libkv.open(closed) as store:
        texts = [repr(store), str(store.url)]
        for operation in (lambda: store.get("x"), lambda: store.put("x", b"v")):
            started = time.monotonic()
            error = raised_by(operation)
            assert time.monotonic() - started < TIMEOUT + SCHEDULING_SLACK
            assert isinstance(error, libkv.NotReachableError), repr(error)
            assert not isinstance(error, libkv.UnknownOutcomeError)  # nothing was sent
            texts.append(error_text(error))
    result = run_cli(closed, "get", "x")
    assert result.returncode == 3, result
    texts += [result.stdout, result.stderr, records.text]
    assert_no_secret("\n".join(texts), secret, where="the unreachable server's errors")
