"""Options for running the suite on its own against a URL."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mkit_transport conformance")
    group.addoption(
        "--mkit-url",
        default=None,
        help="transport URL to test (default: a fresh mkit+file:// store in a temp dir)",
    )
    group.addoption(
        "--mkit-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option passed to open_transport (repeatable)",
    )
    group.addoption(
        "--mkit-quick",
        action="store_true",
        help="smaller races, state machine and large pack (for slow remotes)",
    )
