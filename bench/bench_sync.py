"""Snapshot sync: push/pull vs the zstd bound and vs git, incremental figures, peak RSS.

Usage: ``python bench/bench_sync.py [--quick]``. A tree is generated
deterministically in a temporary directory (full: ~10k source-like files plus a
few large binaries, about 1 GiB; ``--quick``: a few MiB). Every timing figure is a
ratio against a baseline measured in the same run on the same bytes (issue 3,
section 7), the median of 3 interleaved rounds (1 with ``--quick``):

* push to the file transport vs reading + zstd-compressing the same files at the
  same level (the compression bound, which writes nothing); goal >= 0.7x. A second
  row pushes with ``direct_io=False`` (packs through the page cache): on these VMs
  every fresh page-cache page costs a host fault, which is what ``direct_io`` avoids;
* push and pull vs ``git add && git commit && git push`` / ``git clone`` with a
  local bare repository; goal: faster than git. The pull goal is against
  ``git clone --no-local`` (transfers and verifies a pack, as a pull does); the
  plain local ``git clone`` (hardlinks the objects, only checks out) is reported
  beside it;
* re-push unchanged: pack bytes (goal 0) and transport calls (goal <= 3);
* one file of 10k changed: bytes uploaded vs its compressed size + the trees on
  its path + the record + 1 KiB;
* peak RSS growth of push and pull in a fresh process; goal <= 128 MiB.

The file transport runs with ``durable=False`` (no fsync), as git does not fsync
object files by default either.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zstandard

from bench.common import MIB, Figure, Results, child_peak_rss, mib
from mkit_transport import FileTransport, PackKey, RefWriteCondition
from mkit_transport.sync import pull, push

REF = "refs/heads/main"
_WORDS = (  # noqa: SIM905 - one readable vocabulary string
    "def class return import from self if else for while in not and or None True False "
    "value result data index count items key name path open read write close error try "
    "except raise yield lambda with assert print len range list dict set tuple int str"
).split()


def make_tree(root: Path, files: int, binaries: list[int], seed: int = 1) -> int:
    """Write ``files`` source-like files in nested dirs and binaries of the given sizes."""
    rng = random.Random(seed)
    total = 0
    for i in range(files):
        d = root / f"pkg{i % 40}" / f"mod{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        lines = []
        for _ in range(rng.randint(200, 700)):
            indent = "    " * rng.randint(0, 3)
            lines.append(indent + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 10))))
        data = ("\n".join(lines) + f"\n# file {i}\n").encode()
        (d / f"file{i}.py").write_bytes(data)
        total += len(data)
    for j, size in enumerate(binaries):
        path = root / "assets" / f"blob{j}.bin"
        path.parent.mkdir(exist_ok=True)
        with open(path, "wb") as f:
            block = rng.randbytes(1 << 20)
            for k in range(size // (1 << 20)):
                if j % 2:  # incompressible
                    f.write(rng.randbytes(1 << 20))
                else:  # half-compressible: repeated blocks with a little noise
                    f.write(block[: 1 << 19] + k.to_bytes(8, "big") * (1 << 16))
        total += size
    return total


def zstd_bound(root: Path, level: int) -> float:
    """Seconds to read every file and compress it at ``level`` (large ones on 2 threads)."""
    start = time.perf_counter()
    small = zstandard.ZstdCompressor(level=level)
    large = zstandard.ZstdCompressor(level=level, threads=2)
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            size = os.path.getsize(path)
            if size <= 1 << 20:
                with open(path, "rb") as f:
                    small.compress(f.read())
            else:
                with open(path, "rb") as f, open(os.devnull, "wb") as null:
                    large.copy_stream(f, null, size=size)
    return time.perf_counter() - start


def timed(fn: Callable[[], object]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def git_push_and_clone(tree: Path, work: Path) -> tuple[float, float, float]:
    """Time git add+commit+push to a local bare repo, then two clones of it.

    ``git clone /path`` of a local repository hardlinks the object files and only
    checks the tree out: it moves and verifies nothing. ``git clone --no-local``
    transfers a pack and indexes it (``index-pack`` inflates and SHA-1s every
    object), like a clone over a network: that is the counterpart of a pull, which
    downloads packs and verifies every object. Both are reported; the goal uses
    ``--no-local``.
    """
    bare, gitdir = work / "bare.git", work / "gitdir"
    git("init", "-q", "--bare", str(bare))
    env = ["--git-dir", str(gitdir), "--work-tree", str(tree)]
    git("init", "-q", "--separate-git-dir", str(gitdir), str(work / "gw"))
    ident = ["-c", "user.name=b", "-c", "user.email=b@b", "-c", "commit.gpgsign=false"]
    start = time.perf_counter()
    git(*env, "add", "-A")
    git(*ident, *env, "commit", "-q", "-m", "bench")
    git(*env, "push", "-q", str(bare), "HEAD:refs/heads/main")
    push_time = time.perf_counter() - start
    start = time.perf_counter()
    git("clone", "-q", "--no-local", "--branch", "main", str(bare), str(work / "clone-nl"))
    no_local = time.perf_counter() - start
    start = time.perf_counter()
    git("clone", "-q", "--branch", "main", str(bare), str(work / "clone"))
    return push_time, no_local, time.perf_counter() - start


def rss_push(tree: str, store: str) -> Callable[[], object]:
    transport = FileTransport(store, durable=False)
    return lambda: push(tree, transport, REF)


def rss_pull(store: str, dest: str, cache: str) -> Callable[[], object]:
    transport = FileTransport(store, durable=False)
    return lambda: pull(transport, REF, dest, cache_dir=cache)


class Counting(FileTransport):
    """Counts the public calls a push makes."""

    calls = 0

    def read_ref(self, name: str) -> Any:
        """Count the call, then delegate."""
        Counting.calls += 1
        return super().read_ref(name)

    def download_pack(self, key: PackKey) -> bytes:
        """Count the call, then delegate."""
        Counting.calls += 1
        return super().download_pack(key)

    def pack_exists(self, key: PackKey) -> bool:
        """Count the call, then delegate."""
        Counting.calls += 1
        return super().pack_exists(key)

    def upload_pack(self, data: bytes, key: PackKey) -> None:
        """Count the call, then delegate."""
        Counting.calls += 1
        super().upload_pack(data, key)

    def upload_pack_stream(self, key: PackKey, chunks: Any, total: int) -> None:
        """Count the call, then delegate."""
        Counting.calls += 1
        super().upload_pack_stream(key, chunks, total)

    def update_ref(self, name: str, condition: RefWriteCondition, value: Any) -> None:
        """Count the call, then delegate."""
        Counting.calls += 1
        super().update_ref(name, condition, value)


def _round(
    tree: Path, run: Path, target: FileTransport, level: int
) -> tuple[dict[str, float], Any]:
    """One round of the timed steps, each into fresh directories under ``run``.

    Returns the seconds of each step and the push's report. Nothing is deleted
    between timed steps: on this machine's ext4 (mounted with discard) file
    creation stalls for seconds after a large delete, which would penalise
    whichever step comes next.
    """
    buffered = FileTransport(run / "store-buffered", durable=False, direct_io=False)
    steps: dict[str, float] = {"bound": zstd_bound(tree, level)}
    steps["push"], pushed = timed(lambda: push(tree, target, REF, level=level))
    steps["buffered"], _ = timed(lambda: push(tree, buffered, REF, level=level))
    steps["pull"], _ = timed(
        lambda: pull(target, REF, run / "pulled", cache_dir=str(run / "cache"))
    )
    steps["git_push"], steps["git_clone_nl"], steps["git_clone"] = git_push_and_clone(tree, run)
    return steps, pushed


def _timed_runs(
    tree: Path, work: Path, remote: FileTransport, level: int, repeat: int
) -> tuple[dict[str, float], Any]:
    """Median seconds of each timed step over ``repeat`` interleaved rounds.

    One round runs every step once (the zstd bound, push, push through the page
    cache, pull, git push, both git clones), so each side of a ratio runs under
    the conditions of the other's round. The first round pushes to ``remote``
    (kept for the incremental figures) and its pull is compared with the tree;
    later rounds push to a fresh store, and their outputs are deleted at the end
    of the round, followed by a sync, so the discards and write-back land before
    the next round rather than in one of its timed steps. Returns the medians and
    the first push's report.
    """
    times: dict[str, list[float]] = {}
    first: Any = None
    for round_ in range(repeat):
        run = work / f"round{round_}"
        run.mkdir()
        target = remote if round_ == 0 else FileTransport(run / "store", durable=False)
        steps, pushed = _round(tree, run, target, level)
        for name, seconds in steps.items():
            times.setdefault(name, []).append(seconds)
        if round_ == 0:
            first = pushed
            same = subprocess.run(
                ["diff", "-r", "--no-dereference", str(tree), str(run / "pulled")], check=False
            )
            assert same.returncode == 0, "pulled tree differs"
        else:
            shutil.rmtree(run)
            os.sync()
    return {name: statistics.median(runs) for name, runs in times.items()}, first


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a tiny tree (CI smoke run)")
    args = parser.parse_args()
    files, binaries = (300, [2 * MIB, 2 * MIB]) if args.quick else (10_000, [200 * MIB] * 4)
    repeat = 1 if args.quick else 3
    level = 3
    results = Results("sync", args.quick)
    with tempfile.TemporaryDirectory(prefix="mkit-bench-sync-") as tmp:
        work = Path(tmp)
        tree = work / "tree"
        size = make_tree(tree, files, binaries)
        print(f"tree: {files} files + {len(binaries)} binaries, {mib(size)}")
        remote = Counting(work / "store", durable=False)
        t, first = _timed_runs(tree, work, remote, level, repeat)
        assert first.new is not None
        Counting.calls = 0
        unchanged = push(tree, remote, REF)
        calls = Counting.calls
        target = tree / "pkg3" / "mod3" / "file3.py"
        body = target.read_bytes().replace(b"def", b"fed", 1)
        target.write_bytes(body)
        one = push(tree, remote, REF)
        assert one.new is not None
        record = remote.download_blob(PackKey(bytes(one.new)))
        compressed = len(zstandard.ZstdCompressor(level=level).compress(body))
        trees = one.raw_bytes_sent - len(body)
        bound_one = compressed + trees + len(record) + 1024
        rss_p = child_peak_rss("bench.bench_sync:rss_push", str(tree), str(work / "rss-store"))
        rss_l = child_peak_rss(
            "bench.bench_sync:rss_pull",
            str(work / "rss-store"),
            str(work / "rss-out"),
            str(work / "rss-cache"),
        )

    def seconds(*names: str) -> dict[str, object]:
        return {f"{name}_s": round(t[name], 2) for name in names}

    def ratio(baseline: str, ours: str) -> float:
        return round(t[baseline] / t[ours], 2)

    results.section(
        "sync",
        [
            Figure(
                "push vs zstd bound",
                ratio("bound", "push"),
                "x",
                ">= 0.7",
                repeats=repeat,
                detail={
                    "tree": mib(size),
                    **seconds("push", "bound"),
                    "uploaded": mib(first.bytes_uploaded),
                },
            ),
            Figure(
                "push with direct_io=False (page cache) vs zstd bound",
                ratio("bound", "buffered"),
                "x",
                repeats=repeat,
                detail=seconds("buffered", "bound"),
            ),
            Figure(
                "push vs git add+commit+push",
                ratio("git_push", "push"),
                "x",
                "> 1",
                repeats=repeat,
                detail=seconds("push", "git_push"),
            ),
            Figure(
                "pull vs git clone --no-local",
                ratio("git_clone_nl", "pull"),
                "x",
                "> 1",
                repeats=repeat,
                detail=seconds("pull", "git_clone_nl"),
            ),
            Figure(
                "pull vs git clone (local: hardlinks + checkout, no transfer)",
                ratio("git_clone", "pull"),
                "x",
                repeats=repeat,
                detail=seconds("pull", "git_clone"),
            ),
            # the exact figures are claims, not measurements: a miss fails the run
            Figure(
                "re-push unchanged: pack bytes",
                unchanged.bytes_uploaded,
                "B",
                "== 0",
                kind="exact",
            ),
            Figure("re-push unchanged: transport calls", calls, "", "<= 3", kind="exact"),
            Figure(
                "one file changed: bytes uploaded",
                one.bytes_uploaded,
                "B",
                f"<= {bound_one}",
                kind="exact",
                detail={"objects_sent": one.objects_sent},
            ),
            Figure("push peak RSS growth", round(rss_p / MIB, 1), "MiB", "<= 128", kind="memory"),
            Figure("pull peak RSS growth", round(rss_l / MIB, 1), "MiB", "<= 128", kind="memory"),
        ],
    )
    results.finish()


if __name__ == "__main__":
    main()
