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


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    """Run this Python on ``args`` from the checkout's root, output captured."""
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_bench_self_test_passes() -> None:
    done = _python(str(ROOT / "bench" / "compare.py"), "--self-test")
    assert done.returncode == 0, done.stderr
    assert "checks ok" in done.stdout


def test_compare_reports_an_unreadable_summary(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    done = _python(str(ROOT / "bench" / "compare.py"), str(broken), str(broken))
    assert done.returncode == 2
    assert f"cannot read {broken}" in done.stderr


def test_a_peer_s_peak_rss_is_its_own_not_the_bench_s() -> None:
    """bench.peers.run_peer reports a command's own peak RSS even when the bench
    process holding it is large. Spawned straight from that process, Linux would
    carry the bench's high-water RSS into the command's ``ru_maxrss`` (``true``
    reported 313 MiB beside a bench holding 300 MiB), as it did for issue 17's push
    RSS row (ours and restic both read 132.9 MiB): this fails then."""
    script = (
        "import os, sys\n"
        "from bench.peers import run_peer\n"
        "held = b'1' * (200 << 20)  # the bench's own memory, every page touched\n"
        "env = dict(os.environ)\n"
        "small = run_peer(['true'], env).peak_rss\n"
        "grown = run_peer([sys.executable, '-c', 'b = b\"1\" * (100 << 20)'], env).peak_rss\n"
        "print(small >> 20, grown >> 20, len(held) >> 20)\n"
    )
    done = _python("-c", script)
    assert done.returncode == 0, done.stderr
    small, grown, held = map(int, done.stdout.split())
    assert held == 200
    assert small < 32  # the measuring parent's few MiB, not the bench's 200
    assert 100 <= grown < 150
