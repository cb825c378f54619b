"""The Consul driver against a real Consul agent: the conformance suite plus driver specifics."""

from __future__ import annotations

import uuid

import pytest

from integration.servers import ConsulServer
from libkv.testing import CrossProcessConformance


def consul_url(server: ConsulServer) -> str:
    """A fresh namespace on ``server`` (whose session_ttl_min is 1 s)."""
    return f"{server.url}/t{uuid.uuid4().hex}?session_ttl_min=1"


class TestConsul(CrossProcessConformance):
    @pytest.fixture
    def url(self, consul_server: ConsulServer) -> str:
        return consul_url(consul_server)
