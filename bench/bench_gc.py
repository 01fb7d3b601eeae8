"""gc and fsck on a file store with many packs: wall time and peak RSS.

Usage: ``python bench/bench_gc.py [--quick] [--packs N]``. Builds a file store of N
keys (full: 100,000; ``--quick``: 2,000; ``--packs`` sets any other count): a few
hundred small snapshots pushed onto 10 refs (the reachable part: a record, a pack
and an index blob each) and the rest tiny orphan packs written straight into the
store's layout (fast; gc only lists, stats and deletes them). Then, each in a fresh
process whose peak RSS is measured (bench.common.child_peak_rss):

* ``fsck``: verify everything the refs reach (cost follows the reachable part);
* ``gc --dry-run``: mark, list every key, count what would go;
* ``gc``: the same, deleting every orphan;
* ``fsck`` again: the store is still whole.

gc and fsck open the store as the command line does (durable: gc fsyncs each
folder its deletes touched, once per batch of ``delete_packs``; a copy of the store
is also collected the old way, one fsync per deleted pack, for the before/after).
gc runs with a grace period of an hour and its ``now`` two hours ahead, so every
orphan counts as old without touching 100,000 mtimes. The exact figures (what
would go is what went, and is every orphan; nothing reachable went; fsck finds
nothing wrong) fail the script if they miss.
Memory goal: 64 MiB (SPEC-GC: the marked set and one listing page, never the
whole listing). Timings are single runs, reported.

Then repack (SPEC-GC section 4): a large chunked file (full: 64 MiB, 20 rounds;
``--quick``: 16 MiB, 6 rounds) of random bytes is edited in 3 places (4 KiB each)
and pushed each round; ``gc --keep-last 1`` alone, then ``gc --keep-last 1
--repack`` (5%). *Live* is the bytes of the packs the ref's record lists: what a
fresh pull of the ref downloads. Goal (exact): the store's bytes (every pack,
index blob and record it lists) are at most 1.3x live after the repack; the
compressed size of the live objects (entry headers and frames) is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import MIB, Figure, Results, child_peak_rss
from mkit_transport import FileTransport, PackKey
from mkit_transport.sync import push
from mkit_transport.sync.common import fetch_record
from mkit_transport.sync.fsck import fsck
from mkit_transport.sync.gc import gc

REFS = 10
GRACE = 3600.0
RSS_GOAL = "<= 64"
#: Store bytes over live bytes after ``gc --keep-last 1 --repack`` (SPEC-GC section 4).
REPACK_GOAL = "<= 1.3"


def build_store(root: Path, work: Path, packs: int) -> tuple[int, int]:
    """Push the reachable snapshots, then orphans up to ``packs`` keys in all.

    Returns (reachable keys, orphans written).
    """
    store = FileTransport(root, durable=False)
    store.init_store()
    pushes = max(REFS * 2, packs // 200)
    source = work / "src"
    source.mkdir()
    for i in range(pushes):
        (source / "file.txt").write_bytes(f"snapshot {i}\n".encode() * 20)
        push(source, store, f"refs/heads/r{i % REFS}")
    reachable = sum(1 for _ in store.list_packs())
    orphans = max(0, packs - reachable)
    made: set[str] = set()
    for i in range(orphans):
        data = b"orphan %d" % i
        path = store.pack_path(PackKey.of(data))
        folder = os.path.dirname(path)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        with open(path, "wb") as f:
            f.write(data)
    return reachable, orphans


def _timed(out: str, run: Callable[[], dict[str, object]]) -> Callable[[], None]:
    """The operation a child measures: run, then write its report and wall time."""

    def operation() -> None:
        start = time.perf_counter()
        report = run()
        Path(out).write_text(json.dumps({"seconds": time.perf_counter() - start, **report}))

    return operation


class _OneByOne(FileTransport):
    """The file store as before batched deletes: one directory fsync per deleted pack."""

    def _delete_packs(self, keys: list[PackKey]) -> None:
        for key in keys:
            super()._delete_packs([key])


def op_gc(root: str, out: str, dry_run: str, one_by_one: str = "0") -> Callable[[], None]:
    """A gc (or a dry run) of the store at ``root``, every orphan aged past the grace.

    ``one_by_one`` "1": fsync after each delete, as gc did before ``delete_packs``.
    """
    store = (_OneByOne if one_by_one == "1" else FileTransport)(root)  # durable, as the CLI
    now = time.time() + 2 * GRACE
    return _timed(out, lambda: gc(store, grace=GRACE, now=now, dry_run=dry_run == "1").as_dict())


def op_fsck(root: str, out: str) -> Callable[[], None]:
    """An fsck of everything the refs of the store at ``root`` reach."""
    store = FileTransport(root)
    return _timed(out, lambda: fsck(store).as_dict())


def _measure(target: str, *args: str) -> tuple[dict[str, Any], int]:
    """Run ``target`` in a fresh process: its report (with ``seconds``) and peak RSS."""
    out = args[1]
    peak = child_peak_rss(target, *args)
    return json.loads(Path(out).read_text()), peak


def _figures(name: str, report: dict[str, Any], peak: int, listed: int) -> list[Figure]:
    seconds = float(report["seconds"])
    figures = [
        Figure(f"{name}: wall time", round(seconds, 3), "s", detail={"keys_stored": listed}),
        Figure(f"{name}: peak RSS growth", round(peak / MIB, 1), "MiB", RSS_GOAL, kind="memory"),
    ]
    if name.startswith("gc"):
        per_key = seconds / max(1, int(report["listed"]))
        figures.append(Figure(f"{name}: time per listed key", round(per_key * 1e6, 1), "us"))
    return figures


def repack_section(work: Path, quick: bool) -> list[Figure]:
    """Edit-and-push rounds on a large chunked file, then gc with and without repack."""
    size, rounds = (16 << 20, 6) if quick else (64 << 20, 20)
    store = FileTransport(work / "repack-store", durable=False)
    store.init_store()
    source = work / "repack-src"
    source.mkdir()
    rng = random.Random(20)
    data = bytearray(rng.randbytes(size))
    ref = "refs/heads/big"
    start = time.perf_counter()
    for _ in range(rounds):
        for _ in range(3):
            at = rng.randrange(size - 4096)
            data[at : at + 4096] = rng.randbytes(4096)
        (source / "big.bin").write_bytes(data)
        push(source, store, ref)
    pushed = time.perf_counter() - start

    def stored() -> int:
        return sum(info.size for info in store.list_packs())

    before = stored()
    now = time.time() + 2 * GRACE  # every key of the rounds counts as old
    gc(store, grace=GRACE, now=now, keep_last=1)
    pruned = stored()
    start = time.perf_counter()
    done = gc(store, grace=GRACE, now=now + 1, keep_last=1, max_unused=5.0)
    repack_seconds = time.perf_counter() - start
    after = stored()
    value = store.read_ref(ref)
    assert value is not None and done.repack is not None
    live = sum(pack.size for pack in fetch_record(store, value).packs)
    check = gc(store, grace=GRACE, now=now + 2, keep_last=1, max_unused=5.0, dry_run=True)
    assert check.repack is not None
    detail = {"file_mib": size // MIB, "rounds": rounds, "live_bytes": live}
    return [
        Figure("pushes", round(pushed, 1), "s", detail=detail),
        Figure("store before gc", round(before / MIB, 1), "MiB"),
        Figure("store after gc --keep-last 1", round(pruned / MIB, 1), "MiB"),
        Figure("store / live, gc --keep-last 1 only", round(pruned / live, 3), "x"),
        Figure("store after gc --keep-last 1 --repack", round(after / MIB, 1), "MiB"),
        Figure("live (packs a fresh pull needs)", round(live / MIB, 1), "MiB"),
        Figure(
            "live objects, compressed (entries)", round(check.repack.live_bytes / MIB, 1), "MiB"
        ),
        Figure(
            "store / live after repack",
            round(after / live, 3),
            "x",
            REPACK_GOAL,
            kind="exact",
            detail={"store_bytes": after, "live_bytes": live},
        ),
        Figure("repack: packs rewritten", done.repack.packs_rewritten),
        Figure("gc --repack: wall time", round(repack_seconds, 2), "s"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 keys (a smoke run)")
    parser.add_argument("--packs", type=int, default=None, help="keys in the store")
    args = parser.parse_args()
    packs = args.packs or (2_000 if args.quick else 100_000)
    results = Results("gc", args.quick)
    with tempfile.TemporaryDirectory(prefix="mkit-bench-gc-") as tmp:
        work = Path(tmp)
        root = work / "store"
        start = time.perf_counter()
        reachable, orphans = build_store(root, work, packs)
        built = time.perf_counter() - start
        listed = reachable + orphans
        results.section(
            f"store of {listed} keys",
            [
                Figure("reachable keys", reachable, kind="exact"),
                Figure("orphan keys", orphans, kind="exact"),
                Figure("build time", round(built, 1), "s"),
            ],
        )
        out = str(work / "report.json")
        before, peak = _measure("bench.bench_gc:op_fsck", str(root), out)
        fsck_figures = _figures("fsck", before, peak, listed)
        fsck_figures.append(Figure("fsck: ok", bool(before["ok"]), goal="== true", kind="exact"))
        results.section("fsck", fsck_figures)

        dry, peak = _measure("bench.bench_gc:op_gc", str(root), out, "1")
        dry_figures = _figures("gc --dry-run", dry, peak, listed)
        dry_figures.append(
            Figure("gc --dry-run: would sweep", dry["swept"], goal=f"== {orphans}", kind="exact")
        )
        results.section("gc --dry-run", dry_figures)

        before_copy = work / "store-one-by-one"
        shutil.copytree(root, before_copy)
        old, _peak = _measure("bench.bench_gc:op_gc", str(before_copy), out, "0", "1")
        shutil.rmtree(before_copy)
        done, peak = _measure("bench.bench_gc:op_gc", str(root), out, "0")
        gc_figures = _figures("gc", done, peak, listed)
        left = sum(1 for _ in FileTransport(root).list_packs())
        gc_figures += [
            Figure("gc: swept", done["swept"], goal=f"== {dry['swept']}", kind="exact"),
            Figure("gc: keys left", left, goal=f"== {reachable}", kind="exact"),
        ]
        gc_figures += [
            Figure(
                "gc, one fsync per delete (before batching): wall time",
                round(float(old["seconds"]), 3),
                "s",
                detail={"swept": old["swept"]},
            ),
            Figure(
                "gc: speed-up of batched deletes",
                round(float(old["seconds"]) / max(1e-9, float(done["seconds"])), 1),
                "x",
            ),
        ]
        results.section("gc", gc_figures)

        after, peak = _measure("bench.bench_gc:op_fsck", str(root), out)
        results.section(
            "fsck after gc",
            [
                Figure("fsck after gc: ok", bool(after["ok"]), goal="== true", kind="exact"),
                Figure(
                    "fsck after gc: records",
                    after["records"],
                    goal=f"== {before['records']}",
                    kind="exact",
                ),
            ],
        )
        results.section("repack", repack_section(work, args.quick))
    results.finish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
