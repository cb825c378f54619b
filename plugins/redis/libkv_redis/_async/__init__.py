"""The async flavour of the Redis driver: the source of the sync one."""
