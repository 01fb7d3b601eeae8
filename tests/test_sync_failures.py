"""Failures leave things as they were: ref last, atomic pulls, clear errors naming the pack."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from mkit_transport import (
    FileTransport,
    Hash,
    InvalidResponse,
    MemoryTransport,
    PackKey,
    PackNotFound,
    PayloadTooLarge,
    RefNotFound,
    RemoteError,
    Transport,
)
from mkit_transport.hashes import Hasher
from mkit_transport.pack import TRAILER_SIZE
from mkit_transport.sync import log, mirror, pull, push, show
from mkit_transport.sync import scan as scanner
from mkit_transport.sync.model import PackRef, Record, encode_record
from mkit_transport.sync.scan import MAX_FILE_SIZE
from mkit_transport.sync.scan import _hash_file as hash_file
from tests.support.sync_fixtures import describe, record_of, write_tree

REF = "refs/heads/main"


class FailingUploads(MemoryTransport):
    """Fails (permanently) the ``fail_at``-th streamed pack upload."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.uploads = 0

    def upload_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        self.uploads += 1
        if self.uploads == self.fail_at:
            raise RemoteError("injected: the disk is full")
        super().upload_pack_stream(key, chunks, total)


def test_failed_upload_leaves_the_ref_and_a_pullable_remote_then_resumes(
    tmp_path: Path,
) -> None:
    src = write_tree(tmp_path / "src", files=60, large=2)
    remote = FailingUploads(fail_at=10**9)
    first = push(src, remote, REF, pack_size=1 << 20)
    (src / "large0.bin").write_bytes(os.urandom(2 << 20))
    (src / "large1.bin").write_bytes(os.urandom(2 << 20))
    (src / "more.txt").write_text("x" * 5000)
    remote.uploads, remote.fail_at = 0, 3
    with pytest.raises(RemoteError, match="injected"):
        push(src, remote, REF, pack_size=1 << 20, concurrency=1)
    assert remote.read_ref(REF) == first.new  # ref untouched
    pull(remote, REF, tmp_path / "old", cache_dir=str(tmp_path / "c1"))  # still pullable
    remote.fail_at = 10**9
    resumed = push(src, remote, REF, pack_size=1 << 20, concurrency=1)
    assert resumed.packs_skipped == 2  # the two packs that landed before the failure
    assert resumed.packs_uploaded >= 1
    pull(remote, REF, tmp_path / "new", cache_dir=str(tmp_path / "c2"))
    assert describe(tmp_path / "new") == describe(src)


def test_unreadable_source_fails_before_anything_is_written(tmp_path: Path) -> None:
    remote = MemoryTransport()
    with pytest.raises(NotADirectoryError):
        push(tmp_path / "missing", remote, REF)
    src = write_tree(tmp_path / "src", files=3)
    os.mkfifo(src / "pipe")
    with pytest.raises(OSError, match="not a regular file"):
        push(src, remote, REF)
    assert remote.read_ref(REF) is None and remote.store.packs == {}


def test_a_file_too_large_for_one_pack_is_refused_at_stat_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A (sparse) file over MAX_FILE_SIZE is PayloadTooLarge from its stat, on a first
    push and on an incremental one: it is never hashed, nothing is uploaded and the
    ref stays where it was.
    """
    hashed: list[str] = []

    def spy(path: str, expected: int) -> Any:
        hashed.append(os.path.basename(path))
        return hash_file(path, expected)

    monkeypatch.setattr(scanner, "_hash_file", spy)
    remote = MemoryTransport()
    src = write_tree(tmp_path / "src", files=3)
    huge = src / "huge.bin"
    with open(huge, "wb") as f:
        f.truncate(MAX_FILE_SIZE + 1)
    with pytest.raises(PayloadTooLarge, match=r"huge\.bin: \d+ bytes is over the \d+-byte file"):
        push(src, remote, REF)
    assert remote.read_ref(REF) is None and remote.store.packs == {}
    huge.unlink()
    first = push(src, remote, REF)
    packs = dict(remote.store.packs)
    with open(huge, "wb") as f:
        f.truncate(MAX_FILE_SIZE + 1)
    with pytest.raises(PayloadTooLarge) as caught:
        push(src, remote, REF)
    assert (caught.value.size, caught.value.limit) == (MAX_FILE_SIZE + 1, MAX_FILE_SIZE)
    assert remote.read_ref(REF) == first.new and remote.store.packs == packs
    assert hashed and "huge.bin" not in hashed


def _pull_fails(
    remote: Transport, dest: Path, cache: str, error: type[Exception], match: str
) -> None:
    before = describe(dest)
    with pytest.raises(error, match=match):
        pull(remote, REF, dest, cache_dir=cache, replace=True)
    assert describe(dest) == before  # the destination is untouched
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.")] == []


@pytest.fixture
def pushed(tmp_path: Path) -> tuple[FileTransport, Path, Record]:
    remote = FileTransport(tmp_path / "remote")
    src = write_tree(tmp_path / "src", files=20, large=1)
    push(src, remote, REF)
    dest = write_tree(tmp_path / "dest", seed=5, files=3)  # a destination with content
    return remote, dest, record_of(remote, REF)


def test_corrupted_pack_fails_clearly_and_leaves_the_destination(
    pushed: tuple[FileTransport, Path, Record], tmp_path: Path
) -> None:
    remote, dest, record = pushed
    victim = record.packs[-1].key
    path = remote.pack_path(victim)
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0x55
    Path(path).write_bytes(bytes(data))
    _pull_fails(remote, dest, str(tmp_path / "c"), InvalidResponse, victim.hex())


def test_missing_pack_fails_clearly_and_leaves_the_destination(
    pushed: tuple[FileTransport, Path, Record], tmp_path: Path
) -> None:
    remote, dest, record = pushed
    victim = record.packs[0].key
    os.unlink(remote.pack_path(victim))
    _pull_fails(remote, dest, str(tmp_path / "c"), PackNotFound, f"pack {victim.hex()} is missing")


def test_well_hashed_but_malformed_pack_is_refused(tmp_path: Path) -> None:
    remote = MemoryTransport()
    junk = b"MKPK" + bytes(200)  # stored under its own key: only the pack reader can tell
    key = PackKey.of(junk)
    remote.upload_pack(junk, key)
    record = encode_record(Record(bytes(32), None, 0, (PackRef(key, key, len(junk), 1),)))
    record_key = PackKey.of(record)
    remote.upload_blob(record, record_key)
    remote.write_ref(REF, Hash(bytes(record_key)))
    dest = tmp_path / "dest"
    dest.mkdir()
    _pull_fails(remote, dest, str(tmp_path / "c"), InvalidResponse, f"pack {key.hex()} is corrupt")
    assert not (tmp_path / "c" / "packs" / key.hex()).exists()  # never cached


def test_corrupted_cache_entry_is_fetched_again(
    pushed: tuple[FileTransport, Path, Record], tmp_path: Path
) -> None:
    remote, _dest, record = pushed
    cache = str(tmp_path / "c")
    pull(remote, REF, tmp_path / "one", cache_dir=cache, cache_limit=1 << 30)
    cached = Path(cache) / "packs" / record.packs[-1].key.hex()
    data = bytearray(cached.read_bytes())
    data[100] ^= 1
    cached.write_bytes(bytes(data))
    again = pull(remote, REF, tmp_path / "two", cache_dir=cache)
    assert again.packs_downloaded == 1
    assert describe(tmp_path / "two") == describe(tmp_path / "one")


def test_absent_ref_pulls_nothing(tmp_path: Path) -> None:
    with pytest.raises(RefNotFound, match="absent") as caught:
        pull(MemoryTransport(), REF, tmp_path / "dest", cache_dir=str(tmp_path / "c"))
    assert caught.value.name == REF
    assert not (tmp_path / "dest").exists()


def test_every_verb_that_needs_the_ref_says_it_is_absent(tmp_path: Path) -> None:
    """pull, mirror, show and log of an absent ref: RefNotFound naming it, not PackNotFound."""
    empty, dst = MemoryTransport(), MemoryTransport()
    calls: dict[str, Callable[[], object]] = {
        "pull": lambda: pull(empty, REF, tmp_path / "dest", cache_dir=str(tmp_path / "c")),
        "mirror": lambda: mirror(empty, dst, REF),
        "show": lambda: show(empty, REF),
        "log": lambda: log(empty, REF),
    }
    for verb, call in calls.items():
        with pytest.raises(RefNotFound) as caught:
            call()
        assert caught.value.name == REF, verb
        assert not isinstance(caught.value, PackNotFound), verb
    assert dst.list_refs() == [] and not (tmp_path / "dest").exists()


def test_mirror_refuses_a_corrupted_source_pack_and_stores_nothing(
    pushed: tuple[FileTransport, Path, Record],
) -> None:
    remote, _dest, record = pushed
    victim = record.packs[-1].key
    path = remote.pack_path(victim)
    data = bytearray(Path(path).read_bytes())
    data[-40] ^= 1
    Path(path).write_bytes(bytes(data))
    dst = MemoryTransport()
    with pytest.raises(InvalidResponse, match=victim.hex()):
        mirror(remote, dst, REF, concurrency=1)
    assert dst.read_ref(REF) is None and not dst.pack_exists(victim)


def test_mirror_verifies_objects_not_just_the_key(tmp_path: Path) -> None:
    """A pack stored under its true key but holding a lying object never reaches dst."""
    src = MemoryTransport()
    tree = write_tree(tmp_path / "src", files=2)
    push(tree, src, REF)
    record = record_of(src, REF)
    pack = record.packs[-1]
    raw = bytearray(src.download_pack(pack.key))
    raw[12 + 50] ^= 1  # the first byte of the first object's stored bytes
    hasher = Hasher()
    hasher.update(bytes(raw[:-TRAILER_SIZE]))
    raw[-TRAILER_SIZE:] = bytes(hasher.pack_key())  # a consistent trailer
    bad = bytes(raw)
    bad_key = PackKey.of(bad)
    src.upload_pack(bad, bad_key)
    packs = (*record.packs[:-1], PackRef(bad_key, pack.index, len(bad), pack.objects))
    lying = encode_record(Record(record.root, None, 0, packs))
    src.upload_blob(lying, PackKey.of(lying))
    src.write_ref(REF, Hash(bytes(PackKey.of(lying))))
    dst = MemoryTransport()
    with pytest.raises(InvalidResponse, match=f"pack {bad_key.hex()} is corrupt on the source"):
        mirror(src, dst, REF, concurrency=1)
    assert not dst.pack_exists(bad_key) and dst.read_ref(REF) is None
