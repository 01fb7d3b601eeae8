"""Repack (spec/SPEC-GC.md section 4, GC-11..GC-16): gc rewrites mostly unused packs.

Real stores (memory and file) and real pushes of a chunked file edited in a few
places each round (small chunker sizes, so a file of about a MiB has dozens of
chunks). Races and crashes use real processes: the command line's push and gc.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from mkit_transport import (
    FileTransport,
    Hash,
    InvalidArgument,
    MemoryTransport,
    PackKey,
    PackNotFound,
    RefConflict,
    RefWriteCondition,
    Transport,
    open_transport,
)
from mkit_transport.cli import main
from mkit_transport.sync import log, pull, push
from mkit_transport.sync.chunking import ChunkParams
from mkit_transport.sync.common import fetch_index, fetch_record, open_packs, ref_value
from mkit_transport.sync.fsck import fsck
from mkit_transport.sync.gc import gc
from mkit_transport.sync.model import decode_record
from mkit_transport.sync.progress import Meter
from mkit_transport.sync.repack import tree_objects
from testbed.http_server import HttpServer
from tests.support.gc_race import stored

REF = "refs/heads/main"
OTHER = "refs/heads/other"
SMALL = ChunkParams(min_size=8 << 10, avg_size=32 << 10, max_size=128 << 10)
SIZE = 1 << 20


class Source:
    """A directory with a chunked file edited in a few places each round."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.data = bytearray(self.rng.randbytes(SIZE))
        root.mkdir(parents=True)
        (root / "note.txt").write_text(f"source {seed}\n")
        (root / "sub").mkdir()  # a tree that never changes: it stays in the first push's pack
        (root / "sub" / "keep.txt").write_text(f"kept {seed}\n")
        self.write()

    def write(self) -> None:
        (self.root / "big.bin").write_bytes(self.data)

    def edit(self, places: int = 3) -> None:
        for _ in range(places):
            at = self.rng.randrange(SIZE - 512)
            self.data[at : at + 512] = self.rng.randbytes(512)
        self.write()

    def files(self) -> dict[str, bytes]:
        return _files(self.root)


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _history(store: Transport, src: Source, ref: str, rounds: int) -> None:
    for _ in range(rounds):
        src.edit()
        push(src.root, store, ref, _chunking=SMALL)


def _pulled(store: Transport, ref: str, dest: Path) -> dict[str, bytes]:
    pull(store, ref, dest, cache_dir=str(dest.parent / f"{dest.name}.cache"))
    return _files(dest)


def _stored_bytes(store: Transport) -> int:
    return sum(info.size for info in store.list_packs())


def _age(root: Path, seconds: float = 7200) -> None:
    """Make every key of the file store at ``root`` look ``seconds`` old."""
    then = time.time() - seconds
    for folder, _dirs, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(folder, name), (then, then))


def _later() -> float:
    """A ``now`` past every key's mtime (grace 0: every orphan counts as old)."""
    return time.time() + 10


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Transport:
    if request.param == "memory":
        return MemoryTransport()
    return FileTransport(tmp_path / "store")


def test_repack_keeps_every_ref_pullable_and_frees_space(store: Transport, tmp_path: Path) -> None:
    """GC-11, GC-13: packs mostly unused are rewritten; every ref pulls the same tree."""
    main_src = Source(tmp_path / "a", 1)
    other_src = Source(tmp_path / "b", 2)
    _history(store, main_src, REF, 8)
    _history(store, other_src, OTHER, 2)
    plain = gc(store, grace=0, keep_last=1, now=_later())
    assert plain.swept > 0
    before = _stored_bytes(store)
    report = gc(store, grace=0, keep_last=1, max_unused=5, now=_later())
    assert report.repack is not None and report.repack.packs_rewritten > 0
    assert report.repack.refs_moved >= 1 and report.swept > 0
    after = _stored_bytes(store)
    assert after < before
    # What is left of the packs is within the bound: unused <= 5% of live + unused.
    again = gc(store, grace=0, keep_last=1, max_unused=5, now=_later(), dry_run=True)
    assert again.repack is not None and again.repack.packs_rewritten == 0
    assert again.repack.unused_bytes <= 0.05 * (again.repack.live_bytes + again.repack.unused_bytes)
    for name, src in ((REF, main_src), (OTHER, other_src)):
        assert _pulled(store, name, tmp_path / f"pull-{name.rsplit('/', 1)[1]}") == src.files()
    assert fsck(store).ok


def test_repacking_a_history_rewrites_the_chain_and_every_kept_snapshot_pulls(
    store: Transport, tmp_path: Path
) -> None:
    """GC-13: kept records are rewritten parents first; each kept snapshot still pulls."""
    src = Source(tmp_path / "src", 3)
    versions: list[dict[str, bytes]] = []
    for _ in range(5):
        src.edit(places=12)
        push(src.root, store, REF, _chunking=SMALL)
        versions.append(src.files())
    report = gc(store, grace=0, keep_last=3, max_unused=0, now=_later())
    assert report.repack is not None
    assert report.repack.packs_rewritten > 0 and report.repack.records_rewritten == 3
    chain = log(store, REF)
    assert len(chain) == 3 and chain[-1].parent_missing
    for i, entry in enumerate(chain):
        name = f"refs/check/{i}"
        store.update_ref(name, RefWriteCondition.MISSING, ref_value(entry.key))
        assert _pulled(store, name, tmp_path / f"v{i}") == versions[-1 - i]
    assert fsck(store).ok


def test_dry_run_names_what_it_would_rewrite_and_changes_nothing(
    store: Transport, tmp_path: Path
) -> None:
    """GC-14: a dry run reports the packs a real run rewrites and writes nothing."""
    _history(store, Source(tmp_path / "src", 4), REF, 6)
    gc(store, grace=0, keep_last=1, now=_later())
    keys, value = stored(store), store.read_ref(REF)
    dry = gc(store, grace=0, keep_last=1, max_unused=5, now=_later(), dry_run=True)
    assert dry.repack is not None and dry.repack.rewritten
    assert dry.repack.packs_written == 0 and dry.repack.refs_moved == 0
    assert stored(store) == keys and store.read_ref(REF) == value
    real = gc(store, grace=0, keep_last=1, max_unused=5, now=_later())
    assert real.repack is not None and real.repack.rewritten == dry.repack.rewritten
    assert not set(dry.repack.rewritten) & {k.hex() for k in stored(store)}


def test_max_unused_must_be_a_percentage() -> None:
    """GC-15: a bad max_unused is refused before any I/O."""
    store = MemoryTransport()
    for bad in (-1, 100.5, float("nan"), "5", True, None.__class__):
        with pytest.raises(InvalidArgument):
            gc(store, max_unused=bad)  # type: ignore[arg-type]


def _push_cli(src: Path, url: str, ref: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkit_transport", "push", str(src), url, ref],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class _PushFirst(FileTransport):
    """A file store where another process pushes right before repack's first ref CAS."""

    def __init__(self, root: Path, src: Path) -> None:
        super().__init__(root)
        self.src, self.pushed = src, False

    def update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        if not self.pushed:
            self.pushed = True
            done = _push_cli(self.src, f"mkit+file://{self.root}", name)
            assert done.returncode == 0, done.stderr
        super().update_ref(name, condition, value)


def test_a_push_landing_during_repack_keeps_its_snapshot(tmp_path: Path) -> None:
    """GC-12: the pushed ref wins; repack leaves it, the sweep keeps what it names."""
    root = tmp_path / "store"
    _history(FileTransport(root), Source(tmp_path / "src", 5), REF, 6)
    gc(FileTransport(root), grace=0, keep_last=1, now=_later())
    newer = Source(tmp_path / "newer", 6)
    store = _PushFirst(root, newer.root)
    # Real time (no ``now`` ahead): the push's keys are younger than the mark's start.
    report = gc(store, grace=0, keep_last=1, max_unused=5)
    assert store.pushed and report.repack is not None
    assert report.repack.refs_conflicted == 1 and report.repack.refs_moved == 0
    assert _pulled(store, REF, tmp_path / "out") == newer.files()
    assert fsck(store).ok
    # The repack's own packs are young orphans: a later gc frees them (and repacks).
    later = gc(store, grace=0, keep_last=1, max_unused=5)
    assert later.swept > 0
    assert _pulled(store, REF, tmp_path / "out2") == newer.files()
    assert fsck(store).ok


def test_a_push_based_on_the_old_record_fails_cleanly_and_pushes_again(tmp_path: Path) -> None:
    """GC-12: a push that read the ref before repack moved it loses its CAS, cleanly."""
    root = tmp_path / "store"
    store = FileTransport(root)
    src = Source(tmp_path / "src", 7)
    _history(store, src, REF, 6)
    gc(store, grace=0, keep_last=1, now=_later())
    _age(root)  # what is stored is old; what the push uploads is younger than the grace
    repacked: list[subprocess.CompletedProcess[str]] = []

    def at_commit(event: object) -> None:
        if getattr(event, "phase", None) == "commit" and not repacked:
            repacked.append(
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "mkit_transport",
                        "gc",
                        f"mkit+file://{root}",
                        "--grace",
                        "30m",
                        "--keep-last",
                        "1",
                        "--repack",
                        "--json",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
            )

    src.edit()
    with pytest.raises(RefConflict, match="non-fast-forward"):
        push(src.root, store, REF, progress=at_commit, _chunking=SMALL)
    assert repacked and repacked[0].returncode == 0, repacked[0].stderr
    assert json.loads(repacked[0].stdout)["repack"]["refs_moved"] == 1
    assert fsck(store).ok
    push(src.root, store, REF, _chunking=SMALL)
    assert _pulled(store, REF, tmp_path / "out") == src.files()
    assert fsck(store).ok


def test_a_gc_killed_at_any_point_leaves_a_whole_store(tmp_path: Path) -> None:
    """GC-16: kill -9 of a repacking gc at random moments; fsck clean, every ref pulls."""
    template = tmp_path / "template"
    main_src, other_src = Source(tmp_path / "a", 8), Source(tmp_path / "b", 9)
    _history(FileTransport(template), main_src, REF, 8)
    _history(FileTransport(template), other_src, OTHER, 3)
    expected = {REF: main_src.files(), OTHER: other_src.files()}

    def run(root: Path) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-m",
            "mkit_transport",
            "gc",
            f"mkit+file://{root}",
            "--grace",
            "0",
            "--keep-last",
            "1",
            "--max-unused",
            "0",
        ]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def check(root: Path, label: str) -> None:
        store = FileTransport(root)
        assert fsck(store).ok, label
        for name, files in expected.items():
            assert _pulled(store, name, tmp_path / f"{label}-{name.rsplit('/', 1)[1]}") == files

    timed = tmp_path / "timed"
    shutil.copytree(template, timed)
    start = time.monotonic()
    whole = run(timed)
    assert whole.wait(timeout=120) == 0
    duration = time.monotonic() - start
    check(timed, "timed")
    rng = random.Random(14)
    deadline = time.monotonic() + 60
    rounds = 0
    while rounds < 6 and (rounds < 2 or time.monotonic() < deadline):
        root = tmp_path / f"crash{rounds}"
        shutil.copytree(template, root)
        child = run(root)
        time.sleep(rng.uniform(0.0, duration))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
        check(root, f"killed{rounds}")
        assert run(root).wait(timeout=120) == 0  # a gc after the crash finishes the job
        check(root, f"after{rounds}")
        rounds += 1


def test_cli_repack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """GC-17: ``gc --max-unused PCT`` / ``--repack``, text and JSON; a bad PCT is usage."""
    root = tmp_path / "store"
    _history(FileTransport(root), Source(tmp_path / "src", 10), REF, 5)
    url = f"mkit+file://{root}"
    out = io.StringIO()
    assert (
        main(
            ["gc", url, "--grace", "0", "--keep-last", "1", "--repack", "--dry-run", "--json"],
            out=out,
        )
        == 0
    )
    report = json.loads(out.getvalue())
    assert report["max_unused"] == 5.0 and report["repack"]["packs_rewritten"] > 0
    assert report["repack"]["refs_moved"] == 0
    text = io.StringIO()
    assert main(["gc", url, "--grace", "0", "--keep-last", "1", "--max-unused", "5"], out=text) == 0
    assert "repack:" in text.getvalue() and "1 refs moved" in text.getvalue()
    for bad in (["--max-unused", "101"], ["--max-unused", "-1"], ["--repack", "--max-unused", "5"]):
        assert main(["gc", url, *bad], out=io.StringIO()) == 2
        assert "--max-unused" in capsys.readouterr().err
    assert fsck(FileTransport(root)).ok


def test_a_record_is_rewritten_with_the_same_root_and_time(tmp_path: Path) -> None:
    """GC-13: the rewritten record names the same tree and time, only other packs;
    the new packs keep metadata (trees, chunk lists) apart from file chunks."""
    store = MemoryTransport()
    _history(store, Source(tmp_path / "src", 11), REF, 6)
    gc(store, grace=0, keep_last=1, now=_later())
    old_value = store.read_ref(REF)
    assert old_value is not None
    old = fetch_record(store, old_value)
    gc(store, grace=0, keep_last=1, max_unused=0, now=_later())
    new_value = store.read_ref(REF)
    assert new_value is not None and new_value != old_value
    new = fetch_record(store, new_value)
    assert (new.root, new.created_ns, new.parent) == (old.root, old.created_ns, old.parent)
    fresh = [p for p in new.packs if p not in old.packs]
    assert fresh
    assert PackKey(bytes(old_value)) not in stored(store)
    # Trees and chunk lists get packs of their own, as push gives them (metadata packs).
    objects, _ = open_packs(store, list(new.packs), str(tmp_path / "cache"), 2, Meter(None))
    try:
        meta: set[bytes] = set()
        tree_objects(objects, new.root, meta)
    finally:
        objects.close()
    assert meta
    for pack in fresh:
        ids = {oid for oid, _kind in fetch_index(store, pack, Meter(None))}
        assert ids <= meta or not ids & meta


@pytest.mark.server
def test_repack_over_http(http_server: HttpServer, tmp_path: Path) -> None:
    """GC-11, GC-13 over a real HTTP server: repack needs only the public verbs."""
    with open_transport(http_server.url(f"repack-{uuid.uuid4().hex[:8]}")) as store:
        src = Source(tmp_path / "src", 12)
        _history(store, src, REF, 6)
        gc(store, grace=0, keep_last=1, now=_later())
        before = _stored_bytes(store)
        report = gc(store, grace=0, keep_last=1, max_unused=5, now=_later())
        assert report.repack is not None and report.repack.refs_moved == 1
        assert _stored_bytes(store) < before
        assert _pulled(store, REF, tmp_path / "out") == src.files()
        assert fsck(store).ok


class _SweptMeanwhile(FileTransport):
    """A file store where "another gc" deletes a pack repack found stored, right after
    repack wrote its first record (as if that pack were an old orphan it reused)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.victim: PackKey | None = None
        self.before: set[PackKey] = set()

    def upload_blob(self, data: bytes, key: PackKey) -> None:
        super().upload_blob(data, key)
        if data[:4] == b"MKRC" and self.victim is None:
            new = [p.index for p in decode_record(data).packs if p.index not in self.before]
            self.victim = new[0]  # an index blob of a pack this repack wrote
            self.delete_pack(self.victim)


def test_repack_moves_no_ref_when_a_key_it_relies_on_was_swept(tmp_path: Path) -> None:
    """GC-12: new keys are checked again before the refs move, as push does (GC-7)."""
    root = tmp_path / "store"
    src = Source(tmp_path / "src", 13)
    _history(FileTransport(root), src, REF, 6)
    gc(FileTransport(root), grace=0, keep_last=1, now=_later())
    store = _SweptMeanwhile(root)
    value, keys = store.read_ref(REF), stored(store)
    store.before = keys
    with pytest.raises(PackNotFound, match="no ref was moved"):
        gc(store, grace=0, keep_last=1, max_unused=5, now=_later())
    assert store.victim is not None and store.read_ref(REF) == value
    assert keys <= stored(store)  # nothing of the old snapshot went
    assert _pulled(store, REF, tmp_path / "out") == src.files()
    assert fsck(store).ok
    again = gc(FileTransport(root), grace=0, keep_last=1, max_unused=5)
    assert again.repack is not None and again.repack.refs_moved == 1
    assert _pulled(store, REF, tmp_path / "out2") == src.files()
    assert fsck(store).ok


def _pusher(root: str, src: str, rounds: int) -> None:
    """Child process: ``rounds`` edits of the source, each pushed until it lands."""
    store = FileTransport(root)
    source = Source.__new__(Source)
    source.root, source.rng = Path(src), random.Random(15)
    source.data = bytearray((Path(src) / "big.bin").read_bytes())
    for _ in range(rounds):
        source.edit()
        for _attempt in range(20):
            try:
                push(source.root, store, REF, _chunking=SMALL)
                break
            except (RefConflict, PackNotFound):  # gc moved the ref first: push again
                continue
        else:
            raise SystemExit(3)


def test_pushes_racing_repacking_gc_in_real_processes(tmp_path: Path) -> None:
    """GC-12: a pusher process races a loop of repacking gcs; every push lands, the
    ref pulls the last tree, fsck is clean."""
    root = tmp_path / "store"
    src = Source(tmp_path / "src", 16)
    _history(FileTransport(root), src, REF, 6)
    _age(root)  # the history is old; what the pusher writes is younger than the grace
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=_pusher, args=(str(root), str(src.root), 8))
    child.start()
    store = FileTransport(root)
    moved = conflicted = runs = 0
    deadline = time.monotonic() + 240
    while child.is_alive() and time.monotonic() < deadline:
        report = gc(store, grace=1800, keep_last=1, max_unused=5)
        assert report.repack is not None
        moved += report.repack.refs_moved
        conflicted += report.repack.refs_conflicted
        runs += 1
    child.join(timeout=60)
    assert child.exitcode == 0
    assert runs >= 1 and moved + conflicted >= 1
    assert _pulled(store, REF, tmp_path / "out") == _files(src.root)
    # Records the pusher wrote and keep_last dropped are young, so they outlived the
    # race while old packs they list went; fsck walks them. A gc past the grace
    # period drops them (as without repack), then the whole store checks.
    gc(store, grace=0, keep_last=1, max_unused=5)
    assert _pulled(store, REF, tmp_path / "out2") == _files(src.root)
    assert fsck(store).ok
