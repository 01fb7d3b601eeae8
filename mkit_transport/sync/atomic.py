"""Local files that appear whole or not at all: one helper for the sync layer.

The pull's caches (packs, pack ids, objects read by range) and its manifest are all
written the same way: into a temporary file beside the final path, renamed over it
only when every byte is there. A failure (a download that does not verify, a full
disk, a kill) leaves the final path as it was and removes the temporary file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["replacing"]


@contextlib.contextmanager
def replacing(path: str, prefix: str = ".tmp-") -> Iterator[BinaryIO]:
    """Yield a binary file whose bytes replace ``path`` when the block ends cleanly.

    The temporary file is created beside ``path`` (so the rename is atomic) with
    ``prefix``, which lets a sweep recognise leftovers. Nothing is fsynced: these are
    caches and bookkeeping a crash may lose, never the only copy of data.
    """
    fd, temp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
