"""libkv's etcd v3 driver: ``libkv.open("etcd://host:2379/prefix")``."""

from libkv_etcd.driver import EtcdBackend, open_etcd

__all__ = ["EtcdBackend", "open_etcd"]
__version__ = "0.1.0"
