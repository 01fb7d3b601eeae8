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
``StatefulSuite``, ``RetrySuite``, ``StoreSuite``, ``ErrorSuite``, ``LifecycleSuite``,
``RangeSuite``).
Every test writes under its own ``refs/mkit-conformance/<uuid>/`` namespace and
deletes its refs afterwards, pass or fail, so a shared remote is safe to test.

The suite needs pytest and Hypothesis (the extra ``conformance``); without them,
taking a name from it raises :class:`~mkit_transport.errors.InvalidArgument` saying
what to install, not a bare ``ModuleNotFoundError`` from deep inside a topic. The
names load on first use: pytest imports this package for the suite's plugin
(:mod:`.plugin`) in every run of an environment holding mkit_transport, and that
must work without Hypothesis.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .harness import (
        Backdoor,
        FileBackdoor,
        FileFaults,
        Harness,
        MemoryBackdoor,
        MemoryFaults,
        StoreFaults,
    )
    from .suite import ConformanceSuite
    from .suite_errors import ErrorSuite
    from .suite_lifecycle import LifecycleSuite
    from .suite_packs import PackSuite
    from .suite_races import RaceSuite
    from .suite_ranges import RangeSuite
    from .suite_refs import RefSuite
    from .suite_retry import RetrySuite
    from .suite_stateful import StatefulSuite
    from .suite_store import StoreSuite

#: Each public name and the module that defines it.
_HOME = {
    "Backdoor": "harness",
    "ConformanceSuite": "suite",
    "ErrorSuite": "suite_errors",
    "FileBackdoor": "harness",
    "FileFaults": "harness",
    "Harness": "harness",
    "LifecycleSuite": "suite_lifecycle",
    "MemoryBackdoor": "harness",
    "MemoryFaults": "harness",
    "PackSuite": "suite_packs",
    "RaceSuite": "suite_races",
    "RangeSuite": "suite_ranges",
    "RefSuite": "suite_refs",
    "RetrySuite": "suite_retry",
    "StatefulSuite": "suite_stateful",
    "StoreFaults": "harness",
    "StoreSuite": "suite_store",
}

__all__ = [
    "Backdoor",
    "ConformanceSuite",
    "ErrorSuite",
    "FileBackdoor",
    "FileFaults",
    "Harness",
    "LifecycleSuite",
    "MemoryBackdoor",
    "MemoryFaults",
    "PackSuite",
    "RaceSuite",
    "RangeSuite",
    "RefSuite",
    "RetrySuite",
    "StatefulSuite",
    "StoreFaults",
    "StoreSuite",
]


def __getattr__(name: str) -> object:
    """Import a public name's module on first use (after checking for the extra)."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from mkit_transport._extras import require

    require("the conformance suite", "pytest", "hypothesis")
    found = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = found
    return found
