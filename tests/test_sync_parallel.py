"""The fast paths of push and pull keep their guarantees.

Pull writes files from a thread pool and verifies each object once, as it is
written; push splices incompressible files into packs instead of spooling them,
and a first push packs blobs while the scan is still running.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest

from mkit_transport import Hash, InvalidResponse, MemoryTransport, PackKey, Transport
from mkit_transport.pack import CODEC_RAW, KIND_BLOB, KIND_TREE, PackWriter, PreparedObject
from mkit_transport.sync import Progress, pull, push
from mkit_transport.sync.model import (
    TYPE_FILE,
    PackRef,
    Record,
    TreeEntry,
    decode_index,
    encode_index,
    encode_record,
    encode_tree,
)
from tests.support.sync_fixtures import describe, record_of, write_tree

REF = "refs/heads/main"


@pytest.mark.parametrize("concurrency", [1, 4])
def test_parallel_pull_restores_files_and_directory_modes(
    sync_remote: Transport, tmp_path: Path, cache: Callable[[], str], concurrency: int
) -> None:
    src = write_tree(tmp_path / "src", seed=7, files=300, large=2)
    locked = src / "locked"
    locked.mkdir()
    for i in range(30):
        (locked / f"r{i}.txt").write_text(f"read only dir {i}\n" * (i + 1))
    (src / "d1").chmod(0o750)
    locked.chmod(0o555)  # applied after its files are written, or they could not be
    try:
        push(src, sync_remote, REF)
        out = tmp_path / "out"
        report = pull(sync_remote, REF, out, cache_dir=cache(), concurrency=concurrency)
        assert describe(out) == describe(src)
        assert report.files == 300 + 30 + 5  # small ones, the locked dir's, 3 extras, 2 large
    finally:
        locked.chmod(0o755)
        if (tmp_path / "out" / "locked").exists():
            (tmp_path / "out" / "locked").chmod(0o755)


def _publish_lying_pack(remote: Transport) -> bytes:
    """A snapshot whose pack is well formed and sealed, but one blob lies about its id."""
    truth, lie = b"the true content\n" * 4, b"an evil content!\n" * 4
    oid = blake3.blake3(truth).digest()
    tree = encode_tree([TreeEntry(b"f.txt", TYPE_FILE, 0o644, len(truth), oid)])
    spool = io.BytesIO()
    writer = PackWriter(spool)
    tree_id = writer.add_bytes(KIND_TREE, tree)
    writer.add_prepared(PreparedObject(KIND_BLOB, oid, len(lie), CODEC_RAW, lie))
    summary = writer.finish()
    remote.upload_pack(spool.getvalue(), summary.key)
    index = encode_index(summary.key, [(tree_id, KIND_TREE), (oid, KIND_BLOB)])
    remote.upload_blob(index, PackKey.of(index))
    pack = PackRef(summary.key, PackKey.of(index), summary.size, 2)
    record = encode_record(Record(tree_id, None, 0, (pack,)))
    remote.upload_blob(record, PackKey.of(record))
    remote.write_ref(REF, Hash(bytes(PackKey.of(record))))
    return oid


@pytest.mark.parametrize("concurrency", [1, 4])
def test_an_object_that_lies_about_its_id_fails_the_pull_when_written(
    tmp_path: Path, concurrency: int
) -> None:
    remote = MemoryTransport()
    oid = _publish_lying_pack(remote)
    dest = write_tree(tmp_path / "dest", seed=2, files=3)
    before = describe(dest)
    cache = str(tmp_path / "c")
    for _ in range(2):  # the cached pack (sealed and well formed) fails the same way
        with pytest.raises(InvalidResponse, match=oid.hex()):
            pull(remote, REF, dest, cache_dir=cache, replace=True, concurrency=concurrency)
        assert describe(dest) == before
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dest.")] == []


def test_a_large_file_changed_during_the_push_fails_it_before_the_ref(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", files=10)
    remote = MemoryTransport()
    first = push(src, remote, REF)  # so the next push scans fully before it packs
    big = src / "noise.bin"
    big.write_bytes(os.urandom(3 << 20))  # incompressible: spliced into its pack
    tampered: list[str] = []

    def tamper(event: Progress) -> None:
        if event.phase == "upload" and not tampered:
            tampered.append(event.phase)
            big.write_bytes(os.urandom(3 << 20))  # same size, new bytes, after the scan

    with pytest.raises(OSError, match="changed while it was being packed"):
        push(src, remote, REF, progress=tamper)
    assert tampered and remote.read_ref(REF) == first.new
    push(src, remote, REF)
    pull(remote, REF, tmp_path / "out", cache_dir=str(tmp_path / "c"))
    assert describe(tmp_path / "out") == describe(src)


def test_a_first_push_packs_while_it_scans_and_lists_trees_first(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", seed=4, files=200, large=2)
    (src / "dup.txt").write_bytes((src / "d0" / "e0" / "f0.txt").read_bytes())  # one blob
    remote = MemoryTransport()
    events: list[Progress] = []
    report = push(src, remote, REF, pack_size=1 << 20, progress=events.append)
    assert report.old is None and report.updated and report.objects_skipped == 0
    assert events[-1].objects_done == events[-1].objects_total == report.objects_sent
    record = record_of(remote, REF)
    kinds = [
        {kind for _, kind in decode_index(remote.download_blob(p.index), p.key)}
        for p in record.packs
    ]
    assert kinds[0] == {KIND_TREE} and all(KIND_TREE not in k for k in kinds[1:])
    assert len(record.packs) == report.packs_uploaded > 2
    pull(remote, REF, tmp_path / "out", cache_dir=str(tmp_path / "c"))
    assert describe(tmp_path / "out") == describe(src)
    again = push(src, remote, REF)
    assert not again.updated and again.bytes_uploaded == 0


def test_a_first_push_that_fails_mid_scan_writes_no_ref(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", files=50, large=2)
    os.mkfifo(src / "zz-pipe")  # found after the packs of the other files may have landed
    remote = MemoryTransport()
    with pytest.raises(OSError, match="not a regular file"):
        push(src, remote, REF, pack_size=1 << 20)
    assert remote.read_ref(REF) is None
