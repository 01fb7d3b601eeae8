"""The push pipeline: objects in, packs built and uploaded (spec/SPEC-SYNC.md, push).

A scan hands blobs over (:class:`ScanStream`, for a first push while it goes on);
:class:`PackBuilder` turns groups of objects into packs in a deterministic order
(small objects compressed in batches a few ahead, large files spliced or given a
pack of their own); :func:`build_and_upload` uploads each pack as it is sealed,
a bounded number at a time. :func:`mkit_transport.sync.push` drives it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

from ..hashes import PackKey
from ..pack import (
    MAX_ENTRIES,
    SMALL_OBJECT,
    External,
    PackSummary,
    PackWriter,
    PreparedObject,
    iter_pack,
    prepare_objects,
)
from ..transport import Transport
from .chunking import DEFAULT_CHUNKING, ChunkParams
from .model import PackRef, encode_index
from .progress import Limiter, Meter
from .scan import MAX_FILE_SIZE, ObjectSource, Snapshot, scan
from .statcache import StatCache

__all__ = [
    "MAX_FILE_SIZE",
    "MAX_PACK_OBJECTS",
    "PackBuilder",
    "ScanStream",
    "UploadedPack",
    "build_and_upload",
]

#: The most objects one pack gets (well under the readers' cap).
MAX_PACK_OBJECTS: Final = MAX_ENTRIES // 4
#: The scan hands blobs to a first push in lists of at most this many objects or
#: bytes of file contents held (the queue holds 8 lists: bounded memory).
_HANDOFF_ITEMS: Final = 128
_HANDOFF_BYTES: Final = 1 << 20
#: Small objects are prepared in batches of at most this many objects or bytes ...
_BATCH_OBJECTS: Final = 256
_BATCH_BYTES: Final = 2 << 20
#: ... with at most this many batches (or large files) queued ahead of the writer.
_BATCHES_AHEAD: Final = 2
#: A batch of fewer bytes is compressed in this thread, not on zstd's workers.
_THREADED_BYTES: Final = 256 << 10

_T = TypeVar("_T")
#: Given each index blob a push stored, with its key (the local copies, blobcache).
Keep = Callable[[PackKey, bytes], None]


def solo_size(pack_size: int) -> int:
    """Files of at least this many bytes get a pack of their own (:class:`_Solo`)."""
    return pack_size // 2


@dataclass(frozen=True, slots=True)
class UploadedPack:
    """One pack a push built: what its record lists, and what it cost to upload.

    ``sent`` is false when the remote already held the pack (a retried push); its
    index blob is uploaded either way, so ``bytes_sent`` counts that at least.
    """

    pack: PackRef
    sent: bool
    bytes_sent: int


@dataclass(frozen=True, slots=True)
class _Sealed:
    """A pack ready to upload: its summary, its spool file and the files spliced in."""

    summary: PackSummary
    path: str
    externals: tuple[External, ...]


@dataclass(frozen=True, slots=True)
class _Solo:
    """A large file that makes a pack of its own, built by the upload worker.

    Compressing (or checksumming) a large file then overlaps with packing the many
    small ones, instead of following it in the one builder thread (push of the
    bench tree: ~25% faster, bench/bench_sync.py). Its pack is the same whichever
    thread builds it, so packs stay deterministic.
    """

    oid: bytes
    src: ObjectSource


class _FileChunks:
    """A re-iterable chunk source over a sealed pack (a retried upload replays it)."""

    def __init__(self, sealed: _Sealed, limiter: Limiter, meter: Meter) -> None:
        self.sealed, self.limiter, self.meter = sealed, limiter, meter

    def __iter__(self) -> Iterator[bytes]:
        for chunk in iter_pack(self.sealed.path, self.sealed.externals):
            self.limiter.take(len(chunk))
            self.meter.add(bytes_out=len(chunk))
            yield chunk


def _prepare_batch(
    batch: list[tuple[bytes, ObjectSource]], level: int, threads: int
) -> list[PreparedObject]:
    """Read and hash (unless the scan handed the bytes over) and compress a batch."""
    items: list[tuple[int, bytes]] = []
    known: list[bytes | None] = []
    for oid, src in batch:
        if src.data is not None:  # the bytes the scan hashed: their id is known
            items.append((src.kind, src.data))
            known.append(oid)
        else:
            assert src.path is not None
            with open(src.path, "rb") as f:
                if src.offset is None:  # a whole file: a byte more shows it grew
                    items.append((src.kind, f.read(src.size + 1)))
                else:  # a chunk: exactly its bytes, re-hashed below like a file
                    f.seek(src.offset)
                    items.append((src.kind, f.read(src.size)))
            known.append(None)
    if sum(len(data) for _, data in items) < _THREADED_BYTES:
        threads = 1  # a few small objects: starting zstd's workers costs more
    prepared = prepare_objects(items, level, threads, oids=known)
    for (oid, src), obj in zip(batch, prepared, strict=True):
        if obj.oid != oid:
            raise OSError(f"{src.path}: changed while it was being pushed; push again")
    return prepared


_Pending = tuple[list[tuple[bytes, ObjectSource]], Future[list[PreparedObject]] | None]


class PackBuilder:
    """Builds the packs of groups of objects into spool files, in a deterministic order.

    Trees go into packs of their own (so ``show`` and a pusher's planning never
    download file contents): a push passes the trees (and chunk lists) and the
    blobs as separate groups. Small objects and chunks of large files are read and
    compressed in batches by a worker, a few batches ahead, each batch in one call
    into zstd on both cores (zstd releases the GIL), and fill ordinary bounded packs
    (a chunked file never gets a pack of its own); large unchunked files stream
    through multi-threaded zstd, or are spliced in from the source when they do not
    compress (SPEC-PACK PACK-13).
    """

    def __init__(self, spool: str, *, level: int, pack_size: int) -> None:
        self.spool, self.level, self.pack_size = spool, level, pack_size
        # Never 0: zstd's multi-threaded output does not depend on the number of
        # workers but differs from its single-threaded mode, so with at least one
        # worker a large file packs to the same bytes on every machine (PACK-3).
        self.threads = 2 if (os.cpu_count() or 1) > 1 else 1
        self.seq = itertools.count(1)
        #: Held while a large file streams through multi-threaded zstd: one such
        #: context (~45 MiB at level 3) at a time keeps a push's memory bounded.
        self.compressing = threading.Lock()

    def packs(
        self, groups: Iterable[Iterable[tuple[bytes, ObjectSource]]], inline: bool = False
    ) -> Iterator[tuple[int, _Sealed | _Solo]]:
        """Yield the packs of each group of objects, in order (no pack spans two).

        Each comes with its group's number; a pack is sealed, or a :class:`_Solo`
        that :meth:`build_solo` builds. ``inline`` prepares the batches in this
        thread (for a handful of objects, where a worker costs more than it saves).
        """
        with _InlinePool() if inline else ThreadPoolExecutor(1) as pool:
            for number, group in enumerate(groups):
                for item in self._group(group, pool):
                    yield number, item

    def _spool_path(self) -> str:
        return os.path.join(self.spool, f"pack-{next(self.seq)}")

    def build_solo(self, solo: _Solo) -> _Sealed:
        """Build the pack of one large file (safe to call from any thread)."""
        assert solo.src.path is not None
        path = self._spool_path()
        with open(path, "w+b") as out:
            writer = PackWriter(out, level=self.level, threads=self.threads)
            with self.compressing:
                writer.add_file(solo.src.kind, solo.oid, solo.src.size, solo.src.path)
            return _Sealed(writer.finish(), path, tuple(writer.externals))

    def _items(
        self, group: Iterable[tuple[bytes, ObjectSource]], pool: Executor
    ) -> Iterator[tuple[bytes, ObjectSource, PreparedObject | None]]:
        """Yield each object in order, small ones prepared (batched, a few batches ahead)."""
        pending: deque[_Pending] = deque()
        batch: list[tuple[bytes, ObjectSource]] = []
        batch_bytes = 0

        def flush() -> None:
            nonlocal batch, batch_bytes
            if batch:
                pending.append(
                    (batch, pool.submit(_prepare_batch, batch, self.level, self.threads))
                )
                batch, batch_bytes = [], 0

        for oid, src in group:
            # A chunk (at most a few MiB) is read whole and compressed in a batch.
            if src.data is not None or src.size <= SMALL_OBJECT or src.offset is not None:
                batch.append((oid, src))
                batch_bytes += src.size
                if len(batch) >= _BATCH_OBJECTS or batch_bytes >= _BATCH_BYTES:
                    flush()
            else:
                flush()
                pending.append(([(oid, src)], None))
            while len(pending) > _BATCHES_AHEAD:
                yield from _drain(pending.popleft())
        flush()
        while pending:
            yield from _drain(pending.popleft())

    def _group(
        self, group: Iterable[tuple[bytes, ObjectSource]], pool: Executor
    ) -> Iterator[_Sealed | _Solo]:
        writer: PackWriter | None = None
        out = None
        path = ""
        try:
            for oid, src, prepared in self._items(group, pool):
                if prepared is None and src.size >= solo_size(self.pack_size):
                    yield _Solo(oid, src)
                    continue
                estimate = src.size
                if writer is not None and (
                    writer.size + estimate > self.pack_size or len(writer) >= MAX_PACK_OBJECTS
                ):
                    assert out is not None
                    yield _Sealed(writer.finish(), path, tuple(writer.externals))
                    out.close()
                    writer = out = None
                if writer is None:
                    path = self._spool_path()
                    out = open(path, "w+b")  # noqa: SIM115 - closed when the pack is sealed
                    writer = PackWriter(out, level=self.level, threads=self.threads)
                if prepared is not None:
                    writer.add_prepared(prepared)
                else:
                    assert src.path is not None
                    with self.compressing:
                        writer.add_file(src.kind, oid, src.size, src.path)
            if writer is not None:
                assert out is not None
                yield _Sealed(writer.finish(), path, tuple(writer.externals))
                out.close()
                out = None
        finally:
            if out is not None:
                out.close()


def _drain(entry: _Pending) -> Iterator[tuple[bytes, ObjectSource, PreparedObject | None]]:
    batch, future = entry
    if future is None:
        yield batch[0][0], batch[0][1], None
        return
    for (oid, src), obj in zip(batch, future.result(), strict=True):
        yield oid, src, obj


def _upload_pack(
    transport: Transport,
    sealed: _Sealed,
    limiter: Limiter,
    meter: Meter,
    repair: bool = False,
    keep: Keep | None = None,
) -> UploadedPack:
    """Upload one sealed pack (unless it already landed) and its index blob.

    With ``repair``, a pack or index blob already stored is not taken on trust: its
    stored copy is checked where it lives and replaced if damaged
    (:meth:`~Transport.repair_pack_stream`), so a push heals a rotted copy.
    ``keep`` is given the index blob once stored (a local copy for the next push).
    """
    summary = sealed.summary
    index = encode_index(summary.key, [(e.oid, e.kind) for e in summary.entries])
    index_key = PackKey.of(index)
    sent = 0
    uploaded = not transport.pack_exists(summary.key)
    if uploaded:
        transport.upload_pack_stream(summary.key, _FileChunks(sealed, limiter, meter), summary.size)
        sent += summary.size
    elif repair:
        transport.repair_pack_stream(summary.key, _FileChunks(sealed, limiter, meter), summary.size)
    # Always (idempotent): a push interrupted between a pack and its index left no index.
    (transport.repair_pack if repair else transport.upload_blob)(index, index_key)
    sent += len(index)
    if keep is not None:
        keep(index_key, index)
    meter.add(bytes_out=len(index), done=len(summary.entries))
    with contextlib.suppress(OSError):
        os.unlink(sealed.path)
    pack = PackRef(
        key=summary.key, index=index_key, size=summary.size, objects=len(summary.entries)
    )
    return UploadedPack(pack=pack, sent=uploaded, bytes_sent=sent)


def build_and_upload(
    transport: Transport,
    groups: Iterable[Iterable[tuple[bytes, ObjectSource]]],
    *,
    level: int,
    pack_size: int,
    concurrency: int,
    limiter: Limiter,
    meter: Meter,
    spool_dir: str | None,
    first: int = 0,
    repair: bool = False,
    keep: Keep | None = None,
) -> list[UploadedPack]:
    """Build packs and upload them as they are sealed, with a bounded pool.

    At most ``concurrency + 1`` sealed packs wait on disk, so the spool stays small.
    Results come in seal order, except that the packs of group ``first`` come first
    (a first push seals its trees last but lists them first, as every push does).
    ``repair`` checks the packs found stored (see :func:`_upload_pack`); ``keep``
    is given each index blob stored.
    """
    slots = threading.BoundedSemaphore(max(1, concurrency) + 1)
    futures: list[Future[UploadedPack]] = []
    groups_sealed: list[int] = []
    small = _small(groups)
    with (
        tempfile.TemporaryDirectory(prefix="mkit-push-", dir=spool_dir) as spool,
        _InlinePool() if small else ThreadPoolExecutor(max(1, concurrency)) as pool,
    ):
        builder = PackBuilder(spool, level=level, pack_size=pack_size)
        failed = threading.Event()

        def upload(item: _Sealed | _Solo) -> UploadedPack:
            if failed.is_set():  # an earlier pack failed: start nothing new
                raise _Aborted
            try:
                sealed = builder.build_solo(item) if isinstance(item, _Solo) else item
                return _upload_pack(transport, sealed, limiter, meter, repair, keep)
            except BaseException:
                failed.set()
                raise

        try:
            for number, item in builder.packs(groups, inline=small):
                while not slots.acquire(timeout=0.5):
                    _raise_first(futures)
                _raise_first(futures)
                future = pool.submit(upload, item)
                groups_sealed.append(number)
                future.add_done_callback(lambda _f: slots.release())
                futures.append(future)
            for f in futures:
                f.exception()  # wait for all, then report the real failure first
            _raise_first(futures)
            order = sorted(range(len(futures)), key=lambda i: (groups_sealed[i] != first, i))
            return [futures[i].result() for i in order]
        finally:
            for f in futures:
                f.cancel()


def _small(groups: Iterable[Iterable[tuple[bytes, ObjectSource]]]) -> bool:
    """Whether ``groups`` are lists of at most one batch of small objects in all.

    The push of an edit sends a blob or two and the trees on their paths. Its packs
    are then built and uploaded in the calling thread: on a loaded machine starting
    the builder's and the uploads' threads cost more than the work (profiled: each
    ``Thread.start`` waits for the new thread to be scheduled, milliseconds each).
    """
    if not isinstance(groups, list) or not all(isinstance(g, list) for g in groups):
        return False
    items = [src for group in groups for _, src in group]
    return (
        len(items) <= _BATCH_OBJECTS
        and sum(src.size for src in items) <= _BATCH_BYTES
        and all(src.size <= SMALL_OBJECT or src.offset is not None for src in items)
    )


class _InlinePool(Executor):
    """An executor that runs each task at once, in the caller's thread (tiny work)."""

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        future: Future[_T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # handed over like a pool's future does
            future.set_exception(error)
        return future


class _Aborted(Exception):
    """An upload skipped because an earlier one failed (never escapes push)."""


def _raise_first(futures: list[Future[_T]]) -> None:
    """Raise the first real failure among finished uploads (not a skip it caused)."""
    for f in futures:
        if f.done() and not f.cancelled():
            error = f.exception()
            if error is not None and not isinstance(error, _Aborted):
                raise error


class ScanStream:
    """Run the scan in a thread and hand its blobs over as they are hashed.

    For a first push, where everything is sent: packing starts with the first file
    instead of after the whole tree is hashed. :meth:`groups` yields the blobs (as
    the scan finds them), then the trees (once it is done). Leaving the ``with``
    block stops and joins the scan (a failed upload stops it at its next blob).
    Objects in ``known`` (what the store already holds: a push to a new ref, SYNC-59)
    are not handed over.
    """

    _END: Final = object()

    def __init__(
        self,
        source_dir: str | os.PathLike[str],
        pack_size: int,
        chunking: ChunkParams = DEFAULT_CHUNKING,
        stat_cache: StatCache | None = None,
        known: Container[bytes] = frozenset(),
    ) -> None:
        self.chunking, self.stat_cache, self.known = chunking, stat_cache, known
        # Files that get a pack of their own may come early (their order changes
        # no pack's bytes): the scan hands them over as soon as they are hashed.
        self.eager = solo_size(pack_size)
        # Blobs cross in lists (one queue operation per list, not per file: per-file
        # hand-offs cost ~40% of the scan's time, measured), flushed at
        # _HANDOFF_ITEMS objects or _HANDOFF_BYTES bytes held, or at a large file.
        self.queue: queue.Queue[object] = queue.Queue(maxsize=8)
        self.pending: list[tuple[bytes, ObjectSource]] = []
        self.pending_bytes = 0
        self.stopped = threading.Event()
        self.snap: Snapshot | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=self._run, args=(source_dir,), name="mkit-scan", daemon=True
        )

    def _put(self, item: object) -> None:
        while not self.stopped.is_set():
            with contextlib.suppress(queue.Full):
                self.queue.put(item, timeout=0.1)
                return
        raise _Aborted

    def _flush(self) -> None:
        if self.pending:
            self._put(self.pending)
            self.pending, self.pending_bytes = [], 0

    def _on_blob(self, oid: bytes, src: ObjectSource) -> None:
        if oid in self.known:
            return
        self.pending.append((oid, src))
        self.pending_bytes += len(src.data) if src.data is not None else 0
        if (
            len(self.pending) >= _HANDOFF_ITEMS
            or self.pending_bytes >= _HANDOFF_BYTES
            or src.size > SMALL_OBJECT
        ):
            self._flush()

    def _run(self, source_dir: str | os.PathLike[str]) -> None:
        try:
            self.snap = scan(
                source_dir,
                on_blob=self._on_blob,
                eager=self.eager,
                _chunking=self.chunking,
                stat_cache=self.stat_cache,
            )
            self._flush()
        except BaseException as error:  # handed to the consumer
            self.error = error
        with contextlib.suppress(_Aborted):
            self._put(self._END)

    def _blobs(self) -> Iterator[tuple[bytes, ObjectSource]]:
        while (item := self.queue.get()) is not self._END:
            yield from cast(list[tuple[bytes, ObjectSource]], item)
        if self.error is not None:
            raise self.error

    def groups(self) -> Iterator[Iterable[tuple[bytes, ObjectSource]]]:
        """Yield the blobs as they come, then the trees and chunk lists."""
        yield self._blobs()
        assert self.snap is not None
        known = self.known
        yield [
            (oid, src)
            for oid, src in self.snap.objects.items()
            if src.with_trees and oid not in known
        ]

    def __enter__(self) -> ScanStream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()
