"""A local copy of the small metadata blobs a push reads: index blobs and records.

A push learns what the remote holds from the tip's record and its packs' index
blobs (spec/SPEC-SYNC.md, push). Both are named by the BLAKE3 of their bytes, so a
copy kept here never goes stale: the push of an edit reads them from local disk
instead of the remote (on the full bench tree, ~20 index blobs, one round trip
each). A copy is trusted only if its bytes hash to its name, checked at every read
(cheap: a few hundred KiB at most); one that does not is removed and the blob is
downloaded again. The copies live beside the stat cache
(``<stat_cache_dir>/blobs/<hex key>``) and the directory is kept under a byte
budget (the least recently read copies go first), since every push adds a record
and an index blob or two. Writing is best effort: a cache that cannot be written
never fails a push.
"""

from __future__ import annotations

import contextlib
import os
from typing import Final

from ..hashes import PackKey
from .atomic import replacing

__all__ = ["DEFAULT_BUDGET", "BlobCache"]

#: The most bytes of copies kept (the full bench tree's metadata is ~0.4 MiB).
DEFAULT_BUDGET: Final = 32 << 20


class BlobCache:
    """Content-addressed copies of small blobs in ``directory``, bounded by ``budget`` bytes."""

    def __init__(self, directory: str, budget: int = DEFAULT_BUDGET) -> None:
        self.directory, self.budget = directory, budget
        self._added = 0

    def _path(self, key: PackKey) -> str:
        return os.path.join(self.directory, key.hex())

    def get(self, key: PackKey) -> bytes | None:
        """The bytes of ``key`` if a copy is here and hashes to ``key``; else ``None``.

        A copy that does not hash to its name (damaged, truncated, planted) is
        removed and never returned. A copy read is touched, so trimming keeps it.
        """
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        if PackKey.of(data) != key:
            with contextlib.suppress(OSError):
                os.unlink(path)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        return data

    def put(self, key: PackKey, data: bytes) -> None:
        """Keep a copy of ``data`` (whose key the caller has checked is ``key``).

        Written to a temp file and renamed, so a reader sees a whole copy or none;
        not synced (a copy torn by a crash fails its check and is fetched again).
        """
        path = self._path(key)
        if os.path.exists(path):
            return
        try:
            os.makedirs(self.directory, exist_ok=True)
            with replacing(path, ".tmp-") as f:
                f.write(data)
        except OSError:
            return
        self._added += len(data)

    def trim(self) -> None:
        """If copies were added and the directory exceeds its budget, drop the oldest read.

        Keeps at most three quarters of the budget, so a push that adds a few
        copies does not trim again at once.
        """
        if not self._added:
            return
        self._added = 0
        entries: list[tuple[int, int, str]] = []
        try:
            with os.scandir(self.directory) as it:
                for entry in it:
                    with contextlib.suppress(OSError):
                        st = entry.stat(follow_symlinks=False)
                        entries.append((st.st_mtime_ns, st.st_size, entry.path))
        except OSError:
            return
        total = sum(size for _, size, _ in entries)
        if total <= self.budget:
            return
        keep = self.budget * 3 // 4
        for _, size, path in sorted(entries):
            if total <= keep:
                break
            with contextlib.suppress(OSError):
                os.unlink(path)
            total -= size
