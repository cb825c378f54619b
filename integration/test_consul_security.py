"""The Consul driver against the harness's agents with ACLs on (default deny, a known
management ``token``) and serving HTTPS only (client certificate required).

The full conformance suite runs on the plain agent and on the cluster; here a focused
set runs on each secured agent: what ACLs and TLS change (authentication, tokens never
shown, refusals) plus a put/get/watch/lease round trip proving the secured transport
carries every kind of request.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import libkv
from integration.servers import ConsulServer, make_test_certificates
from libkv import Action
from libkv.testing.polling import wait_until

# Every test here runs in both flavours (libkv and libkv.aio).
pytestmark = pytest.mark.usefixtures("both_flavours")


def _namespace() -> str:
    return f"t{uuid.uuid4().hex}?session_ttl_min=1"


def acl_url(server: ConsulServer, token: str | None = None) -> str:
    """A fresh namespace on the ACL agent, with ``token`` (the management one by default)."""
    return f"consul://{token or server.token}@{server.endpoint}/{_namespace()}"


def tls_url(
    server: ConsulServer, *, client: bool = True, ca: Path | None = None, namespace: str = ""
) -> str:
    """A namespace (a fresh one unless given) on the HTTPS agent, trusting its CA (or
    ``ca``), with the client certificate unless ``client`` is False."""
    certificates = server.certificates
    assert certificates is not None
    url = f"{server.url}/{namespace or _namespace()}&ca={ca or certificates.ca}"
    if client:
        url += f"&cert={certificates.client}&key={certificates.client_key}"
    return url


def assert_round_trip(url: str) -> None:
    """put, get, a conditional write, a lease-backed key and a watch event, through ``url``."""
    with libkv.open(url) as store, store.watch("", recursive=True) as watch:
        init = watch.next_event(5)
        assert init is not None and init.action is Action.INIT and init.snapshot == ()
        written = store.put("k", b"v")
        assert store.get("k") == written
        updated = store.update("k", b"w", version=written.version)
        lease = store.lease(2.0)
        leased = store.put("leased", b"x", lease=lease)
        seen: list[libkv.Event] = []

        def delivered() -> bool:
            event = watch.next_event(0.2)
            if event is not None:
                seen.append(event)
            return any(event.pair == leased for event in seen)

        wait_until(delivered, 5.0, message=lambda: f"the watch delivered only {seen}")
        assert [event.pair for event in seen if event.key == "k"][-1] == updated
        lease.revoke()
        assert not store.exists("leased")


# -- ACL ----------------------------------------------------------------------------------


def test_management_token_works_on_a_default_deny_agent(consul_acl_server: ConsulServer) -> None:
    assert_round_trip(acl_url(consul_acl_server))


@pytest.mark.parametrize("token", ["", "wrong-token@", f"{uuid.uuid4()}@"])
def test_missing_or_wrong_token_raises_authentication_error_without_showing_it(
    consul_acl_server: ConsulServer, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = consul_acl_server
    secret = token.rstrip("@")
    namespace = _namespace()
    with libkv.open(f"consul://{server.token}@{server.endpoint}/{namespace}") as admin:
        admin.put("existing", b"v")
    with libkv.open(f"consul://{token}{server.endpoint}/{namespace}&timeout=2") as store:
        calls: list[Callable[[], object]] = [
            lambda: store.get("existing"),
            lambda: store.put("k", b"v"),
            lambda: store.transaction([libkv.ops.create("k", b"v")]),
            lambda: store.delete("existing"),
            lambda: store.lease(2.0),
        ]
        if not secret:
            # Consul answers the anonymous token a listing of what it may read, without
            # saying that anything was left out (so as not to reveal it): here nothing.
            assert store.list() == []
        else:
            calls.append(lambda: store.list())
        for call in calls:
            with pytest.raises(libkv.AuthenticationError) as raised:
                call()
            assert isinstance(raised.value, PermissionError)
            if secret:
                assert secret not in str(raised.value)
                assert secret not in repr(raised.value.__cause__)
        if secret:
            with pytest.raises(libkv.AuthenticationError), store.watch("", recursive=True) as w:
                w.next_event(5)
            assert secret not in repr(store) and secret not in str(store.url)
            assert secret not in caplog.text
    with libkv.open(f"consul://{server.token}@{server.endpoint}/{namespace}") as admin:
        assert [pair.key for pair in admin.list()] == ["existing"]


def test_valid_token_never_appears_in_repr_url_errors_or_logs(
    consul_acl_server: ConsulServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = consul_acl_server
    with libkv.open(acl_url(server)) as store:
        store.put("k", b"v")
        with pytest.raises(libkv.KeyExistsError) as exists:
            store.create("k", b"v")
        with pytest.raises(libkv.KeyModifiedError) as modified:
            store.update("k", b"w", version=1)
        for shown in (repr(store), str(store.url), str(exists.value), str(modified.value)):
            assert server.token not in shown
    assert server.token not in caplog.text


def test_listing_filtered_by_acl_is_refused(consul_acl_server: ConsulServer) -> None:
    """A token that may read only part of a prefix gets AuthenticationError for the whole
    (Consul would answer a listing without the other keys), and works on its part."""
    server = consul_acl_server
    namespace = f"t{uuid.uuid4().hex}"
    rules = f'key_prefix "{namespace}/public" {{ policy = "write" }}'
    status, body = server.api(
        "PUT", "/v1/acl/policy", json.dumps({"Name": namespace, "Rules": rules}).encode()
    )
    assert status == 200, body
    policy = json.loads(body)["ID"]
    status, body = server.api(
        "PUT", "/v1/acl/token", json.dumps({"Policies": [{"ID": policy}]}).encode()
    )
    assert status == 200, body
    secret = json.loads(body)["SecretID"]
    with libkv.open(f"consul://{server.token}@{server.endpoint}/{namespace}") as admin:
        admin.put("private/k", b"1")
        admin.put("public/k", b"1")
    with libkv.open(f"consul://{secret}@{server.endpoint}/{namespace}?timeout=2") as store:
        with pytest.raises(libkv.AuthenticationError) as raised:
            store.list()
        assert secret not in str(raised.value)
        with pytest.raises(libkv.AuthenticationError):
            store.get("private/k")
        assert [pair.key for pair in store.list("public")] == ["public/k"]
        store.put("public/k", b"2")
        assert store.get("public/k").value == b"2"


# -- TLS ----------------------------------------------------------------------------------


def test_consuls_with_ca_and_client_certificate_works(consul_tls_server: ConsulServer) -> None:
    assert_round_trip(tls_url(consul_tls_server))


def test_unknown_server_certificate_raises_not_reachable(
    consul_tls_server: ConsulServer, tmp_path: Path
) -> None:
    other = make_test_certificates(tmp_path / "other")
    with libkv.open(tls_url(consul_tls_server, ca=other.ca) + "&timeout=2") as store:
        with pytest.raises(libkv.NotReachableError) as raised:
            store.get("k")
        assert not isinstance(raised.value, libkv.UnknownOutcomeError)
        with pytest.raises(libkv.NotReachableError) as raised:
            store.put("k", b"v")
        assert not isinstance(raised.value, libkv.UnknownOutcomeError)


def test_missing_client_certificate_is_refused(consul_tls_server: ConsulServer) -> None:
    with libkv.open(tls_url(consul_tls_server, client=False) + "&timeout=2") as store:
        with pytest.raises((libkv.AuthenticationError, libkv.NotReachableError)) as raised:
            store.get("k")
        assert not isinstance(raised.value, libkv.UnknownOutcomeError)
        with pytest.raises((libkv.AuthenticationError, libkv.NotReachableError)) as raised:
            store.put("k", b"v")
        assert not isinstance(raised.value, libkv.UnknownOutcomeError)


def test_plain_http_to_the_https_agent_is_refused_and_writes_nothing(
    consul_tls_server: ConsulServer,
) -> None:
    """consul:// (plain HTTP) against the HTTPS port: Consul answers 400 ("HTTP request to
    an HTTPS server") and closes the connection, so a call raises a KVError (a write
    whose body races the close may see a reset instead) and nothing is written."""
    namespace = _namespace()
    with libkv.open(f"consul://{consul_tls_server.endpoint}/{namespace}&timeout=2") as store:
        calls: list[Callable[[], object]] = [lambda: store.get("k"), lambda: store.put("k", b"v")]
        for call in calls:
            with pytest.raises(libkv.KVError) as raised:
                call()
            if not isinstance(raised.value, libkv.NotReachableError):
                assert "HTTP request to an HTTPS server" in str(raised.value)
    with libkv.open(tls_url(consul_tls_server, namespace=namespace)) as store:
        assert store.list() == []
