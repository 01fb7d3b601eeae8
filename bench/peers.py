"""The peer tools the benches measure us beside: how to run restic and borg quietly.

One place for the commands and environments, so every script runs a peer the same
way (its store, a throwaway key, its cache and config outside the store, no prompts)
and a failure shows the peer's own stderr.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Usage:
    """What one command cost: wall seconds, CPU seconds (user + system), peak RSS bytes."""

    seconds: float
    cpu: float
    peak_rss: int


def run_peer(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Usage:
    """Run a command (a peer's, or our CLI); its output only shows when it fails (then it raises).

    The cost comes from ``wait4``: the kernel's own count of the child's CPU and
    of its peak resident set (``ru_maxrss``), so every tool, Go or Python, is
    measured by the same rule.
    """
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        _pid, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            err.seek(0)
            text = err.read().decode(errors="replace")
            raise RuntimeError(f"{' '.join(cmd)} exited {child.returncode}:\n{text}")
    return Usage(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)


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
