"""Run every benchmark in bench/ and end with one summary of every figure.

Usage: ``python bench/run.py [--quick] [--out PATH] [NAME ...]`` (names: chunked
chunking everyday file gc http mixed pull_incremental reader s3 ssh sync, each a
``bench_NAME.py``, and crash for the crash loop).

Each ``bench_*.py`` script is standalone (it prints its own figures); this runs them
in turn, plus the crash loop, with ``MKIT_BENCH_FIGURES`` naming a scratch file each
script appends its figures to (bench.common.Results). At the end it prints one table
of every figure (value, goal, repetitions, met/missed) and writes the same summary
as JSON outside the source tree: ``--out PATH``, else ``$MKIT_BENCH_OUT``, else
``$XDG_CACHE_HOME/mkit-transport/bench/<UTC timestamp>.json`` (``~/.cache`` when
XDG_CACHE_HOME is unset). ``bench/compare.py A.json B.json`` compares two summaries.

The run fails if any script fails (an exact figure missed, a server did not start)
or if compare.py's self-test (goal parsing, status, comparison) fails; a missed
timing or memory goal is marked in the table but does not fail the run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import FIGURES_ENV, format_value

HERE = Path(__file__).resolve().parent

OUT_ENV = "MKIT_BENCH_OUT"


def default_out(now: datetime.datetime, quick: bool) -> Path:
    """Where the summary goes when neither --out nor $MKIT_BENCH_OUT says."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    stamp = now.strftime("%Y%m%dT%H%M%SZ") + ("-quick" if quick else "")
    return Path(cache) / "mkit-transport" / "bench" / f"{stamp}.json"


def run_script(cmd: list[str], scratch: Path) -> tuple[bool, list[dict[str, Any]]]:
    """Run one benchmark; return whether it passed and the figures it handed over."""
    figures_file = scratch / "figures.jsonl"
    figures_file.unlink(missing_ok=True)
    env = dict(os.environ, **{FIGURES_ENV: str(figures_file)})
    ok = subprocess.run(cmd, cwd=HERE.parent, check=False, env=env).returncode == 0
    figures: list[dict[str, Any]] = []
    if figures_file.exists():
        figures = [json.loads(line) for line in figures_file.read_text().splitlines() if line]
    return ok, figures


def table(figures: list[dict[str, Any]]) -> list[str]:
    """The summary table: one line per figure, status first so misses stand out."""
    rows = [("status", "figure", "value", "goal", "n")]
    for f in figures:
        status = "MISSED" if f["status"] == "missed" else f["status"]
        goal = f"{f['goal']} {f['unit']}".strip() if f["goal"] else "-"
        value = format_value(f["value"], f["unit"])
        repeats = str(f["repeats"]) if f["kind"] == "timing" else "-"
        rows.append((status, f"{f['script']}: {f['name']}", value, goal, repeats))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    parser.add_argument("--out", type=Path, help=f"summary JSON path (default: ${OUT_ENV}, cache)")
    parser.add_argument(
        "only", nargs="*", help="names: a bench_NAME.py's NAME (everyday, http, ...), or crash"
    )
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.UTC)
    out = args.out or (Path(os.environ[OUT_ENV]) if os.environ.get(OUT_ENV) else None)
    out = out or default_out(started, args.quick)
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
    selftest = [sys.executable, str(HERE / "compare.py"), "--self-test"]
    if subprocess.run(selftest, cwd=HERE.parent, check=False).returncode != 0:
        failed.append("compare.py --self-test")
    commands = [
        (s.name, [sys.executable, str(s), *(["--quick"] if args.quick else [])]) for s in scripts
    ]
    if not args.only or "crash" in args.only:
        runs = "20" if args.quick else "200"
        commands.append(
            ("crash_loop.py", [sys.executable, str(HERE / "crash_loop.py"), "--runs", runs])
        )
    figures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mkit-bench-run-") as scratch:
        for name, cmd in commands:
            print(f"\n### {name}", flush=True)
            ok, handed = run_script(cmd, Path(scratch))
            figures += handed
            if not ok:
                failed.append(name)
    summary = {
        "schema": 1,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "host": platform.node(),
        "python": platform.python_version(),
        "commit": _commit(),
        "scripts": [name for name, _ in commands],
        "failed": failed,
        "figures": figures,
    }
    run = "quick" if args.quick else "full"
    print(f"\n== summary ({run} run; a timed figure is the median of n interleaved runs)")
    for line in table(figures):
        print("  " + line)
    counts = {s: sum(f["status"] == s for f in figures) for s in ("met", "missed")}
    print(
        f"\n{len(figures)} figures: {counts['met']} met, {counts['missed']} missed, "
        f"{len(figures) - counts['met'] - counts['missed']} reported or not judged"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    if failed:
        print(f"failed: {', '.join(failed)}")
    print(f"summary written to {out}")
    return 1 if failed else 0


def _commit() -> str | None:
    """The source tree's commit, so two summaries can be told apart (None outside git)."""
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None if done.returncode == 0 else None


if __name__ == "__main__":
    raise SystemExit(main())
