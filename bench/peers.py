"""The peer tools the benches measure us beside: how to run restic and borg quietly.

One place for the commands and environments, so every script runs a peer the same
way (its store, a throwaway key, its cache and config outside the store, no prompts)
and a failure shows the peer's own stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Usage:
    """What one command cost: wall seconds, CPU seconds (user + system), peak RSS bytes."""

    seconds: float
    cpu: float
    peak_rss: int


#: The measuring parent of every command (``python -S -c``, a few MiB): it spawns the
#: command, ``wait4``s it and writes exit code, wall and CPU seconds and ``ru_maxrss``
#: (KiB) to the fd it is given. A command spawned straight from a bench process would
#: report at least that process's peak as its own: Linux carries the high-water RSS of
#: the memory image an ``exec`` replaces into the child's ``ru_maxrss``, and
#: ``subprocess`` spawns with ``vfork`` (``true`` reported 313 MiB beside a parent
#: holding 300 MiB). Spawned from this small parent, the floor is its few MiB.
_MEASURE = r"""
import os, sys, time
out = int(sys.argv[1])
os.set_inheritable(out, False)
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_pid, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
code = os.waitstatus_to_exitcode(status)
os.write(out, b"%d %r %r %d" % (code, seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss))
"""


def run_peer(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Usage:
    """Run a command (a peer's, or our CLI); its output only shows when it fails (then it raises).

    The cost comes from ``wait4``: the kernel's own count of the child's CPU and
    of its peak resident set (``ru_maxrss``), so every tool, Go or Python, is
    measured by the same rule, by a small parent of its own (:data:`_MEASURE`).
    """
    read, write = os.pipe()
    try:
        with tempfile.TemporaryFile() as err:
            helper = [sys.executable, "-S", "-c", _MEASURE, str(write), *cmd]
            done = subprocess.run(
                helper,
                env=env,
                cwd=cwd,
                stdout=subprocess.DEVNULL,
                stderr=err,
                pass_fds=(write,),
                check=False,
            )
            os.close(write)
            write = -1
            with os.fdopen(read, "rb") as results:
                read = -1
                fields = results.read().split()
            if done.returncode != 0 or len(fields) != 4 or int(fields[0]) != 0:
                err.seek(0)
                text = err.read().decode(errors="replace")
                code = int(fields[0]) if fields else done.returncode
                raise RuntimeError(f"{' '.join(cmd)} exited {code}:\n{text}")
    finally:
        for fd in (read, write):
            if fd >= 0:
                os.close(fd)
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
