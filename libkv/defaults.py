"""Which store a program uses when it is not told: the policy shared by the CLI and the demo.

The order is: an explicit URL, else ``$LIBKV_URL``, else the per-user SQLite file
(:func:`libkv.drivers.sqlite.default_path`), whose directory is created on first use.
"""

from __future__ import annotations

import os
from urllib.parse import quote

from libkv.drivers.sqlite import default_path

__all__ = ["ENVIRONMENT_VARIABLE", "default_url", "resolve_url"]

ENVIRONMENT_VARIABLE = "LIBKV_URL"


def default_url() -> str:
    """``sqlite:///<data dir>/libkv/libkv.db`` for this user (see ``default_path``)."""
    return "sqlite:///" + quote(default_path().lstrip("/"), safe="/:")


def resolve_url(url: str | None) -> str:
    """``url``, else ``$LIBKV_URL``, else :func:`default_url`."""
    return url or os.environ.get(ENVIRONMENT_VARIABLE) or default_url()
