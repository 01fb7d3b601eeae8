"""A skipped test fails the run: a skip is never counted as a pass.

The one exception is a conformance check the store's own fault hook declares
impossible (a local file has no connection to drop); the suite marks those with
``NOT_APPLICABLE`` and they are listed, not hidden. Any other skip (a missing
server, a missing package, a forgotten ``pytest.skip``) turns the exit status red.
"""

from __future__ import annotations

import pytest

from mkit_transport.conformance.suite_errors import NOT_APPLICABLE

_unexpected: list[str] = []


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _reason(report)
        if not reason.startswith(NOT_APPLICABLE):
            _unexpected.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _unexpected and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _unexpected:
        terminalreporter.section("skipped tests fail the run")
        for line in _unexpected:
            terminalreporter.line(line)
