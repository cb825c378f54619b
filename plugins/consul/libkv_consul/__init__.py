"""libkv's Consul driver: ``libkv.open("consul://token@host:8500/prefix")``.

Installed, it registers the ``consul`` and ``consuls`` (HTTPS) schemes through the
``libkv.stores`` entry points (:mod:`libkv_consul.driver`, on urllib3) and the
``libkv.aio.stores`` ones (:mod:`libkv_consul._async.driver`, on aiohttp, the source
the sync driver is generated from).
"""

from libkv_consul.driver import (
    CAPABILITIES,
    ConsulBackend,
    capabilities_for,
    open_consul,
    open_consuls,
)

__version__ = "0.1.0"

__all__ = ["CAPABILITIES", "ConsulBackend", "capabilities_for", "open_consul", "open_consuls"]
