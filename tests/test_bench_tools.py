"""The benchmark tools' own logic, run as a subprocess (tests never import bench/).

``bench/compare.py --self-test`` checks the goal parser (``">= 0.8"`` into an operator
and a threshold; prose and units refused), the met/missed/not-judged rules, the
figure hand-off from a script to ``bench/run.py`` and the comparison's ordering
(regressions first). Running it here puts those checks in ``make test`` as well as
in every ``make bench``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_self_test_passes() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare.py"), "--self-test"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "checks ok" in done.stdout


def test_compare_reports_an_unreadable_summary(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare.py"), str(broken), str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert f"cannot read {broken}" in done.stderr
