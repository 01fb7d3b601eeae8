"""TransferOptions: the transfer knobs as one value, and the keyword spelling kept beside it.

Each knob handed in ``options`` must reach the machinery it names (the pack size
splits packs, the level reaches the pack writer, the spool directory holds the packs
being built, the cache directory the pulled packs, the bandwidth cap slows uploads),
give the same result as the keyword spelling, and a mix of both spellings is refused
before any I/O.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

import mkit_transport
from mkit_transport import InvalidArgument, MemoryTransport
from mkit_transport.sync import Progress, TransferOptions, mirror, pull, push, show
from tests.support.sync_fixtures import CountingTransport, describe, record_of, write_tree

REF = "refs/heads/main"


def test_exported_from_both_packages_and_frozen() -> None:
    assert mkit_transport.TransferOptions is TransferOptions
    options = TransferOptions(concurrency=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.concurrency = 3  # type: ignore[misc]
    assert TransferOptions() == TransferOptions(
        concurrency=mkit_transport.sync.DEFAULT_CONCURRENCY,
        pack_size=mkit_transport.sync.DEFAULT_PACK_SIZE,
    )


def test_push_options_and_keywords_build_the_same_packs(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", seed=3, files=1500, large=2)
    by_keywords, by_options, by_default = MemoryTransport(), MemoryTransport(), MemoryTransport()
    push(src, by_keywords, REF, pack_size=2 << 20, level=1, concurrency=1)
    options = TransferOptions(pack_size=2 << 20, level=1, concurrency=1)
    report = push(src, by_options, REF, options=options)
    push(src, by_default, REF)
    packs = [p.key for p in record_of(by_options, REF).packs]
    assert packs == [p.key for p in record_of(by_keywords, REF).packs]
    assert report.packs_uploaded == len(packs) > 3  # the pack size from options split them
    assert len(record_of(by_default, REF).packs) < len(packs)


def test_push_level_from_options_reaches_the_pack_writer(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src")
    remote = MemoryTransport()
    with pytest.raises(ValueError, match="zstd level"):
        push(src, remote, REF, options=TransferOptions(level=42))
    assert remote.read_ref(REF) is None


def test_push_spool_dir_from_options_holds_the_packs_being_built(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", seed=1, files=200)
    spool = tmp_path / "spool"
    spool.mkdir()
    seen: set[str] = set()

    def progress(event: Progress) -> None:
        if event.phase == "upload":
            seen.update(os.listdir(spool))

    push(
        src,
        MemoryTransport(),
        REF,
        progress=progress,
        options=TransferOptions(spool_dir=str(spool)),
    )
    assert any(name.startswith("mkit-push-") for name in seen)
    assert os.listdir(spool) == []  # the spool is cleaned up after the push


def test_push_bwlimit_from_options_slows_the_upload(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "noise.bin").write_bytes(os.urandom(512 << 10))
    start = time.monotonic()
    push(src, MemoryTransport(), REF, options=TransferOptions(bwlimit=2 << 20))
    # 512 KiB at 2 MiB/s take at least a quarter second (a lower bound: a slow
    # machine only makes it longer).
    assert time.monotonic() - start >= 0.2


def test_pull_and_show_read_the_cache_dir_from_options(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src")
    remote = MemoryTransport()
    push(src, remote, REF)
    cache = tmp_path / "cache"
    first = pull(
        remote,
        REF,
        tmp_path / "a",
        options=TransferOptions(cache_dir=str(cache)),
        cache_limit=1 << 30,
    )
    assert first.packs_downloaded > 0 and any(cache.rglob("*"))
    again = pull(remote, REF, tmp_path / "b", cache_dir=str(cache), concurrency=1)
    assert (again.packs_downloaded, again.packs_cached) == (0, first.packs_downloaded)
    assert describe(tmp_path / "a") == describe(tmp_path / "b") == describe(src)
    listing = show(remote, REF, options=TransferOptions(cache_dir=str(cache), concurrency=1))
    assert listing == show(remote, REF, cache_dir=str(tmp_path / "other"))


def test_mirror_options_and_keywords_agree(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src")
    origin = MemoryTransport()
    push(src, origin, REF)
    by_keywords, by_options = MemoryTransport(), MemoryTransport()
    a = mirror(origin, by_keywords, REF, concurrency=1)
    b = mirror(origin, by_options, REF, options=TransferOptions(concurrency=1))
    assert a == b and b.updated and by_options.read_ref(REF) == origin.read_ref(REF)


def test_options_and_keywords_together_are_refused_before_any_io(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src")
    origin = MemoryTransport()
    push(src, origin, REF)
    remote = CountingTransport()
    options = TransferOptions()
    with pytest.raises(InvalidArgument, match=r"push: .* not both \(got options and level\)"):
        push(src, remote, REF, options=options, level=1)
    with pytest.raises(InvalidArgument, match=r"pull: .*cache_dir, concurrency"):
        pull(remote, REF, tmp_path / "out", options=options, concurrency=2, cache_dir="x")
    with pytest.raises(InvalidArgument, match=r"show: .*concurrency"):
        show(remote, REF, options=options, concurrency=2)
    with pytest.raises(InvalidArgument, match=r"mirror: .*concurrency"):
        mirror(origin, remote, REF, options=options, concurrency=2)
    with pytest.raises(ValueError):  # InvalidArgument is also a ValueError
        push(src, remote, REF, options=options, spool_dir=str(tmp_path))
    assert remote.calls == []
    assert not (tmp_path / "out").exists()
