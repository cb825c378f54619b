"""First-party drivers with no third-party dependency."""
