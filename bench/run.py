"""Run every benchmark in bench/ (``--quick``: the small CI smoke sizes).

Each ``bench_*.py`` script is standalone; this runs them in turn, plus the crash
loop, and fails if any of them fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("only", nargs="*", help="names like file, http, s3, ssh, sync")
    args = parser.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.only]
    if args.quick:
        print(
            "quick smoke run: small sizes, to check that every benchmark runs and its exact\n"
            "figures (bytes, counts, lost updates) hold; timing ratios at these sizes are\n"
            "noise and are not judged. The figures: `make bench` (python bench/run.py).",
            flush=True,
        )
    failed = []
    for script in scripts:
        print(f"\n### {script.name}", flush=True)
        cmd = [sys.executable, str(script), *(["--quick"] if args.quick else [])]
        if subprocess.run(cmd, cwd=HERE.parent, check=False).returncode != 0:
            failed.append(script.name)
    if not args.only or "crash" in args.only:
        print("\n### crash_loop.py", flush=True)
        runs = "20" if args.quick else "200"
        crash = [sys.executable, str(HERE / "crash_loop.py"), "--runs", runs]
        if subprocess.run(crash, cwd=HERE.parent, check=False).returncode != 0:
            failed.append("crash_loop.py")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
