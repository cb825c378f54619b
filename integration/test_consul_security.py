"""The Consul driver against agents with ACLs on (default deny) and serving HTTPS.

The agents are configured here (a subclass of the harness's ConsulServer) until the
harness grows its own ACL and HTTPS options.
"""

from __future__ import annotations

import json
import logging
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import libkv
from integration.servers import (
    Certificates,
    ConsulServer,
    free_port,
    make_test_certificates,
)
from libkv.testing import CrossProcessConformance

MANAGEMENT_TOKEN = str(uuid.uuid4())


class SecureConsulServer(ConsulServer):
    """A Consul agent with ACLs on (default deny, a known management token) and, with
    ``certificates``, HTTPS on its own port, requiring client certificates."""

    def __init__(self, certificates: Certificates | None = None) -> None:
        super().__init__()
        self.certificates = certificates
        self.https_port = free_port()

    def prepare(self) -> None:
        super().prepare()
        configuration = json.loads(self.configuration_path.read_text())
        configuration["acl"] = {
            "enabled": True,
            "default_policy": "deny",
            "enable_token_persistence": False,
            "tokens": {"initial_management": MANAGEMENT_TOKEN, "agent": MANAGEMENT_TOKEN},
        }
        if self.certificates is not None:
            configuration["ports"]["https"] = self.https_port
            configuration["tls"] = {
                "defaults": {
                    "ca_file": str(self.certificates.ca),
                    "cert_file": str(self.certificates.server),
                    "key_file": str(self.certificates.server_key),
                },
                "https": {"verify_incoming": True},
            }
        self.configuration_path.write_text(json.dumps(configuration, indent=2) + "\n")

    def is_healthy(self) -> bool:
        """As the harness's check, with the management token."""
        try:
            leader = self._get("/v1/status/leader")
            checks = self._get(f"/v1/health/node/{self.node_name}") if leader else []
        except (OSError, ValueError):
            return False
        return any(
            check.get("CheckID") == "serfHealth" and check.get("Status") == "passing"
            for check in checks
        )

    def _get(self, path: str) -> Any:
        return self._request("GET", path)

    def _request(self, method: str, path: str, body: object = None) -> Any:
        """Consul's HTTP API with the management token: the JSON answer."""
        request = urllib.request.Request(
            f"{self.http_address}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"X-Consul-Token": MANAGEMENT_TOKEN},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=2.0) as response:
            return json.loads(response.read())

    @property
    def https_url(self) -> str:
        return f"consuls://127.0.0.1:{self.https_port}"


def _start(server: SecureConsulServer) -> Iterator[SecureConsulServer]:
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_test_certificates(tmp_path_factory.mktemp("consul-certificates"))


@pytest.fixture(scope="module")
def acl_consul() -> Iterator[SecureConsulServer]:
    yield from _start(SecureConsulServer())


@pytest.fixture(scope="module")
def tls_consul(certificates: Certificates) -> Iterator[SecureConsulServer]:
    yield from _start(SecureConsulServer(certificates))


def _namespace() -> str:
    return f"t{uuid.uuid4().hex}?session_ttl_min=1"


def _tls_options(certificates: Certificates, *, client: bool = True) -> str:
    options = f"&ca={certificates.ca}"
    if client:
        options += f"&cert={certificates.client}&key={certificates.client_key}"
    return options


# -- ACL ----------------------------------------------------------------------------------


class TestConsulWithACL(CrossProcessConformance):
    """Everything works with a valid token on an agent that denies by default."""

    @pytest.fixture
    def url(self, acl_consul: SecureConsulServer) -> str:
        return f"consul://{MANAGEMENT_TOKEN}@{acl_consul.endpoint}/{_namespace()}"


@pytest.mark.parametrize("token", ["", "wrong-token@", f"{uuid.uuid4()}@"])
def test_missing_or_wrong_token_raises_authentication_error_without_showing_it(
    acl_consul: SecureConsulServer, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = token.rstrip("@")
    namespace = _namespace()
    with libkv.open(f"consul://{MANAGEMENT_TOKEN}@{acl_consul.endpoint}/{namespace}") as admin:
        admin.put("existing", b"v")
    with libkv.open(f"consul://{token}{acl_consul.endpoint}/{namespace}&timeout=2") as store:
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
    with libkv.open(f"consul://{MANAGEMENT_TOKEN}@{acl_consul.endpoint}/{namespace}") as admin:
        assert [pair.key for pair in admin.list()] == ["existing"]


def test_listing_filtered_by_acl_is_refused(acl_consul: SecureConsulServer) -> None:
    """A token that may read only part of a prefix gets AuthenticationError for the whole
    (Consul would answer a listing without the other keys), and works on its part."""
    namespace = f"t{uuid.uuid4().hex}"
    rules = f'key_prefix "{namespace}/public" {{ policy = "write" }}'
    policy = acl_consul._request("PUT", "/v1/acl/policy", {"Name": namespace, "Rules": rules})
    token = acl_consul._request("PUT", "/v1/acl/token", {"Policies": [{"ID": policy["ID"]}]})
    secret = token["SecretID"]
    with libkv.open(f"consul://{MANAGEMENT_TOKEN}@{acl_consul.endpoint}/{namespace}") as admin:
        admin.put("private/k", b"1")
        admin.put("public/k", b"1")
    with libkv.open(f"consul://{secret}@{acl_consul.endpoint}/{namespace}?timeout=2") as store:
        with pytest.raises(libkv.AuthenticationError) as raised:
            store.list()
        assert secret not in str(raised.value)
        with pytest.raises(libkv.AuthenticationError):
            store.get("private/k")
        assert [pair.key for pair in store.list("public")] == ["public/k"]
        store.put("public/k", b"2")
        assert store.get("public/k").value == b"2"


# -- TLS ----------------------------------------------------------------------------------


class TestConsulOverTLS(CrossProcessConformance):
    """consuls:// with a CA and a client certificate, on an agent requiring one."""

    @pytest.fixture
    def url(self, tls_consul: SecureConsulServer, certificates: Certificates) -> str:
        return (
            f"consuls://{MANAGEMENT_TOKEN}@127.0.0.1:{tls_consul.https_port}/{_namespace()}"
            + _tls_options(certificates)
        )


def test_unknown_server_certificate_raises_not_reachable(
    tls_consul: SecureConsulServer, certificates: Certificates, tmp_path: Path
) -> None:
    other = make_test_certificates(tmp_path / "other")
    url = (
        f"consuls://{MANAGEMENT_TOKEN}@127.0.0.1:{tls_consul.https_port}/{_namespace()}"
        f"&timeout=2&ca={other.ca}&cert={certificates.client}&key={certificates.client_key}"
    )
    with libkv.open(url) as store:
        with pytest.raises(libkv.NotReachableError) as raised:
            store.get("k")
        assert not isinstance(raised.value, libkv.UnknownOutcomeError)
        with pytest.raises(libkv.NotReachableError) as raised:
            store.put("k", b"v")
        assert not isinstance(raised.value, libkv.UnknownOutcomeError)


def test_missing_client_certificate_is_refused(
    tls_consul: SecureConsulServer, certificates: Certificates
) -> None:
    url = (
        f"consuls://{MANAGEMENT_TOKEN}@127.0.0.1:{tls_consul.https_port}/{_namespace()}"
        f"&timeout=2" + _tls_options(certificates, client=False)
    )
    with libkv.open(url) as store:
        with pytest.raises((libkv.AuthenticationError, libkv.NotReachableError)) as raised:
            store.get("k")
        assert not isinstance(raised.value, libkv.UnknownOutcomeError)
        with pytest.raises((libkv.AuthenticationError, libkv.NotReachableError)) as raised:
            store.put("k", b"v")
        assert not isinstance(raised.value, libkv.UnknownOutcomeError)
