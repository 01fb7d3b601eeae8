"""A fresh pull writes objects while their packs stream in (issues 12, 17; SYNC-13, SYNC-45).

Only the packs the bounded cache keeps (and the tree packs, read whole) are ever
written to the pull's own directory; everything else goes straight from the stream,
each object verified by its id, into the staging directory.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

from mkit_transport import MemoryTransport
from mkit_transport.sync import Progress, pull, push
from mkit_transport.sync.chunking import ChunkParams
from tests.support.sync_fixtures import describe

REF = "refs/heads/main"
SMALL = ChunkParams(min_size=16 << 10, avg_size=64 << 10, max_size=256 << 10)
PACK = 512 << 10


def _random_files(root: Path, count: int, size: int, seed: int) -> Path:
    rng = random.Random(seed)
    for i in range(count):
        path = root / f"d{i % 7}" / f"f{i:03}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    return root


def _pull_watching(remote: MemoryTransport, dest: Path, cache: Path, limit: int) -> int:
    """Pull, returning the most bytes the pull's own directory held at any progress event."""
    most = 0

    def watch(_event: Progress) -> None:
        nonlocal most
        held = 0
        for path in (cache / "pulls").rglob("*"):
            with contextlib.suppress(FileNotFoundError):  # a download renamed meanwhile
                held += path.stat().st_size if path.is_file() else 0
        most = max(most, held)

    pull(remote, REF, dest, cache_dir=str(cache), cache_limit=limit, progress=watch)
    return most


def test_a_fresh_pull_writes_no_pack_the_cache_will_not_keep(tmp_path: Path) -> None:
    src = _random_files(tmp_path / "src", 40, 100_000, seed=3)
    remote = MemoryTransport()
    push(src, remote, REF, pack_size=PACK)
    cache = tmp_path / "cache"
    most = _pull_watching(remote, tmp_path / "out", cache, limit=0)
    assert describe(tmp_path / "out") == describe(src)
    # Only the tree pack (a few KiB) is ever on disk; each blob pack is ~512 KiB.
    assert most < 64 << 10
    assert list((cache / "packs").iterdir()) == []


def test_the_streamed_packs_that_fit_the_limit_are_kept_and_used_next_time(
    tmp_path: Path,
) -> None:
    src = _random_files(tmp_path / "src", 40, 100_000, seed=4)
    remote = MemoryTransport()
    push(src, remote, REF, pack_size=PACK)
    cache = tmp_path / "cache"
    limit = 3 * PACK
    most = _pull_watching(remote, tmp_path / "a", cache, limit=limit)
    kept = [p.stat().st_size for p in (cache / "packs").iterdir()]
    assert describe(tmp_path / "a") == describe(src)
    assert len(kept) >= 2 and sum(kept) <= limit  # streamed packs written on the way
    assert most <= limit + (64 << 10)  # never more than the cache will keep (plus trees)
    again = pull(remote, REF, tmp_path / "b", cache_dir=str(cache), cache_limit=limit)
    assert again.packs_cached >= len(kept) - 1  # all but the tree pack from the cache
    assert describe(tmp_path / "b") == describe(src)


def test_a_chunked_file_with_repeated_chunks_is_checked_and_written_whole(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    block = random.Random(5).randbytes(600_000)
    # The same chunks at several offsets: only the first is hashed as it streams,
    # the file is read back to check the rest against the chunk list's content id.
    (src / "twice.bin").write_bytes(block + block + block[:1000])
    (src / "small.txt").write_text("hello")
    remote = MemoryTransport()
    push(src, remote, REF, _chunking=SMALL, pack_size=PACK)
    pull(remote, REF, tmp_path / "out", cache_dir=str(tmp_path / "cache"), cache_limit=0)
    assert describe(tmp_path / "out") == describe(src)
