"""The peer tools the benches measure us beside: how to run restic and borg quietly.

One place for the commands and environments, so every script runs a peer the same
way (its store, a throwaway key, its cache and config outside the store, no prompts)
and a failure shows the peer's own stderr.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def run_peer(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
    """Run a peer's command; its output only shows when it fails (then it raises)."""
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr}")


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
