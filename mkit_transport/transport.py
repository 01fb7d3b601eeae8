"""The :class:`Transport` base: every verb's policy, written once.

A transport module implements a handful of ``_`` primitives that only move bytes
(see "Writing a transport" below). The public verbs here wrap them with the
contract's policy, so that no transport can forget a part of it:

* names, prefixes, keys and values are validated before any I/O;
* every call runs under the :class:`~mkit_transport.retry.RetryPolicy`, and a
  connection-oriented transport is told to drop its connection before a retry;
* uploads are checked against their key before a byte is stored, downloads are
  checked against their key before the caller is told they are good;
* a conditional ref write that lost *after a retry* is disambiguated by reading
  the ref back: if it already holds the new value, an earlier attempt landed and
  the write succeeded (its acknowledgement was lost);
* listings get the component-boundary rule, sorting and de-duplication.

Writing a transport
-------------------
Subclass :class:`Transport` and implement ``_put_pack``, ``_get_pack``,
``_has_pack``, ``_read_ref``, ``_update_ref``, ``_list_refs`` and ``_init_store``;
override ``_put_pack_stream`` / ``_open_pack_stream`` to stream instead of
buffering, ``_pack_size`` to answer without reading the pack, ``_get_pack_range``
to ask the store for a byte range (the default reads it from the stream), and
``_drop_connection`` if the transport holds a connection. The lifecycle
primitives ``_list_packs``, ``_delete_pack`` and ``_delete_ref`` (listing and
deleting, for gc) refuse by default; ``_repair_pack_stream`` (replace a damaged
stored copy) has a non-atomic default that a transport should override. Primitives receive
validated arguments, raise only :mod:`mkit_transport.errors` types, and must:

* store a pack atomically (never visible partially written), and commit a
  streamed upload only after its chunk iterator is exhausted without error (the
  base raises from the iterator when the stream is short, long or mis-hashed); a
  primitive that finds the pack already stored may return without reading the
  chunks (the base then checks the stream itself);
* decide every ref condition atomically with the write (``_update_ref`` raises
  :class:`~mkit_transport.errors.RefConflict`, with ``current`` where known);
* return full ref names from ``_list_refs`` (at least those under the prefix);
* create the store in ``_init_store`` only when it is absent, never touching what
  an existing store holds, and say whether this call created it;
* retry nothing by themselves: a step a primitive must retry on its own (S3 resends
  a multipart part) goes through ``self._call`` (same thread) or
  ``self._ladder().run`` (a worker thread), on the operation's one ladder.

Store a ref value as :func:`~mkit_transport.refs.encode_ref_value` gives it (65 bytes)
and read it back with :func:`~mkit_transport.refs.decode_ref_value` (which refuses
anything else as :class:`~mkit_transport.errors.InvalidResponse`).

To open from a URL, give the class a ``from_url(url, **options)`` classmethod:
``open_transport`` calls it for a registered scheme (entry-point group
``mkit_transport.transports`` or :func:`~mkit_transport.urls.register_transport`).
It parses with :func:`~mkit_transport.urls.split_url` (the query joins ``options``),
takes what it knows with :func:`~mkit_transport.urls.pop_retry` and the other
``pop_*`` helpers, then calls :func:`~mkit_transport.urls.reject_options` so an
unknown option is an ``InvalidArgument``, never ignored. Test it with the conformance
suite (``mkit_transport.conformance``; README, "Testing your transport").
"""

from __future__ import annotations

import abc
import contextlib
import functools
import math
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Self, TypeVar

from .errors import (
    InvalidArgument,
    InvalidResponse,
    PackNotFound,
    PayloadTooLarge,
    ProtocolError,
    RefConflict,
    RemoteError,
    TransportError,
)
from .hashes import Hash, Hasher, PackKey
from .limits import CHUNK_SIZE, PACK_BODY_LIMIT
from .refs import (
    Ref,
    RefWriteCondition,
    filter_listing,
    is_valid_ref_name,
    normalize_prefix,
    validate_ref_name,
)
from .retry import ConflictBackoff, RetryLadder, RetryPolicy, is_retryable

__all__ = [
    "CHUNK_SIZE",
    "LIST_PAGE_SIZE",
    "MAX_DELETE_BATCH",
    "PACK_BODY_LIMIT",
    "PackInfo",
    "Transport",
]

#: Default number of packs one ``list_packs`` page asks for: one request per page on
#: the network transports, so a million packs cost a thousand round trips and never
#: more than a page of entries in memory.
LIST_PAGE_SIZE = 1000
#: Largest page a caller may ask for (the wire specs cap a page at this too).
MAX_LIST_PAGE = 10_000
#: The most keys one ``delete_packs`` call takes (bounded memory, as a listing page).
MAX_DELETE_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class PackInfo:
    """One stored pack as ``list_packs`` reports it.

    ``mtime`` is when the store last wrote the pack, in seconds since the epoch
    (a file's mtime, an object's ``LastModified``): gc compares it with its grace
    period, so a pack a push uploaded a moment ago is never swept.
    """

    key: PackKey
    size: int
    mtime: float


_T = TypeVar("_T")


class _Running(threading.local):
    """Per thread: the ladder of each operation running, by transport (``id``)."""

    def __init__(self) -> None:
        self.ladders: dict[int, RetryLadder] = {}


_running = _Running()

_Bytes = bytes | bytearray | memoryview


def _check_key(key: object) -> PackKey:
    if not isinstance(key, PackKey):
        raise InvalidArgument(f"expected a PackKey, got {type(key).__name__}")
    return key


def _too_large(what: str, size: int) -> PayloadTooLarge:
    """The error for a pack of ``size`` bytes over the limit (``what`` names it)."""
    return PayloadTooLarge(
        f"{what} is over the {PACK_BODY_LIMIT}-byte limit", size=size, limit=PACK_BODY_LIMIT
    )


def _check_data(data: object) -> bytes:
    """Return an upload's bytes, taken once, before they are hashed.

    A mutable buffer is copied here, so the bytes hashed are the bytes stored even
    if the caller changes its buffer meanwhile; ``bytes`` pass through uncopied.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgument(f"pack data must be bytes, not {type(data).__name__}")
    size = memoryview(data).nbytes
    if size > PACK_BODY_LIMIT:
        raise _too_large(f"pack of {size} bytes", size)
    return data if isinstance(data, bytes) else bytes(data)


def _verify_key(key: PackKey, actual: PackKey, error: type[TransportError], what: str) -> None:
    if actual != key:
        raise error(f"{what}: bytes hash to {actual.hex()}, not to the key {key.hex()}")


def _check_listed(info: object, after: PackKey | None) -> None:
    """Refuse a listed entry that is not a well-formed :class:`PackInfo` in key order."""
    if (
        not isinstance(info, PackInfo)
        or not isinstance(info.key, PackKey)
        or not isinstance(info.size, int)
        or isinstance(info.size, bool)
        or not 0 <= info.size <= PACK_BODY_LIMIT
        or not isinstance(info.mtime, float | int)
        or not math.isfinite(info.mtime)
    ):
        raise InvalidResponse(f"the store listed a malformed pack entry {info!r:.120}")
    if after is not None and not after < info.key:
        raise InvalidResponse(f"the pack listing is out of order at {info.key.hex()}")


#: Streams at least this long are hashed beside their consumer (see _CheckedUpload);
#: below it a helper thread costs more than the overlap saves.
_OVERLAP_FROM = 8 * CHUNK_SIZE


class _CheckedUpload:
    """The caller's chunks, checked while the primitive consumes them.

    Raises from inside the iteration (so before the primitive can commit) when the
    stream is longer or shorter than declared or does not hash to the key.
    """

    def __init__(self, key: PackKey, chunks: Iterable[_Bytes], total: int) -> None:
        self.key = key
        self.chunks = chunks
        self.total = total
        self.started = False  # a first chunk was asked for (a one-shot stream is spent)
        self.verified = False  # a pass reached the end and matched length and key

    def __iter__(self) -> Iterator[bytes]:
        self.started = True
        hasher = Hasher()
        # A big stream is hashed beside its consumer: chunk N is hashed on a helper
        # thread (BLAKE3 releases the GIL) while the transport sends or writes the
        # same chunk N, and the source is not asked for chunk N+1 until that hash is
        # done, so a source that reuses its buffer is still hashed as it was sent.
        # Hashing before each yield left the wire idle for a third of a 256 MiB HTTP
        # upload (issue 17). The end-of-stream checks are unchanged.
        pool = ThreadPoolExecutor(1) if self.total >= _OVERLAP_FROM else None
        try:
            for chunk in self.chunks:
                if not isinstance(chunk, bytes | bytearray | memoryview):
                    raise ProtocolError(f"stream chunk must be bytes, not {type(chunk).__name__}")
                if hasher.length + len(chunk) > self.total:
                    raise ProtocolError(f"stream is longer than its declared {self.total} bytes")
                data = bytes(chunk) if not isinstance(chunk, bytes) else chunk
                if pool is None:
                    hasher.update(data)
                    if data:
                        yield data
                    continue
                hashing = pool.submit(hasher.update, data)
                try:
                    if data:
                        yield data
                finally:
                    hashing.result()
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        if hasher.length != self.total:
            raise ProtocolError(
                f"stream ended after {hasher.length} of its declared {self.total} bytes"
            )
        _verify_key(self.key, hasher.pack_key(), ProtocolError, "upload refused")
        self.verified = True


class Transport(abc.ABC):
    """Moves content-addressed packs and compare-and-swap refs to and from one remote.

    All verbs are synchronous and safe to call from several threads. Use a
    transport as a context manager, or call :meth:`close`, to release its
    connections. See the module docstring for what a subclass implements.
    """

    #: URL schemes this class opens, for information only: ``open_transport``
    #: dispatches on :data:`~mkit_transport.urls.BUILTIN_SCHEMES`, entry points and
    #: ``register_transport``, never on this attribute (registering a scheme is what
    #: makes it open). A transport's own ``from_url`` may read it (S3 does).
    schemes: ClassVar[tuple[str, ...]] = ()
    #: Whether two instances opened on the same URL in different processes see the
    #: same state (false for the in-process memory store). The conformance suite
    #: races processes where this holds, threads otherwise.
    shared_across_processes: ClassVar[bool] = True
    #: Whether a download's BLAKE3 check uses BLAKE3's thread pool. Worth it where
    #: bytes arrive faster than one core hashes them (~4 GB/s); a transport whose
    #: stream is far slower and itself needs the CPU (SSH: paramiko decrypts on a
    #: thread of this process) turns it off, as the pool's threads only take turns
    #: from that work (bench/bench_ssh.py: ~10% less client CPU per download).
    parallel_verify: ClassVar[bool] = True
    #: The retry policy of this client (a class default too, so a subclass that does
    #: not call ``super().__init__()`` still gets the contract's ladder).
    retry: RetryPolicy = RetryPolicy()

    def __init__(self, *, retry: RetryPolicy | None = None) -> None:
        self.retry = retry if retry is not None else RetryPolicy()

    # -- primitives: wire code only -------------------------------------------------

    @abc.abstractmethod
    def _put_pack(self, key: PackKey, data: bytes) -> None:
        """Store ``data`` (already verified to hash to ``key``) atomically; idempotent."""

    @abc.abstractmethod
    def _get_pack(self, key: PackKey) -> bytes:
        """Return the stored bytes, or raise :class:`PackNotFound`."""

    @abc.abstractmethod
    def _has_pack(self, key: PackKey) -> bool:
        """Say whether ``key`` is stored."""

    @abc.abstractmethod
    def _read_ref(self, name: str) -> Hash | None:
        """Return the ref's value, or ``None`` when it is absent."""

    @abc.abstractmethod
    def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        """Write the ref if ``condition`` holds, deciding it atomically; else RefConflict."""

    @abc.abstractmethod
    def _list_refs(self, prefix: str) -> Iterable[tuple[str, Hash]]:
        """Yield ``(full name, value)`` for at least every ref under ``prefix``."""

    def _init_store(self) -> bool:
        """Create an empty store where this transport points, if there is none.

        Return ``True`` if this call created it, ``False`` if it was already there
        (then nothing may change). The default refuses: a transport that does not
        say how its stores come to be cannot promise an empty, usable one.
        """
        raise RemoteError(f"{type(self).__name__} cannot create a store (no _init_store)")

    def _list_packs(self, after: PackKey | None, limit: int) -> list[PackInfo]:
        """Return up to ``limit`` stored packs with keys above ``after``, in key order.

        An empty list means the listing is over. Only complete packs are listed:
        never a temporary file, a multipart upload, a torn object or anything else
        that is not a pack under its key. The default refuses (a transport that
        cannot list cannot be garbage collected).
        """
        raise RemoteError(f"{type(self).__name__} cannot list packs (no _list_packs)")

    def _repair_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        """Store a streamed pack, replacing a stored copy that does not hash to ``key``.

        Like :meth:`_put_pack_stream`, but a stored copy counts only once its bytes
        are checked. The default reads the stored copy through ``_open_pack_stream``
        and, when it is damaged, takes the whole new stream into a spool file first
        (the stream is checked as it is read, so wrong bytes are refused before the
        damaged copy is touched), then deletes that copy and uploads the spool: not
        atomic (a reader may see the pack absent for a moment), so every built-in
        transport overrides it with an atomic replacement where the bytes live.
        """
        if self._stored_copy_is_good(key):
            return
        with tempfile.TemporaryFile(prefix="mkit-repair-") as spool:
            for chunk in chunks:
                spool.write(chunk)
            with contextlib.suppress(PackNotFound):
                self._delete_pack(key)
            spool.seek(0)
            self._put_pack_stream(key, iter(lambda: spool.read(1 << 20), b""), total)

    def _stored_copy_is_good(self, key: PackKey) -> bool:
        """Say whether a copy of ``key`` is stored and hashes to it (reads it all)."""
        hasher = Hasher(parallel=True)
        try:
            for chunk in self._open_pack_stream(key, 0):
                hasher.update(chunk)
                if hasher.length > PACK_BODY_LIMIT:
                    return False
        except PackNotFound:
            return False
        return hasher.pack_key() == key

    def _delete_pack(self, key: PackKey) -> None:
        """Delete the pack if it is stored; an absent pack is not an error."""
        raise RemoteError(f"{type(self).__name__} cannot delete packs (no _delete_pack)")

    def _delete_packs(self, keys: list[PackKey]) -> None:
        """Delete each pack that is stored; by default :meth:`_delete_pack` of each.

        A transport overrides it where a batch is cheaper than its parts (the file
        store fsyncs each directory it touched once, not once a pack).
        """
        for key in keys:
            self._delete_pack(key)

    def _delete_ref(self, name: str, condition: RefWriteCondition) -> None:
        """Delete the ref if ``condition`` (``ANY`` or ``match``) holds, atomically.

        Else :class:`RefConflict` with ``current``. ``ANY`` on an absent ref succeeds.
        """
        raise RemoteError(f"{type(self).__name__} cannot delete refs (no _delete_ref)")

    def _sweep_debris(self, older_than: float) -> int:
        """Remove what killed writers left (never a pack or ref); return how many.

        Only debris not touched for ``older_than`` seconds, so a write in progress is
        never disturbed. The default has none to sweep (or cannot see it: the
        network transports leave that to their server's backend).
        """
        return 0

    def _pack_size(self, key: PackKey) -> int:
        """Return the stored size of a pack, or raise :class:`PackNotFound`.

        The default reads the pack through its stream and counts (bounded memory,
        but a whole download): transports that can ask for the size override it.
        """
        return sum(len(chunk) for chunk in self._open_pack_stream(key, 0))

    def _put_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        """Store a streamed pack; commit only once ``chunks`` is exhausted without error.

        The default buffers the whole pack; transports that can stream override it.
        """
        self._put_pack(key, b"".join(chunks))

    def _open_pack_stream(self, key: PackKey, offset: int) -> Iterator[bytes]:
        """Return the pack's bytes from ``offset`` on as chunks; raise PackNotFound now.

        Called again with the number of bytes already received to resume a broken
        download. The default slices :meth:`_get_pack`.
        """
        view = memoryview(self._get_pack(key))

        def chunks() -> Iterator[bytes]:
            for start in range(offset, len(view), CHUNK_SIZE):
                yield bytes(view[start : start + CHUNK_SIZE])

        return chunks()

    def _get_pack_range(self, key: PackKey, offset: int, length: int) -> bytes:
        """Return exactly ``length`` (> 0) stored bytes from ``offset``, unverified.

        Raise :class:`PackNotFound` for an absent pack and :meth:`_range_past_end`'s
        error when ``offset + length`` is past the stored size. The default reads
        ``length`` bytes from :meth:`_open_pack_stream` and closes the stream, so any
        transport has it; a transport that can ask its store for a range overrides it.
        """
        stream = self._open_pack_stream(key, offset)
        taken = bytearray()
        try:
            for chunk in stream:
                taken += chunk[: length - len(taken)]
                if len(taken) >= length:
                    return bytes(taken)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        raise self._range_past_end(key, offset, length, self._pack_size(key))

    @staticmethod
    def _range_past_end(key: PackKey, offset: int, length: int, size: int) -> InvalidArgument:
        """The error for a range that runs past the end of a ``size``-byte pack."""
        return InvalidArgument(
            f"range of {length} bytes at offset {offset} runs past the end of pack"
            f" {key.hex()} ({size} bytes)"
        )

    def _drop_connection(self, error: BaseException) -> None:
        """Forget a possibly broken connection before a retry (connection transports)."""

    # -- policy ----------------------------------------------------------------------

    def _call(self, op: Callable[[], _T], *, may_retry: Callable[[], bool] | None = None) -> _T:
        """Run ``op`` under the retry policy: one ladder per operation.

        A ``_call`` made while another runs on this transport in the same thread (a
        primitive retrying a step of its own) climbs the same ladder, so a step that
        always fails costs the policy's attempts once, not once per loop around it.
        ``may_retry`` may veto a retry (a one-shot stream already read from).
        """
        running = _running.ladders
        ladder = running.get(id(self))
        if ladder is not None:
            return ladder.run(op, may_retry=may_retry)
        ladder = RetryLadder(self.retry, before_retry=self._drop_connection)
        running[id(self)] = ladder
        try:
            return ladder.run(op, may_retry=may_retry)
        finally:
            del running[id(self)]

    def _ladder(self) -> RetryLadder:
        """The ladder of the operation this thread runs on this transport.

        For a primitive that hands a retried step to a worker thread (S3's multipart
        parts): the worker runs it with ``ladder.run`` on the operation's ladder.
        """
        ladder = _running.ladders.get(id(self))
        if ladder is None:
            raise RuntimeError("_ladder() is for primitives, called under _call")
        return ladder

    # -- packs -----------------------------------------------------------------------

    def upload_pack(self, data: bytes, key: PackKey) -> None:
        """Store ``data`` under ``key``, which must be its BLAKE3 digest.

        Bytes that do not hash to ``key`` are refused with :class:`ProtocolError`
        and nothing is stored. Uploading a pack that is already stored succeeds
        (a transport may skip it without reading it: see :meth:`repair_pack`).
        """
        _check_key(key)
        data = _check_data(data)
        _verify_key(key, PackKey.of(data), ProtocolError, "upload refused")
        self._call(lambda: self._put_pack(key, data))

    def repair_pack(self, data: bytes, key: PackKey) -> None:
        """Store ``data`` under ``key``, replacing a stored copy that is damaged.

        :meth:`upload_pack` may take a pack it finds stored (at the right size) as
        already there without reading it, so a same-size corrupt copy survives it.
        This verb has the stored copy checked (hashed where its bytes live) and
        replaced, atomically, when it does not hash to ``key``; a good copy is left
        alone and an absent pack is stored. ``data`` is checked as for any upload.
        """
        _check_key(key)
        data = _check_data(data)
        _verify_key(key, PackKey.of(data), ProtocolError, "upload refused")
        self._call(lambda: self._repair_pack_stream(key, [data], len(data)))

    def download_pack(self, key: PackKey) -> bytes:
        """Return the pack's bytes, verified against ``key`` (else InvalidResponse)."""
        _check_key(key)
        data = self._call(lambda: self._get_pack(key))
        if len(data) > PACK_BODY_LIMIT:
            raise _too_large(f"downloaded pack of {len(data)} bytes", len(data))
        _verify_key(key, PackKey.of(data), InvalidResponse, "download refused")
        return data

    def read_pack_range(self, key: PackKey, offset: int, length: int) -> bytes:
        """Return ``length`` stored bytes of a pack from ``offset`` on, *unverified*.

        A range cannot be checked against the pack key (that needs the whole pack),
        so the caller verifies what it cuts out by its own id (sync's object-level
        reads check each object's hash). ``offset`` and ``length`` are ints >= 0,
        else :class:`InvalidArgument` before any I/O; ``length`` over the pack limit
        is :class:`PayloadTooLarge`. The range must lie inside the stored pack
        (``offset + length <= size``): one that runs past the end is
        :class:`InvalidArgument` naming the size, never short data. ``length`` 0
        returns ``b""`` for a stored pack (``offset <= size``). An absent pack is
        :class:`PackNotFound`. Retried under the policy as a whole; an answer that
        is not exactly ``length`` bytes is :class:`InvalidResponse`.
        """
        _check_key(key)
        for name, value in (("offset", offset), ("length", length)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgument(f"{name} must be a non-negative int, got {value!r}")
        if length > PACK_BODY_LIMIT:
            raise _too_large(f"range of {length} bytes", length)
        if length == 0:
            size = self.pack_size(key)
            if offset > size:
                raise self._range_past_end(key, offset, length, size)
            return b""
        data = self._call(lambda: self._get_pack_range(key, offset, length))
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidResponse(f"pack {key.hex()}: a range read answered {type(data).__name__}")
        data = bytes(data)
        if len(data) != length:
            raise InvalidResponse(
                f"pack {key.hex()}: asked for {length} bytes at offset {offset},"
                f" the store answered {len(data)}"
            )
        return data

    def pack_exists(self, key: PackKey) -> bool:
        """Say whether a pack is stored under ``key``; a missing pack is ``False``."""
        _check_key(key)
        return self._call(lambda: self._has_pack(key))

    def pack_size(self, key: PackKey) -> int:
        """Return the size in bytes of the pack stored under ``key`` (unverified).

        :class:`PackNotFound` if it is not stored. For a relay that must announce a
        length before the bytes (the SSH server's ``pack {size}``); the bytes
        themselves are verified only by the download verbs.
        """
        _check_key(key)
        size = self._call(lambda: self._pack_size(key))
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidResponse(f"pack {key.hex()}: the store reports a size of {size!r}")
        if size > PACK_BODY_LIMIT:
            raise _too_large(f"stored pack of {size} bytes", size)
        return size

    def list_packs(
        self, *, after: PackKey | None = None, page_size: int = LIST_PAGE_SIZE
    ) -> Iterator[PackInfo]:
        """Yield every stored pack (and blob) as a :class:`PackInfo`, in key order.

        Streamed a page at a time (``page_size`` entries, one request per page on a
        network transport, each page retried on its own), so listing a million
        packs never holds more than a page. ``after`` starts past that key (a
        cursor: resume a listing where it stopped). Temporary files, incomplete
        uploads and other debris are never listed. A pack stored or deleted while
        the listing runs may or may not appear.
        """
        if after is not None:
            _check_key(after)
        if (
            not isinstance(page_size, int)
            or isinstance(page_size, bool)
            or not 1 <= page_size <= MAX_LIST_PAGE
        ):
            raise InvalidArgument(
                f"page_size must be an int in 1..{MAX_LIST_PAGE}, got {page_size!r}"
            )
        return self._pages(after, page_size)

    def _pages(self, after: PackKey | None, page_size: int) -> Iterator[PackInfo]:
        cursor = after
        while True:
            page = self._call(functools.partial(self._list_packs, cursor, page_size))
            if not isinstance(page, list) or len(page) > page_size:
                raise InvalidResponse(f"a pack listing page of {page_size} returned {page!r:.80}")
            if not page:
                return
            for info in page:
                _check_listed(info, cursor)
                cursor = info.key
                yield info

    def sweep_debris(self, older_than: float) -> int:
        """Remove debris of killed writers older than ``older_than`` seconds; return how many.

        Temporary files (file), incomplete multipart uploads (S3): never visible as
        packs or refs, but they hold space. Younger debris may be a write in
        progress and is left alone. gc calls it with its grace period.
        """
        if (
            not isinstance(older_than, int | float)
            or isinstance(older_than, bool)
            or not math.isfinite(older_than)
            or older_than < 0
        ):
            raise InvalidArgument(f"older_than must be a non-negative number, got {older_than!r}")
        swept = self._call(lambda: self._sweep_debris(float(older_than)))
        if not isinstance(swept, int) or isinstance(swept, bool) or swept < 0:
            raise InvalidResponse(f"debris sweep answered {swept!r}, not a count")
        return swept

    def delete_pack(self, key: PackKey) -> None:
        """Delete the pack (or blob) stored under ``key``; an absent one is fine.

        Idempotent, so it is retried like any verb. Deleting a pack a ref still
        names breaks that ref: this is a verb for gc (``mkit_transport.sync.gc``),
        which only deletes what no ref reaches.
        """
        _check_key(key)
        self._call(lambda: self._delete_pack(key))

    def delete_packs(self, keys: Iterable[PackKey]) -> None:
        """:meth:`delete_pack` of each of ``keys`` (at most :data:`MAX_DELETE_BATCH`).

        Every key is checked before anything is deleted (:class:`InvalidArgument`).
        The same outcome as deleting them one by one, in fewer round trips where the
        store allows: on the file store each touched directory is fsynced once for
        the batch instead of once a pack (gc of 100k packs spent most of its time
        there). Idempotent, so retried like any verb.
        """
        batch = [_check_key(key) for key in keys]
        if len(batch) > MAX_DELETE_BATCH:
            raise InvalidArgument(
                f"delete_packs takes at most {MAX_DELETE_BATCH} keys, got {len(batch)}"
            )
        if type(self)._delete_packs is Transport._delete_packs:
            # No batch primitive: one retried operation per key, as delete_pack, so a
            # flaky network spends the retry budget per request, not per batch.
            for key in batch:
                self._call(functools.partial(self._delete_pack, key))
        elif batch:
            self._call(lambda: self._delete_packs(batch))

    def repair_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        """:meth:`repair_pack` for a streamed pack (checked as :meth:`upload_pack_stream`)."""
        self._upload_stream(key, chunks, total, self._repair_pack_stream)

    def upload_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        """Store a pack given as chunks of ``total`` bytes, without holding it whole.

        The stream is refused (:class:`ProtocolError`, nothing stored) if it is longer
        or shorter than ``total`` or does not hash to ``key``; a ``total`` over the
        4 GiB limit is :class:`PayloadTooLarge` before anything is read. Transient
        failures are retried when ``chunks`` can be iterated again (a list, or any
        re-iterable object); a one-shot iterator is retried only if the failure came
        before its first chunk was taken.
        """
        self._upload_stream(key, chunks, total, self._put_pack_stream)

    def _upload_stream(
        self,
        key: PackKey,
        chunks: Iterable[bytes],
        total: int,
        put: Callable[[PackKey, Iterable[bytes], int], None],
    ) -> None:
        _check_key(key)
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise InvalidArgument(f"total must be a non-negative int, got {total!r}")
        if total > PACK_BODY_LIMIT:
            raise _too_large(f"declared total {total}", total)
        one_shot = isinstance(chunks, Iterator)
        checked = _CheckedUpload(key, chunks, total)
        self._call(
            lambda: put(key, checked, total),
            may_retry=(lambda: not checked.started) if one_shot else None,
        )
        if not checked.verified:
            # The transport found the pack already stored before reading the stream
            # to its end (at once, or on a retry after a partial pass): the stream
            # is still checked, so a bad one is refused all the same.
            for _ in checked:
                pass

    def download_pack_stream(self, key: PackKey) -> Iterator[bytes]:
        """Return the pack's bytes as an iterator of chunks, holding a bounded amount.

        :class:`PackNotFound` is raised by this call, never by the iterator. The
        iterator resumes a broken download where it stopped (under the retry policy)
        and raises :class:`InvalidResponse` after the last chunk if the bytes do not
        hash to ``key``: treat the data as unverified until it is exhausted.
        """
        _check_key(key)
        first = self._call(lambda: self._open_pack_stream(key, 0))
        return self._verified_stream(key, first)

    def relay_pack_stream(self, key: PackKey, offset: int = 0) -> Iterator[bytes]:
        """Return the stored bytes from ``offset`` on, *without* verifying them.

        For servers (HTTP, SSH) that relay a pack to a client which verifies it end
        to end: a relay passes damaged bytes on as they are, so the client reports
        ``InvalidResponse`` rather than retrying a connection the relay cut. Raises
        :class:`PackNotFound` from the call. Anyone who uses the bytes themselves
        calls :meth:`download_pack_stream`, which verifies.
        """
        _check_key(key)
        if not isinstance(offset, int) or offset < 0:
            raise InvalidArgument(f"offset must be a non-negative int, got {offset!r}")
        return self._call(lambda: self._open_pack_stream(key, offset))

    def _verified_stream(self, key: PackKey, stream: Iterator[bytes]) -> Iterator[bytes]:
        hasher = Hasher(parallel=self.parallel_verify)
        failures = 0
        while True:
            try:
                for chunk in stream:
                    hasher.update(chunk)
                    if hasher.length > PACK_BODY_LIMIT:
                        raise _too_large("downloaded pack", hasher.length)
                    yield chunk
                break
            except TransportError as error:
                if not is_retryable(error) or failures >= self.retry.retries:
                    raise
                failures += 1
                self.retry.sleep(self.retry.delay(failures, error))
                self._drop_connection(error)
                stream = self._call(
                    lambda offset=hasher.length: self._open_pack_stream(key, offset)  # type: ignore[misc]
                )
        _verify_key(key, hasher.pack_key(), InvalidResponse, "download refused")

    def upload_blob(self, data: bytes, key: PackKey) -> None:
        """Store an auxiliary blob; blobs share the packs' keyspace and checks."""
        self.upload_pack(data, key)

    def download_blob(self, key: PackKey) -> bytes:
        """Return a blob's bytes, verified against ``key``."""
        return self.download_pack(key)

    # -- refs ------------------------------------------------------------------------

    def read_ref(self, name: str) -> Hash | None:
        """Return the ref's value, or ``None`` when it is absent."""
        validate_ref_name(name)
        return self._call(lambda: self._read_ref(name))

    def update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        """Write ``value`` to the ref if ``condition`` holds, atomically.

        Raises :class:`RefConflict` (with ``current``) when the condition fails. If a
        ``MISSING`` or ``match`` write is retried after a transient failure and then
        conflicts, the ref is read back: holding ``value`` means an earlier attempt
        landed, so the write succeeded.
        """
        validate_ref_name(name)
        if not isinstance(condition, RefWriteCondition):
            raise InvalidArgument(f"expected a RefWriteCondition, got {type(condition).__name__}")
        if not isinstance(value, Hash):
            raise InvalidArgument(f"a ref value must be a Hash, not {type(value).__name__}")
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            self._update_ref(name, condition, value)

        try:
            self._call(attempt)
        except RefConflict as conflict:
            if attempts == 1 or condition.kind == "any":
                if conflict.name is None:
                    conflict.name = name
                raise
            current = self._call(lambda: self._read_ref(name))
            if current == value:
                return
            raise RefConflict(
                f"ref {name} changed: it holds {current.hex() if current else 'nothing'}",
                name=name,
                current=current,
                known=True,
            ) from conflict

    def update_ref_with(
        self,
        name: str,
        change: Callable[[Hash | None], Hash],
        *,
        current: Hash | None = None,
        known: bool = False,
        attempts: int = 50,
        backoff: ConflictBackoff | None = None,
    ) -> Hash:
        """Read-modify-write a ref: ``change(value)`` is written if the ref still holds ``value``.

        The loop every CAS client writes, written once (SPEC-REFS section 3.1): read the
        ref (``None``: absent), compute the new value, write it with ``match`` (or
        ``MISSING``) of what was read; on :class:`RefConflict` start again from the
        value the conflict reports (read again when it does not know it), after a
        :class:`~mkit_transport.retry.ConflictBackoff` wait, so that clients looping
        on one ref do not lose every round to each other. Returns the value written.

        ``current`` with ``known=True`` is the value the caller believes the ref holds
        (the value it wrote last, say): it saves the first read, and a wrong guess
        costs only a conflict. ``change`` may be called several times, each time with
        the value the write will be conditioned on; an exception from it ends the
        loop with nothing written. After ``attempts`` lost writes the last
        :class:`RefConflict` is raised.
        """
        validate_ref_name(name)
        if not callable(change):
            raise InvalidArgument(f"change must be callable, not {type(change).__name__}")
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise InvalidArgument(f"attempts must be a positive int, got {attempts!r}")
        backoff = backoff or ConflictBackoff()
        streak = 0
        while True:
            if not known:
                current = self.read_ref(name)
            # Built first: ``match`` refuses a ``current`` that is not a Hash, before
            # ``change`` or any I/O sees it.
            condition = (
                RefWriteCondition.MISSING if current is None else RefWriteCondition.match(current)
            )
            value = change(current)
            try:
                self.update_ref(name, condition, value)
                return value
            except RefConflict as conflict:
                streak += 1
                if streak >= attempts:
                    raise
                current, known = conflict.current, conflict.known
            backoff.sleep(backoff.delay(streak))

    def write_ref(self, name: str, value: Hash) -> None:
        """Write the ref unconditionally (``update_ref`` with ``ANY``)."""
        self.update_ref(name, RefWriteCondition.ANY, value)

    def delete_ref(self, name: str, condition: RefWriteCondition) -> None:
        """Delete the ref if ``condition`` holds, atomically (a CAS delete).

        ``match(h)`` deletes only a ref holding ``h``, else :class:`RefConflict`
        with ``current`` (``None``: absent); ``ANY`` deletes whatever it holds and
        succeeds on an absent ref. ``MISSING`` means nothing here and is refused
        with :class:`InvalidArgument`. A ``match`` delete retried after a transient
        failure that then finds the ref absent succeeded on an earlier attempt
        (its acknowledgement was lost): it is reported as a success.
        """
        validate_ref_name(name)
        if not isinstance(condition, RefWriteCondition):
            raise InvalidArgument(f"expected a RefWriteCondition, got {type(condition).__name__}")
        if condition.kind == "missing":
            raise InvalidArgument("delete_ref takes ANY or match(h); MISSING deletes nothing")
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            self._delete_ref(name, condition)

        try:
            self._call(attempt)
        except RefConflict as conflict:
            if conflict.name is None:
                conflict.name = name
            if attempts == 1:
                raise
            current = self._call(lambda: self._read_ref(name))
            if current is None:
                return
            raise RefConflict(
                f"ref {name} changed: it holds {current.hex()}",
                name=name,
                current=current,
                known=True,
            ) from conflict

    def list_refs(self, prefix: str = "") -> list[Ref]:
        """List the refs under ``prefix``, named relative to it, sorted by name.

        ``prefix`` matches whole components: ``refs/heads/feat`` lists
        ``refs/heads/feat/x`` as ``x`` but never ``refs/heads/featx``; ``p`` and
        ``p/`` mean the same; a ref named exactly the prefix is left out.
        """
        normalized = normalize_prefix(prefix)
        found = self._call(lambda: list(self._list_refs(normalized)))
        for name, value in found:
            if not is_valid_ref_name(name) or not isinstance(value, Hash):
                raise InvalidResponse(f"listing returned an invalid ref {name!r}")
        return filter_listing(normalized, found)

    # -- the store -------------------------------------------------------------------

    def init_store(self) -> bool:
        """Create an empty store at this transport's location, like ``git init --bare``.

        Idempotent: on a store that is already there it succeeds and changes
        nothing. Returns ``True`` if this call created the store, ``False`` if it
        was already there. After it returns, every verb works on the store. Some
        transports also create a store on its first write (memory, file, the HTTP
        server); others need this call first (SSH; S3 needs its bucket). Runs
        under the retry policy: if an attempt created the store and its answer was
        lost, the retry finds it there and returns ``False``.
        """
        created = self._call(self._init_store)
        if not isinstance(created, bool):
            raise InvalidResponse(f"store creation answered {created!r}, not a bool")
        return created

    # -- lifetime --------------------------------------------------------------------

    def close(self) -> None:
        """Release connections and other resources; the default holds none."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
