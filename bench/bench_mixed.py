"""A mixed tree, first push and pull: ours vs restic and borg, the zstd bound, peak RSS.

Usage: ``python bench/bench_mixed.py [--quick]`` (issue 12, "Measured goals"). The tree
is generated deterministically: source files (copies of this Python's standard-library
``.py`` files, ``site-packages`` excluded, each copy given a one-line header so no two
files are identical; 10,000 files, ``--quick`` 1,000) plus large files of 128 MiB
(``--quick``: 16 MiB), 1 GiB in all (``--quick`` 64 MiB), half seeded random bytes and
half seeded compressible bytes (random symbols from a 16-letter alphabet, which zstd
halves). Rows:

* first push of the tree: ours (``mkit_transport.push`` to a ``mkit+file://`` store,
  defaults, so fsynced like the peers) vs ``restic backup`` (0.14, encrypted, its
  only mode) and ``borg create --compression zstd,3`` (``-e none``); goal: faster
  than both (ours / theirs < 1). Ours against the zstd bound: reading every file and
  compressing it at level 3 on one thread, writing nothing; goal: our throughput
  >= 0.7x the bound's (bound seconds / push seconds);
* pull of that tree into an empty directory: ``mkit_transport.pull`` (a fresh pack
  cache each time) vs ``restic restore latest --target`` and ``borg extract``; goal:
  faster than both;
* peak RSS growth of a push and of a pull of one 1 GiB file (``--quick``: 64 MiB), in
  a fresh process (bench.common.child_peak_rss); goal <= 128 MiB each;
* issue 17's rows, from one more round in which every step is a child process measured
  by ``wait4`` (bench.peers.run_peer: wall seconds, user + system CPU, ``ru_maxrss``):
  ours is the command line (``python -m mkit_transport push --no-cache`` / ``pull``,
  interpreter start-up included), restic its own binary. Push peak RSS ours / restic
  (goal <= 1), pull CPU ours / restic (goal <= 1), and the median pull time of the
  timed rounds ours / restic against issue 17's goal (<= 0.7). Judged in full runs.

Timings are medians of interleaved rounds (3, ``--quick`` 1): a round runs the bound,
the three first pushes (each into a fresh store; a peer's ``init`` is not timed) and
the three pulls, in an order rotated per round, with ``os.sync()`` untimed before
each step so no step pays for the previous one's write-back. The page cache cannot
be dropped here, so every side reads a warm cache. The first round's pulled tree of
ours is compared with the source (``diff -r``). Timing goals are judged in full runs
only; the memory goals in every run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zstandard

from bench.common import MIB, Figure, Results, check_peers, child_peak_rss, mib
from bench.peers import Usage, borg_env, restic_env, run_peer
from mkit_transport import open_transport
from mkit_transport.sync import pull, push

REF = "refs/heads/main"
BLOCK = 4 * MIB
LEVEL = 3
_ALPHABET = bytes(range(ord("a"), ord("a") + 16)) * 16
"""A byte translation table mapping every byte to one of 16 letters (4 bits of entropy)."""


@dataclass(frozen=True)
class Sizes:
    """The tree (and the RSS file) of one run, full or quick."""

    files: int
    large: int
    large_total: int
    rss_file: int
    repeat: int


FULL = Sizes(files=10_000, large=128 * MIB, large_total=1 << 30, rss_file=1 << 30, repeat=3)
QUICK = Sizes(files=1_000, large=16 * MIB, large_total=64 * MIB, rss_file=64 * MIB, repeat=1)


def stdlib_sources() -> list[Path]:
    """The standard library's ``.py`` files, sorted, without ``site-packages``."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
    if not found:
        raise SystemExit(f"no .py files under {root}: cannot build the source part of the tree")
    return found


def write_large(path: Path, size: int, seed: int, compressible: bool) -> None:
    """Write ``size`` seeded bytes: random, or random letters of a 16-letter alphabet."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            block = rng.randbytes(min(BLOCK, left))
            f.write(block.translate(_ALPHABET) if compressible else block)
            left -= len(block)


def make_tree(root: Path, sizes: Sizes) -> tuple[int, int]:
    """Write the mixed tree under ``root``; return (files, bytes).

    Source file ``i`` is standard-library file ``i mod n`` under ``src/c<copy>/``,
    with a header naming the copy, so content differs between copies as between
    files of a real tree.
    """
    sources = stdlib_sources()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    total = 0
    for i in range(sizes.files):
        copy, src = divmod(i, len(sources))
        rel = sources[src].relative_to(stdlib)
        dest = root / "src" / f"c{copy}" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = f"# copy {copy} of {rel}\n".encode() + sources[src].read_bytes()
        dest.write_bytes(data)
        total += len(data)
    (root / "assets").mkdir()
    count = sizes.large_total // sizes.large
    for j in range(count):
        write_large(root / "assets" / f"blob{j}.bin", sizes.large, 100 + j, compressible=j % 2 == 1)
        total += sizes.large
    return sizes.files + count, total


def tree_bytes(root: Path) -> int:
    """Apparent size of every regular file under ``root``."""
    return sum(
        os.lstat(os.path.join(dirpath, name)).st_size
        for dirpath, _dirs, names in os.walk(root)
        for name in names
    )


def zstd_bound(root: Path) -> None:
    """Read every file under ``root`` and compress it at LEVEL on one thread; write nothing."""
    small = zstandard.ZstdCompressor(level=LEVEL)
    with open(os.devnull, "wb") as null:
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                path = os.path.join(dirpath, name)
                size = os.path.getsize(path)
                with open(path, "rb") as f:
                    if size <= BLOCK:
                        small.compress(f.read())
                    else:  # streamed, as a push streams a large file
                        zstandard.ZstdCompressor(level=LEVEL).copy_stream(f, null, size=size)


class Tool:
    """One tool's store under a round's directory: untimed setup, timed push and pull."""

    name = ""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.store = run / f"{self.name}-store"
        self.state = run / f"{self.name}-state"  # caches and config, outside the store
        self.state.mkdir()

    def setup(self) -> None:
        """Create the empty store (untimed)."""

    def push(self, tree: Path) -> None:
        """The first snapshot of ``tree`` into the store (timed)."""
        raise NotImplementedError

    def pull(self, dest: Path) -> None:
        """Restore the snapshot into the empty directory ``dest`` (timed)."""
        raise NotImplementedError


class Ours(Tool):
    """``mkit_transport.push`` / ``pull`` with a ``mkit+file://`` store, defaults."""

    name = "ours"

    def url(self) -> str:
        """The store's URL (``open_transport`` makes a FileTransport with its defaults)."""
        return f"mkit+file://{self.store}"

    def push(self, tree: Path) -> None:
        """``mkit_transport.push`` of ``tree``."""
        with open_transport(self.url()) as remote:
            # A first push: no stat cache from an earlier round's push of this tree.
            push(tree, remote, REF, stat_cache=False)

    def pull(self, dest: Path) -> None:
        """``mkit_transport.pull`` into ``dest``, with a fresh pack cache."""
        with open_transport(self.url()) as remote:
            pull(remote, REF, dest, cache_dir=str(self.state / "cache"))


class Restic(Tool):
    """restic: encrypted (its only mode), default compression and chunker."""

    name = "restic"

    def env(self) -> dict[str, str]:
        """Restic's environment (bench.peers.restic_env)."""
        return restic_env(self.store, self.state)

    def setup(self) -> None:
        """``restic init``."""
        run_peer(["restic", "init", "--quiet"], self.env())

    def push(self, tree: Path) -> None:
        """``restic backup``."""
        run_peer(["restic", "backup", "--quiet", str(tree)], self.env())

    def pull(self, dest: Path) -> None:
        """``restic restore latest --target dest``."""
        run_peer(["restic", "restore", "latest", "--quiet", "--target", str(dest)], self.env())


class Borg(Tool):
    """borg: ``-e none``, ``--compression zstd,3`` (our level), default chunker."""

    name = "borg"

    def env(self) -> dict[str, str]:
        """Borg's environment (bench.peers.borg_env)."""
        return borg_env(self.state)

    def setup(self) -> None:
        """``borg init -e none``."""
        run_peer(["borg", "init", "-e", "none", str(self.store)], self.env())

    def push(self, tree: Path) -> None:
        """``borg create`` of ``tree`` (run inside it, so paths are relative)."""
        archive = f"{self.store}::a"
        run_peer(
            ["borg", "create", "--compression", f"zstd,{LEVEL}", archive, "."], self.env(), tree
        )

    def pull(self, dest: Path) -> None:
        """``borg extract``, run inside ``dest``."""
        run_peer(["borg", "extract", f"{self.store}::a"], self.env(), dest)


TOOLS: tuple[type[Tool], ...] = (Ours, Restic, Borg)


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn`` takes, after an untimed ``os.sync()`` (earlier write-back lands first)."""
    os.sync()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def one_round(
    tree: Path, run: Path, order: list[type[Tool]]
) -> tuple[dict[str, float], dict[str, int]]:
    """The bound, then each tool's first push, then each tool's pull; seconds and store sizes."""
    tools = [tool(run) for tool in order]
    for tool in tools:
        tool.setup()
    seconds = {"bound": timed(partial(zstd_bound, tree))}
    for tool in tools:
        seconds[f"push_{tool.name}"] = timed(partial(tool.push, tree))
    for tool in tools:
        dest = run / f"{tool.name}-pulled"
        dest.mkdir()
        seconds[f"pull_{tool.name}"] = timed(partial(tool.pull, dest))
    return seconds, {tool.name: tree_bytes(tool.store) for tool in tools}


def timed_rounds(tree: Path, work: Path, repeat: int) -> tuple[dict[str, float], dict[str, int]]:
    """Medians over ``repeat`` rounds (tool order rotated per round); round 0's store sizes."""
    times: dict[str, list[float]] = {}
    stored: dict[str, int] = {}
    for round_ in range(repeat):
        run = work / f"round{round_}"
        run.mkdir()
        shift = round_ % len(TOOLS)
        seconds, sizes = one_round(tree, run, [*TOOLS[shift:], *TOOLS[:shift]])
        for name, value in seconds.items():
            times.setdefault(name, []).append(value)
        if round_ == 0:
            stored = sizes
            same = subprocess.run(
                ["diff", "-r", "--no-dereference", str(tree), str(run / "ours-pulled")],
                check=False,
                capture_output=True,
            )
            assert same.returncode == 0, "our pulled tree differs from the source"
        shutil.rmtree(run)
        os.sync()
    return {name: statistics.median(values) for name, values in times.items()}, stored


def measured_round(tree: Path, work: Path) -> dict[str, Usage]:
    """Push and pull by ours (the CLI, a child process) and restic, each measured by wait4."""
    run = work / "measured"
    run.mkdir()
    ours, restic = Ours(run), Restic(run)
    restic.setup()
    cli = [sys.executable, "-m", "mkit_transport"]
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )
    steps: dict[str, tuple[list[str], dict[str, str]]] = {
        "push_ours": ([*cli, "push", "--no-cache", str(tree), ours.url(), REF], env),
        "push_restic": (["restic", "backup", "--quiet", str(tree)], restic.env()),
        "pull_ours": (
            [*cli, "pull", "--cache-dir", str(ours.state / "cache"), ours.url(), REF,
             str(run / "ours-pulled")],
            env,
        ),
        "pull_restic": (
            ["restic", "restore", "latest", "--quiet", "--target", str(run / "restic-pulled")],
            restic.env(),
        ),
    }  # fmt: skip
    (run / "restic-pulled").mkdir()
    usage: dict[str, Usage] = {}
    for name, (cmd, step_env) in steps.items():
        os.sync()
        usage[name] = run_peer(cmd, step_env)
    shutil.rmtree(run)
    os.sync()
    return usage


def measured_figures(usage: dict[str, Usage], t: dict[str, float], repeat: int) -> list[Figure]:
    """Issue 17's rows: push peak RSS and pull CPU against restic, pull time against 0.7x."""
    push_o, push_r = usage["push_ours"], usage["push_restic"]
    pull_o, pull_r = usage["pull_ours"], usage["pull_restic"]
    return [
        Figure(
            "push peak RSS (wait4): ours / restic",
            round(push_o.peak_rss / push_r.peak_rss, 2),
            "x",
            "<= 1",
            repeats=1,
            detail={"ours": mib(push_o.peak_rss), "restic": mib(push_r.peak_rss)},
        ),
        Figure(
            "pull CPU (user + system, wait4): ours / restic",
            round(pull_o.cpu / pull_r.cpu, 2),
            "x",
            "<= 1",
            repeats=1,
            detail={
                "ours_cpu_s": round(pull_o.cpu, 2),
                "restic_cpu_s": round(pull_r.cpu, 2),
                "ours_s": round(pull_o.seconds, 2),
                "restic_s": round(pull_r.seconds, 2),
            },
        ),
        Figure(
            "pull time: ours / restic (issue 17)",
            round(t["pull_ours"] / t["pull_restic"], 2),
            "x",
            "<= 0.7",
            repeats=repeat,
            detail={"ours_s": round(t["pull_ours"], 2), "restic_s": round(t["pull_restic"], 2)},
        ),
    ]


# -- peak RSS (run in a child process by child_peak_rss) -----------------------------------


def rss_push(tree: str, store: str) -> Callable[[], object]:
    remote = open_transport(f"mkit+file://{store}")
    return lambda: push(tree, remote, REF, stat_cache=False)


def rss_pull(store: str, dest: str, cache: str) -> Callable[[], object]:
    remote = open_transport(f"mkit+file://{store}")
    return lambda: pull(remote, REF, dest, cache_dir=cache)


_ANON_CHILD = r"""
import importlib, json, sys, threading, time
from bench.common import proc_status as status
module, func = sys.argv[1].split(":")
op = getattr(importlib.import_module(module), func)(*sys.argv[2:])
before = status("RssAnon")
peak = [before]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], status("RssAnon"))
        time.sleep(0.005)
sampler = threading.Thread(target=sample)
sampler.start()
try:
    op()
finally:
    done.set()
    sampler.join()
peak[0] = max(peak[0], status("RssAnon"))
print(json.dumps({"before": before, "peak": peak[0]}))
"""


def child_peak_anon(target: str, *args: str) -> int:
    """Peak *anonymous* RSS growth, in bytes, of ``target`` in a fresh process, sampled.

    VmHWM (:func:`child_peak_rss`) counts file-backed pages mapped into the process:
    a push reads a large file through a read-only mmap (sync/chunking.py), so every
    page of the file it touched counts, though those pages are the page cache's, clean
    and reclaimable. ``RssAnon`` (heap, buffers) has no kernel peak, so it is sampled
    every 5 ms; a spike shorter than that can be missed.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *sys.path]))
    done = subprocess.run(
        [sys.executable, "-c", _ANON_CHILD, target, *args],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return max(0, int(data["peak"]) - int(data["before"]))


def rss_figures(work: Path, size: int) -> list[Figure]:
    """Peak RSS growth of a push and a pull of one ``size`` file (half random, half text)."""
    tree = work / "rss-tree"
    tree.mkdir()
    path = tree / "big.bin"
    write_large(path, size // 2, 7, compressible=False)
    with open(path, "ab") as f:
        rng = random.Random(8)
        for _ in range(size // 2 // BLOCK):
            f.write(rng.randbytes(BLOCK).translate(_ALPHABET))
    store = str(work / "rss-store")
    grown_push = child_peak_rss("bench.bench_mixed:rss_push", str(tree), store)
    grown_pull = child_peak_rss(
        "bench.bench_mixed:rss_pull", store, str(work / "rss-out"), str(work / "rss-cache")
    )
    anon_push = child_peak_anon("bench.bench_mixed:rss_push", str(tree), str(work / "anon-store"))
    anon_pull = child_peak_anon(
        "bench.bench_mixed:rss_pull", store, str(work / "anon-out"), str(work / "anon-cache")
    )
    detail = {"file": mib(size)}
    return [
        Figure(
            "push peak RSS growth",
            round(grown_push / MIB, 1),
            "MiB",
            "<= 128",
            kind="memory",
            detail=detail,
        ),
        Figure(
            "pull peak RSS growth",
            round(grown_pull / MIB, 1),
            "MiB",
            "<= 128",
            kind="memory",
            detail=detail,
        ),
        Figure(
            "push peak anonymous RSS growth (sampled; mmapped file pages excluded)",
            round(anon_push / MIB, 1),
            "MiB",
            kind="memory",
            detail=detail,
        ),
        Figure(
            "pull peak anonymous RSS growth (sampled)",
            round(anon_pull / MIB, 1),
            "MiB",
            kind="memory",
            detail=detail,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small tree (CI smoke run)")
    args = parser.parse_args()
    check_peers()
    sizes = QUICK if args.quick else FULL
    results = Results("mixed", args.quick)
    with tempfile.TemporaryDirectory(prefix="mkit-bench-mixed-") as tmp:
        work = Path(tmp)
        tree = work / "tree"
        tree.mkdir()
        files, total = make_tree(tree, sizes)
        print(f"tree: {files} files, {mib(total)}", flush=True)
        t, stored = timed_rounds(tree, work, sizes.repeat)
        usage = measured_round(tree, work)
        shutil.rmtree(tree)
        rss = rss_figures(work, sizes.rss_file)

    def seconds(*names: str) -> dict[str, object]:
        return {f"{name}_s": round(t[name], 2) for name in names}

    def ours_over(step: str, peer: str, goal: str) -> Figure:
        """Our seconds over the peer's, for ``step``: below 1, we are faster."""
        return Figure(
            f"{step}: ours / {peer}",
            round(t[f"{step}_ours"] / t[f"{step}_{peer}"], 2),
            "x",
            goal,
            repeats=sizes.repeat,
            detail=seconds(f"{step}_ours", f"{step}_{peer}"),
        )

    results.section(
        "first push of a mixed tree",
        [
            ours_over("push", "restic", "< 1"),
            ours_over("push", "borg", "< 1"),
            Figure(
                "push vs zstd bound (throughput)",
                round(t["bound"] / t["push_ours"], 2),
                "x",
                ">= 0.7",
                repeats=sizes.repeat,
                detail={
                    "tree": mib(total),
                    **seconds("push_ours", "bound"),
                    **{f"stored_{name}": mib(n) for name, n in stored.items()},
                },
            ),
        ],
    )
    results.section(
        "pull of the mixed tree into an empty directory",
        [ours_over("pull", "restic", "< 1"), ours_over("pull", "borg", "< 1")],
    )
    results.section(
        "issue 17: the mixed tree against restic, each step a measured child process",
        measured_figures(usage, t, sizes.repeat),
    )
    results.section(f"push and pull of a {sizes.rss_file // MIB} MiB file", rss)
    results.finish()


if __name__ == "__main__":
    main()
