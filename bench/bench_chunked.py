"""Chunked large files: bytes an edit costs, ours vs restic and borg (issue 12).

Usage: ``python bench/bench_chunked.py [--quick]``. Files over 4 MiB are pushed as
content-defined chunks (spec/SPEC-SYNC.md section 8), so an edit should cost the
chunks it touched, not the file. Each row pushes a tree, edits it, pushes again and
measures the **store's growth** (apparent bytes of every file under the store, before
and after the second push): the same measure for all three tools, so each pays for
its own metadata (our chunk lists, trees and record; restic's trees, index and
snapshot; borg's manifest, index and segments). Ours is a push to a ``file://`` store
(``mkit_transport.sync.push``); restic (``restic init`` + ``restic backup``, encrypted,
its default) and borg (``borg init -e none`` + ``borg create``, lz4, its default) run
on the same tree. The PushReport's ``bytes_uploaded`` is given beside our growth.

Rows (full sizes; ``--quick`` scales the files down, the goals stay the same in MiB
because a chunk is at most 4 MiB whatever the file's size):

* 1 byte flipped in the middle of a 1 GiB file (quick: 64 MiB): <= 4 MiB; and, summed
  over 16 such flips at evenly spaced places (each its own snapshot), no more than
  restic's growth for the same edits (one flip alone is a draw of which chunk it hits);
* 1 MiB appended to a 512 MiB file (quick: 64 MiB): <= 1 MiB + 4 MiB;
* 100 bytes inserted at the start of a 256 MiB file (quick: 32 MiB): <= 4 MiB;
* a second identical copy of a 300 MB file added to the tree (quick: 32 MiB): <= 1 MiB;
* a push killed (SIGKILL) once 60% of a 1 GiB file (quick: 64 MiB, 8 MiB packs) has
  landed as whole packs, then re-run: the bytes the re-run uploads, <= 45% of the file
  (ours only: a killed push leaves its sealed packs, which are deterministic, so the
  re-run skips them, SYNC-23). The killed push runs in a child process with a
  ``bwlimit`` so the kill lands near 60% rather than after the end.

The data are seeded random bytes, so compression helps nobody. Every goal is an exact
byte count or a ratio of two, judged in every run (a miss fails the script); restic's
and borg's growth are reported beside ours. restic picks a random chunker polynomial
per repository, so its figures vary from run to run; ours are deterministic.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import MIB, Figure, Results, check_peers, mib
from bench.peers import borg_env, restic_env, run_peer
from mkit_transport import FileTransport
from mkit_transport.sync import PushReport, push

REF = "refs/heads/main"
ROOT = Path(__file__).resolve().parent.parent
BLOCK = 4 * MIB


@dataclass(frozen=True)
class Sizes:
    """The file sizes of one run (full or quick).

    The killed push gets a pack size that cuts its file into at least 8 packs (so
    "60% landed" is observable between whole packs) and a ``bwlimit`` slow enough for
    the parent's poll to see 60% before the end (a 1 GiB push at 96 MiB/s: ~11 s).
    """

    flip: int
    append: int
    insert: int
    duplicate: int
    kill: int
    kill_pack_size: int
    kill_bwlimit: float


FULL = Sizes(
    flip=1 << 30,
    append=512 * MIB,
    insert=256 * MIB,
    duplicate=300_000_000,
    kill=1 << 30,
    kill_pack_size=64 * MIB,  # the default
    kill_bwlimit=96 * MIB,
)
QUICK = Sizes(
    flip=64 * MIB,
    append=64 * MIB,
    insert=32 * MIB,
    duplicate=32 * MIB,
    kill=64 * MIB,
    kill_pack_size=8 * MIB,
    kill_bwlimit=16 * MIB,
)


def write_random(path: Path, size: int, seed: int) -> None:
    """Write ``size`` seeded random bytes to ``path`` in 4 MiB blocks."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(BLOCK, left)
            f.write(rng.randbytes(n))
            left -= n


def tree_bytes(root: Path) -> int:
    """Apparent size of every regular file under ``root`` (``du -sb`` without dirs)."""
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            total += st.st_size
    return total


class Tool:
    """One backup tool writing snapshots of a tree into its own store under ``work``."""

    name = ""

    def __init__(self, work: Path) -> None:
        self.store = work / f"{self.name}-store"
        self.state = work / f"{self.name}-state"  # caches and config, outside the store
        self.state.mkdir()
        self.snapshots = 0
        self.last: PushReport | None = None

    def backup(self, tree: Path) -> int:
        """Snapshot ``tree``; return the store's growth in bytes."""
        before = tree_bytes(self.store) if self.store.exists() else 0
        self.snapshot(tree)
        self.snapshots += 1
        return tree_bytes(self.store) - before

    def snapshot(self, tree: Path) -> None:
        """Write one snapshot of ``tree`` into the store (creating it the first time)."""
        raise NotImplementedError


class Ours(Tool):
    """``mkit_transport.sync.push`` to a file store (no fsync, as the peers' defaults)."""

    name = "ours"

    def snapshot(self, tree: Path) -> None:
        """Push ``tree``; keep the report (the store is created by the first push)."""
        self.last = push(tree, FileTransport(self.store, durable=False), REF)


class Restic(Tool):
    """restic: encrypted (it has no other mode), default compression and chunker."""

    name = "restic"

    def env(self) -> dict[str, str]:
        """Restic's environment (bench.peers.restic_env)."""
        return restic_env(self.store, self.state)

    def snapshot(self, tree: Path) -> None:
        """``restic backup`` (``restic init`` first)."""
        if self.snapshots == 0:
            run_peer(["restic", "init", "--quiet"], self.env())
        run_peer(["restic", "backup", "--quiet", str(tree)], self.env())


class Borg(Tool):
    """borg: ``-e none`` (unencrypted), default compression (lz4) and chunker."""

    name = "borg"

    def env(self) -> dict[str, str]:
        """Borg's environment (bench.peers.borg_env)."""
        return borg_env(self.state)

    def snapshot(self, tree: Path) -> None:
        """``borg create`` of a new archive (``borg init -e none`` first)."""
        if self.snapshots == 0:
            run_peer(["borg", "init", "-e", "none", str(self.store)], self.env())
        archive = f"{self.store}::s{self.snapshots}"
        run_peer(["borg", "create", archive, str(tree)], self.env())


TOOLS: tuple[type[Tool], ...] = (Ours, Restic, Borg)

Row = tuple[str, list[Figure]]
"""A row's title (its section) and its figures."""


@dataclass(frozen=True)
class Growth:
    """What the edit's snapshot added to each tool's store, and our push's report."""

    bytes: dict[str, int]
    report: PushReport


def measure(
    work: Path, make: Callable[[Path], object], *edits: Callable[[Path], object]
) -> list[Growth]:
    """Snapshot a tree ``make`` wrote with every tool, then after each of ``edits``.

    Returns each tool's store growth from each edit's snapshot, in order.
    """
    tree = work / "tree"
    tree.mkdir()
    make(tree)
    tools = [tool(work) for tool in TOOLS]
    for tool in tools:
        tool.backup(tree)
    growths = []
    for edit in edits:
        edit(tree)
        grown = {tool.name: tool.backup(tree) for tool in tools}
        report = tools[0].last
        assert report is not None and report.updated
        growths.append(Growth(grown, report))
    return growths


def flip_byte(path: Path, where: float) -> None:
    """Flip one bit of the byte at fraction ``where`` of the file, in place."""
    with open(path, "r+b") as f:
        f.seek(int(path.stat().st_size * where))
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 1]))


def insert_at_start(path: Path, data: bytes) -> None:
    """Rewrite ``path`` with ``data`` in front (a new file renamed over the old)."""
    new = path.with_name(path.name + ".new")
    with open(new, "wb") as out, open(path, "rb") as old:
        out.write(data)
        shutil.copyfileobj(old, out, BLOCK)
    os.replace(new, path)


def peers_figures(tag: str, growth: Growth, goal: str | None = None) -> list[Figure]:
    """Our growth (judged against ``goal``) and restic's and borg's (reported).

    ``tag`` names the row in each figure, so run.py's one table (script: figure) tells
    the rows apart.
    """
    ours = growth.bytes["ours"]
    return [
        Figure(
            f"{tag}: ours, store growth",
            ours,
            "B",
            goal,
            kind="exact",
            detail={
                "ours": mib(ours),
                "bytes_uploaded": growth.report.bytes_uploaded,
                "packs_uploaded": growth.report.packs_uploaded,
            },
        ),
        *(
            Figure(
                f"{tag}: {name}, store growth",
                growth.bytes[name],
                "B",
                kind="exact",
                detail={name: mib(growth.bytes[name])},
            )
            for name in ("restic", "borg")
        ),
    ]


FLIPS = 16  # even
"""How many one-byte flips the comparison with restic sums over (see row_flip)."""


def row_flip(work: Path, size: int) -> Row:
    """One byte flipped mid-file; then the sum over ``FLIPS`` flips, ours vs restic.

    What one flip costs is the size of the chunk (or two) it lands in, so one flip
    compares two draws, not two chunkers: restic picks a random chunker polynomial per
    repository, so its figure changes from run to run, by as much as a chunk. The
    goal against restic is therefore judged on the sum of ``FLIPS`` flips at evenly
    spaced places (the first is the middle one), each pushed as its own snapshot.
    """
    # FLIPS + 1 is odd, so i / (FLIPS + 1) never flips the middle byte back
    places = [0.5, *(i / (FLIPS + 1) for i in range(1, FLIPS))]
    growths = measure(
        work,
        lambda t: write_random(t / "big", size, 1),
        *[lambda t, w=w: flip_byte(t / "big", w) for w in places],
    )
    total = {name: sum(g.bytes[name] for g in growths) for name in growths[0].bytes}
    return f"1 byte flipped mid a {mib(size)} file", [
        *peers_figures("flip", growths[0], f"<= {4 * MIB}"),
        Figure(
            f"flip, sum of {FLIPS}: ours / restic growth",
            round(total["ours"] / total["restic"], 3),
            "x",
            "<= 1",
            kind="peer",
            detail={name: mib(n) for name, n in total.items()},
        ),
    ]


def row_append(work: Path, size: int) -> Row:
    def append(tree: Path) -> None:
        with open(tree / "big", "ab") as f:
            f.write(random.Random(22).randbytes(MIB))

    (g,) = measure(work, lambda t: write_random(t / "big", size, 2), append)
    return f"1 MiB appended to a {mib(size)} file", peers_figures(
        "append", g, f"<= {MIB + 4 * MIB}"
    )


def row_insert(work: Path, size: int) -> Row:
    (g,) = measure(
        work,
        lambda t: write_random(t / "big", size, 3),
        lambda t: insert_at_start(t / "big", random.Random(33).randbytes(100)),
    )
    return f"100 bytes inserted at the start of a {mib(size)} file", peers_figures(
        "insert", g, f"<= {4 * MIB}"
    )


def row_duplicate(work: Path, size: int) -> Row:
    (g,) = measure(
        work,
        lambda t: write_random(t / "a.bin", size, 4),
        lambda t: shutil.copyfile(t / "a.bin", t / "b.bin"),
    )
    return f"second identical copy of a {size / 1e6:.0f} MB file", peers_figures(
        "duplicate", g, f"<= {MIB}"
    )


_CHILD = """
import sys
from mkit_transport import FileTransport
from mkit_transport.sync import push
tree, store, ref, bwlimit, pack_size = sys.argv[1:]
push(tree, FileTransport(store, durable=False), ref,
     bwlimit=float(bwlimit), pack_size=int(pack_size))
"""


def landed_pack_bytes(store: Path) -> int:
    """Bytes of whole packs in a file store (``packs/<2 hex>/<64 hex>``; no temporaries)."""
    total = 0
    packs = store / "packs"
    if not packs.is_dir():
        return 0
    for sub in packs.iterdir():
        if sub.is_dir():
            for entry in os.scandir(sub):
                if not entry.name.startswith("."):
                    total += entry.stat().st_size
    return total


def row_kill(work: Path, size: int, pack_size: int, bwlimit: float) -> Row:
    """Kill a push once 60% of the file landed as whole packs; re-run; bytes re-sent."""
    tree, store = work / "tree", work / "store"
    tree.mkdir()
    write_random(tree / "big", size, 5)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    args = [str(tree), str(store), REF, str(bwlimit), str(pack_size)]
    child = subprocess.Popen([sys.executable, "-c", _CHILD, *args], env=env)
    landed = 0
    try:
        while child.poll() is None:
            landed = landed_pack_bytes(store)
            if landed >= 0.6 * size:
                os.kill(child.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        code = child.wait()
    if code != -signal.SIGKILL:
        raise RuntimeError(
            f"the push to be killed exited {code} with {mib(landed)} of {mib(size)} landed:"
            " lower its bwlimit so the kill lands at 60%"
        )
    rerun = push(tree, FileTransport(store, durable=False), REF, pack_size=pack_size)
    assert rerun.updated
    return f"push killed at 60% of a {mib(size)} file, then re-run", [
        Figure(
            "killed at 60%, re-run: ours, bytes uploaded",
            rerun.bytes_uploaded,
            "B",
            f"<= {int(0.45 * size)}",
            kind="exact",
            detail={
                "re-sent": f"{rerun.bytes_uploaded / size:.1%}",
                "landed_at_kill": f"{landed / size:.1%}",
                "pack_size": mib(pack_size),
                "packs_skipped": rerun.packs_skipped,
            },
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small files (CI smoke run)")
    args = parser.parse_args()
    check_peers()
    sizes = QUICK if args.quick else FULL
    results = Results("chunked", args.quick)
    rows: list[Callable[[Path], Row]] = [
        lambda w: row_flip(w, sizes.flip),
        lambda w: row_append(w, sizes.append),
        lambda w: row_insert(w, sizes.insert),
        lambda w: row_duplicate(w, sizes.duplicate),
        lambda w: row_kill(w, sizes.kill, sizes.kill_pack_size, sizes.kill_bwlimit),
    ]
    for row in rows:
        # one directory per row, deleted after it, so the disk holds one row at a time
        with tempfile.TemporaryDirectory(prefix="mkit-bench-chunked-") as tmp:
            start = time.perf_counter()
            title, figures = row(Path(tmp))
            print(f"\n({title}: {time.perf_counter() - start:.0f} s)")
            results.section(title, figures)  # the title is the figures' id: no timing in it
    results.finish()


if __name__ == "__main__":
    main()
