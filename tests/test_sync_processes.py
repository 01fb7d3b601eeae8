"""Concurrency with real processes: racing pushers, and pushers killed with SIGKILL."""

from __future__ import annotations

import hashlib
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mkit_transport import FileTransport
from mkit_transport.sync import pull
from tests.support.sync_fixtures import describe, race_two_pushers, write_tree

REF = "refs/heads/main"
ROOT = Path(__file__).resolve().parent.parent


def test_two_pushers_from_the_same_base_exactly_one_wins(tmp_path: Path) -> None:
    race_two_pushers(f"mkit+file://{tmp_path / 'remote'}", tmp_path, REF)


def _digest(root: Path) -> dict[str, object]:
    """``describe(root)`` with file contents replaced by their SHA-256 (30 rounds of a
    24 MiB payload would otherwise be held in memory)."""
    return {
        path: (entry[0], entry[1], hashlib.sha256(entry[2]).digest())
        if entry[0] == "file"
        else entry
        for path, entry in describe(root).items()
    }


_PUSHER = """
import sys
from mkit_transport import FileTransport
from mkit_transport.sync import push
from mkit_transport.refs import RefWriteCondition
push(sys.argv[1], FileTransport(sys.argv[2]), sys.argv[3], expect=RefWriteCondition.ANY,
     pack_size=1 << 20, concurrency=2)
"""


@pytest.mark.slow
def test_kill_9_at_random_points_never_leaves_the_ref_on_an_incomplete_snapshot(
    tmp_path: Path,
) -> None:
    tree = write_tree(tmp_path / "tree", files=300)
    store = tmp_path / "remote"
    rng = random.Random(7)
    pushed: list[dict[str, object]] = []  # every tree a pusher was started on
    killed = 0
    duration = 0.0
    # At least 12 rounds, and more (up to 30) until 3 pushes were really killed: when
    # a push beats its kill time, the next kill times aim at that push's real length,
    # so a machine whose speed changes mid-test still gets its pushes interrupted.
    for round_ in range(30):
        if round_ >= 12 and killed >= 3:
            break
        # new content each round, so every push has real work to be interrupted in
        (tree / "payload.bin").write_bytes(rng.randbytes(24 << 20))
        (tree / "d1" / "e1" / "f1.txt").write_text(f"round {round_}")
        pushed.append(_digest(tree))
        child = subprocess.Popen(
            [sys.executable, "-c", _PUSHER, str(tree), str(store), REF], cwd=ROOT
        )
        started = time.monotonic()
        if round_ == 0:  # the first push runs to the end: it times a whole push
            assert child.wait(240) == 0
            duration = time.monotonic() - started
        else:
            try:
                child.wait(rng.uniform(0.05, 0.95) * duration)
                duration = time.monotonic() - started  # it finished first
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGKILL)
        if child.wait(60) == -signal.SIGKILL:
            killed += 1
        remote = FileTransport(store)
        if remote.read_ref(REF) is None:
            continue
        dest = tmp_path / f"out{round_}"
        pull(remote, REF, dest, cache_dir=str(tmp_path / "cache"))
        assert _digest(dest) in pushed  # a complete snapshot of some pushed tree
        shutil.rmtree(dest)
    assert killed >= 3, "the loop never interrupted a push: it tested nothing"
