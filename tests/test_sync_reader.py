"""One file of a remote snapshot on demand: ``open_snapshot`` and ``show --cat`` (SYNC-40..44).

The reader must answer from ranged reads of the packs (never a whole pack), verify
every object it hands out against its id, stream a large file chunk by chunk, and
refuse what is not a file with a clear error. Local tests run on memory and file
stores; the last ones run the same read over every network server.
"""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mkit_transport import (
    FileTransport,
    InvalidArgument,
    InvalidRef,
    InvalidResponse,
    MemoryTransport,
    PackKey,
    RefNotFound,
    Transport,
)
from mkit_transport.cli.output import EXIT_CODES
from mkit_transport.sync import RemoteSnapshot, open_snapshot, push
from mkit_transport.sync import scan as scan_module
from mkit_transport.sync.chunking import ChunkedFile
from mkit_transport.sync.chunklist import encode_chunk_list
from mkit_transport.sync.ranged import fetch_objects, read_pack_index
from tests.support.sync_fixtures import record_of, write_tree
from tests.test_sync_chunked import SMALL
from tests.test_sync_remotes import _fresh

REF = "refs/heads/main"
ROOT = Path(__file__).resolve().parent.parent


class CountingFile(FileTransport):
    """A file transport that counts the bytes each public download verb returns."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bytes_in = 0
        self.downloaded: list[PackKey] = []

    def read_pack_range(self, key: PackKey, offset: int, length: int) -> bytes:
        data = super().read_pack_range(key, offset, length)
        self.bytes_in += len(data)
        return data

    def download_pack(self, key: PackKey) -> bytes:  # download_blob comes here too
        self.downloaded.append(key)
        data = super().download_pack(key)
        self.bytes_in += len(data)
        return data

    def download_pack_stream(self, key: PackKey) -> Any:
        self.downloaded.append(key)
        return super().download_pack_stream(key)


def _chunky(size: int, seed: int) -> bytes:
    """Random-ish bytes that chunk (FastCDC cuts) and compress a little."""
    rng = random.Random(seed)
    block = rng.randbytes(1 << 16)
    parts = [block[rng.randrange(1 << 15) :] + rng.randbytes(4096) for _ in range(size >> 15)]
    return b"".join(parts)[:size]


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Transport:
    if request.param == "memory":
        return MemoryTransport()
    return FileTransport(tmp_path / "remote")


@pytest.fixture
def pushed(store: Transport, tmp_path: Path) -> tuple[Transport, Path]:
    src = write_tree(tmp_path / "src", seed=3, files=30, large=1)
    (src / "big.bin").write_bytes(_chunky(9 << 20, 7))
    push(src, store, REF, pack_size=4 << 20)
    return store, src


def _local_entries(src: Path) -> dict[str, tuple[str, int]]:
    found: dict[str, tuple[str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(src):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(src).as_posix()
            st = path.lstat()
            if path.is_symlink():
                found[rel] = ("symlink", len(os.readlink(path)))
            elif path.is_dir():
                found[rel] = ("dir", 0)
            else:
                found[rel] = ("file", st.st_size)
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
    return found


def test_entries_match_the_pushed_tree(pushed: tuple[Transport, Path]) -> None:
    store, src = pushed
    with open_snapshot(store, REF) as snap:
        listed = {e.path: (e.type, e.size) for e in snap.entries()}
        assert listed == _local_entries(src)
        sub = [e.path for e in snap.entries("d1")]
        assert sub and all(p.startswith("d1/") for p in sub)
        assert [e.path for e in snap.entries("d1/e1/f1.txt")] == ["d1/e1/f1.txt"]
        assert snap.stat("run.sh").mode == 0o755


def test_read_small_chunked_and_symlink(pushed: tuple[Transport, Path]) -> None:
    store, src = pushed
    snap = open_snapshot(store, REF)
    assert snap.read("d2/e2/f2.txt") == (src / "d2/e2/f2.txt").read_bytes()
    assert snap.read("zero.bin") == b""
    assert snap.read("large0.bin") == (src / "large0.bin").read_bytes()
    assert snap.stat("big.bin").type == "file"
    assert snap.read("/big.bin") == (src / "big.bin").read_bytes()
    assert snap.readlink("link-in") == "d0/e0/f0.txt"


def test_open_streams_a_chunked_file_chunk_by_chunk(pushed: tuple[Transport, Path]) -> None:
    store, src = pushed
    want = (src / "big.bin").read_bytes()
    snap = open_snapshot(store, REF)
    with snap.open("big.bin") as f:
        head = f.read(100)
        # the first chunk (at most 4 MiB), not the 9 MiB file, was fetched for 100 bytes
        assert snap.bytes_in < 6 << 20
        buf = bytearray(12345)
        got = f.readinto(buf)
        rest = f.read()
    assert head + bytes(buf[:got]) + rest == want
    assert f.closed


def test_what_is_not_a_file_is_refused_clearly(pushed: tuple[Transport, Path]) -> None:
    store, _ = pushed
    snap = open_snapshot(store, REF)
    with pytest.raises(InvalidArgument, match="is a directory"):
        snap.read("d0")
    with pytest.raises(InvalidArgument, match="is a directory"):
        snap.open("")
    with pytest.raises(InvalidArgument, match="is a symlink"):
        snap.read("link-out")
    with pytest.raises(InvalidArgument, match="not in the snapshot"):
        snap.read("d0/nope.txt")
    with pytest.raises(InvalidArgument, match="not a directory"):
        snap.read("run.sh/x")
    with pytest.raises(InvalidArgument, match="not a symlink"):
        snap.readlink("run.sh")
    with pytest.raises(RefNotFound):
        open_snapshot(store, "refs/heads/absent")
    with pytest.raises(InvalidRef):
        open_snapshot(store, "not-a-hash")
    with pytest.raises(InvalidArgument):
        open_snapshot(store, 42)  # type: ignore[arg-type]


def test_objects_by_id_and_record_hash(pushed: tuple[Transport, Path]) -> None:
    store, src = pushed
    value = store.read_ref(REF)
    assert value is not None
    snap = open_snapshot(store, value.hex())
    entry = snap.stat("d3/e0/f3.txt")
    assert snap.has_object(entry.oid)
    assert snap.get_object(entry.oid) == (src / "d3/e0/f3.txt").read_bytes()
    assert snap.get_object(bytes.fromhex(entry.oid)) == (src / "d3/e0/f3.txt").read_bytes()
    absent = bytes(PackKey.of(b"never pushed"))
    assert not snap.has_object(absent)
    with pytest.raises(InvalidArgument, match="not in snapshot"):
        snap.get_object(absent)
    with pytest.raises(InvalidArgument):
        snap.has_object(b"short")


def test_fetch_objects_by_pack(pushed: tuple[Transport, Path]) -> None:
    store, _ = pushed
    record = record_of(store, REF)
    snap = open_snapshot(store, REF)
    entry = snap.stat("readonly.txt")
    pack = next(p for p in record.packs if bytes.fromhex(entry.oid) in read_pack_index(store, p))
    got: list[tuple[bytes, int, bytes]] = []
    total = fetch_objects(store, [(bytes.fromhex(entry.oid), pack)], lambda *row: got.append(row))
    assert got == [(bytes.fromhex(entry.oid), 1, b"ro")] and total == 2


def test_a_record_that_lies_about_a_pack_is_invalid_response(
    pushed: tuple[Transport, Path],
) -> None:
    store, _ = pushed
    pack = record_of(store, REF).packs[0]
    for lie in (
        dataclasses.replace(pack, objects=pack.objects + 1),
        dataclasses.replace(pack, size=pack.size - 1),
        dataclasses.replace(pack, size=pack.size + 100),
    ):
        with pytest.raises(InvalidResponse, match=pack.key.hex()):
            read_pack_index(store, lie)


def test_caches_stay_within_their_budgets(pushed: tuple[Transport, Path]) -> None:
    store, src = pushed
    assert len(record_of(store, REF).packs) > 2
    snap = open_snapshot(store, REF, index_budget=1, tree_budget=1)
    for entry in snap.entries():
        if entry.type == "file":
            assert snap.read(entry.path) == (src / entry.path).read_bytes()
    assert snap.cached == (1, 1)
    roomy = open_snapshot(store, REF)
    listed = list(roomy.entries())
    assert roomy.cached[1] == 1 + sum(e.type == "dir" for e in listed)


@pytest.mark.parametrize("damage", ["chunks-swapped", "wrong-content-id"])
def test_a_chunk_list_that_does_not_make_the_file_is_caught_before_end_of_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    def lie(chunked: ChunkedFile) -> bytes:
        if damage == "chunks-swapped":  # every chunk sound, the sum right, the file wrong
            first, second, *rest = chunked.chunks
            return encode_chunk_list(ChunkedFile(chunked.id, chunked.size, (second, first, *rest)))
        return encode_chunk_list(ChunkedFile(bytes(32), chunked.size, chunked.chunks))

    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(random.Random(5).randbytes(1 << 20))
    store = MemoryTransport()
    monkeypatch.setattr(scan_module, "encode_chunk_list", lie)
    push(src, store, REF, _chunking=SMALL)
    monkeypatch.undo()
    snap = open_snapshot(store, REF)
    assert snap.stat("big.bin").size == 1 << 20
    with pytest.raises(InvalidResponse, match=r"big\.bin: the file's chunks do not match"):
        snap.read("big.bin")
    got = bytearray()
    with pytest.raises(InvalidResponse), snap.open("big.bin") as f:
        while piece := f.read(4096):
            got += piece
    assert len(got) < 1 << 20  # the last chunk was held back: no false end of file


def _pack_file(root: Path, key: PackKey) -> Path:
    return root / "packs" / key.hex()[:2] / key.hex()


def test_a_flipped_byte_inside_the_object_is_invalid_response(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(1).randbytes(200_000)
    (src / "a.bin").write_bytes(data)
    (src / "b.txt").write_text("untouched")
    store = FileTransport(tmp_path / "remote")
    push(src, store, REF)
    snap = open_snapshot(store, REF)
    oid = bytes.fromhex(snap.stat("a.bin").oid)
    (pack,) = [p for p in snap.record.packs if oid in read_pack_index(store, p)]
    span = read_pack_index(store, pack).span(oid)
    assert span is not None
    path = _pack_file(tmp_path / "remote", pack.key)
    raw = bytearray(path.read_bytes())
    raw[(span[0] + span[1]) // 2] ^= 0x40
    path.chmod(0o644)
    path.write_bytes(bytes(raw))
    fresh = open_snapshot(store, REF)
    with pytest.raises(InvalidResponse) as caught:
        fresh.read("a.bin")
    assert oid.hex() in str(caught.value) and pack.key.hex() in str(caught.value)
    with pytest.raises(InvalidResponse), fresh.open("a.bin") as f:
        f.read()
    assert fresh.read("b.txt") == b"untouched"  # the other object is still readable


def test_one_mib_file_from_64_mib_packs_downloads_at_most_2_mib(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(2)
    for i in range(80):
        (src / f"f{i:03}.bin").write_bytes(rng.randbytes(1 << 20))
    counting = CountingFile(tmp_path / "remote")
    push(src, counting, REF, pack_size=64 << 20)
    packs = {p.key for p in record_of(counting, REF).packs}
    assert any(p.size > 60 << 20 for p in record_of(counting, REF).packs)
    counting.bytes_in = 0
    counting.downloaded.clear()
    snap = open_snapshot(counting, REF)
    assert snap.read("f077.bin") == (src / "f077.bin").read_bytes()
    assert len(counting.downloaded) == 1 and not packs & set(counting.downloaded)  # the record
    assert counting.bytes_in <= 2 << 20
    assert snap.bytes_in == counting.bytes_in


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "mkit_transport", *args],
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_show_cat_writes_the_verified_bytes(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", seed=4, files=6)
    (src / "big.bin").write_bytes(_chunky(5 << 20, 9))
    url = f"mkit+file://{tmp_path / 'remote'}"
    push(src, FileTransport(tmp_path / "remote"), REF)
    done = _cli("show", url, REF, "big.bin", "--cat")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (src / "big.bin").read_bytes()
    listing = _cli("show", url, REF, "d1")
    assert listing.returncode == 0 and b"d1/e1/f1.txt" in listing.stdout
    missing = _cli("show", url, REF, "nope", "--cat")
    assert missing.returncode == EXIT_CODES["InvalidArgument"]
    assert missing.stderr.decode().splitlines() == [
        "mkit_transport: InvalidArgument: nope: not in the snapshot"
    ]
    directory = _cli("show", url, REF, "d1", "--cat")
    assert directory.returncode == EXIT_CODES["InvalidArgument"] and not directory.stdout
    nopath = _cli("show", url, REF, "--cat")
    assert nopath.returncode == EXIT_CODES["usage"]
    assert len(nopath.stderr.decode().strip().splitlines()) <= 3


@pytest.mark.server
@pytest.mark.parametrize("kind", ["http", "moto", "seaweedfs", "ssh"])
def test_one_file_over_the_wire(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", seed=6, files=8)
    (src / "big.bin").write_bytes(_chunky(5 << 20, 11))
    with _fresh(request, kind).open() as remote:
        push(src, remote, REF)
        snap = open_snapshot(remote, REF)
        assert isinstance(snap, RemoteSnapshot)
        assert snap.read("d2/e2/f2.txt") == (src / "d2/e2/f2.txt").read_bytes()
        with snap.open("big.bin") as f:
            assert f.read() == (src / "big.bin").read_bytes()
