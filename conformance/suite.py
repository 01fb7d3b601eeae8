"""Every topic at once: the class a transport's test class subclasses."""

from __future__ import annotations

from .suite_errors import ErrorSuite
from .suite_lifecycle import LifecycleSuite
from .suite_packs import PackSuite
from .suite_races import RaceSuite
from .suite_ranges import RangeSuite
from .suite_refs import RefSuite
from .suite_retry import RetrySuite
from .suite_stateful import StatefulSuite
from .suite_store import StoreSuite

__all__ = ["ConformanceSuite"]


class ConformanceSuite(
    PackSuite,
    RefSuite,
    RaceSuite,
    StatefulSuite,
    RetrySuite,
    StoreSuite,
    ErrorSuite,
    LifecycleSuite,
    RangeSuite,
):
    """Every topic at once: subclass it and override the ``harness`` fixture."""
