"""Chunked large files end to end (spec/SPEC-SYNC.md section 8, SYNC-21..25).

A file over one maximal chunk is pushed as content-defined chunks plus a chunk
list: an edit re-sends about one chunk, identical content is sent once, a rename
costs metadata only, and a pull rebuilds the file chunk by chunk and checks it
whole. "Bytes re-sent" is read from the push report, never from timings. Most
tests pass small chunker parameters (``_chunking``) to chunk files of a few MiB;
one runs the real ones on 32 MiB.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from mkit_transport import FileTransport, MemoryTransport, PackKey, Transport
from mkit_transport.errors import InvalidResponse, RemoteError
from mkit_transport.sync import Progress, mirror, pull, push, show
from mkit_transport.sync import scan as scan_module
from mkit_transport.sync.chunking import CHUNK_MAX, ChunkedFile, ChunkParams, chunk_file
from mkit_transport.sync.chunklist import encode_chunk_list
from mkit_transport.sync.model import TYPE_CHUNKED, decode_tree
from tests.support.sync_fixtures import describe, record_of, write_tree
from tests.test_sync_remotes import _fresh as fresh_store

REF = "refs/heads/main"
SMALL = ChunkParams(min_size=16 << 10, avg_size=64 << 10, max_size=256 << 10)
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sync-v1-store"
#: Room for the metadata an edit re-sends besides chunks (trees and one chunk list).
METADATA = 16 << 10


def _random(n: int, seed: int = 1) -> bytearray:
    return bytearray(random.Random(seed).randbytes(n))


def _chunks(path: Path, params: ChunkParams = SMALL) -> ChunkedFile:
    return chunk_file(str(path), params)


def test_a_flipped_byte_mid_file_resends_about_one_chunk(
    sync_remote: Transport, tmp_path: Path, cache: Callable[[], str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = _random(3 << 20)
    (src / "big.bin").write_bytes(data)
    (src / "small.txt").write_text("unchanged")
    first = push(src, sync_remote, REF, _chunking=SMALL)
    chunks = len(_chunks(src / "big.bin").chunks)
    assert chunks > 20
    # root tree, chunk list, the chunks, the small file
    assert first.objects_sent == 3 + chunks
    data[len(data) // 2] ^= 0xFF
    (src / "big.bin").write_bytes(data)
    second = push(src, sync_remote, REF, _chunking=SMALL)
    # the root tree, the chunk list and one or two chunks around the flipped byte
    assert 3 <= second.objects_sent <= 4
    assert second.raw_bytes_sent <= 2 * SMALL.max_size + METADATA
    assert second.bytes_uploaded < len(data) // 8
    pull(sync_remote, REF, tmp_path / "out", cache_dir=cache())
    assert (tmp_path / "out" / "big.bin").read_bytes() == data


def test_a_flipped_byte_mid_32_mib_resends_at_most_two_chunks_with_the_real_parameters(
    tmp_path: Path, cache: Callable[[], str]
) -> None:
    remote = MemoryTransport()
    src = tmp_path / "src"
    src.mkdir()
    data = _random(32 << 20, seed=7)
    (src / "big.bin").write_bytes(data)
    first = push(src, remote, REF)
    assert first.raw_bytes_sent > 32 << 20
    entries = decode_tree(_tree_bytes(remote, tmp_path))
    assert [(e.name, e.type) for e in entries] == [(b"big.bin", TYPE_CHUNKED)]
    data[len(data) // 2] ^= 0x01
    (src / "big.bin").write_bytes(data)
    second = push(src, remote, REF)
    assert 3 <= second.objects_sent <= 4  # root, chunk list, one or two chunks
    assert second.raw_bytes_sent <= 2 * CHUNK_MAX + METADATA
    assert second.bytes_uploaded < 9 << 20
    pull(remote, REF, tmp_path / "out", cache_dir=cache())
    assert (tmp_path / "out" / "big.bin").read_bytes() == data


def _tree_bytes(remote: Transport, tmp_path: Path) -> bytes:
    """The root tree of the snapshot at REF, read back from its pack."""
    from mkit_transport.pack import PackFile

    record = record_of(remote, REF)
    for ref in record.packs:
        path = tmp_path / f"pack-{ref.key.hex()}"
        path.write_bytes(remote.download_pack(ref.key))
        pack = PackFile(str(path))
        try:
            if record.root in pack:
                parts: list[bytes] = []
                pack.read_object(record.root, parts.append)
                return b"".join(parts)
        finally:
            pack.close()
    raise AssertionError("root tree not found")


def test_100_bytes_inserted_at_the_start_resend_few_chunks(
    sync_remote: Transport, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = _random(3 << 20, seed=2)
    (src / "big.bin").write_bytes(data)
    push(src, sync_remote, REF, _chunking=SMALL)
    (src / "big.bin").write_bytes(b"x" * 100 + data)
    second = push(src, sync_remote, REF, _chunking=SMALL)
    assert 3 <= second.objects_sent <= 5
    assert second.raw_bytes_sent <= 3 * SMALL.max_size + METADATA


def test_two_identical_large_files_cost_one_copy(sync_remote: Transport, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    data = _random(2 << 20, seed=3)
    (src / "a.bin").write_bytes(data)
    (src / "sub" / "b.bin").write_bytes(data)
    report = push(src, sync_remote, REF, _chunking=SMALL)
    listed = encode_chunk_list(_chunks(src / "a.bin"))
    # one copy of the bytes, one chunk list, and the two trees
    assert len(data) + len(listed) < report.raw_bytes_sent < len(data) + len(listed) + 1024
    assert report.objects_sent == len(_chunks(src / "a.bin").chunks) + 3


def test_a_rename_costs_only_metadata(
    sync_remote: Transport, tmp_path: Path, cache: Callable[[], str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = _random(2 << 20, seed=4)
    (src / "old.bin").write_bytes(data)
    push(src, sync_remote, REF, _chunking=SMALL)
    (src / "old.bin").rename(src / "new.bin")
    second = push(src, sync_remote, REF, _chunking=SMALL)
    assert second.objects_sent == 1  # the root tree; chunks and chunk list are held
    assert second.raw_bytes_sent < 200
    pull(sync_remote, REF, tmp_path / "out", cache_dir=cache())
    assert describe(tmp_path / "out") == describe(src)


class FailsAfter(MemoryTransport):
    """Streamed pack uploads fail (permanently) after the first ``landed`` of them."""

    def __init__(self, landed: int) -> None:
        super().__init__()
        self.landed, self.uploads = landed, 0
        self.failing = True

    def upload_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        self.uploads += 1
        if self.failing and self.uploads > self.landed:
            raise RemoteError("injected: the disk is full")
        super().upload_pack_stream(key, chunks, total)


@pytest.mark.parametrize("base", [False, True], ids=["first-push", "on-a-base"])
def test_a_push_failing_after_n_packs_resends_only_the_packs_not_landed(
    tmp_path: Path, base: bool, cache: Callable[[], str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "small.txt").write_text("v1")
    remote = FailsAfter(landed=1_000)
    if base:
        push(src, remote, REF, _chunking=SMALL)
        remote.uploads = 0
    remote.landed = 4
    (src / "big.bin").write_bytes(_random(3 << 20, seed=5))
    old = remote.read_ref(REF)
    with pytest.raises(RemoteError, match="disk is full"):
        push(src, remote, REF, pack_size=256 << 10, concurrency=1, _chunking=SMALL)
    assert remote.read_ref(REF) == old
    remote.failing = False
    again = push(src, remote, REF, pack_size=256 << 10, concurrency=1, _chunking=SMALL)
    assert again.packs_skipped == 4
    assert again.packs_uploaded >= 8  # a 3 MiB file in packs of 256 KiB, then the trees
    pull(remote, REF, tmp_path / "out", cache_dir=cache())
    assert describe(tmp_path / "out") == describe(src)


def _with_chunked_files(root: Path) -> Path:
    """A tree with every kind of entry, chunked files among them (small parameters)."""
    write_tree(root, seed=6, files=30, large=2)  # 3 MiB files: chunked with SMALL
    (root / "d1" / "big.bin").write_bytes(_random(1 << 20, seed=8))
    (root / "d1" / "big.bin").chmod(0o600)
    (root / "d2" / "same.bin").write_bytes(_random(1 << 20, seed=8))
    (root / "d2" / "same.bin").chmod(0o751)
    (root / "just-over.bin").write_bytes(b"z" * (SMALL.max_size + 1))
    return root


@pytest.mark.parametrize("workers", [1, 4])
def test_every_kind_of_entry_round_trips_with_chunked_files(
    sync_remote: Transport, tmp_path: Path, cache: Callable[[], str], workers: int
) -> None:
    src = _with_chunked_files(tmp_path / "src")
    report = push(src, sync_remote, REF, _chunking=SMALL, pack_size=1 << 20)
    assert report.packs_uploaded > 4
    pull(sync_remote, REF, tmp_path / "out", cache_dir=cache(), concurrency=workers)
    assert describe(tmp_path / "out") == describe(src)
    listed = {e.path: e for e in show(sync_remote, REF, cache_dir=cache()).entries}
    assert (listed["d1/big.bin"].type, listed["d1/big.bin"].size) == ("file", 1 << 20)
    assert listed["just-over.bin"].size == SMALL.max_size + 1
    copy = MemoryTransport()  # mirror copies the packs as they are
    mirror(sync_remote, copy, REF)
    pull(copy, REF, tmp_path / "mirrored", cache_dir=cache())
    assert describe(tmp_path / "mirrored") == describe(src)


def test_a_chunk_changed_while_pushed_fails_the_push_before_the_ref(
    sync_remote: Transport, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "small.txt").write_text("v1")
    push(src, sync_remote, REF, _chunking=SMALL)
    old = sync_remote.read_ref(REF)
    data = _random(2 << 20, seed=9)
    (src / "big.bin").write_bytes(data)

    def edit_when_uploading(event: Progress) -> None:
        if event.phase == "upload":  # scanned and planned: now the chunks are re-read
            changed = bytearray(data)
            changed[1 << 20] ^= 0xFF
            (src / "big.bin").write_bytes(changed)

    with pytest.raises(OSError, match="changed while it was being pushed"):
        push(src, sync_remote, REF, _chunking=SMALL, progress=edit_when_uploading)
    assert sync_remote.read_ref(REF) == old


@pytest.mark.parametrize("damage", ["malformed", "chunks-swapped", "wrong-content-id"])
def test_a_bad_chunk_list_fails_the_pull_naming_the_file_and_leaves_the_destination(
    sync_remote: Transport,
    tmp_path: Path,
    cache: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
    damage: str,
) -> None:
    def lie(chunked: ChunkedFile) -> bytes:
        good = encode_chunk_list(chunked)
        if damage == "malformed":
            return b"MKCX" + good[4:]
        if damage == "chunks-swapped":  # every chunk sound, the sum right, the file wrong
            first, second, *rest = chunked.chunks
            return encode_chunk_list(ChunkedFile(chunked.id, chunked.size, (second, first, *rest)))
        return encode_chunk_list(ChunkedFile(bytes(32), chunked.size, chunked.chunks))

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "big.bin").write_bytes(_random(1 << 20, seed=10))
    # A lying (or damaged) writer: the scan stores lie(chunked) as each chunk list.
    monkeypatch.setattr(scan_module, "encode_chunk_list", lie)
    push(src, sync_remote, REF, _chunking=SMALL)
    monkeypatch.undo()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    before = describe(dest)
    with pytest.raises(InvalidResponse, match=r"sub/big\.bin"):
        pull(sync_remote, REF, dest, cache_dir=cache(), replace=True)
    assert describe(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".dest")) == []


def test_a_snapshot_of_the_old_writer_pulls_shows_and_dedups(
    tmp_path: Path, cache: Callable[[], str]
) -> None:
    store = tmp_path / "store"
    shutil.copytree(FIXTURE, store)
    with FileTransport(store) as remote:
        pull(remote, REF, tmp_path / "out", cache_dir=cache())
        out = tmp_path / "out"
        assert (out / "hello.txt").read_text() == "hello, version 1\n"
        assert (out / "dir" / "sub" / "note.md").read_text() == "# a note\n" * 20
        assert (out / "run.sh").stat().st_mode & 0o777 == 0o755
        assert (out / "link").readlink() == Path("dir/sub/note.md")
        assert (out / "empty").is_dir()
        big = out / "big.bin"
        assert big.read_bytes() == b"old writer, one blob. " * ((5 << 20) // 22 + 1)
        listed = {e.path: e for e in show(remote, REF, cache_dir=cache()).entries}
        assert (listed["big.bin"].type, listed["big.bin"].size) == ("file", big.stat().st_size)
        # A new writer pushes the same tree on top: the 5 MiB file becomes chunks and a
        # chunk list, so the root tree changes; every small file and subtree dedups.
        again = push(out, remote, REF)
        chunks = {cid for cid, _ in chunk_file(str(big)).chunks}
        assert again.objects_sent == 2 + len(chunks)  # root tree, chunk list, chunks
        pull(remote, REF, tmp_path / "again", cache_dir=cache())
        assert describe(tmp_path / "again") == describe(out)


@pytest.mark.server
@pytest.mark.parametrize("kind", ["http", "moto", "seaweedfs", "ssh"])
def test_a_chunked_file_round_trips_over_the_wire(
    request: pytest.FixtureRequest, kind: str, tmp_path: Path, cache: Callable[[], str]
) -> None:
    """Push, edit one byte, push, pull against a real HTTP, S3 (moto, SeaweedFS) and SSH server."""
    src = tmp_path / "src"
    src.mkdir()
    data = _random(2 << 20, seed=11)
    (src / "big.bin").write_bytes(data)
    (src / "small.txt").write_text("over the wire")
    with fresh_store(request, kind).open() as remote:
        first = push(src, remote, REF, _chunking=SMALL, pack_size=512 << 10)
        chunks = len(_chunks(src / "big.bin").chunks)
        assert first.objects_sent == 3 + chunks and first.packs_uploaded >= 5
        data[len(data) // 3] ^= 0x10
        (src / "big.bin").write_bytes(data)
        second = push(src, remote, REF, _chunking=SMALL, pack_size=512 << 10)
        assert 3 <= second.objects_sent <= 4
        assert second.raw_bytes_sent <= 2 * SMALL.max_size + METADATA
        pull(remote, REF, tmp_path / "out", cache_dir=cache())
    assert describe(tmp_path / "out") == describe(src)
