"""Throwaway TLS certificates for the test servers, made with the ``openssl`` tool."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificates:
    """Throwaway PEM files made by ``make_test_certificates``: a CA, a server certificate
    for 127.0.0.1 and a client certificate (for client authentication), all signed by it."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server-key.pem"

    @property
    def client(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client-key.pem"

    @property
    def server_bundle(self) -> Path:
        """The server certificate followed by its key in one PEM file (a Java PEM key store)."""
        return self.directory / "server-bundle.pem"

    @property
    def client_bundle(self) -> Path:
        """The client certificate followed by its key in one PEM file."""
        return self.directory / "client-bundle.pem"

    def client_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts the CA and presents the client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.client), str(self.client_key))
        return context


def make_test_certificates(directory: Path) -> Certificates:
    """Make a CA, a server certificate (SAN IP:127.0.0.1) and a client certificate with
    the ``openssl`` command-line tool in ``directory`` (valid for two days)."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*arguments: str) -> None:
        subprocess.run(["openssl", *arguments], cwd=directory, check=True, capture_output=True)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca-key.pem", "-out", "ca.pem", "-subj", "/CN=libkv-test-ca",
    )  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}-key.pem",
            "-out", f"{name}.csr", "-subj", f"/CN={name}",
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
        )  # fmt: skip
        bundle = (directory / f"{name}.pem").read_bytes() + (
            directory / f"{name}-key.pem"
        ).read_bytes()
        (directory / f"{name}-bundle.pem").write_bytes(bundle)
    return Certificates(directory)
