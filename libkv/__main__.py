"""``python -m libkv``: the same as the ``libkv`` command (see :mod:`libkv.cli`)."""

from libkv.cli import main

raise SystemExit(main())
