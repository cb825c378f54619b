"""The async flavour of the Consul driver: the source of the sync one."""
