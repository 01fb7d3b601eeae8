"""The push of an edit reads the remote's metadata from local copies (SYNC-55..57).

Records and index blobs are named by the BLAKE3 of their bytes, so a push keeps
copies of them beside the stat cache (mkit_transport/sync/blobcache.py) and the
next push reads what the remote holds from local disk. These tests count the
remote's verb calls (tests.support.sync_fixtures.CountingTransport) and check the
snapshot by pulling it: copies never change what is pushed, a damaged copy is
never trusted, the off switch keeps none, and the copies stay within their budget.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from mkit_transport import FileTransport
from mkit_transport.hashes import PackKey
from mkit_transport.sync import pull, push
from mkit_transport.sync.blobcache import BlobCache
from tests.support.sync_fixtures import CountingTransport, describe

REF = "refs/heads/main"


def _copies(stat_dir: Path) -> dict[str, bytes]:
    folder = stat_dir / "blobs"
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def _edit(tree: Path, n: int) -> None:
    with open(tree / "d2" / "e1" / "f7.txt", "a") as f:
        f.write(f"edit {n}\n")


def test_an_edit_push_downloads_nothing_its_copies_hold(
    source_tree: Path, tmp_path: Path, cache: Callable[[], str]
) -> None:
    remote = CountingTransport()
    stat = tmp_path / "stat"
    push(source_tree, remote, REF, stat_cache_dir=str(stat))
    copies = _copies(stat)
    assert copies  # the first push kept its record and index blobs
    assert all(PackKey.of(data).hex() == name for name, data in copies.items())
    for n in range(2):
        _edit(source_tree, n)
        remote.calls.clear()
        report = push(source_tree, remote, REF, stat_cache_dir=str(stat))
        assert report.updated and report.objects_sent == 4  # the file and 3 trees
        assert "download_pack" not in remote.calls  # record and index blobs: local
        assert report.bytes_downloaded == 0
    out = tmp_path / "out"
    pull(remote, REF, out, cache_dir=cache())
    assert describe(out) == describe(source_tree)


def test_an_unchanged_re_push_asks_the_remote_only_for_its_ref(
    source_tree: Path, tmp_path: Path
) -> None:
    remote = CountingTransport()
    stat = str(tmp_path / "stat")
    push(source_tree, remote, REF, stat_cache_dir=stat)
    remote.calls.clear()
    report = push(source_tree, remote, REF, stat_cache_dir=stat)
    assert remote.calls == ["read_ref"]
    assert not report.updated


def test_a_damaged_copy_is_never_trusted_and_is_fetched_again(
    source_tree: Path, tmp_path: Path, cache: Callable[[], str]
) -> None:
    remote = CountingTransport()
    stat = tmp_path / "stat"
    push(source_tree, remote, REF, stat_cache_dir=str(stat))
    folder = stat / "blobs"
    names = sorted(p.name for p in folder.iterdir())
    damaged = [b"", b"not an index blob", None]  # empty, foreign, one byte flipped
    for i, name in enumerate(names):
        path = folder / name
        data = damaged[i % len(damaged)]
        if data is None:
            raw = bytearray(path.read_bytes())
            raw[len(raw) // 2] ^= 1
            data = bytes(raw)
        path.write_bytes(data)
    _edit(source_tree, 0)
    remote.calls.clear()
    report = push(source_tree, remote, REF, stat_cache_dir=str(stat))
    # Every copy was refused: the record and each index blob came from the remote.
    assert remote.calls.count("download_pack") == len(names)
    assert report.bytes_downloaded > 0
    assert report.objects_sent == 4
    out = tmp_path / "out"
    pull(remote, REF, out, cache_dir=cache())
    assert describe(out) == describe(source_tree)
    # ... and replaced by good copies.
    copies = _copies(stat)
    assert set(names) <= set(copies)
    assert all(PackKey.of(data).hex() == name for name, data in copies.items())


def test_no_cache_keeps_no_copies_and_reads_the_remote(source_tree: Path, tmp_path: Path) -> None:
    remote = CountingTransport()
    stat = tmp_path / "stat"
    push(source_tree, remote, REF, stat_cache=False, stat_cache_dir=str(stat))
    _edit(source_tree, 0)
    remote.calls.clear()
    push(source_tree, remote, REF, stat_cache=False, stat_cache_dir=str(stat))
    assert "download_pack" in remote.calls
    assert not (stat / "blobs").exists()


def test_unwritable_copies_do_not_fail_the_push(
    source_tree: Path, tmp_path: Path, cache: Callable[[], str]
) -> None:
    remote = CountingTransport()
    stat = tmp_path / "stat"
    stat.mkdir()
    (stat / "blobs").write_bytes(b"a file where the directory goes")
    for n in range(2):
        _edit(source_tree, n)
        push(source_tree, remote, REF, stat_cache_dir=str(stat))
    out = tmp_path / "out"
    pull(remote, REF, out, cache_dir=cache())
    assert describe(out) == describe(source_tree)


def test_the_copies_stay_within_their_budget_the_least_recently_read_go_first(
    tmp_path: Path,
) -> None:
    blobs = BlobCache(str(tmp_path / "blobs"), budget=10_000)
    keys = []
    for i in range(30):
        data = bytes([i]) * 1000
        key = PackKey.of(data)
        blobs.put(key, data)
        os.utime(tmp_path / "blobs" / key.hex(), ns=(i * 10**9, i * 10**9))
        keys.append(key)
    assert blobs.get(keys[0]) is not None  # read: now the most recent
    blobs.trim()
    left = {p.name for p in (tmp_path / "blobs").iterdir()}
    assert sum((tmp_path / "blobs" / name).stat().st_size for name in left) <= 10_000
    assert keys[0].hex() in left  # read last, kept
    assert keys[1].hex() not in left  # the oldest not read, gone
    assert keys[29].hex() in left
    blobs.trim()  # nothing added since: no listing, nothing removed
    assert {p.name for p in (tmp_path / "blobs").iterdir()} == left


def test_the_push_of_an_edit_starts_no_thread(
    source_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Callable[[], str]
) -> None:
    # On a loaded machine each Thread.start waits for the thread to be scheduled
    # (milliseconds); a handful of small objects is built and sent in the caller.
    remote = FileTransport(tmp_path / "remote")
    stat = str(tmp_path / "stat")
    push(source_tree, remote, REF, stat_cache_dir=stat)
    started: list[str] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        started.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    _edit(source_tree, 0)
    report = push(source_tree, remote, REF, stat_cache_dir=stat)
    monkeypatch.undo()
    assert report.updated and report.packs_uploaded == 2
    assert started == []
    out = tmp_path / "out"
    pull(remote, REF, out, cache_dir=cache())
    assert describe(out) == describe(source_tree)
