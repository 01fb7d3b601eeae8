"""Push's stat cache (spec/SPEC-SYNC.md "Stat cache", SYNC-34..39, SYNC-58).

Reads are counted with an audit hook (every ``open`` of a path under the source,
by any thread: the scan's hashing, the chunker, the packer), not by patching the
functions that read. Trust is shown both ways: a cache made to lie (an entry
matching a file's ``lstat`` but naming other content) is believed when it is
valid and not racy, which proves these tests can fail, and is never believed when
it is racy, damaged, foreign or made with other parameters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest

from mkit_transport import FileTransport, MemoryTransport, Transport
from mkit_transport.cli.main import main
from mkit_transport.errors import InvalidArgument
from mkit_transport.pack import KIND_TREE
from mkit_transport.sync import lstatcheck, pull, push
from mkit_transport.sync import scan as scan_module
from mkit_transport.sync import statcache as statcache_module
from mkit_transport.sync.chunking import ChunkParams
from mkit_transport.sync.model import encode_tree_rows
from mkit_transport.sync.scan import scan
from mkit_transport.sync.statcache import StatCache, cache_path, stat_key
from tests.support.sync_fixtures import describe, write_tree

REF = "refs/heads/main"
SMALL = ChunkParams(min_size=16 << 10, avg_size=64 << 10, max_size=256 << 10)
ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 120.0

_watched: list[tuple[str, list[str]]] = []
_lock = threading.Lock()


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "open" or not _watched or not isinstance(args[0], str | bytes | os.PathLike):
        return
    path = os.fsdecode(args[0])
    with _lock:
        for root, seen in _watched:
            if path.startswith(root):
                seen.append(path[len(root) :])
                break


sys.addaudithook(_audit)


class _Reads:
    """The files under ``root`` opened while the ``with`` block ran (relative paths)."""

    def __init__(self, root: Path) -> None:
        # The path as given (what the scan opens) and its real path, should they differ.
        self.roots = {os.path.join(os.fspath(root), ""), os.path.join(os.path.realpath(root), "")}
        self.paths: list[str] = []

    def __enter__(self) -> list[str]:
        with _lock:
            _watched.extend((root, self.paths) for root in self.roots)
        return self.paths

    def __exit__(self, *exc: object) -> None:
        with _lock:
            for root in self.roots:
                _watched.remove((root, self.paths))


@pytest.fixture
def stat_dir(tmp_path: Path) -> str:
    return str(tmp_path / "statcache")


@pytest.fixture
def no_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Granularity 0: entries are trusted once the filesystem clock passed them."""
    monkeypatch.setattr(statcache_module, "RACY_WINDOW_NS", 0)


def _settle(tree: Path) -> None:
    """Wait (bounded) until the filesystem's clock is past every ctime under ``tree``.

    With :func:`no_window`, a push started afterwards trusts what it records.
    """
    newest = max(p.lstat().st_ctime_ns for p in [tree, *tree.rglob("*")])
    probe = tree.parent / "clock-probe"
    deadline = time.monotonic() + DEADLINE
    while True:
        probe.write_bytes(b"")
        if probe.stat().st_mtime_ns > newest:
            return
        assert time.monotonic() < deadline, "the filesystem clock did not advance"
        time.sleep(0.001)


def _tree(root: Path) -> Path:
    """Small files, a file over SMALL_OBJECT (1 MiB) and one chunked by SMALL."""
    write_tree(root, files=12)
    (root / "medium.bin").write_bytes(os.urandom((1 << 20) + 5))
    (root / "big.bin").write_bytes(os.urandom(1 << 20) * 2)  # chunked, with a repeat
    return root


def _regular(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.is_symlink()
    )


def _pulled(transport: Transport, tmp_path: Path, name: str) -> dict[str, Any]:
    dest = tmp_path / name
    pull(transport, REF, dest, cache_dir=str(tmp_path / f"{name}-packs"))
    return describe(dest)


def _lying_cache(src: Path, stat_dir: str, name: str, params: ChunkParams = SMALL) -> StatCache:
    """A cache of ``src`` whose entry for ``name`` matches its lstat but names other
    content; trusted (its reference time is 10 s ahead) unless the test changes it."""
    cache = StatCache.open(src, params, stat_dir)
    path = src / name
    lie = b"not what the file holds"
    assert len(lie) != 0 and path.stat().st_size <= 1 << 20
    cache.record(
        name.encode(), stat_key(path.stat()), (blake3.blake3(lie).digest(), path.stat().st_size)
    )
    cache._ref_ns = time.time_ns() + 10_000_000_000
    return cache


# -- SYNC-34: unchanged files are not read ---------------------------------------


def test_an_unchanged_re_push_reads_no_file_and_an_edit_reads_only_that_file(
    tmp_path: Path, stat_dir: str, no_window: None
) -> None:
    src = _tree(tmp_path / "src")
    remote = FileTransport(tmp_path / "remote")
    _settle(src)
    with _Reads(src) as first:
        push(src, remote, REF, stat_cache_dir=stat_dir, _chunking=SMALL)
    assert set(_regular(src)) <= set(first)  # the first push read every file
    _settle(src)
    with _Reads(src) as again:
        report = push(src, remote, REF, stat_cache_dir=stat_dir, _chunking=SMALL)
    assert again == [] and not report.updated and report.files == len(_regular(src))
    cache_file = os.stat(cache_path(src, stat_dir))
    with _Reads(src) as again:  # every entry answered: the cache is not even rewritten
        push(src, remote, REF, stat_cache_dir=stat_dir, _chunking=SMALL)
    assert again == [] and os.stat(cache_path(src, stat_dir)).st_ino == cache_file.st_ino
    (src / "d1" / "e1" / "f1.txt").write_text("edited")
    _settle(src)
    with _Reads(src) as edit:
        report = push(src, remote, REF, stat_cache_dir=stat_dir, _chunking=SMALL)
    assert report.updated and set(edit) == {"d1/e1/f1.txt"}
    assert os.stat(cache_path(src, stat_dir)).st_ino != cache_file.st_ino
    assert _pulled(remote, tmp_path, "out") == describe(src)
    with _Reads(src) as once_more:
        push(src, remote, REF, stat_cache_dir=stat_dir, _chunking=SMALL)
    assert once_more == []


def test_cached_files_the_remote_lacks_are_read_and_sent(
    tmp_path: Path, stat_dir: str, no_window: None
) -> None:
    """A cache hit names the objects; a remote that lacks them still gets their bytes
    (read from the file, re-hashed), chunks of a chunked file included."""
    src = _tree(tmp_path / "src")
    _settle(src)
    push(src, MemoryTransport(), REF, stat_cache_dir=stat_dir, _chunking=SMALL)
    for fresh in ("first", "incremental"):
        remote = MemoryTransport()
        if fresh == "incremental":  # an old snapshot there: the send-set path
            (tmp_path / "other").mkdir()
            (tmp_path / "other" / "x").write_text("x")
            push(tmp_path / "other", remote, REF, stat_cache=False)
        with StatCache.open(src, SMALL, stat_dir) as cache:
            assert cache.loaded == len(_regular(src))
        report = push(src, remote, REF, stat_cache_dir=stat_dir, _chunking=SMALL)
        assert report.updated
        assert _pulled(remote, tmp_path, f"out-{fresh}") == describe(src)


def test_the_scan_with_a_cache_gives_the_snapshot_of_the_scan_without(
    tmp_path: Path, stat_dir: str, no_window: None
) -> None:
    src = _tree(tmp_path / "src")
    _settle(src)
    plain = scan(src, _chunking=SMALL)
    for _ in range(2):  # the first fills the cache, the second answers from it
        with StatCache.open(src, SMALL, stat_dir) as cache:
            cached = scan(src, _chunking=SMALL, stat_cache=cache)
            cache.save()
        assert cached.root == plain.root and list(cached.objects) == list(plain.objects)
    assert cache.hits == len(_regular(src)) and cache.misses == 0


# -- SYNC-35: racily clean entries -------------------------------------------------


def test_a_file_changed_within_the_mtime_tick_is_hashed_again(
    tmp_path: Path, stat_dir: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    path = src / "racy.txt"
    path.write_bytes(b"first version")
    remote = FileTransport(tmp_path / "remote")
    push(src, remote, REF, stat_cache_dir=stat_dir)
    recorded = path.stat()
    path.write_bytes(b"other version")  # same size
    os.utime(path, ns=(recorded.st_atime_ns, recorded.st_mtime_ns))
    assert path.stat().st_mtime_ns == recorded.st_mtime_ns
    report = push(src, remote, REF, stat_cache_dir=stat_dir)
    assert report.updated
    assert _pulled(remote, tmp_path, "out")["racy.txt"][2] == b"other version"


def test_an_entry_not_older_than_the_cache_by_the_window_is_not_trusted(
    tmp_path: Path, stat_dir: str
) -> None:
    """The entry matches the file's lstat exactly (ctime too) but lies: trusted when
    the cache's reference time is 10 s later, never when it is within the window."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_bytes(b"true content")
    truth = scan(src).root
    trusted = _lying_cache(src, stat_dir, "f.txt", ChunkParams())
    trusted.save()
    with StatCache.open(src, directory=stat_dir) as cache:
        assert scan(src, stat_cache=cache).root != truth  # believed: the test can fail
    racy = _lying_cache(src, stat_dir, "f.txt", ChunkParams())
    racy._ref_ns = (src / "f.txt").stat().st_mtime_ns + statcache_module.RACY_WINDOW_NS
    racy.save()
    with StatCache.open(src, directory=stat_dir) as cache:
        assert scan(src, stat_cache=cache).root == truth
        assert cache.loaded == 1 and cache.hits == 0


# -- SYNC-36: corrupt, truncated, foreign or other parameters: ignored, rebuilt -----


def _damage(cache: StatCache, how: str) -> None:
    data = bytearray(Path(cache.path).read_bytes())
    if how == "flipped":  # a bit of the one entry's content id: still well formed
        data[statcache_module._HEAD.size + len(cache.root) + 37] ^= 1
    elif how == "truncated":
        del data[len(data) - 40 :]
    elif how == "empty":
        data.clear()
    elif how == "garbage":
        data = bytearray(os.urandom(len(data)))
    Path(cache.path).write_bytes(bytes(data))


@pytest.mark.parametrize(
    "how", ["flipped", "truncated", "empty", "garbage", "foreign", "params", "version"]
)
def test_a_bad_cache_is_ignored_and_rebuilt(
    tmp_path: Path, stat_dir: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_bytes(b"true content")
    remote = MemoryTransport()
    lying = _lying_cache(
        src, stat_dir, "f.txt", ChunkParams(max_size=512 << 10) if how == "params" else SMALL
    )
    if how == "foreign":  # written for another directory, then copied to this one's name
        lying.root = os.fsencode(tmp_path / "elsewhere")
    if how == "version":
        monkeypatch.setattr(statcache_module, "CACHE_VERSION", statcache_module.CACHE_VERSION + 1)
    lying.save()
    monkeypatch.undo()
    if how in ("flipped", "truncated", "empty", "garbage"):
        _damage(lying, how)
    push(src, remote, REF, stat_cache_dir=stat_dir, _chunking=SMALL)
    assert _pulled(remote, tmp_path, "out")["f.txt"][2] == b"true content"
    with StatCache.open(src, SMALL, stat_dir) as rebuilt:
        assert rebuilt.loaded == 1  # the push wrote a valid cache over it


def test_an_undamaged_lying_cache_is_believed_the_documented_limitation(
    tmp_path: Path, stat_dir: str
) -> None:
    """The control of the test above (and the limitation SYNC-39 states): a change
    that keeps size, mtime, ctime, inode and mode is not seen; ``stat_cache=False``
    sees it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_bytes(b"true content")
    remote = MemoryTransport()
    _lying_cache(src, stat_dir, "f.txt").save()
    with pytest.raises(OSError, match="changed while it was being pushed"):
        # The packer re-hashes what it sends (the lie names an object the remote lacks).
        push(src, remote, REF, stat_cache_dir=stat_dir, _chunking=SMALL)
    push(src, remote, REF, stat_cache=False)
    assert _pulled(remote, tmp_path, "out")["f.txt"][2] == b"true content"


# -- SYNC-37: concurrent pushes of one directory -----------------------------------


def test_two_processes_pushing_the_same_directory_both_succeed_and_the_cache_stays_valid(
    tmp_path: Path,
) -> None:
    src = _tree(tmp_path / "src")
    url = f"mkit+file://{tmp_path / 'remote'}"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    for round_ in range(3):
        (src / f"new{round_}.txt").write_text(f"round {round_}")
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mkit_transport",
                    "push",
                    str(src),
                    url,
                    f"refs/heads/p{i}",
                    "--json",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        for child in children:
            out, err = child.communicate(timeout=DEADLINE)
            assert child.returncode == 0, err
            assert json.loads(out)["files"] == len(_regular(src))
    directory = os.path.join(tmp_path / "xdg", "mkit_transport", "stat")
    # No debris: the cache file, and the directory of record and index copies (SYNC-55).
    assert sorted(os.listdir(directory)) == sorted(
        [os.path.basename(cache_path(src, directory)), "blobs"]
    )
    with StatCache.open(src, directory=directory) as cache:
        assert cache.loaded == len(_regular(src))
    remote = FileTransport(tmp_path / "remote")
    for i in range(2):
        dest = tmp_path / f"out{i}"
        pull(remote, f"refs/heads/p{i}", dest, cache_dir=str(tmp_path / "packs"))
        assert describe(dest) == describe(src)


def test_a_cache_is_replaced_whole_by_the_last_save(tmp_path: Path, stat_dir: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b"):
        (src / name).write_text(name)
    first, second = StatCache.open(src, directory=stat_dir), StatCache.open(src, directory=stat_dir)
    first.record(b"a", stat_key((src / "a").stat()), (b"\1" * 32, 1))
    for name in ("a", "b"):
        second.record(name.encode(), stat_key((src / name).stat()), (b"\2" * 32, 1))
    second.save()
    first.save()
    with StatCache.open(src, directory=stat_dir) as cache:
        assert cache.loaded == 1  # first's whole file, never a mix
    assert sorted(os.listdir(stat_dir)) == [os.path.basename(first.path)]


# -- SYNC-38: --no-cache / stat_cache=False ------------------------------------------


def test_no_cache_reads_every_file_and_neither_reads_nor_writes_the_cache(
    tmp_path: Path, stat_dir: str, no_window: None
) -> None:
    src = _tree(tmp_path / "src")
    remote = MemoryTransport()
    push(src, remote, REF, stat_cache=False, stat_cache_dir=stat_dir, _chunking=SMALL)
    assert not os.path.exists(stat_dir)
    push(src, remote, REF, stat_cache_dir=stat_dir, _chunking=SMALL)
    _settle(src)
    with _Reads(src) as reads:
        push(src, remote, REF, stat_cache=False, stat_cache_dir=stat_dir, _chunking=SMALL)
    assert set(reads) == set(_regular(src))


def test_no_cache_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    src = write_tree(tmp_path / "src", files=3)
    url = f"mkit+file://{tmp_path / 'remote'}"
    assert main(["push", str(src), url, REF, "--no-cache", "--json"]) == 0
    assert not (tmp_path / "xdg" / "mkit_transport" / "stat").exists()
    assert main(["push", str(src), url, REF, "--json"]) == 0
    # The cache file, and the record and index copies (SYNC-55).
    assert len(os.listdir(tmp_path / "xdg" / "mkit_transport" / "stat")) == 2
    helped = subprocess.run(
        [sys.executable, "-m", "mkit_transport", "push", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert "--no-cache" in helped.stdout and "ctime, inode" in " ".join(helped.stdout.split())


def test_a_bad_stat_cache_argument_is_invalid_before_any_io(tmp_path: Path) -> None:
    remote = MemoryTransport()
    for kwargs in ({"stat_cache": "yes"}, {"stat_cache_dir": 3}):
        with pytest.raises(InvalidArgument):
            push(tmp_path, remote, REF, **kwargs)
    assert remote.read_ref(REF) is None


# -- SYNC-39: where it lives; a cache that cannot be written fails nothing ---------


def test_the_cache_lives_under_xdg_cache_home_named_by_the_real_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    src = write_tree(tmp_path / "src", files=2)
    os.symlink(src, tmp_path / "alias")
    push(tmp_path / "alias", MemoryTransport(), REF)
    name = blake3.blake3(os.fsencode(os.path.realpath(src))).hexdigest()
    # Beside it, the record and index copies (SYNC-55).
    assert sorted(os.listdir(tmp_path / "xdg" / "mkit_transport" / "stat")) == sorted(
        ["blobs", name]
    )


def test_a_cache_that_cannot_be_written_does_not_fail_the_push(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", files=2)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    remote = MemoryTransport()
    assert push(src, remote, REF, stat_cache_dir=str(blocker / "stat")).updated
    assert _pulled(remote, tmp_path, "out") == describe(src)


@pytest.fixture(autouse=True)
def _bounded() -> Iterator[None]:
    """Nothing here may leave a watcher installed."""
    yield
    assert _watched == []


# -- SYNC-58: directory trees reused from the cache (git's cache-tree) --------------


def _counting_encoder(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the trees the scan encodes (a reused one is not encoded)."""
    calls: list[int] = []
    real = encode_tree_rows

    def counted(rows: Any) -> bytes:
        calls.append(1)
        return real(rows)

    monkeypatch.setattr(scan_module, "encode_tree_rows", counted)
    return calls


def _cached_scan(src: Path, stat_dir: str) -> tuple[Any, StatCache]:
    with StatCache.open(src, SMALL, stat_dir) as cache:
        snap = scan(src, _chunking=SMALL, stat_cache=cache)
        cache.save()
    return snap, cache


def test_an_unchanged_scan_encodes_only_the_trees_holding_symlinks_or_changes(
    tmp_path: Path, stat_dir: str, no_window: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails without the tree cache: every directory's tree would be encoded again."""
    src = _tree(tmp_path / "src")
    _settle(src)
    plain = scan(src, _chunking=SMALL)
    _cached_scan(src, stat_dir)  # fills the cache (file entries and trees)
    calls = _counting_encoder(monkeypatch)
    snap, _cache = _cached_scan(src, stat_dir)
    assert snap.count == len(plain.objects) and snap.objects == plain.objects
    assert snap.root == plain.root and list(snap.objects) == list(plain.objects)
    assert len(calls) == 1  # the top only: it holds symlinks (never cached)
    (src / "d1" / "e1" / "f1.txt").write_text("edited deep inside")
    _settle(src)
    calls.clear()
    snap, _cache = _cached_scan(src, stat_dir)
    assert len(calls) == 3  # d1/e1, d1 and the top
    assert snap.root == scan(src, _chunking=SMALL).root


def _change(src: Path, how: str) -> None:
    if how == "edit-deep":
        (src / "d1" / "e1" / "f1.txt").write_text("edited deep inside")
    elif how == "same-size":
        path = src / "d1" / "e1" / "f1.txt"
        path.write_bytes(bytes(len(path.read_bytes())))
    elif how == "rename":
        (src / "d1" / "e1" / "f1.txt").rename(src / "d1" / "e1" / "g1.txt")
    elif how == "move":
        (src / "d1" / "e1" / "f1.txt").rename(src / "d2" / "e1" / "f1.txt")
    elif how == "add":
        (src / "d3" / "e0" / "new.txt").write_text("new")
    elif how == "remove":
        (src / "d3" / "e0" / "f3.txt").unlink()
    elif how == "chmod-file":
        (src / "d0" / "e0" / "f0.txt").chmod(0o600)
    elif how == "chmod-dir":
        (src / "d4" / "e1").chmod(0o700)
    elif how == "symlink":
        os.symlink("f2.txt", src / "d2" / "e2" / "link")
    elif how == "add-dir":
        (src / "d0" / "e0" / "sub").mkdir()
    elif how == "remove-dir":
        (src / "empty" / "deeper").rmdir()
    elif how == "file-to-dir":
        (src / "d1" / "e2" / "f11.txt").unlink()
        (src / "d1" / "e2" / "f11.txt").mkdir()
        (src / "d1" / "e2" / "f11.txt" / "inner").write_text("inner")
    elif how == "chunked":
        (src / "big.bin").write_bytes(os.urandom(1 << 20) * 2)
    else:
        raise AssertionError(how)


def _no_links(root: Path) -> Path:
    """``root`` without its symlinks: a tree whose cache can be complete (SYNC-60)."""
    for path in list(root.rglob("*")):
        if path.is_symlink():
            path.unlink()
    return root


@pytest.fixture(params=["c", "python"])
def checker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The whole-tree lstat check in C (when built) and in Python: the same answers."""
    if request.param == "python":
        monkeypatch.setattr(statcache_module, "stale", lstatcheck.stale_python)
    elif not lstatcheck.ACCELERATED:
        pytest.fail("the C lstat check (mkit_transport/sync/_lstat.c) is not built")
    return str(request.param)


@pytest.mark.parametrize("links", [True, False], ids=["symlinks", "no-symlinks"])
@pytest.mark.parametrize(
    "how",
    [
        "edit-deep",
        "same-size",
        "rename",
        "move",
        "add",
        "remove",
        "chmod-file",
        "chmod-dir",
        "symlink",
        "add-dir",
        "remove-dir",
        "file-to-dir",
        "chunked",
    ],
)
def test_a_reused_tree_is_exact_after_any_change(
    tmp_path: Path, stat_dir: str, no_window: None, how: str, links: bool, checker: str
) -> None:
    """With every tree cached, a change anywhere gives the snapshot a scan without the
    cache gives (root and every object, in order), and so does the scan after it.
    Without symlinks the cache is complete: the whole-tree check must see the change."""
    src = _tree(tmp_path / "src")
    if not links:
        _no_links(src)
    _settle(src)
    _cached_scan(src, stat_dir)
    _cached_scan(src, stat_dir)
    _change(src, how)
    _settle(src)
    plain = scan(src, _chunking=SMALL)
    for _ in range(2):
        snap, _cache = _cached_scan(src, stat_dir)
        assert snap.count == len(plain.objects)  # counted before the objects are built
        assert list(snap.ids()) == list(plain.objects)  # by id, no object per file made
        assert all(snap.source(oid) == source for oid, source in plain.objects.items())
        assert snap.root == plain.root and list(snap.objects) == list(plain.objects)
        assert snap.objects == plain.objects and snap.files == plain.files


def test_a_push_after_a_change_in_a_reused_tree_pulls_back_exactly(
    tmp_path: Path, stat_dir: str, no_window: None
) -> None:
    src = _tree(tmp_path / "src")
    remote = FileTransport(tmp_path / "remote")
    _settle(src)
    push(src, remote, REF, stat_cache_dir=stat_dir, _chunking=SMALL)
    for step, how in enumerate(["chmod-dir", "move", "file-to-dir", "remove"]):
        _change(src, how)
        _settle(src)
        assert push(src, remote, REF, stat_cache_dir=stat_dir, _chunking=SMALL).updated
        assert _pulled(remote, tmp_path, f"out{step}") == describe(src)


def test_a_cached_tree_whose_bytes_do_not_hash_to_its_id_is_not_used(
    tmp_path: Path, stat_dir: str, no_window: None
) -> None:
    src = _tree(tmp_path / "src")
    _settle(src)
    plain = scan(src, _chunking=SMALL)
    _cached_scan(src, stat_dir)
    with StatCache.open(src, SMALL, stat_dir) as cache:
        key = b"d1/e1/"
        oid, count, mode, data, own = cache._old_trees[key]
        cache._old_trees[key] = (oid, count, mode, data + b"x", own)
        snap = scan(src, _chunking=SMALL, stat_cache=cache)
    assert snap.root == plain.root and list(snap.objects) == list(plain.objects)
    # The bytes each tree object carries are the bytes its id names.
    for oid in snap.ids():
        source = snap.source(oid)
        if source.data is not None and source.kind == KIND_TREE:
            assert blake3.blake3(source.data).digest() == oid


# -- SYNC-60: every entry checked at once; an unchanged tree is not walked ----------


def _listings(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[str]]:
    """The directories walks with a stat cache visit from now on, and those of them
    listed from the disk (not from the cache)."""
    visited: list[str] = []
    listed: list[str] = []
    children = scan_module._Scanner.children

    def visiting(self: Any, path: str, folder: Any) -> Any:
        if self.cache is not None:
            visited.append(path)
            if self.cache.listing(folder.key) is None:
                listed.append(path)
        return children(self, path, folder)

    monkeypatch.setattr(scan_module._Scanner, "children", visiting)
    return visited, listed


def test_an_unchanged_tree_without_symlinks_is_not_listed(
    tmp_path: Path, stat_dir: str, no_window: None, monkeypatch: pytest.MonkeyPatch, checker: str
) -> None:
    """Fails without the whole-tree check: every directory would be listed again."""
    src = _no_links(_tree(tmp_path / "src"))
    _settle(src)
    plain = scan(src, _chunking=SMALL)
    _cached_scan(src, stat_dir)
    visited, listed = _listings(monkeypatch)
    with _Reads(src) as reads:
        snap, cache = _cached_scan(src, stat_dir)
    assert visited == [] and reads == []
    assert (snap.root, snap.files, snap.count) == (plain.root, plain.files, len(plain.objects))
    assert cache.hits == len(_regular(src)) and cache.misses == 0
    # Its objects, asked for, come from a walk (the cache answering every file, and
    # listing every directory: none moved).
    assert list(snap.objects) == list(plain.objects) and visited and listed == []
    # With symlinks the cache is never complete: the tree is walked.
    os.symlink("f0.txt", src / "d0" / "e0" / "link")
    _settle(src)
    _cached_scan(src, stat_dir)
    visited.clear()
    snap, _cache = _cached_scan(src, stat_dir)
    assert visited and snap.root == scan(src, _chunking=SMALL).root
    # Only the directory holding the symlink is listed from the disk (it has no cached
    # tree, hence no cached names), in each of the two walks.
    assert listed == [os.path.join(src, "d0", "e0")] * 2


def test_a_directory_is_listed_from_the_cache_with_the_lstat_its_names_belong_to(
    tmp_path: Path, stat_dir: str, no_window: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name added after the check is not in this walk (the directory is listed from
    the cache, as the check saw it), and the cache keeps the directory's lstat of the
    check, not a later one: the next push sees the new name. Fails if the walk kept the
    lstat it took itself (then the new name would never be seen)."""
    src = _no_links(_tree(tmp_path / "src"))
    _settle(src)
    _cached_scan(src, stat_dir)
    (src / "d0" / "e0" / "f0.txt").write_text("an edit: the tree is not unchanged")
    _settle(src)
    _visited, listed = _listings(monkeypatch)
    with StatCache.open(src, SMALL, stat_dir) as cache:
        (src / "d1" / "late.txt").write_text("added after the check")
        early = scan(src, _chunking=SMALL, stat_cache=cache)
        cache.save()
    assert listed == []  # no directory moved at the check: all listed from the cache
    (src / "d1" / "late.txt").unlink()
    assert early.root == scan(src, _chunking=SMALL).root
    (src / "d1" / "late.txt").write_text("added after the check")
    _settle(src)
    snap, _cache = _cached_scan(src, stat_dir)
    assert snap.root == scan(src, _chunking=SMALL).root
    assert listed == [os.path.join(src, "d1")]


def test_a_push_whose_remote_moved_sends_the_unchanged_tree_exactly(
    tmp_path: Path, stat_dir: str, no_window: None
) -> None:
    """The tip is another tree (pushed from elsewhere): the unchanged tree's objects,
    not listed by the check, are walked for and the ones the remote lacks are sent."""
    src = _no_links(_tree(tmp_path / "src"))
    remote = FileTransport(tmp_path / "remote")
    _settle(src)
    push(src, remote, REF, stat_cache_dir=stat_dir, _chunking=SMALL)
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("another tree")
    push(other, remote, REF, stat_cache=False)
    report = push(src, remote, REF, stat_cache_dir=stat_dir, _chunking=SMALL)
    assert report.updated
    assert _pulled(remote, tmp_path, "out") == describe(src)


def test_a_tree_changed_after_the_check_is_pushed_as_the_check_saw_it(
    tmp_path: Path, stat_dir: str, no_window: None
) -> None:
    """The check found the tree unchanged; a file added after it is not in this
    snapshot, whose objects (walked for when the remote's tip is another tree) are
    those of the tree as checked. The next push sends the new file."""
    src = _no_links(_tree(tmp_path / "src"))
    remote = FileTransport(tmp_path / "remote")
    _settle(src)
    push(src, remote, REF, stat_cache_dir=stat_dir, _chunking=SMALL)
    checked = describe(src)
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("another tree")
    push(other, remote, REF, stat_cache=False)
    with StatCache.open(src, SMALL, stat_dir) as cache:
        snap = scan(src, _chunking=SMALL, stat_cache=cache)
        (src / "d0" / "e0" / "added.txt").write_text("added after the check")
        assert len(snap.objects) == snap.count
        cache.save()
    (src / "d0" / "e0" / "added.txt").unlink()
    assert snap.root == scan(src, _chunking=SMALL).root and describe(src) == checked
    (src / "d0" / "e0" / "added.txt").write_text("added after the check")
    _settle(src)
    assert push(src, remote, REF, stat_cache_dir=stat_dir, _chunking=SMALL).updated
    assert _pulled(remote, tmp_path, "out") == describe(src)


def _lying_directory(src: Path, stat_dir: str, ref_ns: int) -> None:
    """Rewrite ``src``'s complete cache so that directory ``d0/e0`` (which gained a
    file since) matches its current ``lstat``: the cache then claims its old names."""
    cache = StatCache.open(src, SMALL, stat_dir)
    assert cache._complete is not None
    cache._new, cache._new_lists = dict(cache._old), dict(cache._old_lists)
    cache._new_trees = dict(cache._old_trees)
    key = b"d0/e0/"
    cache._new_trees[key] = (*cache._old_trees[key][:4], stat_key((src / "d0" / "e0").lstat()))
    cache._summary, cache._changed, cache._ref_ns = cache._complete, True, ref_ns
    cache.save()


def test_a_directory_entry_not_older_than_the_window_is_not_trusted(
    tmp_path: Path, stat_dir: str, no_window: None, checker: str
) -> None:
    """A directory's lstat says its names are unchanged only when trusted: a lying
    cache (the directory gained a name, its entry forged to match) is believed when
    its reference time is 10 s later, which proves the test can fail, and never when
    the directory's times are within the window of it (racily clean)."""
    src = _no_links(_tree(tmp_path / "src"))
    _settle(src)
    _cached_scan(src, stat_dir)
    (src / "d0" / "e0" / "new.txt").write_text("added")
    truth = scan(src, _chunking=SMALL).root
    _lying_directory(src, stat_dir, time.time_ns() + 10_000_000_000)
    with StatCache.open(src, SMALL, stat_dir) as cache:
        assert scan(src, _chunking=SMALL, stat_cache=cache).root != truth  # believed
    ctime = (src / "d0" / "e0").lstat().st_ctime_ns
    _lying_directory(src, stat_dir, ctime + statcache_module.RACY_WINDOW_NS)
    with StatCache.open(src, SMALL, stat_dir) as cache:
        assert scan(src, _chunking=SMALL, stat_cache=cache).root == truth


def _deep_tree(root: Path) -> Path:
    """``_tree`` without symlinks, its large files (whole and chunked, a duplicate of a
    small one's content too) also inside directories a change elsewhere leaves whole,
    and names whose byte order is not the walk's."""
    src = _no_links(_tree(root))
    for folder in ("d3", "d2/e2"):
        (src / folder / "medium.bin").write_bytes(os.urandom((1 << 20) + 9))
        (src / folder / "big.bin").write_bytes(os.urandom(1 << 20) * 2)
        (src / folder / "again.txt").write_bytes((src / "d0" / "e0" / "f0.txt").read_bytes())
    # Names that sort before a sibling directory's subtree bytewise, after it in the walk.
    (src / "d3" / "e0-x").write_text("after d3/e0/ in the walk, before it bytewise")
    (src / "d3" / "e0.txt").write_text("the same")
    return src


@pytest.mark.parametrize("how", ["edit-deep", "add", "remove", "chmod-dir", "add-dir", "chunked"])
def test_an_unchanged_directory_is_taken_whole_and_the_snapshot_is_exact(
    tmp_path: Path,
    stat_dir: str,
    no_window: None,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    checker: str,
) -> None:
    """After a change, only the directories on its path are visited (git's cache-tree);
    every other is taken whole from the cache, its files found in the walk's order: the
    snapshot, its objects, their order and sources, the file count and the cache written
    next are those of a scan without the cache. Fails without the grafting (every
    directory is visited) and if a grafted file were found out of the walk's order."""
    src = _deep_tree(tmp_path / "src")
    _settle(src)
    _cached_scan(src, stat_dir)
    _change(src, how)
    _settle(src)
    plain = scan(src, _chunking=SMALL)
    visited, _listed = _listings(monkeypatch)
    snap, cache = _cached_scan(src, stat_dir)
    changed = {
        "edit-deep": "d1/e1",
        "add": "d3/e0",
        "remove": "d3/e0",
        "chmod-dir": "d4/e1",
        "add-dir": "d0/e0/sub",
        "chunked": "",
    }[how]
    on_path = {str(src)} | {
        os.path.join(src, *changed.split("/")[:depth]) for depth in range(1, 3) if changed
    }
    if how == "add-dir":
        on_path.add(os.path.join(src, "d0", "e0", "sub"))
    assert set(visited) <= on_path and os.path.join(src, "d2") not in visited
    assert list(snap.ids()) == list(plain.objects)
    assert all(snap.source(oid) == source for oid, source in plain.objects.items())
    assert (snap.root, snap.files, snap.count) == (plain.root, plain.files, len(plain.objects))
    # The cache written holds every file and directory: the next scan is the unchanged one.
    visited.clear()
    again, _cache = _cached_scan(src, stat_dir)
    assert visited == [] and again.root == plain.root
    assert list(again.ids()) == list(plain.objects)
    assert cache.hits == len(_regular(src)) - (1 if how in ("edit-deep", "add", "chunked") else 0)


def test_a_grafted_directory_whose_cached_tree_is_damaged_is_walked(
    tmp_path: Path, stat_dir: str, no_window: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached tree whose bytes do not hash to its id is never grafted (nor used)."""
    src = _deep_tree(tmp_path / "src")
    _settle(src)
    _cached_scan(src, stat_dir)
    _change(src, "edit-deep")
    _settle(src)
    real = statcache_module.StatCache._parse

    def damaged(self: StatCache, data: bytes) -> Any:
        rows, lists, trees, ref_ns = real(self, data)
        oid, count, mode, tree, own = trees[b"d3/"]
        trees[b"d3/"] = (oid, count, mode, tree[:-1] + bytes([tree[-1] ^ 1]), own)
        return rows, lists, trees, ref_ns

    monkeypatch.setattr(statcache_module.StatCache, "_parse", damaged)
    visited, _listed = _listings(monkeypatch)
    snap, _cache = _cached_scan(src, stat_dir)
    assert os.path.join(src, "d3") in visited
    assert snap.root == scan(src, _chunking=SMALL).root
