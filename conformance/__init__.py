"""The mkit_transport conformance suite: one set of tests for every transport.

Run it three ways:

* ``python -m pytest conformance --mkit-url URL`` from a checkout;
* ``python -m mkit_transport conformance URL``, which prints a table of results;
* from your own tests, against your own :class:`~mkit_transport.Transport`::

    import pytest
    from mkit_transport.conformance import ConformanceSuite, Harness

    class TestMyTransport(ConformanceSuite):
        @pytest.fixture
        def harness(self, tmp_path):
            return Harness(open=lambda retry: MyTransport(tmp_path, retry=retry), fresh=True)

Topics are also available one by one (``PackSuite``, ``RefSuite``, ``RaceSuite``,
``StatefulSuite``, ``RetrySuite``, ``StoreSuite``, ``LifecycleSuite``). Every test
writes under its own ``refs/mkit-conformance/<uuid>/`` namespace, so a shared remote
is safe to test.

The suite needs pytest and Hypothesis (the extra ``conformance``); without them,
importing it raises :class:`~mkit_transport.errors.InvalidArgument` saying what to
install, not a bare ``ModuleNotFoundError`` from deep inside a topic.
"""

from mkit_transport._extras import require

require("the conformance suite", "pytest", "hypothesis")

from .harness import Backdoor, FileBackdoor, Harness, MemoryBackdoor
from .suite_lifecycle import LifecycleSuite
from .suite_packs import PackSuite
from .suite_races import RaceSuite
from .suite_refs import RefSuite
from .suite_retry import RetrySuite
from .suite_stateful import StatefulSuite
from .suite_store import StoreSuite

__all__ = [
    "Backdoor",
    "ConformanceSuite",
    "FileBackdoor",
    "Harness",
    "LifecycleSuite",
    "MemoryBackdoor",
    "PackSuite",
    "RaceSuite",
    "RefSuite",
    "RetrySuite",
    "StatefulSuite",
    "StoreSuite",
]


class ConformanceSuite(
    PackSuite, RefSuite, RaceSuite, StatefulSuite, RetrySuite, StoreSuite, LifecycleSuite
):
    """Every topic at once: subclass it and override the ``harness`` fixture."""
