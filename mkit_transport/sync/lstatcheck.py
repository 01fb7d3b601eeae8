"""Which entries of a stat cache no longer match their file: one call for the whole tree.

The stat cache (:mod:`.statcache`) holds each file's and each directory's ``lstat``
as the last push saw it. Before the walk, :func:`stale` ``lstat``s every one of them
and returns the indexes of those that changed (or are racily clean, or are gone): a
re-push of an unchanged tree then needs nothing else, and the push of an edit skips
the ``lstat`` of every file that did not change. Git's preloaded index does the same.

The check is a loop of ``lstat`` calls, which the system call dominates (~3 us each
on these machines): the C version (``_lstat``, built with the package when a
compiler is there) makes them on several threads with the GIL released and no
object per call; without it the same check runs here in Python, about twice as slow
on one core. :data:`ACCELERATED` says which one runs.
"""

from __future__ import annotations

import os
import struct
from typing import Final

__all__ = ["ACCELERATED", "stale", "stale_python"]

#: size, mtime_ns, ctime_ns, inode, mode: the first bytes of every row checked.
_KEY: Final = struct.Struct("<QqqQI")


def stale_python(
    root: str,
    paths: bytes,
    count: int,
    rows: bytes | memoryview,
    stride: int,
    trusted_before: int,
    threads: int = 1,
) -> list[int]:
    """:func:`stale` in Python (the C version's twin in behaviour; ``threads`` is unused).

    ``paths``: ``count`` paths relative to ``root``, NUL-separated (a directory's key
    ends with ``/``, the top's is empty). Row ``i`` of ``rows`` (``stride`` bytes
    apart) starts with the recorded ``(size, mtime_ns, ctime_ns, inode, mode)`` of
    path ``i``. Returns the indexes, in order, of the paths whose ``lstat`` differs
    from their row, fails, or whose recorded mtime or ctime is not older than
    ``trusted_before``.
    """
    del threads
    view = memoryview(rows)
    if count < 0 or stride < _KEY.size or len(view) // stride < count:
        raise ValueError("rows are shorter than count * stride")
    names = paths.split(b"\0") if count else []
    if len(names) < count:
        raise ValueError("fewer paths than count")
    top = os.fsencode(root)
    os.close(os.open(top, os.O_RDONLY | os.O_DIRECTORY))  # as the C version: OSError if not there
    bad: list[int] = []
    for i in range(count):
        size, mtime, ctime, inode, mode = _KEY.unpack_from(view, i * stride)
        if mtime >= trusted_before or ctime >= trusted_before:
            bad.append(i)
            continue
        rel = names[i].rstrip(b"/")
        try:
            st = os.lstat(top + b"/" + rel if rel else top)
        except (OSError, ValueError):
            bad.append(i)
            continue
        if (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode) != (
            size,
            mtime,
            ctime,
            inode,
            mode,
        ):
            bad.append(i)
    return bad


try:
    from ._lstat import stale
except ImportError:  # built without a compiler: the same check, in Python
    stale = stale_python
    ACCELERATED: Final = False
else:
    ACCELERATED = True  # type: ignore[misc]
