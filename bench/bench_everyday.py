"""The everyday push loop against git: an unchanged re-push, a one-file edit, peak RSS.

Usage: ``python bench/bench_everyday.py [--quick]`` (issue 13, "Measured goals", the
push rows). The tree is bench/bench_mixed.py's (``make_tree``: 10,000 source files
and 1 GiB of large files; ``--quick``: 1,000 and 64 MiB). Both tools first store it
untimed: git (``add -A``, ``commit``, ``push`` to a local bare repository, its work
tree the tree itself and its git directory outside it; ``core.bigFileThreshold=1m`` so
the untimed first push does not spend minutes seeking deltas among the large random
files, which changes nothing in the timed runs) and ours (``push`` to a
``mkit+file://`` store, defaults, which keeps the stat cache, placed in the run's
directory). Rows:

* unchanged re-push: ``git add -A; git commit; git push`` with nothing to do (the
  commit exits 1, "nothing to commit", which is allowed) vs our ``push`` of the
  unchanged tree; goal ours / git <= 1;
* one small file edited, then pushed: before every timed run one source file gets a
  line appended (untimed), so each side pushes one changed small file; goal
  ours / git <= 1;
* peak RSS growth (VmHWM, fresh process: bench.common.child_peak_rss) of our
  unchanged re-push; goal <= 128 MiB.

Timings are medians of interleaved runs (bench.common.median_interleaved: git, ours,
git, ours, ...; 5 runs, ``--quick`` 3) with an untimed ``os.sync()`` before each.
Exact figures (judged in every run): the unchanged re-push sends no object and does
not move the ref, and the edit sends exactly the file's blob and the trees on its path
(plus nothing else). Timing goals are judged in full runs only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_mixed import FULL, QUICK, make_tree
from bench.common import MIB, Figure, Results, child_peak_rss, median_interleaved, mib
from mkit_transport import open_transport
from mkit_transport.sync import PushReport, push

REF = "refs/heads/main"
#: The file the edit row changes (a source file of make_tree's first copy).
EDITED = Path("src") / "c0" / "abc.py"


class Git:
    """git with its work tree at the tree, its git directory and bare remote beside it."""

    def __init__(self, tree: Path, work: Path) -> None:
        self.tree, self.gitdir, self.remote = tree, work / "git-dir", work / "git-remote.git"
        self.env = dict(
            os.environ,
            GIT_DIR=str(self.gitdir),
            GIT_WORK_TREE=str(tree),
            GIT_AUTHOR_NAME="bench",
            GIT_AUTHOR_EMAIL="bench@example.invalid",
            GIT_COMMITTER_NAME="bench",
            GIT_COMMITTER_EMAIL="bench@example.invalid",
        )

    def run(self, *args: str, ok: tuple[int, ...] = (0,)) -> None:
        """Run ``git args`` in the tree; an exit code not in ``ok`` raises."""
        done = subprocess.run(
            ["git", "-c", "gc.auto=0", "-c", "core.bigFileThreshold=1m", *args],
            cwd=self.tree,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode not in ok:
            raise RuntimeError(f"git {' '.join(args)} exited {done.returncode}:\n{done.stderr}")

    def setup(self) -> None:
        """An empty bare remote, a repository, and the tree's first commit pushed (untimed)."""
        subprocess.run(["git", "init", "-q", "--bare", str(self.remote)], check=True)
        self.run("init", "-q", "-b", "main")
        self.run("remote", "add", "origin", str(self.remote))
        self.push_all()

    def push_all(self) -> None:
        """``git add -A; git commit; git push``: the commit may have nothing to do (exit 1)."""
        self.run("add", "-A")
        self.run("commit", "-q", "-m", "x", ok=(0, 1))
        self.run("push", "-q", "origin", "main")


class Ours:
    """Our ``push`` to a ``mkit+file://`` store, the stat cache in the run's directory."""

    def __init__(self, tree: Path, work: Path) -> None:
        self.tree, self.store, self.stat = tree, work / "ours-store", str(work / "stat")
        self.reports: list[PushReport] = []

    def push(self) -> None:
        """One push of the tree (its report kept for the exact figures)."""
        with open_transport(f"mkit+file://{self.store}") as remote:
            self.reports.append(push(self.tree, remote, REF, stat_cache_dir=self.stat))


def rss_repush(tree: str, store: str, stat: str) -> Callable[[], object]:
    """For child_peak_rss: an unchanged re-push of ``tree`` (already in ``store``)."""
    remote = open_transport(f"mkit+file://{store}")
    return lambda: push(tree, remote, REF, stat_cache_dir=stat)


def _settled() -> None:
    os.sync()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small tree (CI smoke run)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    repeat = 3 if args.quick else 5
    results = Results("everyday", args.quick)
    with tempfile.TemporaryDirectory(prefix="mkit-bench-everyday-") as tmp:
        work = Path(tmp)
        tree = work / "tree"
        tree.mkdir()
        files, total = make_tree(tree, sizes)
        print(f"tree: {files} files, {mib(total)}", flush=True)
        git, ours = Git(tree, work), Ours(tree, work)
        git.setup()
        ours.push()  # the first push: fills the stat cache
        edited = tree / EDITED
        if not edited.is_file():
            raise SystemExit(f"{edited}: not in the tree; pick another file to edit")

        ours.reports.clear()
        git_s, ours_s = median_interleaved([git.push_all, ours.push], repeat, _settled)
        unchanged = list(ours.reports)
        results.section(
            "unchanged re-push",
            [
                Figure(
                    "unchanged re-push: ours / git",
                    round(ours_s / git_s, 2),
                    "x",
                    "<= 1",
                    repeats=repeat,
                    detail={"ours_s": round(ours_s, 3), "git_s": round(git_s, 3), "files": files},
                ),
                Figure(
                    "unchanged re-push: objects sent, ref moves",
                    sum(r.objects_sent + int(r.updated) for r in unchanged),
                    "",
                    "== 0",
                    kind="exact",
                ),
            ],
        )

        edits = iter(range(1_000_000))

        def edit() -> None:
            with open(edited, "a") as f:
                f.write(f"# edit {next(edits)}\n")
            os.sync()

        ours.reports.clear()
        git_s, ours_s = median_interleaved([git.push_all, ours.push], repeat, edit)
        # The file's blob and the trees on its path (tree, src, c0): 4 objects each time.
        depth = len(EDITED.parts)
        results.section(
            "one small file edited, then pushed",
            [
                Figure(
                    "one-file edit push: ours / git",
                    round(ours_s / git_s, 2),
                    "x",
                    "<= 1",
                    repeats=repeat,
                    detail={"ours_s": round(ours_s, 3), "git_s": round(git_s, 3)},
                ),
                Figure(
                    "one-file edit push: objects sent beyond the blob and its path's trees",
                    max(abs(r.objects_sent - (1 + depth)) for r in ours.reports),
                    "",
                    "== 0",
                    kind="exact",
                    detail={"sent": [r.objects_sent for r in ours.reports]},
                ),
            ],
        )

        grown = child_peak_rss(
            "bench.bench_everyday:rss_repush", str(tree), str(ours.store), ours.stat
        )
        results.section(
            "memory",
            [
                Figure(
                    "unchanged re-push peak RSS growth",
                    round(grown / MIB, 1),
                    "MiB",
                    "<= 128",
                    kind="memory",
                    detail={"tree": mib(total), "files": files},
                )
            ],
        )
    results.finish()


if __name__ == "__main__":
    main()
