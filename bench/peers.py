"""The peer tools the benches measure us beside: how to run restic and borg quietly.

One place for the commands and environments, so every script runs a peer the same
way (its store, a throwaway key, its cache and config outside the store, no prompts)
and a failure shows the peer's own stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Usage:
    """What one command cost: wall seconds, CPU seconds (user + system), peak RSS bytes."""

    seconds: float
    cpu: float
    peak_rss: int


#: The measuring parent of every command (``python -S -c``, a few MiB): it spawns the
#: command (its stdout to ``/dev/null``, its stderr the parent's), ``wait4``s it and
#: prints exit code, wall and CPU seconds and ``ru_maxrss`` (KiB). A command spawned
#: straight from a bench process would report at least that process's peak as its
#: own: Linux carries the high-water RSS of the memory image an ``exec`` replaces
#: into the child's ``ru_maxrss``, and ``subprocess`` spawns with ``vfork`` (``true``
#: reported 313 MiB beside a parent holding 300 MiB). Spawned from this small
#: parent, the floor is its few MiB.
_MEASURE = r"""
import os, sys, time
start = time.perf_counter()
quiet = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ, file_actions=quiet)
_pid, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
code = os.waitstatus_to_exitcode(status)
print(code, repr(seconds), repr(usage.ru_utime + usage.ru_stime), usage.ru_maxrss)
"""


def run_peer(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Usage:
    """Run a command (a peer's, or our CLI); its output only shows when it fails (then it raises).

    The cost comes from ``wait4``: the kernel's own count of the child's CPU and
    of its peak resident set (``ru_maxrss``), so every tool, Go or Python, is
    measured by the same rule, by a small parent of its own (:data:`_MEASURE`).
    """
    done = subprocess.run(
        [sys.executable, "-S", "-c", _MEASURE, *cmd],
        env=env,
        cwd=cwd,
        capture_output=True,
        check=False,
    )
    fields = done.stdout.split()
    if done.returncode != 0 or len(fields) != 4 or int(fields[0]) != 0:
        code = int(fields[0]) if len(fields) == 4 else done.returncode
        text = done.stderr.decode(errors="replace")
        raise RuntimeError(f"{' '.join(cmd)} exited {code}:\n{text}")
    return Usage(float(fields[1]), float(fields[2]), int(fields[3]) * 1024)


def restic_env(store: Path, state: Path) -> dict[str, str]:
    """Restic's environment: the repository, a throwaway key, its cache in ``state``."""
    return dict(
        os.environ,
        RESTIC_REPOSITORY=str(store),
        RESTIC_PASSWORD="bench",  # noqa: S106 - a throwaway repository's key
        RESTIC_CACHE_DIR=str(state),
    )


def borg_env(state: Path) -> dict[str, str]:
    """Borg's environment: its cache and config in ``state``, no prompts."""
    return dict(
        os.environ,
        BORG_BASE_DIR=str(state),
        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
    )
