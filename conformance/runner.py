"""``python -m mkit_transport conformance URL``: run the suite, print a table.

The suite is ordinary pytest tests; this runs them against a URL with a small
plugin that collects each test's outcome, then prints one row per test grouped by
topic (or JSON), and exits non-zero if anything failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["run_conformance"]


@dataclass
class _Collector:
    """A pytest plugin that records the outcome of every test."""

    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)

    def pytest_runtest_logreport(self, report: object) -> None:
        nodeid: str = getattr(report, "nodeid", "")
        when: str = getattr(report, "when", "")
        outcome: str = getattr(report, "outcome", "")
        longrepr = getattr(report, "longrepr", None)
        reason = ""
        if outcome == "skipped" and isinstance(longrepr, tuple):
            reason = str(longrepr[2])
        elif outcome == "failed":
            lines = str(getattr(report, "longreprtext", "")).strip().splitlines()
            reason = lines[-1][:200] if lines else ""
        previous = self.outcomes.get(nodeid)
        if when == "call" or outcome != "passed":
            if previous is None or previous[0] == "passed":
                self.outcomes[nodeid] = (outcome, reason)


def run_conformance(url: str, *, json_output: bool, out: TextIO, extra: Sequence[str] = ()) -> int:
    """Run the suite against ``url``; return 0 when every test passed."""
    # The package checked for pytest and Hypothesis when it was imported (InvalidArgument
    # with the extra to install if either is missing), so both are here.
    import pytest

    from . import ConformanceSuite
    from .suite_packs import PackSuite
    from .suite_races import RaceSuite
    from .suite_refs import RefSuite
    from .suite_retry import RetrySuite
    from .suite_stateful import StatefulSuite
    from .suite_store import StoreSuite

    topic_of: dict[str, str] = {}
    for topic, suite in (
        ("packs", PackSuite),
        ("refs", RefSuite),
        ("races", RaceSuite),
        ("stateful", StatefulSuite),
        ("retry", RetrySuite),
        ("store", StoreSuite),
    ):
        for attr in vars(suite):
            if attr.startswith("test_"):
                topic_of[attr] = topic
    assert issubclass(ConformanceSuite, PackSuite)

    collector = _Collector()
    here = os.path.dirname(os.path.abspath(__file__))
    args = [
        os.path.join(here, "test_url.py"),
        "--mkit-url",
        url,
        "-c",
        os.path.join(here, "pytest.ini"),
        "--rootdir",
        here,
        "-q",
        "--no-header",
        "-p",
        "no:cacheprovider",
        *extra,
    ]
    if json_output:  # keep stdout for the JSON document alone
        with contextlib.redirect_stdout(sys.stderr):
            code = pytest.main(args, plugins=[collector])
    else:
        code = pytest.main(args, plugins=[collector])
    rows = []
    for nodeid, (outcome, reason) in collector.outcomes.items():
        test = nodeid.split("::")[-1]
        topic = topic_of.get(test.split("[")[0], "other")
        rows.append({"topic": topic, "test": test, "outcome": outcome, "reason": reason})
    rows.sort(key=lambda row: (row["topic"], row["test"]))
    counts = {k: sum(1 for r in rows if r["outcome"] == k) for k in ("passed", "failed", "skipped")}
    if json_output:
        json.dump({"url": url, "counts": counts, "tests": rows}, out, indent=2)
        out.write("\n")
    else:
        out.write(f"\nconformance of {url}\n")
        for row in rows:
            if len(row["test"]) > 72:
                row["test"] = row["test"][:69] + "..."
        width = max((len(r["test"]) for r in rows), default=10)
        for row in rows:
            mark = {"passed": "ok  ", "failed": "FAIL", "skipped": "skip"}.get(row["outcome"], "?")
            note = f"  ({row['reason']})" if row["reason"] else ""
            out.write(f"  {mark}  {row['topic']:<9} {row['test']:<{width}}{note}\n")
        out.write(
            f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped\n"
        )
    return 0 if code == 0 and counts["failed"] == 0 and rows else 1
