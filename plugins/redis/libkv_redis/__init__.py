"""libkv's Redis driver: ``libkv.open("redis://host:6379/0?prefix=myapp")``.

Installed, it registers the ``redis`` and ``rediss`` schemes through the
``libkv.stores`` entry points; see :mod:`libkv_redis.driver`.
"""

from libkv_redis.driver import CAPABILITIES, RedisBackend, open_redis

__version__ = "0.1.0"

__all__ = ["CAPABILITIES", "RedisBackend", "open_redis"]
