"""Crash loop at bench scale: ``python bench/crash_loop.py [--runs 200]``.

The loop itself (kill -9 a file-transport writer mid-upload and mid-ref-write, then
check the store) lives in testbed/crash_loop.py, which tests/test_file_transport.py
also runs with fewer kills; this script reports its figures, all exact.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Figure, Results
from testbed.crash_loop import run


def main() -> None:

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(Path(tmp), args.runs)
    results = Results("crash", quick=False)  # every figure here is exact: always judged
    results.section(
        "crash_loop",
        [
            Figure(
                "problems after SIGKILL",
                result["problems"],
                "",
                "== 0",
                kind="exact",
                detail={"runs": result["runs"]},
            ),
            # Left by kills mid-write; invisible to every verb, swept once a day old.
            Figure("temp files left", result["temp_files_left"], kind="exact"),
            Figure("packs stored", result["packs_stored"], kind="exact"),
            Figure("refs", result["refs"], kind="exact"),
        ],
    )
    results.finish()


if __name__ == "__main__":
    main()
