"""The async flavour of the etcd driver: the source of the sync one."""
