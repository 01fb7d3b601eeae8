"""Write a large file around the page cache (``O_DIRECT``), falling back to plain writes.

A pack is written once and rarely read back on the host that stores it. Through the
page cache, every page of it must first be allocated: that evicts the user's
working set, and on a VM whose free memory is handed back to the host (free page
reporting, as on the machines ``bench/`` runs on) each new page costs a host fault:
writing 475 MiB of new file took 1.1 s buffered, 0.16 s with ``O_DIRECT``. The
bytes reach the device either way; ``fsync`` still makes them durable.

``O_DIRECT`` needs aligned memory, offsets and lengths, so chunks are copied into a
page-aligned buffer and written in whole blocks; the unaligned tail is written
after the flag is cleared. A file system that refuses the flag (at ``fcntl`` or at
the first write, ``EINVAL``) gets plain writes from that point: the result is the
same bytes, only the path differs.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final

__all__ = ["DIRECT_MIN", "write_all", "write_chunks"]

#: Files at least this large are written with ``O_DIRECT`` (when asked and possible).
DIRECT_MIN: Final = 8 << 20
#: Block alignment used for offsets and lengths (a multiple of every common
#: logical block size: 512 and 4096).
_ALIGN: Final = 4096
#: The aligned staging buffer: one write per this many bytes.
_BUFFER: Final = 4 << 20
_O_DIRECT: Final = getattr(os, "O_DIRECT", 0)
_local = threading.local()


def _set_direct(fd: int, on: bool) -> bool:
    """Turn ``O_DIRECT`` on or off for ``fd``; False if the file system refuses."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, (flags | _O_DIRECT) if on else (flags & ~_O_DIRECT))
    except OSError as error:
        if error.errno == errno.EINVAL:
            return False
        raise
    return True


def _write_all(fd: int, data: memoryview, direct: bool) -> bool:
    """Write all of ``data``; return whether ``O_DIRECT`` is still on afterwards."""
    while data:
        try:
            written = os.write(fd, data)
        except OSError as error:
            if not (direct and error.errno == errno.EINVAL):
                raise
            # Refused (alignment or no support): the offset did not move; go plain.
            _set_direct(fd, False)
            direct = False
            continue
        data = data[written:]
        if data and direct and written % _ALIGN:
            _set_direct(fd, False)  # a short write left the offset unaligned
            direct = False
    return direct


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` to ``fd`` with plain writes, looping over short writes (no copy)."""
    _write_all(fd, memoryview(data), False)


def write_chunks(fd: int, chunks: Iterable[bytes], *, direct: bool) -> bool:
    """Write every chunk to ``fd`` (opened for writing at offset 0).

    With ``direct``, try ``O_DIRECT`` as described in the module docstring. A
    direct write waits for the device, so two staging buffers alternate: a helper
    thread writes one while the caller's chunks (read, hashed) fill the other.
    Returns whether any block was written with ``O_DIRECT`` (for tests and
    benchmarks; the file's bytes are the same either way).
    """
    if not (direct and _O_DIRECT and _set_direct(fd, True)):
        for chunk in chunks:
            write_all(fd, chunk)
        return False
    state = [True, False]  # O_DIRECT still on; any block written with it

    def flush(view: memoryview) -> None:  # one writer thread: in submission order
        state[0] = _write_all(fd, view, state[0])
        state[1] |= state[0]

    buffers = _staging()
    inflight: list[Future[None] | None] = [None, None]
    current, fill = 0, 0
    with ThreadPoolExecutor(1, thread_name_prefix="mkit-direct") as writer:
        for chunk in chunks:
            view = memoryview(chunk).cast("B")
            while view:
                n = min(len(view), _BUFFER - fill)
                buffers[current][fill : fill + n] = view[:n]
                fill += n
                view = view[n:]
                if fill == _BUFFER:
                    inflight[current] = writer.submit(flush, buffers[current])
                    current, fill = current ^ 1, 0
                    if (previous := inflight[current]) is not None:
                        previous.result()  # its buffer is free again
        for future in inflight:
            if future is not None:
                future.result()
    staging = buffers[current]
    whole = fill - fill % _ALIGN
    if whole:
        flush(staging[:whole])
    if state[0]:
        _set_direct(fd, False)
    write_all(fd, staging[whole:fill])
    return state[1]


def _staging() -> tuple[memoryview, memoryview]:
    """Return the calling thread's two page-aligned buffers (reused: fresh pages cost)."""
    buffers: tuple[memoryview, memoryview] | None = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = (
            memoryview(mmap.mmap(-1, _BUFFER)),
            memoryview(mmap.mmap(-1, _BUFFER)),
        )
    return buffers
