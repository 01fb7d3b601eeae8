"""Shared benchmark plumbing: timing, peak-RSS of a child process, result tables.

Every figure is a ratio against a baseline measured in the same run, on the same
bytes, so the numbers mean something on any machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from mkit_transport import PackKey
from mkit_transport.hashes import Hasher

__all__ = [
    "MIB",
    "FileChunks",
    "best_of",
    "best_of_pair",
    "child_peak_rss",
    "make_source",
    "mib",
    "proc_status",
    "report",
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


def best_of(
    fn: Callable[[], object], repeat: int = 3, settle: Callable[[], object] | None = None
) -> float:
    """Best wall time of ``repeat`` runs, in seconds; ``settle`` runs, untimed, before each."""
    best = float("inf")
    for _ in range(repeat):
        if settle is not None:
            settle()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def best_of_pair(
    baseline: Callable[[], object],
    ours: Callable[[], object],
    repeat: int = 3,
    settle: Callable[[], object] | None = None,
) -> tuple[float, float]:
    """Best wall times of ``baseline`` and ``ours``, run alternately ``repeat`` times.

    Alternating puts both sides under the same conditions (a server's growing
    memory, page-cache state, a neighbour's load) instead of measuring one side
    first and the other after the machine has changed. ``settle`` runs, untimed,
    before each run (e.g. ``os.sync``, so one side's dirty pages are not written
    back during the other's run).
    """
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for side, fn in enumerate((baseline, ours)):
            if settle is not None:
                settle()
            start = time.perf_counter()
            fn()
            best[side] = min(best[side], time.perf_counter() - start)
    return best[0], best[1]


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


def report(title: str, rows: list[dict[str, Any]]) -> None:
    """Print a result table and append it to bench/results/<title>.json."""
    print(f"\n== {title}")
    for row in rows:
        print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    path = os.path.join(os.path.dirname(__file__), "results", f"{title}.json")
    with open(path, "w") as f:
        json.dump(rows, f, indent=2)
