"""Repository-wide pytest configuration.

On CI (``CI`` set), a skipped test fails the run: every backend's server is started
by the project itself, so a skip means something is missing, not optional.
"""

from __future__ import annotations

import os

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not os.environ.get("CI"):
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped and session.exitstatus == 0:
        reporter.write_line(
            f"CI: {len(skipped)} test(s) skipped; on CI a skip is a failure", red=True
        )
        session.exitstatus = 1
