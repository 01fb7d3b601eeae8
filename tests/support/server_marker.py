"""The ``server`` marker (loaded by tests/conftest.py as a plugin, so its hooks see every node).

Tests that need a real server process (gunicorn, moto, SeaweedFS, OpenSSH's sshd) carry
the ``server`` marker, so ``make check`` (``-m "not server"``) runs everything else on a
machine with none of them. The marker is added here from the fixtures a test uses, so a
new test that asks for a server fixture is marked without anyone remembering to; tests
that start a server themselves, or reach one through ``request.getfixturevalue`` (which
the collection-time scan cannot see), mark it by hand. In the fast tier, a test that
reaches a server fixture without the marker fails at set-up, so ``make check`` never
starts a server.

The hooks live in a plugin module, not in a conftest: a conftest's hooks are called only
for nodes under its directory, and a session-scoped fixture is set up by the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import pytest

#: The fixtures that start (or hand out) a real server process; every server fixture
#: depends on one of them.
SERVER_FIXTURES: Final = frozenset(
    {
        "http_server",
        "http_token_server",
        "http_fault_server",
        "moto_server",
        "nginx_documented",
        "nginx_defaults",
        "seaweedfs_server",
        "s3_server",
        "sshd",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test whose fixtures include a server with ``server``."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)


def _fast_tier(config: pytest.Config) -> bool:
    """Say whether this run deselects server tests (``make check``)."""
    return "not server" in str(config.getoption("markexpr", "") or "")


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
) -> Iterator[None]:
    """Refuse to start a server fixture for an unmarked test in the fast tier.

    Only there: failing a session fixture's set-up leaves it half made for every
    later test that asks for it, so in the full run an unmarked test is marked here
    and goes on (the full run has the servers); the fast tier, where the server may
    not exist, is where the missing mark must be caught.
    """
    if fixturedef.argname in SERVER_FIXTURES:
        # The test that asked (pytest's name for it is private, hence getattr): for a
        # session fixture, request.node is the session, not the test.
        item = getattr(request, "_pyfuncitem", None)
        if item is not None and item.get_closest_marker("server") is None:
            if _fast_tier(request.config):
                pytest.fail(
                    f"{item.nodeid} uses the server fixture {fixturedef.argname!r} but is "
                    "not marked @pytest.mark.server (make check would start a server)",
                    pytrace=False,
                )
            item.add_marker(pytest.mark.server)
    yield
