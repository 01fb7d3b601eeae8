"""Shared benchmark plumbing: timing, peak-RSS of a child process, figures and goals.

Every timing figure is a ratio against a baseline measured in the same run, on the
same bytes, so the numbers mean something on any machine. Scripts declare what they
measured as :class:`Figure` objects (value, unit, goal, repetitions) and hand them to
a :class:`Results`, which prints them and passes them on to ``bench/run.py``; nothing
is written into the source tree.
"""

from __future__ import annotations

import json
import math
import operator
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from mkit_transport import PackKey
from mkit_transport.hashes import Hasher

__all__ = [
    "FIGURES_ENV",
    "MIB",
    "Figure",
    "FileChunks",
    "Goal",
    "Results",
    "child_peak_rss",
    "format_value",
    "make_source",
    "median_interleaved",
    "median_pair",
    "mib",
    "proc_status",
]

MIB = 1 << 20
CHUNK = 4 << 20  # the chunk size a caller streams with; 4 MiB measured faster than 1


class FileChunks:
    """A re-iterable, sized chunk source over a file.

    Re-iterable, so an upload can be retried; sized, so ``requests`` sends a
    Content-Length instead of a chunked body.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def __iter__(self) -> Iterator[bytes]:
        with open(self.path, "rb", buffering=0) as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def __len__(self) -> int:
        return os.path.getsize(self.path)


def make_source(path: str, size: int) -> PackKey:
    """Write ``size`` incompressible bytes to ``path``; return their pack key."""
    block = os.urandom(CHUNK)
    hasher = Hasher()
    with open(path, "wb") as f:
        for i in range(size // CHUNK):
            chunk = i.to_bytes(8, "big") + block[8:]
            f.write(chunk)
            hasher.update(chunk)
    return hasher.pack_key()


def mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


def median_interleaved(
    fns: Sequence[Callable[[], object]],
    repeat: int,
    settle: Callable[[], object] | None = None,
) -> list[float]:
    """Median wall times, in seconds, of each of ``fns``, run in turn ``repeat`` times.

    Interleaving (baseline, ours, baseline, ours, ...) puts every side under the same
    conditions (a server's growing memory, page-cache state, a neighbour's load)
    instead of measuring one side first and the other after the machine has changed.
    The median, not the minimum: the minimum rewards one lucky run, the median says
    what a run typically takes. ``settle`` runs, untimed, before each run (e.g.
    ``os.sync``, so one side's dirty pages are not written back during the other's).
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, not {repeat}")
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for side, fn in enumerate(fns):
            if settle is not None:
                settle()
            start = time.perf_counter()
            fn()
            times[side].append(time.perf_counter() - start)
    return [statistics.median(side) for side in times]


def median_pair(
    baseline: Callable[[], object],
    ours: Callable[[], object],
    repeat: int,
    settle: Callable[[], object] | None = None,
) -> tuple[float, float]:
    """Median wall times of ``baseline`` and ``ours``, run alternately ``repeat`` times."""
    base, mine = median_interleaved([baseline, ours], repeat, settle)
    return base, mine


def proc_status(field: str, pid: int | str = "self") -> int:
    """A memory field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``), in bytes.

    A missing field raises: a silent 0 would pass for a real figure.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


_CHILD = r"""
import json, sys, importlib
from bench.common import proc_status as status
module, func = sys.argv[1].split(":")
fn = getattr(importlib.import_module(module), func)
setup = fn(*sys.argv[2:])          # returns the zero-argument operation to measure
before = status("VmRSS")
setup()
# VmHWM is this process image's own peak; ru_maxrss is not: Linux carries the
# parent's peak across fork and exec, which would report the parent's memory.
print(json.dumps({"before": before, "peak": status("VmHWM")}))
"""


def child_peak_rss(target: str, *args: str) -> int:
    """Peak RSS growth, in bytes, of running ``target`` in a fresh process.

    ``target`` is ``"module:function"``; ``function(*args)`` prepares everything
    (imports, servers, files) and returns the operation to measure, so only the
    operation's own memory counts. The peak is the process's VmHWM, so preparation
    must not allocate more than the operation does.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))
    out = (
        subprocess.run(
            [sys.executable, "-c", _CHILD, target, *args],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    data = json.loads(out)
    return max(0, int(data["peak"]) - int(data["before"]))


# -- figures: what a script measured, against which goal ---------------------------------

Kind = Literal["timing", "memory", "exact", "peer"]
"""What a figure is, which decides when it is judged and what a miss does.

* ``timing``: a median wall-time figure (a throughput, a ratio against a baseline).
  Judged in full runs only: at ``--quick`` sizes it is noise. A miss is reported.
* ``memory``: a peak RSS growth. Judged in every run; a miss is reported.
* ``exact``: a claim, not a measurement (bytes sent, a counter's final value, problems
  found). Judged in every run; a miss fails the script.
* ``peer``: a comparison with another tool whose own figure varies from run to run
  (restic draws a random chunker polynomial per repository). Judged in every run; a
  miss is reported, marked in the table, and does not fail the script.
"""

Status = Literal["met", "missed", "reported", "not judged"]

FIGURES_ENV = "MKIT_BENCH_FIGURES"
"""Environment variable naming the file a script appends its figures to (run.py sets it)."""

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_WORDS = {"true": 1.0, "false": 0.0}


@dataclass(frozen=True)
class Goal:
    """A goal like ``">= 0.8"``: an operator and a threshold, so met/missed is computed."""

    op: str
    threshold: float

    @classmethod
    def parse(cls, text: str) -> Goal:
        """Parse ``"<op> <number>"`` (``true``/``false`` count as 1/0); else ValueError.

        The threshold is in the figure's own unit: ``Figure(..., unit="MiB",
        goal="<= 64")``. Anything else (a unit in the goal, prose) is refused, so a
        goal can never silently become unjudgeable.
        """
        stripped = text.strip()
        for op in sorted(_OPS, key=len, reverse=True):  # ">=" before ">"
            if stripped.startswith(op):
                rest = stripped[len(op) :].strip().lower()
                if rest in _WORDS:
                    return cls(op, _WORDS[rest])
                try:
                    threshold = float(rest)
                except ValueError:
                    break
                if math.isfinite(threshold):
                    return cls(op, threshold)
                break
        raise ValueError(f"goal {text!r} is not '<op> <number>' with op one of {list(_OPS)}")

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the goal."""
        return _OPS[self.op](float(value), self.threshold)

    def __str__(self) -> str:
        return f"{self.op} {self.threshold:g}"


@dataclass(frozen=True)
class Figure:
    """One figure a benchmark reports: its value, unit, goal and how it was measured.

    ``goal`` is ``None`` for a figure that is only reported. ``repeats`` is how many
    interleaved runs the (median) value comes from. ``detail`` holds the context
    (baseline times, sizes) a reader needs to interpret the value.
    """

    name: str
    value: float
    unit: str = ""
    goal: str | None = None
    repeats: int = 1
    kind: Kind = "timing"
    detail: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.goal is not None:
            Goal.parse(self.goal)  # a bad goal fails where it is written

    def status(self, quick: bool) -> Status:
        """``met``/``missed`` against the goal; timing goals are not judged when quick."""
        if self.goal is None:
            return "reported"
        if quick and self.kind == "timing":
            return "not judged"
        return "met" if Goal.parse(self.goal).met(self.value) else "missed"


def format_value(value: object, unit: str = "") -> str:
    """A value for a table: booleans as words, floats to 3 significant digits."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


class Results:
    """A script's figures: printed as it goes, handed to run.py, judged at the end.

    Each :meth:`section` prints its figures (so a script run alone shows them) and,
    when run.py set :data:`FIGURES_ENV`, appends them as JSON lines to that file, so
    figures reported before a failure still reach the summary. :meth:`finish` fails
    the script if an exact figure missed its goal.
    """

    def __init__(self, script: str, quick: bool) -> None:
        self.script = script
        self.quick = quick
        self.figures: list[tuple[str, Figure]] = []

    def section(self, title: str, figures: Iterable[Figure]) -> None:
        """Print ``figures`` under ``title`` and hand them on."""
        listed = list(figures)
        print(f"\n== {title}")
        for figure in listed:
            status = figure.status(self.quick)
            goal = f"goal {figure.goal}" if figure.goal else ""
            extra = "  ".join(f"{k}={v}" for k, v in figure.detail.items())
            runs = f", n={figure.repeats}" if figure.kind == "timing" else ""
            print(
                f"  {figure.name}: {format_value(figure.value, figure.unit)}  {goal}  "
                f"[{status}{runs}]  {extra}".rstrip()
            )
            self.figures.append((title, figure))
        path = os.environ.get(FIGURES_ENV)
        if path:
            with open(path, "a") as f:
                for figure in listed:
                    f.write(json.dumps(self.record(title, figure)) + "\n")
        sys.stdout.flush()

    def record(self, title: str, figure: Figure) -> dict[str, Any]:
        """The JSON form of one figure (what run.py's summary and compare.py read)."""
        goal = Goal.parse(figure.goal) if figure.goal is not None else None
        return {
            "id": f"{self.script}/{title}/{figure.name}",
            "script": self.script,
            "section": title,
            "name": figure.name,
            "value": figure.value,
            "unit": figure.unit,
            "goal": figure.goal,
            "op": goal.op if goal else None,
            "threshold": goal.threshold if goal else None,
            "repeats": figure.repeats,
            "kind": figure.kind,
            "status": figure.status(self.quick),
            "detail": {k: _jsonable(v) for k, v in figure.detail.items()},
        }

    def missed_claims(self) -> list[str]:
        """The exact figures that missed their goal, one line each."""
        return [
            f"{title}/{f.name} = {format_value(f.value, f.unit)}, goal {f.goal}"
            for title, f in self.figures
            if f.kind == "exact" and f.status(self.quick) == "missed"
        ]

    def finish(self) -> None:
        """Fail the script (SystemExit) if any exact figure missed its goal."""
        missed = self.missed_claims()
        if missed:
            raise SystemExit("exact figures missed:\n  " + "\n  ".join(missed))


def _jsonable(value: object) -> object:
    return value if isinstance(value, (bool, int, float, str, type(None))) else str(value)


def cas_counter_figures(
    ns: str,
    final: Any,
    results: Any,
    elapsed: float,
    total: int,
    setup: dict[str, object],
    goal: str | None = None,
) -> list[Figure]:
    """The figures of a CAS counter race (conformance.workers.counter_worker).

    ``goal``: of the increments per second (HTTP: issue 17's ">= 150").

    Workers stop at their target or at their time budget, so exactness is judged
    against the increments each worker reports done, never against the target: a
    loaded machine may do fewer, it must lose none. The rates run from the first
    worker past the start barrier to the last one done (the workers' own monotonic
    times), so the start of the client processes, which ``elapsed`` includes, is
    not counted as CAS time.
    """
    from mkit_transport.conformance.workers import counter_count

    done = sum(row[2] for worker in results for row in worker)
    conflicts = sum(row[3] for worker in results for row in worker)
    racing = max(row[5] for worker in results for row in worker) - min(
        row[4] for worker in results for row in worker
    )
    counted = counter_count(ns, final) if final is not None else 0
    return [
        Figure(
            "CAS counter: final_is_exact",
            final is not None and counted == done,
            goal="== true",
            kind="exact",
            detail={**setup, "increments_done": f"{done}/{total}"},
        ),
        Figure("CAS counter: lost", done - counted, "increments", goal="== 0", kind="exact"),
        Figure("CAS counter: conflicts_retried", conflicts, kind="exact"),
        Figure(
            "CAS counter: ops per s (incl. conflicts)", round((done + conflicts) / racing), "/s"
        ),
        Figure(
            "CAS counter: increments per s",
            round(done / racing),
            "/s",
            goal,
            detail={"seconds": round(racing, 2), "seconds_incl_process_start": round(elapsed, 2)},
        ),
    ]


def check_peers() -> None:
    """Fail clearly, not with a traceback deep in a row, when restic or borg is missing."""
    import shutil

    missing = [tool for tool in ("restic", "borg") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"{' and '.join(missing)} not installed: run `make system-deps` "
            "(apt-get install restic borgbackup)"
        )
