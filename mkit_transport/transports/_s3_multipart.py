"""S3 multipart uploads of large packs: parts in flight at once, one retry ladder, resume.

A mixin of :class:`~mkit_transport.transports.s3.S3Transport` (private), kept apart
because it is the one stateful protocol of the S3 wire: parts, their ETags, and the
incomplete uploads a killed writer leaves (spec/SPEC-S3.md, S3-13, S3-14, S3-26).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

from ..errors import PackNotFound, TransportError
from ..hashes import PackKey
from ._s3_errors import mapped as _mapped

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from ..retry import RetryLadder

__all__ = [
    "DEFAULT_PART_SIZE",
    "MAX_PARTS",
    "MIN_PART_SIZE",
    "UPLOAD_BUFFER_BUDGET",
    "MultipartUploads",
]
#: S3's smallest multipart part (all but the last).
MIN_PART_SIZE: Final = 5 << 20

#: Default part size and single-PUT threshold of streamed uploads: fewer, larger
#: requests cost less CPU per byte on both ends than 8 MiB ones did.
DEFAULT_PART_SIZE: Final = 16 << 20

#: Part buffers one multipart upload may hold, by default (``upload_workers`` unset):
#: ``budget // part_size`` buffers (three of 16 MiB), at least two (one filling, one
#: uploading). Under the 64 MiB a transfer may hold, so the client's own overhead
#: (a chunk, request objects, thread stacks: about 3 MiB measured) fits as well.
UPLOAD_BUFFER_BUDGET: Final = 56 << 20

#: S3's largest number of parts in one upload.
MAX_PARTS: Final = 10_000


class MultipartUploads:
    """Streamed multipart upload of one pack (mixed into the S3 transport)."""

    client: S3Client
    bucket: str
    part_size: int
    #: Part buffers per upload (parts in flight at most); ``None``: as many as fit
    #: :data:`UPLOAD_BUFFER_BUDGET`.
    upload_workers: int | None

    if TYPE_CHECKING:

        def pack_key(self, key: PackKey) -> str: ...

        def _stored_size(self, object_key: str) -> int | None: ...

        def _ladder(self) -> RetryLadder: ...

    def _multipart(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        """Upload parts of ``part_size``, several at once, each retried on its own.

        A part is retried from its buffer (the stream is not read again) on the
        operation's one ladder (:meth:`_ladder`): every retry of any part, and the
        core's retry of the whole upload, takes the next rung, so a part that always
        fails costs the policy's six attempts in all. A failure that outlives the
        ladder aborts the upload; the core retries the operation only while rungs
        are left (a new upload: parts are not carried over from an aborted one).

        An incomplete upload of the same key left by a writer that was killed (it
        could not abort) is resumed (:meth:`_resumable`): a part already there whose
        size and MD5 ETag match the part's bytes is not sent again; other parts are
        sent over it. Any other incomplete upload of the key is aborted once the
        object is complete, so none is left behind.

        Why concurrent: one part at a time leaves the server idle while the next part
        is read and its request built, and one connection rarely fills the link (the
        streamed upload ran at 0.5-0.7x a single raw PUT). ``upload_workers`` part
        buffers (by default as many as fit in :data:`UPLOAD_BUFFER_BUDGET`) are
        reused: the stream fills a free one while the others upload on worker
        threads, so memory stays at ``upload_workers * part_size`` whatever the
        pack's size, and the stream waits when every buffer is in flight.
        """
        ladder = self._ladder()
        object_key = self.pack_key(key)
        part_size = max(self.part_size, -(-total // MAX_PARTS))
        upload_id, stored, others = self._resumable(object_key)
        if upload_id is None:
            with _mapped(f"start upload of {key.hex()}"):
                created = self.client.create_multipart_upload(Bucket=self.bucket, Key=object_key)
            upload_id = created["UploadId"]
        parts: list[dict[str, Any]] = []

        def send(number: int, body: bytearray) -> None:
            def attempt() -> str:
                with _mapped(f"upload part {number} of {key.hex()}"):
                    return self.client.upload_part(
                        Bucket=self.bucket, Key=object_key, UploadId=upload_id,
                        PartNumber=number, Body=body,  # type: ignore[arg-type]
                    )["ETag"]  # fmt: skip

            parts.append({"PartNumber": number, "ETag": ladder.run(attempt)})

        def reused(number: int, body: bytearray) -> bool:
            """Keep part ``number`` from the resumed upload if it holds exactly ``body``."""
            etag, size = stored.get(number, ("", -1))
            if size != len(body):
                return False
            if etag.strip('"') != hashlib.md5(body, usedforsecurity=False).hexdigest():
                return False
            parts.append({"PartNumber": number, "ETag": etag})
            return True

        try:
            with _PartPool(self._upload_depth(part_size), part_size) as pool:
                # A buffer is taken when bytes arrive for it, not ahead: a pack that
                # ends on a part boundary never allocates (and zero-fills) one more.
                buffer: bytearray | None = None
                fill, number = 0, 1
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        if buffer is None:
                            buffer = pool.take()
                        n = min(len(view), part_size - fill)
                        buffer[fill : fill + n] = view[:n]
                        fill, view = fill + n, view[n:]
                        if fill == part_size:
                            if reused(number, buffer):
                                pool.give_back(buffer)
                            else:
                                pool.submit(send, number, buffer)
                            buffer, fill, number = None, 0, number + 1
                if buffer is not None:  # total > part_size: never the first part
                    del buffer[fill:]  # in place: the last buffer is not reused
                    if not reused(number, buffer):
                        pool.submit(send, number, buffer)
                pool.drain()
            ladder.run(lambda: self._complete(object_key, upload_id, parts, total))
        except BaseException:
            with contextlib.suppress(Exception):
                ladder.run(lambda: self._abort(object_key, upload_id))
            raise
        for other in others:
            # Best effort: the pack is stored; a leftover is swept by gc (sweep_debris).
            with contextlib.suppress(TransportError):
                self._abort(object_key, other)

    def _upload_depth(self, part_size: int) -> int:
        """How many part buffers one upload uses (= parts in flight at most)."""
        if self.upload_workers:
            return self.upload_workers
        return max(2, UPLOAD_BUFFER_BUDGET // part_size)

    def _resumable(
        self, object_key: str
    ) -> tuple[str | None, dict[int, tuple[str, int]], list[str]]:
        """An incomplete upload of ``object_key`` to resume, its parts, and the others.

        The parts map a part number to its ETag and size. The first listed upload
        whose parts can still be listed is resumed (one gone meanwhile, completed
        or aborted, is passed over); ``None`` when there is none.
        """
        found: list[str] = []
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": object_key}
        with _mapped(f"list uploads of {object_key}"):
            while True:
                page = self.client.list_multipart_uploads(**request)
                found += [u["UploadId"] for u in page.get("Uploads", []) if u["Key"] == object_key]
                if not page.get("IsTruncated"):
                    break
                request["KeyMarker"] = page.get("NextKeyMarker", "")
                request["UploadIdMarker"] = page.get("NextUploadIdMarker", "")
        for upload_id in found:
            try:
                stored = self._stored_parts(object_key, upload_id)
            except PackNotFound:
                continue
            return upload_id, stored, [u for u in found if u != upload_id]
        return None, {}, []

    def _stored_parts(self, object_key: str, upload_id: str) -> dict[int, tuple[str, int]]:
        """The parts of an incomplete upload (``ListParts``, paginated): number -> ETag, size."""
        stored: dict[int, tuple[str, int]] = {}
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": object_key, "UploadId": upload_id}
        with _mapped(f"list parts of {object_key}"):
            while True:
                page = self.client.list_parts(**request)
                for part in page.get("Parts", []):
                    stored[int(part["PartNumber"])] = (str(part["ETag"]), int(part["Size"]))
                if not page.get("IsTruncated"):
                    return stored
                request["PartNumberMarker"] = page["NextPartNumberMarker"]

    def _complete(
        self, object_key: str, upload_id: str, parts: list[dict[str, Any]], total: int
    ) -> None:
        ordered = sorted(parts, key=lambda part: int(part["PartNumber"]))
        try:
            with _mapped(f"complete upload of {object_key}"):
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=object_key, UploadId=upload_id,
                    MultipartUpload={"Parts": ordered},  # type: ignore[typeddict-item]
                )  # fmt: skip
        except PackNotFound:
            # The upload is gone: an earlier attempt completed it and its answer was
            # lost. The object is there, of the right size, or this is a real failure.
            if self._stored_size(object_key) != total:
                raise
            return

    def _abort(self, object_key: str, upload_id: str) -> None:
        try:
            with _mapped(f"abort upload of {object_key}"):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=object_key, UploadId=upload_id
                )
        except PackNotFound:
            return  # already completed or aborted


class _PartPool:
    """At most ``depth`` part buffers, each either filling (the caller's) or uploading.

    :meth:`take` hands out a free buffer, making one while fewer than ``depth``
    exist, else waiting for an upload to finish (whose failure it raises at once:
    no more of the stream is read after a part failed). Leaving the ``with`` block
    cancels the parts not started and waits for the running ones, so no thread
    still sends a part of an upload the caller is about to abort.
    """

    def __init__(self, depth: int, part_size: int) -> None:
        self.depth = depth
        self.part_size = part_size
        self.made = 0
        self.free: list[bytearray] = []
        self.running: dict[Future[None], bytearray] = {}
        self.workers = ThreadPoolExecutor(depth, thread_name_prefix="mkit-s3-part")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.workers.shutdown(wait=True, cancel_futures=True)

    def take(self) -> bytearray:
        """A free buffer of ``part_size`` bytes (its old contents are overwritten)."""
        while not self.free:
            if self.made < self.depth:
                self.made += 1
                return bytearray(self.part_size)
            self._reap(FIRST_COMPLETED)
        return self.free.pop()

    def give_back(self, buffer: bytearray) -> None:
        """Return a buffer that was not sent (a reused part)."""
        self.free.append(buffer)

    def submit(self, send: Callable[[int, bytearray], None], number: int, body: bytearray) -> None:
        """Upload part ``number`` from ``body`` on a worker; the buffer is busy until then."""
        self.running[self.workers.submit(send, number, body)] = body

    def drain(self) -> None:
        """Wait for every part in flight, raising the first failure."""
        while self.running:
            self._reap(FIRST_COMPLETED)

    def _reap(self, when: str) -> None:
        done, _ = wait(self.running, return_when=when)
        for future in done:
            buffer = self.running.pop(future)
            future.result()  # a failed part ends the upload here
            if len(buffer) == self.part_size:
                self.free.append(buffer)
