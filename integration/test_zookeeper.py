"""The ZooKeeper driver against a real ZooKeeper 3.8: the conformance suite plus driver
specifics (parents and values, CAS across delete and re-create, request size, foreign
znodes, session expiry, restart, an ensemble member killed)."""

from __future__ import annotations

import uuid

import pytest

from integration.servers import ZooKeeperServer
from libkv.testing import CrossProcessConformance


class TestZooKeeper(CrossProcessConformance):
    @pytest.fixture
    def url(self, zookeeper_server: ZooKeeperServer) -> str:
        return f"{zookeeper_server.url}/t{uuid.uuid4().hex}"
