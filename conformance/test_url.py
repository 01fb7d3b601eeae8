"""The whole suite against ``--mkit-url`` (or a fresh temporary file store)."""

from __future__ import annotations

import pytest

from . import ConformanceSuite
from .harness import Harness


class TestTransportAtURL(ConformanceSuite):
    """Runs every topic against the transport named on the command line."""

    @pytest.fixture
    def harness(self, mkit_url_harness: Harness) -> Harness:
        return mkit_url_harness
