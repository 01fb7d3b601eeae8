"""Fixtures for the http tests (loaded by tests/conftest.py).

Each server is a real ``python -m mkit_transport serve http`` process (gunicorn,
2 threaded workers) on a free loopback port with a temporary root, started once per
session and stopped by its PID. Variants: plain, with read/write tokens, and with
fault injection (the same command run through :mod:`tests.support.http_fault_server`,
which puts a test-only fault injector in front of the app; the product has none).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed.http_server import (
    READ_TOKEN,
    WRITE_TOKEN,
    HttpServer,
    running_http_server,
)


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """A plain server (file backend, no tokens), shared by the session."""
    with running_http_server(tmp_path_factory.mktemp("http") / "root") as server:
        yield server


@pytest.fixture(scope="session")
def http_token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """A server that needs READ_TOKEN (or WRITE_TOKEN) to read and WRITE_TOKEN to write."""
    env = {"MKIT_READ_TOKEN": READ_TOKEN, "MKIT_WRITE_TOKEN": WRITE_TOKEN}
    with running_http_server(tmp_path_factory.mktemp("http-auth") / "root", env=env) as server:
        yield server


@pytest.fixture(scope="session")
def http_fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """A server with the test-only fault injector in front (no fault planned yet)."""
    with running_http_server(tmp_path_factory.mktemp("http-faults") / "root", faults=True) as srv:
        yield srv


@pytest.fixture
def fault_server(http_fault_server: HttpServer) -> Iterator[HttpServer]:
    """The fault server with its plan cleared before and after the test."""
    http_fault_server.set_faults(503, 0)
    yield http_fault_server
    http_fault_server.set_faults(503, 0)
