"""Property-based bad-input tests (libkv.testing.PropertyConformance) on every network
backend, each against the session's server in a namespace of its own per test."""

from __future__ import annotations

import uuid

import pytest

from integration.servers import ConsulServer, EtcdServer, RedisServer, ZooKeeperServer
from libkv.testing import PropertyConformance


class TestRedisProperties(PropertyConformance):
    @pytest.fixture
    def url(self, redis_server: RedisServer) -> str:
        return f"{redis_server.url}?prefix=t{uuid.uuid4().hex}"


class TestEtcdProperties(PropertyConformance):
    @pytest.fixture
    def url(self, etcd_server: EtcdServer) -> str:
        return f"{etcd_server.url}/t{uuid.uuid4().hex}"


class TestConsulProperties(PropertyConformance):
    @pytest.fixture
    def url(self, consul_server: ConsulServer) -> str:
        return f"{consul_server.url}/t{uuid.uuid4().hex}?session_ttl_min=1"


class TestZooKeeperProperties(PropertyConformance):
    @pytest.fixture
    def url(self, zookeeper_server: ZooKeeperServer) -> str:
        return f"{zookeeper_server.url}/t{uuid.uuid4().hex}"
