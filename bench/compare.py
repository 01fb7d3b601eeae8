"""Compare two benchmark summaries (the JSON files ``bench/run.py`` writes).

Usage: ``python bench/compare.py A.json B.json`` or ``python bench/compare.py --self-test``.

For every figure in either summary: A's value, B's value, the relative change, and
the status (met/missed/reported/not judged) in each. Figures that went from met in A
to missed in B (regressions) come first. The exit status is 0 whatever the figures
say (this is a report, not a gate); 2 when a file cannot be read.

``--self-test`` checks the goal parser, the met/missed rules and this comparison on
made-up figures (bench/run.py runs it first in every run); the tests of the library
do not import bench/.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import FIGURES_ENV, Figure, Goal, Results, format_value


@dataclass(frozen=True)
class Row:
    """One figure's line in a comparison."""

    id: str
    unit: str
    a: Any  # the value in A (None: absent)
    b: Any
    a_status: str  # "-" when absent
    b_status: str

    @property
    def regressed(self) -> bool:
        """Met in A, missed in B."""
        return self.a_status == "met" and self.b_status == "missed"

    @property
    def change(self) -> float | None:
        """(B - A) / |A|, when both are numbers (not booleans) and A is not zero."""
        numbers = all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in (self.a, self.b)
        )
        if not numbers or self.a == 0:
            return None
        return float((self.b - self.a) / abs(self.a))


def compare(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[Row]:
    """Rows for every figure in A or B: regressions first, then A's order, then B-only."""
    in_a = {f["id"]: f for f in a}
    in_b = {f["id"]: f for f in b}
    ids = list(in_a) + [i for i in in_b if i not in in_a]
    rows = []
    for i in ids:
        fa, fb = in_a.get(i), in_b.get(i)
        rows.append(
            Row(
                id=i,
                unit=(fa or fb or {}).get("unit", ""),
                a=fa["value"] if fa else None,
                b=fb["value"] if fb else None,
                a_status=fa["status"] if fa else "-",
                b_status=fb["status"] if fb else "-",
            )
        )
    return sorted(rows, key=lambda row: not row.regressed)  # stable: order kept otherwise


def render(rows: list[Row]) -> list[str]:
    """The comparison as aligned text lines."""
    table = [("", "figure", "A", "B", "change", "A status", "B status")]
    for row in rows:
        change = row.change
        table.append(
            (
                "REGRESSED" if row.regressed else "",
                row.id,
                "-" if row.a is None else format_value(row.a, row.unit),
                "-" if row.b is None else format_value(row.b, row.unit),
                "-" if change is None else f"{change:+.1%}",
                row.a_status,
                row.b_status,
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]


class _Checks:
    """Counts checks; the first that fails raises AssertionError naming it."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, condition: bool, what: str) -> None:
        self.count += 1
        if not condition:
            raise AssertionError(what)


def self_test() -> int:
    """Check the goal parser, Figure.status, Results and compare(); return the check count."""
    check = _Checks()
    _test_goals(check)
    _test_results(check)
    _test_compare(check)
    return check.count


def _test_goals(check: _Checks) -> None:
    for text, op, threshold in (
        (">= 0.8", ">=", 0.8),
        (">0.8", ">", 0.8),
        ("<= 64", "<=", 64.0),
        ("< 1e3", "<", 1000.0),
        ("== 0", "==", 0.0),
        ("== true", "==", 1.0),
        ("!= false", "!=", 0.0),
        ("  <=   12345 ", "<=", 12345.0),
    ):
        check(Goal.parse(text) == Goal(op, threshold), f"parse {text!r}")
    for bad in ("", "0.8", ">= ", ">= 64 MiB", "about 1", "=> 1", ">= nan", "<= inf", "~ 3"):
        try:
            Goal.parse(bad)
        except ValueError:
            check(True, "")
        else:
            check(False, f"{bad!r} parsed")
    check(Goal.parse(">= 0.8").met(0.8) and not Goal.parse(">= 0.8").met(0.79), ">= edge")
    check(Goal.parse("> 1").met(1.01) and not Goal.parse("> 1").met(1), "> edge")
    check(Goal.parse("== true").met(True) and not Goal.parse("== true").met(False), "bool")
    check(Goal.parse("<= 3").met(3) and not Goal.parse("<= 3").met(4), "<= edge")


def _test_results(check: _Checks) -> None:
    timing = Figure("t", 0.5, "x", ">= 0.8", repeats=3)
    check(timing.status(quick=False) == "missed", "timing judged in a full run")
    check(timing.status(quick=True) == "not judged", "timing not judged when quick")
    exact = Figure("e", 1, "B", "== 0", kind="exact")
    check(exact.status(quick=True) == "missed", "exact judged when quick")
    memory = Figure("m", 12.0, "MiB", "<= 64", kind="memory")
    check(memory.status(quick=True) == "met", "memory judged when quick")
    check(Figure("r", 5).status(quick=False) == "reported", "no goal: reported")
    try:
        Figure("bad", 1, goal="fast")
    except ValueError:
        check(True, "")
    else:
        check(False, "a Figure with an unparseable goal was made")

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        handoff = Path(tmp) / "figures.jsonl"
        os.environ[FIGURES_ENV] = str(handoff)
        try:
            results = Results("demo", quick=True)
            results.section("one", [timing, Figure("ok", 0, "B", "== 0", kind="exact")])
            results.section("two", [exact])
        finally:
            del os.environ[FIGURES_ENV]
        handed = [json.loads(line) for line in handoff.read_text().splitlines()]
        try:
            results.finish()
        except SystemExit as exc:
            check("two/e = 1 B, goal == 0" in str(exc), f"finish names the miss: {exc}")
        else:
            check(False, "finish passed a missed exact figure")
    check([f["id"] for f in handed] == ["demo/one/t", "demo/one/ok", "demo/two/e"], "handoff")
    check([f["status"] for f in handed] == ["not judged", "met", "missed"], "handed status")
    check(handed[0]["op"] == ">=" and handed[0]["threshold"] == 0.8, "handed goal")
    check(handed[0]["repeats"] == 3 and handed[2]["kind"] == "exact", "handed repeats, kind")


def _test_compare(check: _Checks) -> None:
    def fig(i: str, value: object, status: str) -> dict[str, Any]:
        return {"id": i, "value": value, "unit": "x", "status": status}

    a = [fig("kept", 1.0, "met"), fig("worse", 1.0, "met"), fig("gone", 2, "reported")]
    b = [fig("kept", 1.5, "met"), fig("new", True, "met"), fig("worse", 0.5, "missed")]
    rows = compare(a, b)
    check([r.id for r in rows] == ["worse", "kept", "gone", "new"], "regressions first")
    check(rows[0].regressed and not rows[1].regressed, "regressed flag")
    check(rows[0].change == -0.5 and rows[1].change == 0.5, "relative change")
    check(rows[2].b is None and rows[2].b_status == "-" and rows[2].change is None, "only in A")
    check(rows[3].a is None and rows[3].change is None, "only in B; booleans have no change")
    check(compare([fig("z", 0, "met")], [fig("z", 3, "met")])[0].change is None, "from zero")
    check(len(render(rows)) == 5 and "REGRESSED" in render(rows)[1], "render")


def _load(path: str) -> dict[str, Any]:
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("figures"), list):
        raise ValueError("not a bench/run.py summary (no 'figures' list)")
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", nargs="?", help="the older summary")
    parser.add_argument("b", nargs="?", help="the newer summary")
    parser.add_argument("--self-test", action="store_true", help="check this tool and exit")
    args = parser.parse_args()
    if args.self_test:
        print(f"bench self-test: {self_test()} checks ok")
        return 0
    if not (args.a and args.b):
        parser.error("give two summaries: A.json B.json")
    summaries = []
    for path in (args.a, args.b):
        try:
            summaries.append(_load(path))
        except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
            print(f"compare: cannot read {path}: {exc}", file=sys.stderr)
            return 2
    a, b = summaries
    for label, data, path in (("A", a, args.a), ("B", b, args.b)):
        kind = "quick" if data.get("quick") else "full"
        print(f"{label}: {path} ({kind} run, {data.get('started')}, commit {data.get('commit')})")
    rows = compare(a["figures"], b["figures"])
    regressions = sum(row.regressed for row in rows)
    print(f"{len(rows)} figures, {regressions} regressed (met in A, missed in B)\n")
    for line in render(rows):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
