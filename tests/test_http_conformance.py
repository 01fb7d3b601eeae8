"""The whole conformance suite against a real pack server process on loopback."""

from __future__ import annotations

import pytest

from mkit_transport import RetryPolicy, Transport, open_transport
from mkit_transport.conformance import ConformanceSuite, FileBackdoor, Harness
from testbed.http_server import HttpServer
from tests.support.conformance_parts import error_mapping_tested_elsewhere


@error_mapping_tested_elsewhere
class TestHttpConformance(ConformanceSuite):
    """HTTP: one shared server (2 gunicorn workers, file backend); races in processes."""

    @pytest.fixture
    def harness(self, http_server: HttpServer) -> Harness:
        url = http_server.url("conformance")

        def opener(retry: RetryPolicy | None) -> Transport:
            return open_transport(url, retry=retry)

        return Harness(
            open=opener,
            url=url,
            backdoor=FileBackdoor(http_server.root / "conformance"),
            fresh=False,
        )
