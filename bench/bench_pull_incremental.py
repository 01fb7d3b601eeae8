"""Incremental pull after one small change vs ``git pull``; bytes, cache size, peak RSS.

Usage: ``python bench/bench_pull_incremental.py [--quick]`` (issue 13, "Measured goals").
The tree is bench_mixed's (``make_tree``, ``Sizes``: 10,000 source files and 1 GiB of
large files; ``--quick``: 1,000 files and 64 MiB). Setup, untimed: ours pushes the tree
to a ``mkit+file://`` store and pulls it fresh into a checkout (default cache limit);
git commits it, pushes to a bare repository and clones it. Each round then appends one
line to a different small source file, pushes both (untimed), and times, in an order
rotated per round with ``os.sync()`` before each:

* ours: ``pull(..., update=True)`` into the previous checkout;
* git: ``git pull --ff-only -q`` in the clone.

Rows:

* incremental pull, ours / git (kind timing, goal ``<= 2``; median of the rounds);
* bytes our incremental pull downloaded over a concrete bound (kind exact, goal
  ``<= 1``): the bound is the changed file's size + 64 KiB of metadata (the record,
  the index blobs of the new packs and pack framing) + 100 bytes per entry of every
  directory on the changed file's path, root included (each changed tree object,
  uncompressed, with names under ~60 bytes; a tree entry is its name plus a 32-byte id
  and a few header bytes);
* extra disk after a fresh pull: the cache directory's bytes (``du -sb``: packs,
  pack ids, manifest, directories) over the tree's bytes (kind exact, goal ``<= 0.1``);
* peak RSS growth of an incremental pull after one more change, in a fresh process
  (kind memory, goal ``<= 128`` MiB).

After the rounds, the checkout is compared with the source (``diff -r``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_mixed import FULL, QUICK, make_tree
from bench.common import MIB, Figure, Results, child_peak_rss, mib
from mkit_transport import open_transport
from mkit_transport.sync import pull, push

REF = "refs/heads/main"
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}


def git(cwd: Path, *args: str) -> None:
    """Run one git command quietly; fail loudly."""
    subprocess.run(
        ["git", "-c", "gc.auto=0", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        env={**os.environ, **_GIT_ENV},
    )


def disk(root: Path) -> int:
    """Bytes under ``root`` as ``du -sb`` counts them (files, links and directories)."""
    total = root.lstat().st_size
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def tree_bytes(root: Path) -> int:
    """The bytes of the regular files under ``root``."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def small_files(root: Path, count: int) -> list[Path]:
    """``count`` small source files to edit, one per round, spread over the tree."""
    found = sorted(p for p in root.rglob("*.py") if p.is_file() and p.stat().st_size < 64 << 10)
    step = max(1, len(found) // count)
    return found[::step][:count]


def bound_for(tree: Path, changed: Path) -> int:
    """The bytes-downloaded bound of one change (see the module docstring)."""
    entries = 0
    here = changed.parent
    while True:
        entries += len(os.listdir(here))
        if here == tree:
            break
        here = here.parent
    return changed.stat().st_size + (64 << 10) + 100 * entries


def rss_update(store: str, dest: str, cache: str) -> Callable[[], object]:
    """For child_peak_rss: an incremental pull, everything imported and opened first."""
    transport = open_transport(store)
    return lambda: pull(transport, REF, dest, cache_dir=cache, update=True)


def setup(work: Path, tree: Path) -> tuple[str, float, int]:
    """Push and fresh-pull ours, commit/push/clone git; return the URL and cache figures."""
    url = f"mkit+file://{work / 'store'}"
    store = open_transport(url)
    store.init_store()
    cache = work / "cache"
    push(tree, store, REF)
    pull(store, REF, work / "ours", cache_dir=str(cache))
    cache_bytes = disk(cache)
    git(tree, "init", "-q", "-b", "main")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "tree")
    git(work, "init", "-q", "--bare", "-b", "main", "bare.git")
    git(tree, "push", "-q", str(work / "bare.git"), "main")
    git(work, "clone", "-q", str(work / "bare.git"), "clone")
    # .git is not part of the tree ours pushes: keep it out of our snapshots.
    shutil.move(str(tree / ".git"), str(work / "tree.git"))
    return url, cache_bytes / tree_bytes(tree), cache_bytes


def timed_rounds(
    work: Path, tree: Path, url: str, changes: list[Path]
) -> tuple[list[float], list[float], list[tuple[int, int]]]:
    """One small change a round, pushed by both; time both pulls, rotating the order."""
    store = open_transport(url)
    checkout, cache = work / "ours", str(work / "cache")
    ours_s: list[float] = []
    git_s: list[float] = []
    downloaded: list[tuple[int, int]] = []
    for number, changed in enumerate(changes):
        with open(changed, "a", encoding="utf-8") as f:
            f.write(f"# round {number}\n")
        push(tree, store, REF)
        tree_git = ["--git-dir", str(work / "tree.git"), "--work-tree", str(tree)]
        git(tree, *tree_git, "commit", "-q", "-a", "-m", f"round {number}")
        git(tree, *tree_git, "push", "-q", str(work / "bare.git"), "main")
        bound = bound_for(tree, changed)

        def ours(bound: int = bound) -> None:
            os.sync()
            start = time.perf_counter()
            report = pull(store, REF, checkout, cache_dir=cache, update=True)
            ours_s.append(time.perf_counter() - start)
            downloaded.append((report.bytes_downloaded, bound))

        def theirs() -> None:
            os.sync()
            start = time.perf_counter()
            git(work / "clone", "pull", "--ff-only", "-q")
            git_s.append(time.perf_counter() - start)

        for step in (ours, theirs) if number % 2 == 0 else (theirs, ours):
            step()
    return ours_s, git_s, downloaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small tree (CI smoke run)")
    args = parser.parse_args()
    if shutil.which("git") is None:
        raise SystemExit("git is needed for the comparison")
    sizes = QUICK if args.quick else FULL
    rounds = max(3, sizes.repeat)
    results = Results("pull_incremental", args.quick)
    with tempfile.TemporaryDirectory(prefix="mkit-bench-incr-") as tmp:
        work = Path(tmp)
        tree = work / "tree"
        tree.mkdir()
        files, total = make_tree(tree, sizes)
        print(f"tree: {files} files, {mib(total)}", flush=True)
        url, cache_ratio, cache_bytes = setup(work, tree)
        changes = small_files(tree, rounds + 1)
        ours_s, git_s, downloaded = timed_rounds(work, tree, url, changes[:rounds])
        checkout = work / "ours"
        same = subprocess.run(["diff", "-r", str(tree), str(checkout)], check=False)
        if same.returncode != 0:
            raise SystemExit("the incrementally pulled checkout differs from the tree")
        with open(changes[-1], "a", encoding="utf-8") as f:
            f.write("# rss round\n")
        push(tree, open_transport(url), REF)
        grown = child_peak_rss(
            "bench.bench_pull_incremental:rss_update", url, str(checkout), str(work / "cache")
        )
    worst = max(downloaded, key=lambda pair: pair[0] / pair[1])
    results.section(
        "pull after one small file changed, into the previous checkout",
        [
            Figure(
                "incremental pull: ours / git pull",
                round(statistics.median(ours_s) / statistics.median(git_s), 2),
                "x",
                "<= 2",
                repeats=rounds,
                detail={
                    "ours_s": round(statistics.median(ours_s), 3),
                    "git_s": round(statistics.median(git_s), 3),
                },
            ),
            Figure(
                "bytes downloaded / (change + 64 KiB + 100 B per entry on the path)",
                round(worst[0] / worst[1], 3),
                "x",
                "<= 1",
                kind="exact",
                detail={"downloaded": worst[0], "bound": worst[1]},
            ),
            Figure(
                "extra disk after a fresh pull: cache / tree",
                round(cache_ratio, 4),
                "x",
                "<= 0.1",
                kind="exact",
                detail={"cache": mib(cache_bytes), "tree": mib(total)},
            ),
            Figure(
                "incremental pull peak RSS growth",
                round(grown / MIB, 1),
                "MiB",
                "<= 128",
                kind="memory",
            ),
        ],
    )
    results.finish()


if __name__ == "__main__":
    main()
