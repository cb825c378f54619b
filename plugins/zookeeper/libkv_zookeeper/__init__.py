"""libkv's ZooKeeper driver: ``libkv.open("zookeeper://host:2181/chroot")``."""

from libkv_zookeeper.driver import CAPABILITIES, ZooKeeperBackend, open_zookeeper

__all__ = ["CAPABILITIES", "ZooKeeperBackend", "open_zookeeper"]
__version__ = "0.1.0"
