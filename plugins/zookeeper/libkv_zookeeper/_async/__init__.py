"""The ZooKeeper driver's async source (``driver``) and its async I/O (``io``)."""
