"""Issue 13: a bounded pack cache, and incremental pulls into an earlier pull's directory.

Spec rows SYNC-45..SYNC-51 (spec/SPEC-SYNC.md section 4). The kill -9 test runs real
child processes (``python -c``) killed at random points, then re-runs the pull.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mkit_transport import FileTransport, MemoryTransport, Transport
from mkit_transport.errors import InvalidArgument, InvalidResponse
from mkit_transport.sync import Progress, checkout, pull, push
from mkit_transport.sync.checkout import load_manifest, manifest_path
from mkit_transport.sync.chunking import ChunkParams
from mkit_transport.sync.pull import LocalEdits
from mkit_transport.sync.restore import PackCache
from tests.support.sync_fixtures import describe, write_tree

REF = "refs/heads/main"
SMALL = ChunkParams(min_size=16 << 10, avg_size=64 << 10, max_size=256 << 10)
#: Generous bound on one subprocess pull of the small trees here (never a speed claim).
DEADLINE = 120.0


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _disk(root: Path) -> int:
    """Everything under ``root`` as ``du -sb`` counts it: files and directories."""
    return sum(p.lstat().st_size for p in root.rglob("*")) + root.lstat().st_size


def _random_files(root: Path, count: int, size: int, seed: int) -> Path:
    rng = random.Random(seed)
    for i in range(count):
        path = root / f"d{i % 7}" / f"f{i:03}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    return root


def _stats(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_ino, p.lstat().st_mtime_ns)
        for p in root.rglob("*")
        if not p.is_dir()
    }


# -- bounded cache (SYNC-45, SYNC-46) --------------------------------------------------


def test_a_fresh_pull_leaves_a_cache_of_at_most_a_tenth_of_the_tree(tmp_path: Path) -> None:
    src = _random_files(tmp_path / "src", 40, 100_000, seed=1)
    remote = MemoryTransport()
    push(src, remote, REF, pack_size=512 << 10)
    cache = tmp_path / "cache"
    report = pull(remote, REF, tmp_path / "out", cache_dir=str(cache))
    assert report.packs_downloaded > 4
    assert describe(tmp_path / "out") == describe(src)
    assert _disk(cache) <= 0.10 * _tree_bytes(src)
    assert [p.name for p in (cache / "pulls").iterdir()] == []  # the per-pull dir is gone


def test_a_large_limit_keeps_the_packs_and_the_next_pull_uses_them(tmp_path: Path) -> None:
    src = _random_files(tmp_path / "src", 20, 50_000, seed=2)
    remote = MemoryTransport()
    push(src, remote, REF, pack_size=256 << 10)
    cache = str(tmp_path / "cache")
    first = pull(remote, REF, tmp_path / "a", cache_dir=cache, cache_limit=1 << 30)
    again = pull(remote, REF, tmp_path / "b", cache_dir=cache, cache_limit=1 << 30)
    assert (again.packs_downloaded, again.packs_cached) == (0, first.packs_downloaded)
    none = pull(remote, REF, tmp_path / "c", cache_dir=cache, cache_limit=0)
    assert none.packs_downloaded == 0  # read from the cache, then the cache is emptied
    assert list((Path(cache) / "packs").iterdir()) == []
    assert list((Path(cache) / "packids").iterdir()) == []  # one budget covers both
    assert describe(tmp_path / "c") == describe(src)


def test_trim_evicts_the_least_recently_used_first(tmp_path: Path) -> None:
    cache = PackCache(str(tmp_path))
    for age, name in enumerate(["c" * 64, "a" * 64, "b" * 64]):
        path = Path(cache.dir) / name
        path.write_bytes(b"x" * 100)
        os.utime(path, (1000 + age, 1000 + age))
    evicted = cache.trim(150)
    assert [Path(p).name for p in evicted] == ["c" * 64, "a" * 64]
    assert sorted(p.name for p in Path(cache.dir).iterdir()) == ["b" * 64]


def test_packs_evicted_or_vanished_mid_pull_do_not_break_it(tmp_path: Path) -> None:
    src = _random_files(tmp_path / "src", 20, 50_000, seed=3)
    remote = MemoryTransport()
    push(src, remote, REF, pack_size=256 << 10)
    cache = str(tmp_path / "cache")
    packs = Path(cache) / "packs"
    first = pull(remote, REF, tmp_path / "a", cache_dir=cache, cache_limit=1 << 30)

    def vanish(event: Progress) -> None:  # another pull empties the shared cache
        if event.phase in ("download", "write"):
            PackCache(cache).trim(0)

    report = pull(remote, REF, tmp_path / "b", cache_dir=cache, progress=vanish)
    assert describe(tmp_path / "b") == describe(src)
    # Every pack was either linked before it vanished or downloaded again.
    assert report.packs_downloaded + report.packs_cached == first.packs_downloaded
    assert sum(p.stat().st_size for p in packs.iterdir()) <= 0.10 * _tree_bytes(src)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_a_bad_cache_limit_is_refused_before_any_io(tmp_path: Path, bad: object) -> None:
    with pytest.raises(InvalidArgument, match="cache_limit"):
        pull(MemoryTransport(), REF, tmp_path / "x", cache_limit=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


# -- incremental pull (SYNC-47..SYNC-51) -----------------------------------------------


def test_update_writes_only_what_changed_and_downloads_only_new_objects(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", seed=7, files=60)
    remote = MemoryTransport()
    push(src, remote, REF)
    dest, cache = tmp_path / "dest", str(tmp_path / "cache")
    pull(remote, REF, dest, cache_dir=cache, cache_limit=0)  # no packs kept at all
    before = _stats(dest)
    changed = next(p for p in sorted(src.rglob("*.txt")) if p.is_file())
    changed.write_bytes(b"a small local change " * 10)
    push(src, remote, REF)
    report = pull(remote, REF, dest, cache_dir=cache, update=True, cache_limit=0)
    assert describe(dest) == describe(src)
    assert report.files == 1
    after = _stats(dest)
    name = str(changed.relative_to(src))
    assert after[name] != before[name]
    assert {k: v for k, v in after.items() if k != name} == {
        k: v for k, v in before.items() if k != name
    }  # nothing else touched: same inode and mtime
    # The blob and the trees on its path (one pack each), plus the record and indexes.
    assert report.packs_downloaded == 2
    assert report.bytes_downloaded < 8 << 10
    # Unchanged: nothing written, nothing downloaded but the record.
    again = pull(remote, REF, dest, cache_dir=cache, update=True)
    assert (again.files, again.packs_downloaded) == (0, 0)
    assert _stats(dest) == after


def test_a_changed_chunked_file_is_rebuilt_from_its_old_local_chunks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = bytearray(random.Random(4).randbytes(3 << 20))
    (src / "big.bin").write_bytes(data)
    (src / "copy.bin").write_bytes(b"x" * 5000)
    remote = MemoryTransport()
    push(src, remote, REF, _chunking=SMALL, pack_size=256 << 10)
    dest, cache = tmp_path / "dest", str(tmp_path / "cache")
    pull(remote, REF, dest, cache_dir=cache, cache_limit=0)
    data[len(data) // 2] ^= 0xFF
    (src / "big.bin").write_bytes(data)
    (src / "moved.bin").write_bytes(b"x" * 5000)  # same bytes as a local file: copied
    push(src, remote, REF, _chunking=SMALL, pack_size=256 << 10)
    report = pull(remote, REF, dest, cache_dir=cache, update=True, cache_limit=0)
    assert describe(dest) == describe(src)
    assert report.files == 2
    # At most two SMALL max chunks and the metadata, not the 3 MiB file.
    assert report.bytes_downloaded < 2 * (256 << 10) + (64 << 10)


def _shapes(root: Path, version: int) -> Path:
    """A tree with every kind of entry; version 2 changes each kind into another."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    (root / "keep").mkdir()
    (root / "keep" / "same.txt").write_text("unchanged")
    if version == 1:
        (root / "f2d").write_text("a file, then a dir")
        (root / "d2f").mkdir()
        (root / "d2f" / "inner.txt").write_text("inside")
        (root / "f2l").write_text("a file, then a link")
        os.symlink("keep/same.txt", root / "l2f")
        (root / "gone").mkdir()
        (root / "gone" / "deep").mkdir()
        (root / "gone" / "deep" / "x").write_text("deleted subtree")
        (root / "empty-then-removed").mkdir()
        (root / "mode.sh").write_text("#!/bin/sh\n")
        os.chmod(root / "mode.sh", 0o644)
        os.chmod(root / "keep", 0o755)
    else:
        (root / "f2d").mkdir()
        (root / "f2d" / "now.txt").write_text("now a dir")
        (root / "d2f").write_text("now a file")
        os.symlink("keep", root / "f2l")
        (root / "l2f").write_text("now a file")
        (root / "new-empty").mkdir()
        (root / "mode.sh").write_text("#!/bin/sh\n")
        os.chmod(root / "mode.sh", 0o755)
        os.chmod(root / "keep", 0o700)
    return root


def test_deletions_type_changes_modes_and_empty_dirs(tmp_path: Path) -> None:
    remote = MemoryTransport()
    src = tmp_path / "src"
    dest, cache = tmp_path / "dest", str(tmp_path / "cache")
    push(_shapes(src, 1), remote, REF)
    pull(remote, REF, dest, cache_dir=cache)
    assert describe(dest) == describe(src)
    push(_shapes(src, 2), remote, REF)
    pull(remote, REF, dest, cache_dir=cache, update=True)
    pull(remote, REF, tmp_path / "fresh", cache_dir=cache)
    assert describe(dest) == describe(src) == describe(tmp_path / "fresh")
    push(_shapes(src, 1), remote, REF)  # and back again
    pull(remote, REF, dest, cache_dir=cache, update=True)
    assert describe(dest) == describe(src)


def test_local_edits_in_the_pulls_way_are_refused_unless_forced(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", seed=8, files=20)
    remote = MemoryTransport()
    push(src, remote, REF)
    dest, cache = tmp_path / "dest", str(tmp_path / "cache")
    pull(remote, REF, dest, cache_dir=cache)
    some = sorted(p for p in dest.rglob("*.txt") if p.is_file() and not p.is_symlink())
    rel = [p.relative_to(dest) for p in some]
    some[0].write_text("edited here")  # the pull changes it: in the way
    (src / rel[0]).write_text("upstream change 0")
    (src / rel[1].parent / "new.txt").write_text("added upstream")
    (some[1].parent / "new.txt").write_text("not from a pull")  # where the pull adds one
    touched = some[2]
    os.utime(touched, ns=(1, 1))  # stat differs, bytes the same: not an edit
    (src / rel[2]).write_text("upstream change 2")
    state = describe(dest)
    push(src, remote, REF)
    with pytest.raises(LocalEdits) as caught:
        pull(remote, REF, dest, cache_dir=cache, update=True)
    message = str(caught.value)
    assert str(rel[0]) in message and str(rel[1].parent / "new.txt") in message
    assert str(rel[2]) not in message
    assert describe(dest) == state  # nothing changed
    assert isinstance(caught.value, FileExistsError)
    pull(remote, REF, dest, cache_dir=cache, update=True, force=True)
    assert describe(dest) == describe(src)


def test_local_edits_the_pull_does_not_touch_stay_and_stay_detectable(tmp_path: Path) -> None:
    """Like git: only what the pull writes or removes is checked; the rest is the user's."""
    src = write_tree(tmp_path / "src", seed=18, files=20)
    remote = MemoryTransport()
    push(src, remote, REF)
    dest, cache = tmp_path / "dest", str(tmp_path / "cache")
    pull(remote, REF, dest, cache_dir=cache)
    some = sorted(p for p in dest.rglob("*.txt") if p.is_file() and not p.is_symlink())
    rel = [p.relative_to(dest) for p in some]
    some[0].write_text("edited here, and the pull does not change it")
    (some[1].parent / "extra.txt").write_text("a file of mine")
    (src / rel[3]).write_text("upstream change")
    push(src, remote, REF)
    report = pull(remote, REF, dest, cache_dir=cache, update=True)
    assert report.files == 1 and (dest / rel[3]).read_text() == "upstream change"
    assert some[0].read_text() == "edited here, and the pull does not change it"
    assert (some[1].parent / "extra.txt").read_text() == "a file of mine"
    # The next pull that does change the edited file still sees the edit.
    (src / rel[0]).write_text("upstream change to the edited file")
    push(src, remote, REF)
    with pytest.raises(LocalEdits, match=str(rel[0])):
        pull(remote, REF, dest, cache_dir=cache, update=True)
    assert some[0].read_text() == "edited here, and the pull does not change it"


def test_a_removed_directory_holding_an_extra_file_is_refused(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", seed=28, files=20)
    remote = MemoryTransport()
    push(src, remote, REF)
    dest, cache = tmp_path / "dest", str(tmp_path / "cache")
    pull(remote, REF, dest, cache_dir=cache)
    (dest / "d1" / "e0" / "mine.txt").write_text("not from a pull")
    shutil.rmtree(src / "d1")
    push(src, remote, REF)
    state = describe(dest)
    with pytest.raises(LocalEdits, match=re.escape("d1/e0/mine.txt")):
        pull(remote, REF, dest, cache_dir=cache, update=True)
    assert describe(dest) == state
    (dest / "d1" / "e0" / "mine.txt").unlink()
    pull(remote, REF, dest, cache_dir=cache, update=True)
    assert describe(dest) == describe(src)


def test_an_update_looks_only_at_the_paths_that_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache-tree: unchanged subtrees are neither listed nor stat-ed."""
    src = write_tree(tmp_path / "src", seed=38, files=60)
    remote = MemoryTransport()
    push(src, remote, REF)
    dest, cache = tmp_path / "dest", str(tmp_path / "cache")
    pull(remote, REF, dest, cache_dir=cache)
    changed = src / "d2" / "e1" / "f5.txt"
    changed.write_text("one upstream change")
    push(src, remote, REF)
    seen: list[str] = []
    real_lstat, real_scandir = os.lstat, os.scandir

    def lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        seen.append(os.fspath(path))
        return real_lstat(path, *args, **kwargs)

    def scandir(path: Any = ".") -> Any:
        seen.append("scandir:" + os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "lstat", lstat)
    monkeypatch.setattr(os, "scandir", scandir)
    pull(remote, REF, dest, cache_dir=cache, update=True)
    monkeypatch.undo()
    assert describe(dest) == describe(src)
    inside = {os.path.relpath(p, dest) for p in seen if p.startswith(str(dest) + os.sep)}
    assert not any(p.startswith("scandir:" + str(dest)) for p in seen)
    assert inside <= {"d2", "d2/e1", "d2/e1/f5.txt"}, sorted(inside)


def test_without_a_manifest_local_files_are_hashed(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", seed=9, files=20)
    remote = MemoryTransport()
    push(src, remote, REF)
    dest = tmp_path / "dest"
    shutil.copytree(src, dest, symlinks=True)  # not from a pull: no manifest
    stats = _stats(dest)
    report = pull(remote, REF, dest, cache_dir=str(tmp_path / "c"), update=True)
    assert report.files == 0 and _stats(dest) == stats  # equal bytes: kept as they are
    one = next(p for p in sorted(dest.rglob("*.txt")) if p.is_file() and not p.is_symlink())
    one.write_text("differs")
    shutil.rmtree(tmp_path / "c")  # the manifest is gone again
    with pytest.raises(LocalEdits, match=str(one.relative_to(dest))):
        pull(remote, REF, dest, cache_dir=str(tmp_path / "c"), update=True)
    pull(remote, REF, dest, cache_dir=str(tmp_path / "c"), update=True, force=True)
    assert describe(dest) == describe(src)


def test_update_into_an_absent_dir_is_a_fresh_pull_and_modes_are_exclusive(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", seed=10, files=10)
    remote = MemoryTransport()
    push(src, remote, REF)
    pull(remote, REF, tmp_path / "new", cache_dir=str(tmp_path / "c"), update=True)
    assert describe(tmp_path / "new") == describe(src)
    with pytest.raises(InvalidArgument, match="exclusive"):
        pull(remote, REF, tmp_path / "new", update=True, replace=True)
    with pytest.raises(InvalidArgument, match="force"):
        pull(remote, REF, tmp_path / "new", force=True)
    with pytest.raises(FileExistsError):  # without --update a non-empty dir is refused
        pull(remote, REF, tmp_path / "new", cache_dir=str(tmp_path / "c"))


def test_update_on_the_command_line(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", seed=11, files=10)
    store = tmp_path / "store"
    remote = FileTransport(store)
    remote.init_store()
    push(src, remote, REF)
    url = f"mkit+file://{store}"
    cmd = [sys.executable, "-m", "mkit_transport", "pull", url, REF, str(tmp_path / "d")]
    cmd += ["--cache-dir", str(tmp_path / "c")]
    assert subprocess.run(cmd, check=False, timeout=DEADLINE).returncode == 0
    (src / "added.txt").write_text("new")
    push(src, remote, REF)
    again = subprocess.run([*cmd, "--update", "--cache-limit", "0"], check=False, timeout=DEADLINE)
    assert again.returncode == 0 and describe(tmp_path / "d") == describe(src)
    bad = subprocess.run([*cmd, "--force"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "--force needs --update" in bad.stderr


# -- kill -9 (SYNC-50) -----------------------------------------------------------------

_CHILD = """
import sys
from mkit_transport import FileTransport
from mkit_transport.sync import pull
pull(FileTransport(sys.argv[1]), sys.argv[2], sys.argv[3], cache_dir=sys.argv[4],
     update=True, concurrency=2)
"""


def _versions(root: Path, seed: int) -> Path:
    """Many small files and one chunked file; ``seed`` changes about half of them."""
    rng = random.Random(seed)
    if root.exists():
        shutil.rmtree(root)
    for i in range(150):
        path = root / f"d{i % 5}" / f"f{i:03}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{i} {rng.randrange(2) and seed}\n".encode() * 200)
    (root / f"only-{seed}").mkdir()
    (root / f"only-{seed}" / "x").write_text(str(seed))
    big = bytearray(random.Random(1).randbytes(1 << 20))
    big[rng.randrange(len(big))] ^= 1
    (root / "big.bin").write_bytes(big)
    return root


def test_kill_9_at_random_points_then_a_rerun_finishes_the_job(tmp_path: Path) -> None:
    store = tmp_path / "store"
    remote: Transport = FileTransport(store)
    remote.init_store()
    push(_versions(tmp_path / "a", 1), remote, "refs/heads/a", _chunking=SMALL)
    push(_versions(tmp_path / "b", 2), remote, "refs/heads/b", _chunking=SMALL)
    want = {"refs/heads/a": describe(tmp_path / "a"), "refs/heads/b": describe(tmp_path / "b")}
    dest, cache = tmp_path / "dest", str(tmp_path / "cache")
    pull(remote, "refs/heads/a", dest, cache_dir=cache)
    args = [sys.executable, "-c", _CHILD, str(store)]
    start = time.monotonic()
    subprocess.run([*args, "refs/heads/b", str(dest), cache], check=True, timeout=DEADLINE)
    full = time.monotonic() - start  # one whole child run: the range to kill within
    assert describe(dest) == want["refs/heads/b"]
    rng = random.Random(13)
    killed, current = 0, "refs/heads/b"
    outcomes = {"new": 0, "mixed": 0}
    for _ in range(20):
        goal = "refs/heads/a" if current == "refs/heads/b" else "refs/heads/b"
        child = subprocess.Popen([*args, goal, str(dest), cache])
        time.sleep(rng.uniform(0.2 * full, 1.05 * full))  # mostly after the imports
        if child.poll() is None:
            killed += 1
        child.send_signal(signal.SIGKILL)  # a no-op if it already finished
        child.wait(timeout=DEADLINE)
        # Never a partial file: each path holds the old or the new version whole (a
        # directory's mode is applied after its contents, so only its type is checked).
        seen = describe(dest)
        for path, value in seen.items():
            either = (want[goal].get(path), want[current].get(path))
            if value[0] == "dir":
                assert any(w is not None and w[0] == "dir" for w in either), path
            else:
                assert value in either, path
        if seen == want[goal]:
            outcomes["new"] += 1
        elif seen != want[current]:
            outcomes["mixed"] += 1  # killed between renames: some paths old, some new
        pull(remote, goal, dest, cache_dir=cache, update=True)  # no LocalEdits: its own work
        assert describe(dest) == want[goal]
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dest.pull-")] == []
        current = goal
    assert killed >= 4, outcomes  # the kills did land mid-pull


def test_a_pull_stopped_between_two_renames_is_finished_by_a_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deterministic twin of the kill test: stopped after the 40th rename into dest."""
    remote = MemoryTransport()
    push(_versions(tmp_path / "a", 1), remote, "refs/heads/a", _chunking=SMALL)
    push(_versions(tmp_path / "b", 2), remote, "refs/heads/b", _chunking=SMALL)
    dest, cache = tmp_path / "dest", str(tmp_path / "cache")
    pull(remote, "refs/heads/a", dest, cache_dir=cache)
    real_replace, count = os.replace, [0]

    def replace(src: str, dst: str) -> None:
        if str(dst).startswith(str(dest) + os.sep):
            count[0] += 1
            if count[0] > 40:
                raise KeyboardInterrupt  # as abrupt as a signal, mid-apply
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        pull(remote, "refs/heads/b", dest, cache_dir=cache, update=True)
    monkeypatch.undo()
    seen = describe(dest)
    assert seen != describe(tmp_path / "a") and seen != describe(tmp_path / "b")  # a mix
    pull(remote, "refs/heads/b", dest, cache_dir=cache, update=True)
    assert describe(dest) == describe(tmp_path / "b")


def test_a_rerun_after_a_stop_leaves_an_untouched_local_edit_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The re-run looks at the changed paths and the journal's, not the whole tree."""
    src = write_tree(tmp_path / "src", seed=78, files=20)
    remote = MemoryTransport()
    push(src, remote, REF)
    dest, cache = tmp_path / "dest", str(tmp_path / "cache")
    pull(remote, REF, dest, cache_dir=cache)
    some = sorted(p for p in dest.rglob("*.txt") if p.is_file() and not p.is_symlink())
    rel = [p.relative_to(dest) for p in some]
    some[0].write_text("my edit, which the pull does not touch")
    for i in (1, 2, 3):
        (src / rel[i]).write_text(f"upstream change {i}")
    push(src, remote, REF)
    real_replace, count = os.replace, [0]

    def replace(source: str, dst: str) -> None:
        if str(dst).startswith(str(dest) + os.sep):
            count[0] += 1
            if count[0] > 1:
                raise KeyboardInterrupt  # as abrupt as a signal, mid-apply
        real_replace(source, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        pull(remote, REF, dest, cache_dir=cache, update=True)
    monkeypatch.undo()
    pull(remote, REF, dest, cache_dir=cache, update=True)
    assert some[0].read_text() == "my edit, which the pull does not touch"
    (dest / rel[0]).write_bytes((src / rel[0]).read_bytes())
    assert describe(dest) == describe(src)


# -- ranged reads when a small part of a pack is needed (SYNC-51) ----------------------


def test_an_update_needing_a_small_part_of_a_pack_reads_only_those_objects(
    tmp_path: Path,
) -> None:
    src = _random_files(tmp_path / "src", 60, 20_000, seed=11)
    remote = FileTransport(tmp_path / "store")
    push(src, remote, REF, pack_size=64 << 20)  # one pack holds every object
    (big,) = [p for p in (tmp_path / "store" / "packs").rglob("*") if p.stat().st_size > 1 << 20]
    # A second snapshot without one file: its record lists the same big pack.
    lacking = tmp_path / "lacking"
    shutil.copytree(src, lacking)
    (lacking / "d3" / "f010.bin").unlink()
    push(lacking, remote, "refs/heads/lacking")
    cache = str(tmp_path / "cache")
    dest = tmp_path / "out"
    pull(remote, "refs/heads/lacking", dest, cache_dir=cache, cache_limit=0)
    report = pull(remote, REF, dest, cache_dir=cache, cache_limit=0, update=True)
    assert describe(dest) == describe(src)
    assert report.packs_downloaded == 0
    assert report.objects_by_range >= 2  # the file's blob and the trees on its path
    assert report.bytes_downloaded < big.stat().st_size // 4


def test_a_ranged_object_that_does_not_match_its_id_fails_and_changes_nothing(
    tmp_path: Path,
) -> None:
    src = _random_files(tmp_path / "src", 60, 20_000, seed=12)
    remote = FileTransport(tmp_path / "store")
    push(src, remote, REF, pack_size=64 << 20)
    (big,) = [p for p in (tmp_path / "store" / "packs").rglob("*") if p.stat().st_size > 1 << 20]
    lacking = tmp_path / "lacking"
    shutil.copytree(src, lacking)
    missing = lacking / "d3" / "f010.bin"
    wanted = missing.read_bytes()
    missing.unlink()
    push(lacking, remote, "refs/heads/lacking")
    cache = str(tmp_path / "cache")
    dest = tmp_path / "out"
    pull(remote, "refs/heads/lacking", dest, cache_dir=cache, cache_limit=0)
    before = describe(dest)
    # Flip a byte of the missing file's stored entry (its blob is stored raw: random
    # bytes do not compress), inside the big pack.
    data = bytearray(big.read_bytes())
    at = data.find(wanted[:64])
    assert at > 0
    data[at + 10] ^= 0xFF
    big.chmod(0o644)
    big.write_bytes(bytes(data))
    with pytest.raises(InvalidResponse, match=r"f010|hash|id"):
        pull(remote, REF, dest, cache_dir=cache, cache_limit=0, update=True)
    assert describe(dest) == before


# -- the manifest's format (SYNC-47) ------------------------------------------------------


def _pulled(tmp_path: Path, seed: int) -> tuple[Path, Path, str, MemoryTransport]:
    src = write_tree(tmp_path / "src", seed=seed, files=30)
    remote = MemoryTransport()
    push(src, remote, REF)
    dest, cache = tmp_path / "dest", str(tmp_path / "cache")
    pull(remote, REF, dest, cache_dir=cache)
    return src, dest, cache, remote


def test_a_damaged_or_foreign_manifest_is_never_trusted(tmp_path: Path) -> None:
    _src, dest, cache, _remote = _pulled(tmp_path, 48)
    where = manifest_path(cache, str(dest))
    good = Path(where).read_bytes()
    assert load_manifest(where, str(dest)) is not None
    assert good.startswith(b"MKCHECKOUT\n")
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 1
    bad = [
        good[:10],
        good[: len(good) // 2],
        good[:-1],
        bytes(flipped),
        b'{"version": 1}',
        b"",
        good.replace(b"MKCHECKOUT\n\x00\x02", b"MKCHECKOUT\n\x00\x03", 1),
    ]
    for data in bad:
        Path(where).write_bytes(data)
        assert load_manifest(where, str(dest)) is None, data[:24]
    Path(where).write_bytes(good)
    assert load_manifest(where, str(tmp_path / "elsewhere")) is None  # names another dir


def test_a_damaged_manifest_falls_back_to_hashing(tmp_path: Path) -> None:
    src, dest, cache, remote = _pulled(tmp_path, 58)
    where = Path(manifest_path(cache, str(dest)))
    where.write_bytes(where.read_bytes()[:-7])
    edited = next(p for p in sorted(dest.rglob("*.txt")) if p.is_file() and not p.is_symlink())
    edited.write_text("a local edit")
    with pytest.raises(LocalEdits, match=str(edited.relative_to(dest))):
        pull(remote, REF, dest, cache_dir=cache, update=True)
    edited.write_bytes((src / edited.relative_to(dest)).read_bytes())
    report = pull(remote, REF, dest, cache_dir=cache, update=True)  # hashed: all equal
    assert report.files == 0 and describe(dest) == describe(src)
    assert load_manifest(str(where), str(dest)) is not None


def test_a_legacy_json_manifest_is_still_read_then_replaced(tmp_path: Path) -> None:
    src, dest, cache, remote = _pulled(tmp_path, 68)
    where = manifest_path(cache, str(dest))
    old = load_manifest(where, str(dest))
    assert old is not None
    legacy = Path(where).with_suffix(".json")
    legacy.write_text(
        json.dumps(
            {
                "version": 1,
                "dest": old.dest,
                "record": old.record,
                "root": old.root.hex(),
                "state": "done",
                "stage": None,
                "entries": checkout._encode(old.entries),
                "prev": {},
            }
        )
    )
    os.unlink(where)
    before = _stats(dest)
    one = next(p for p in sorted(src.rglob("*.txt")) if p.is_file() and not p.is_symlink())
    one.write_text("upstream change")
    push(src, remote, REF)
    report = pull(remote, REF, dest, cache_dir=cache, update=True)
    assert report.files == 1 and describe(dest) == describe(src)
    name = str(one.relative_to(src))
    assert {k: v for k, v in _stats(dest).items() if k != name} == {
        k: v for k, v in before.items() if k != name
    }
    assert not legacy.exists() and load_manifest(where, str(dest)) is not None


def test_a_directory_replaced_by_a_symlink_is_never_followed(tmp_path: Path) -> None:
    """Only paths the pull touches are looked at, never through a local symlink."""
    src = tmp_path / "src"
    (src / "a" / "x").mkdir(parents=True)
    (src / "a" / "x" / "f.txt").write_text("goes away upstream")
    (src / "a" / "keep.txt").write_text("stays")
    remote = MemoryTransport()
    push(src, remote, REF)
    dest, cache = tmp_path / "dest", str(tmp_path / "cache")
    pull(remote, REF, dest, cache_dir=cache)
    shutil.rmtree(src / "a" / "x")
    push(src, remote, REF)
    outside = tmp_path / "outside"
    (outside / "x").mkdir(parents=True)
    (outside / "x" / "f.txt").write_text("goes away upstream")
    (outside / "keep.txt").write_text("stays")
    shutil.rmtree(dest / "a")
    (dest / "a").symlink_to(outside)
    with pytest.raises(LocalEdits, match="a"):
        pull(remote, REF, dest, cache_dir=cache, update=True)
    pull(remote, REF, dest, cache_dir=cache, update=True, force=True)
    assert describe(dest) == describe(src)
    assert (outside / "x" / "f.txt").read_text() == "goes away upstream"  # never followed
