"""``python -m mkit_transport conformance URL``: run the suite, print a table.

The suite is ordinary pytest tests; this runs them against a URL with a small
plugin that collects each test's outcome, then prints one row per test grouped by
topic (or JSON), and exits non-zero if anything failed.

A skipped test is a guarantee *not checked* (most often: no back door into the
store, so the stored wire form and corrupt-value refusals cannot be tested). Those
rows are listed again at the end under a heading of their own, so a passing run
never hides them; with ``strict`` they fail the run. A check the store's own fault
hook declares impossible (a local file has no connection to drop) is *not
applicable*: shown, never a failure.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from mkit_transport._extras import require

# Before anything imports a topic: say which extra to install, not ModuleNotFoundError.
require("the conformance suite", "pytest", "hypothesis")

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
            reason = str(longrepr[2]).removeprefix("Skipped: ")
            if reason.startswith("not applicable:"):  # suite_errors.NOT_APPLICABLE
                outcome = "n/a"
        elif outcome == "failed":
            reason = failure_reason(report)
        previous = self.outcomes.get(nodeid)
        if when == "call" or outcome != "passed":
            if previous is None or previous[0] == "passed":
                self.outcomes[nodeid] = (outcome, reason)


def failure_reason(report: object) -> str:
    """The error's own message (what a user can act on), not the line that raised it.

    pytest's crash summary reads ``mkit_transport.errors.RemoteError: the server
    ignored If-None-Match``; the class is shortened to its name. Falls back to the
    last line of the long report when there is no crash summary.
    """
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    message = str(getattr(crash, "message", "") or "").strip()
    if not message:
        lines = str(getattr(report, "longreprtext", "")).strip().splitlines()
        message = lines[-1] if lines else ""
    first = message.splitlines()[0] if message else ""
    head, sep, rest = first.partition(": ")
    if sep and "." in head and " " not in head:
        first = f"{head.rsplit('.', 1)[1]}: {rest}"
    return first[:200]


def run_conformance(
    url: str,
    *,
    json_output: bool,
    out: TextIO,
    extra: Sequence[str] = (),
    strict: bool = False,
) -> int:
    """Run the suite against ``url``; return 0 when every test passed.

    With ``strict``, a test that did not run (skipped: a guarantee not checked)
    also makes the run fail.
    """
    # The package checked for pytest and Hypothesis when it was imported (InvalidArgument
    # with the extra to install if either is missing), so both are here.
    import pytest

    from . import ConformanceSuite
    from .suite_errors import ErrorSuite
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
        ("errors", ErrorSuite),
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
        *_plugin_args(),
        # In this process mkit_transport and Hypothesis are imported before pytest starts,
        # so pytest cannot rewrite their asserts (the suite's own modules it can): noise.
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
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
    kinds = ("passed", "failed", "skipped", "n/a")
    counts = {k: sum(1 for r in rows if r["outcome"] == k) for k in kinds}
    not_checked = [row for row in rows if row["outcome"] == "skipped"]
    if json_output:
        document = {
            "url": url,
            "suite": here,  # where the suite that ran is installed
            "counts": counts,
            "not_checked": [f"{r['topic']}::{r['test']}" for r in not_checked],
            "strict": strict,
            "tests": rows,
        }
        json.dump(document, out, indent=2)
        out.write("\n")
    else:
        _print_table(url, rows, counts, not_checked, strict, out)
    failed = code != 0 or counts["failed"] > 0 or not rows
    return 1 if failed or (strict and not_checked) else 0


def _print_table(
    url: str,
    rows: list[dict[str, str]],
    counts: dict[str, int],
    not_checked: list[dict[str, str]],
    strict: bool,
    out: TextIO,
) -> None:
    out.write(f"\nconformance of {url}\n")
    names = {id(row): _short(row["test"]) for row in rows}
    width = max((len(name) for name in names.values()), default=10)
    marks = {"passed": "ok", "failed": "FAIL", "skipped": "NOT CHECKED", "n/a": "n/a"}
    for row in rows:
        mark = marks.get(row["outcome"], "?")
        note = f"  ({row['reason']})" if row["reason"] else ""
        out.write(f"  {mark:<11}  {row['topic']:<9} {names[id(row)]:<{width}}{note}\n")
    if not_checked:
        out.write(
            f"\nNOT CHECKED: {len(not_checked)} guarantee(s) were not tested"
            + (" (--strict: this fails the run)" if strict else " (--strict fails on these)")
            + "\n"
        )
        for row in not_checked:
            out.write(f"  {row['topic']:<9} {names[id(row)]}  ({row['reason']})\n")
    out.write(
        f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} not checked, "
        f"{counts['n/a']} not applicable\n"
    )


def _plugin_args() -> list[str]:
    """Load the suite's plugin by name unless pytest loads it from its entry point.

    Naming it again when installed would only make pytest warn that the already
    imported modules cannot be rewritten.
    """
    name = "mkit_transport.conformance.plugin"
    if importlib.metadata.entry_points(group="pytest11", name=name):
        return []
    return ["-p", name]


def _short(test: str) -> str:
    return test if len(test) <= 72 else test[:69] + "..."
