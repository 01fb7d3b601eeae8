"""``mkit+s3://host[:port]/bucket[/prefix]``: packs and CAS refs on S3-compatible storage.

Wire code only (spec/SPEC-S3.md); the base class holds validation, retries and
digest checks. Keys, with ``<prefix>/`` in front when the URL has a prefix::

    packs/<64 hex>      a pack's bytes
    refs/<name...>/.ref a ref: exactly its 65-byte wire form

CAS: ``MISSING`` is a PUT with ``If-None-Match: *``. ``match(h)`` GETs the ref's
body and ETag, compares the body with ``h`` and PUTs with ``If-Match: <that ETag>``:
the server decides atomically, and nothing assumes how it computes ETags.

boto3 is imported only here, with its own retries off (one attempt per call): the
core :class:`~mkit_transport.retry.RetryPolicy` is the only retry layer.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self
from urllib.parse import urlsplit

import boto3
import botocore.exceptions as bce
from botocore.config import Config

from ..errors import (
    AccessDenied,
    InsecureScheme,
    InvalidArgument,
    InvalidResponse,
    PackNotFound,
    PayloadTooLarge,
    RefConflict,
    RemoteError,
    ServerError,
    TransportError,
)
from ..hashes import Hash, PackKey
from ..refs import (
    REF_VALUE_SIZE,
    RefWriteCondition,
    decode_ref_value,
    encode_ref_value,
    is_valid_ref_name,
)
from ..retry import RetryPolicy
from ..transport import CHUNK_SIZE, PACK_BODY_LIMIT, PackInfo, Transport
from ..urls import (
    is_loopback_host,
    is_valid_remote_path,
    pop_bool,
    pop_int,
    pop_retry,
    pop_seconds,
    redact_url,
    reject_options,
    split_url,
)
from ._s3_errors import mapped as _mapped
from ._s3_multipart import DEFAULT_PART_SIZE, MIN_PART_SIZE, MultipartUploads
from ._s3_streaming import StreamSigner, put_streamed

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import PutObjectRequestTypeDef

__all__ = ["DEFAULT_UPLOAD_CUTOFF", "MIN_PART_SIZE", "REF_SUFFIX", "ProbeResult", "S3Transport"]

#: A ref's object key is its name plus this (see :meth:`S3Transport.ref_key`).
REF_SUFFIX: Final = "/.ref"
#: A ``match`` write re-reads and retries when the ETag moved but the value did not
#: (an A->B->A change, or a server whose ETags are not content hashes); this bounds it.
MATCH_ROUNDS: Final = 4
_MD5_BELOW: Final = 4096  # bodies up to this size carry Content-MD5 (see _put)
#: Streamed packs over ``part_size`` and up to this size go in one signed PUT to a
#: plain-http (loopback) endpoint (``upload_cutoff``, SPEC-S3 S3-32): every pack a
#: push makes at its default size, and four times that.
DEFAULT_UPLOAD_CUTOFF: Final = 256 << 20
#: S3's largest single PUT.
MAX_UPLOAD_CUTOFF: Final = 5 << 30
#: Default number of ref GETs a listing runs at once (``list_workers``).
LIST_WORKERS: Final = 16
#: Ref values a client remembers by ETag, at most (see _RefBodies).
REF_CACHE_LIMIT: Final = 100_000
_MAX_PREFIX: Final = 500  # keeps prefix + "/" + a 512-byte ref name under S3's 1024
_BUCKET_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")

_EMPTY_PACK: Final = PackKey.of(b"")
_PACK_NAME_RE: Final = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE_RE: Final = re.compile(r"bytes (\d{1,19})-(\d{1,19})/(\d{1,19})")

#: Probe verdicts per (endpoint, bucket), for this process: probing once is enough.
_probed: dict[tuple[str, str], ProbeResult] = {}
_probe_lock = threading.Lock()


@dataclass(frozen=True)
class ProbeResult:
    """Whether an endpoint really honours conditional PUTs."""

    if_none_match: bool
    if_match: bool
    detail: str
    #: Whether ``DeleteObject`` honours ``If-Match`` (a ``match`` delete_ref needs it).
    delete_if_match: bool = True

    @property
    def ok(self) -> bool:
        """Say whether both conditions are honoured, so CAS is safe here."""
        return self.if_none_match and self.if_match


def _upload_cutoff(endpoint: str, asked: int | None) -> int:
    """``upload_cutoff`` for ``endpoint``: a streamed single PUT goes only to plain http.

    Over TLS botocore's own connection (its CA bundle, proxies) carries every request,
    and streamed packs over ``part_size`` go by multipart, whose parallel parts are
    what a remote link needs; asking for a cutoff there is refused, not ignored.
    """
    plain = endpoint.startswith("http://")
    if asked is None:
        return DEFAULT_UPLOAD_CUTOFF if plain else 0
    if not 0 <= asked <= MAX_UPLOAD_CUTOFF:
        raise InvalidArgument(f"upload_cutoff must be between 0 and {MAX_UPLOAD_CUTOFF} bytes")
    if asked and not plain:
        raise InvalidArgument(
            "upload_cutoff applies to mkit+s3+http:// (loopback) only: over TLS, streamed"
            " packs over part_size go by multipart upload"
        )
    return asked


def _parse_location(url: str, path: str) -> tuple[str, str]:
    """Split ``/bucket[/prefix]`` and check both (contract: no empty, ``.``, ``..``)."""
    bucket, _, prefix = path.removeprefix("/").partition("/")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise InvalidArgument(
            f"{redact_url(url)!r}: expected mkit+s3://host[:port]/bucket[/prefix],"
            f" bucket {bucket!r}"
        )
    if prefix:
        # "/bucket//x" leaves "/x": a prefix is a relative store path.
        if prefix.startswith("/") or not is_valid_remote_path(prefix) or len(prefix) > _MAX_PREFIX:
            raise InvalidArgument(
                f"{redact_url(url)!r}: the prefix must be segments of [A-Za-z0-9._-] joined"
                " by '/', "
                f"none '.' or '..', no empty segment, at most {_MAX_PREFIX} characters"
            )
    return bucket, prefix


class _RefBodies:
    """Ref values by ETag, kept only where the ETag is the MD5 of the 65-byte body.

    A listing names every ref's ETag; reading a value costs a GET per ref, which
    bounds a listing of thousands of refs by round trips and per-request CPU (on
    both ends) however many threads send them. A value is kept only when the ETag
    that came with it is the quoted MD5 of the exact 65-byte body (S3's ETag of a
    plain PUT; a server whose ETags are not content hashes keeps nothing here, and
    every ref is read). Such an ETag names those bytes under any key: a different
    65-byte wire form with the same MD5 would take a deliberate collision whose
    blocks are all lowercase hex, and what a server answers is trusted as much as
    the GET it replaces. So the map is keyed by the ETag alone, never goes stale
    (a ref that moves gets a new ETag; the old one still names the old bytes), and
    refs holding one value (branches at one tip, one snapshot under many names)
    cost one GET between them.

    Bounded (``limit`` ETags, oldest dropped first) and thread-safe.
    """

    def __init__(self, limit: int = REF_CACHE_LIMIT) -> None:
        self.limit = limit
        self._known: dict[str, Hash] = {}
        self._lock = threading.Lock()

    def remember(self, etag: str, body: bytes, value: Hash) -> None:
        """Keep ``value`` under ``etag`` if ``etag`` is the quoted MD5 of ``body``."""
        if etag != f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"':
            return
        with self._lock:
            self._known.pop(etag, None)
            while len(self._known) >= self.limit:
                del self._known[next(iter(self._known))]
            self._known[etag] = value

    def recall(self, etag: str) -> Hash | None:
        """The value whose body has exactly ``etag`` as its MD5, or ``None``."""
        return self._known.get(etag)


class S3Transport(MultipartUploads, Transport):
    """A transport over one bucket (and key prefix) of an S3-compatible server."""

    schemes: ClassVar[tuple[str, ...]] = ("mkit+s3", "mkit+s3+http")

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        prefix: str = "",
        *,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        probe: bool = True,
        part_size: int = DEFAULT_PART_SIZE,
        upload_workers: int | None = None,
        upload_cutoff: int | None = None,
        list_workers: int = LIST_WORKERS,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(retry=retry)
        if part_size < MIN_PART_SIZE:
            raise InvalidArgument(f"part_size must be at least {MIN_PART_SIZE} bytes")
        if list_workers < 1:
            raise InvalidArgument("list_workers must be at least 1")
        if upload_workers is not None and upload_workers < 1:
            raise InvalidArgument("upload_workers must be at least 1")
        if (access_key_id is None) != (secret_access_key is None):
            raise InvalidArgument("give both access_key_id and secret_access_key, or neither")
        self.upload_cutoff = _upload_cutoff(endpoint, upload_cutoff)
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix
        self.probe_before_cas = probe
        self.part_size = part_size
        self.upload_workers = upload_workers
        self.list_workers = list_workers
        self._ref_bodies = _RefBodies()
        self._timeouts = (connect_timeout, read_timeout)
        self._keys = (access_key_id, secret_access_key, session_token)
        aws = (urlsplit(endpoint).hostname or "").endswith(".amazonaws.com")
        config = Config(
            retries={"mode": "standard", "total_max_attempts": 1},  # tenacity owns retries
            # Custom endpoints: only the checksums an operation requires, which every
            # S3 server accepts (and which do not cost 40 % of PUT throughput).
            request_checksum_calculation="when_supported" if aws else "when_required",
            response_checksum_validation="when_supported" if aws else "when_required",
            s3={"addressing_style": "virtual" if aws else "path"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # One connection per listing or part worker, and some for other threads.
            max_pool_connections=max(10, list_workers, self._upload_depth(part_size)) + 2,
        )
        with _mapped(f"open {endpoint}"):
            session = boto3.session.Session(profile_name=profile)
            self._session = session
            self.client: S3Client = session.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                aws_session_token=session_token,
                region_name=region or session.region_name or "us-east-1",
                config=config,
            )

    @classmethod
    def from_url(cls, url: str, **options: object) -> Self:
        """Open ``mkit+s3://host[:port]/bucket[/prefix]`` (TLS) or ``mkit+s3+http://`` (loopback).

        Options (URL query or keywords): ``access_key_id``, ``secret_access_key``
        (keyword or environment only, never the URL), ``session_token``, ``region``,
        ``profile``, ``probe`` (default true), ``part_size``, ``upload_workers``,
        ``upload_cutoff``, ``list_workers``,
        ``connect_timeout``, ``read_timeout``, ``retries``/``retry``. Without keys,
        boto3's standard chain applies (``AWS_ACCESS_KEY_ID``, profiles, roles...).
        """
        parts = split_url(url, options, secrets=("secret_access_key", "session_token"))
        scheme = parts.scheme
        if scheme not in cls.schemes:
            raise InvalidArgument(
                f"{redact_url(url)!r}: not an S3 URL (use mkit+s3:// or mkit+s3+http://)"
            )
        if "@" in parts.netloc:
            raise InvalidArgument(
                f"{redact_url(url)!r}: credentials in the URL are refused; use options"
            )
        try:
            host, port = parts.hostname, parts.port
        except ValueError as error:
            raise InvalidArgument(f"{redact_url(url)!r}: {error}") from error
        if not host:
            raise InvalidArgument(f"{redact_url(url)!r}: no host")
        if scheme == "mkit+s3+http" and not is_loopback_host(host):
            raise InsecureScheme(
                f"{redact_url(url)!r}: plain http is only allowed to a loopback host"
            )
        bucket, prefix = _parse_location(url, parts.path)
        shown = f"[{host}]" if ":" in host else host
        endpoint = f"{'http' if scheme == 'mkit+s3+http' else 'https'}://{shown}"
        endpoint += f":{port}" if port else ""
        kwargs: dict[str, Any] = {
            "retry": pop_retry(options),
            "probe": pop_bool(options, "probe", True),
        }
        for name in ("access_key_id", "secret_access_key", "session_token", "region", "profile"):
            if name in options:
                kwargs[name] = str(options.pop(name))
        for name in ("part_size", "upload_workers", "upload_cutoff", "list_workers"):
            number = pop_int(options, name)
            if number is not None:
                kwargs[name] = number
        for name in ("connect_timeout", "read_timeout"):
            seconds = pop_seconds(options, name, None)
            if seconds is not None:
                kwargs[name] = seconds
        reject_options(url, options)
        return cls(endpoint, bucket, prefix, **kwargs)

    def __repr__(self) -> str:
        where = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        return f"S3Transport({self.endpoint!r}, {where!r})"

    def _key(self, tail: str) -> str:
        return f"{self.prefix}/{tail}" if self.prefix else tail

    def pack_key(self, key: PackKey) -> str:
        """The object key of a pack."""
        return self._key(f"packs/{key.hex()}")

    def ref_key(self, name: str) -> str:
        """The object key of a ref (``name`` already validated): ``<name>/.ref``.

        Never the bare name: on file-system backed servers an object cannot also be
        a "directory", and ``refs/a`` and ``refs/a/b`` must coexist (SeaweedFS refused
        ``If-None-Match`` on ``refs/a`` once ``refs/a/b`` existed). No segment starts
        with ``.``, so ``.ref`` never collides with a ref or one of its parents.
        """
        return self._key(name + REF_SUFFIX)

    def _put(
        self,
        object_key: str,
        body: bytes | bytearray,
        what: str,
        *,
        if_match: str = "",
        if_none_match: str = "",
    ) -> str:
        """PUT one object, optionally conditional; return its new ETag.

        Small bodies (refs, the probe) carry Content-MD5: SeaweedFS 4.48 was seen
        storing an EMPTY object when a connection broke after ``100 Continue``,
        which would leave a ref unreadable; with the digest it refuses the upload.
        """
        request: PutObjectRequestTypeDef = {
            "Bucket": self.bucket,
            "Key": object_key,
            "Body": body,  # type: ignore[typeddict-item]  # botocore sends a bytearray as is
        }
        if len(body) <= _MD5_BELOW:
            digest = hashlib.md5(body, usedforsecurity=False).digest()
            request["ContentMD5"] = base64.b64encode(digest).decode()
        if if_none_match:
            request["IfNoneMatch"] = if_none_match
        if if_match:
            request["IfMatch"] = if_match
        with _mapped(what):
            return str(self.client.put_object(**request).get("ETag", ""))

    # -- packs -----------------------------------------------------------------------

    def _put_pack(self, key: PackKey, data: bytes | bytearray) -> None:
        # A plain PUT: the same bytes under the same name, so repeating it is harmless
        # and it heals a damaged copy.
        self._put(self.pack_key(key), data, f"upload pack {key.hex()}")

    def _stored_size(self, object_key: str) -> int | None:
        try:
            with _mapped(f"head {object_key}"):
                head = self.client.head_object(Bucket=self.bucket, Key=object_key)
        except PackNotFound:
            return None
        return int(head["ContentLength"])

    def _put_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        if self._stored_size(self.pack_key(key)) == total:
            return  # already stored; the base still checks the stream
        self._write_pack(key, chunks, total)

    def _repair_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        # Checking the stored copy would cost a download as large as the upload: the
        # upload itself replaces the object atomically (PUT, or a completed multipart).
        self._write_pack(key, chunks, total)

    def _write_pack(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        if total <= self.part_size:
            # Filled in place: ``b"".join`` would hold every chunk and the joined copy
            # at once (twice the pack). The core checks the length as it streams.
            whole, at = bytearray(total), 0
            for chunk in chunks:
                whole[at : at + len(chunk)] = chunk
                at += len(chunk)
            self._put_pack(key, whole)
        elif total <= self.upload_cutoff:
            self._put_streamed(key, chunks, total)
        else:
            self._multipart(key, chunks, total)

    def _put_streamed(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        # One request, signed frame by frame: nothing is held and nothing is left
        # behind by a failure (S3-32). The core retries it whole when the stream can
        # be read again, and checks the stored copy's size before sending it again.
        what = f"upload pack {key.hex()}"
        access, secret, token = self._keys
        if access is None or secret is None:
            with _mapped(what):
                found = self._session.get_credentials()
                if found is None:
                    raise bce.NoCredentialsError()
                frozen = found.get_frozen_credentials()
            access, secret, token = frozen.access_key, frozen.secret_key, frozen.token
        assert access is not None and secret is not None  # botocore's credentials have both
        signer = StreamSigner(access, secret, self.client.meta.region_name, datetime.now(UTC))
        path = f"/{self.bucket}/{self.pack_key(key)}"
        put_streamed(
            self.endpoint, path, chunks, total, signer,
            token=token, timeouts=self._timeouts, what=what,
        )  # fmt: skip

    def _get_object(self, object_key: str, what: str, offset: int = 0) -> dict[str, Any]:
        with _mapped(what):
            if offset:
                got = self.client.get_object(
                    Bucket=self.bucket, Key=object_key, Range=f"bytes={offset}-"
                )
            else:
                got = self.client.get_object(Bucket=self.bucket, Key=object_key)
            reply: dict[str, Any] = dict(got)
        if int(reply.get("ContentLength", 0)) > PACK_BODY_LIMIT:
            reply["Body"].close()
            raise PayloadTooLarge(f"{what}: object over the limit", size=reply["ContentLength"])
        return reply

    def _get_pack(self, key: PackKey) -> bytes:
        what = f"download pack {key.hex()}"
        reply = self._get_object(self.pack_key(key), what)
        with _mapped(what), contextlib.closing(reply["Body"]) as body:
            return bytes(body.read())

    def _open_pack_stream(self, key: PackKey, offset: int) -> Iterator[bytes]:
        what = f"download pack {key.hex()}"
        try:
            reply = self._get_object(self.pack_key(key), what, offset)
        except ServerError as error:
            if offset and error.status == 416:  # resuming exactly at the end
                return iter(())
            raise

        def chunks() -> Iterator[bytes]:
            with _mapped(what), contextlib.closing(reply["Body"]) as body:
                yield from body.iter_chunks(CHUNK_SIZE)

        return chunks()

    def _get_pack_range(self, key: PackKey, offset: int, length: int) -> bytes:
        # S3 answers a range that starts inside the object but ends past it with the
        # bytes that exist (206, ContentRange naming the size), and one starting at or
        # past the end with 416 InvalidRange: both are a range past the end here.
        what = f"download pack {key.hex()} bytes {offset}+{length}"
        last = offset + length - 1
        try:
            with _mapped(what):
                reply = self.client.get_object(
                    Bucket=self.bucket, Key=self.pack_key(key), Range=f"bytes={offset}-{last}"
                )
        except ServerError as error:
            if error.status != 416:
                raise
            raise self._range_past_end(key, offset, length, self._pack_size(key)) from error
        with _mapped(what), contextlib.closing(reply["Body"]) as body:
            answered = _CONTENT_RANGE_RE.fullmatch(str(reply.get("ContentRange", "")))
            if answered is None or int(answered.group(1)) != offset:
                raise InvalidResponse(
                    f"{what}: answered another range {reply.get('ContentRange')!r}"
                )
            if int(answered.group(2)) != last:
                raise self._range_past_end(key, offset, length, int(answered.group(3)))
            return bytes(body.read(length + 1))

    def _has_pack(self, key: PackKey) -> bool:
        # An empty object under a non-empty pack's key is a torn upload (moto stores
        # one when a request is cut inside its headers): not a pack.
        size = self._stored_size(self.pack_key(key))
        return size is not None and (size > 0 or key == _EMPTY_PACK)

    def _pack_size(self, key: PackKey) -> int:
        size = self._stored_size(self.pack_key(key))
        if size is None or (size == 0 and key != _EMPTY_PACK):  # see _has_pack
            raise PackNotFound(f"no pack {key.hex()}")
        return size

    def _list_packs(self, after: PackKey | None, limit: int) -> list[PackInfo]:
        """One ``ListObjectsV2`` page (or a few, past foreign keys) under ``packs/``.

        ``StartAfter`` is the cursor; only ``packs/<64 hex>`` objects are packs, and
        an empty object under a non-empty pack's key (a torn upload) is left out.
        Incomplete multipart uploads are not objects, so they are never listed.
        """
        head = self._key("packs/")
        found: list[PackInfo] = []
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": head, "MaxKeys": limit}
        if after is not None:
            request["StartAfter"] = head + after.hex()
        with _mapped("list packs"):
            while len(found) < limit:
                page = self.client.list_objects_v2(**request)
                for item in page.get("Contents", []):
                    name = item["Key"][len(head) :]
                    if not _PACK_NAME_RE.fullmatch(name):
                        continue
                    key, size = PackKey.from_hex(name), int(item.get("Size", 0))
                    if size == 0 and key != _EMPTY_PACK:
                        continue
                    found.append(PackInfo(key, size, item["LastModified"].timestamp()))
                    if len(found) == limit:
                        break
                if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
                    break
                request["ContinuationToken"] = page["NextContinuationToken"]
        return found

    def _sweep_debris(self, older_than: float) -> int:
        """Abort multipart uploads under ``packs/`` begun more than ``older_than`` ago."""
        cutoff = time.time() - older_than
        aborted = 0
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._key("packs/")}
        with _mapped("list multipart uploads"):
            while True:
                page = self.client.list_multipart_uploads(**request)
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() < cutoff:
                        self._abort(upload["Key"], upload["UploadId"])
                        aborted += 1
                if not page.get("IsTruncated"):
                    return aborted
                request["KeyMarker"] = page.get("NextKeyMarker", "")
                request["UploadIdMarker"] = page.get("NextUploadIdMarker", "")

    def _delete_pack(self, key: PackKey) -> None:
        try:
            with _mapped(f"delete pack {key.hex()}"):
                self.client.delete_object(Bucket=self.bucket, Key=self.pack_key(key))
        except PackNotFound:
            return

    # -- the store -------------------------------------------------------------------

    def _init_store(self) -> bool:
        """Create the bucket if there is none; a prefix needs nothing (keys make it).

        ``HeadBucket`` first, so an existing bucket is only looked at (403 there is
        ``AccessDenied``: it exists but is not ours to use). A bucket created by
        someone else meanwhile is ``BucketAlreadyOwnedByYou`` (ours: already
        there) or ``BucketAlreadyExists`` (another account's: ``AccessDenied``).
        """
        try:
            with _mapped(f"look for bucket {self.bucket}"):
                self.client.head_bucket(Bucket=self.bucket)
            return False
        except PackNotFound:  # HeadBucket's bare 404: no such bucket
            pass
        region = self.client.meta.region_name
        what = f"create bucket {self.bucket}"
        with _mapped(what):
            try:
                if region and region != "us-east-1":  # us-east-1 refuses a constraint
                    self.client.create_bucket(
                        Bucket=self.bucket,
                        CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
                    )
                else:
                    self.client.create_bucket(Bucket=self.bucket)
            except bce.ClientError as error:
                code = error.response.get("Error", {}).get("Code")
                if code == "BucketAlreadyOwnedByYou":
                    return False
                if code == "BucketAlreadyExists":
                    raise AccessDenied(f"{what}: the name is taken by another account") from error
                raise
        return True

    # -- refs ------------------------------------------------------------------------

    def _get_ref(self, name: str) -> tuple[Hash, str] | None:
        """The ref's value and ETag, or ``None``; a body that is not 65 bytes is refused."""
        what = f"read ref {name}"
        try:
            reply = self._get_object(self.ref_key(name), what)
        except PackNotFound:
            return None
        with _mapped(what), contextlib.closing(reply["Body"]) as body:
            data = bytes(body.read(REF_VALUE_SIZE + 1))
        value, etag = decode_ref_value(data, remote=True, name=name), str(reply["ETag"])
        self._ref_bodies.remember(etag, data, value)
        return value, etag

    def _read_ref(self, name: str) -> Hash | None:
        found = self._get_ref(name)
        return None if found is None else found[0]

    def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        object_key, body, what = self.ref_key(name), encode_ref_value(value), f"write ref {name}"
        if condition.kind == "any":
            self._ref_bodies.remember(self._put(object_key, body, what), body, value)
            return
        self._require_probe()
        if condition.kind == "missing":
            try:
                etag = self._put(object_key, body, what, if_none_match="*")
                self._ref_bodies.remember(etag, body, value)
                return
            except RefConflict as refused:
                # Say what the ref holds, read after the refusal; if it was deleted
                # again meanwhile, the refusal itself is the answer.
                condition.require(name, self._read_ref(name))
                raise refused
        for _ in range(MATCH_ROUNDS):
            found = self._get_ref(name)
            condition.require(name, None if found is None else found[0])
            assert found is not None  # match() never allows a missing ref
            try:
                etag = self._put(object_key, body, what, if_match=found[1])
                self._ref_bodies.remember(etag, body, value)
                return
            except (RefConflict, PackNotFound):
                continue  # changed (or deleted) since our read: the next read decides
        raise RefConflict(f"ref {name} kept changing while match() tried to write it", name=name)

    def _delete_ref(self, name: str, condition: RefWriteCondition) -> None:
        """Delete a ref: ``ANY`` is a plain ``DeleteObject``; ``match(h)`` a conditional one.

        ``match(h)`` reads body and ETag, compares the body with ``h``, then sends
        ``DeleteObject`` with ``If-Match: <that ETag>`` so the server decides, in
        the same rounds as a ``match`` write.
        """
        object_key, what = self.ref_key(name), f"delete ref {name}"
        if condition.kind == "any":
            try:
                with _mapped(what):
                    self.client.delete_object(Bucket=self.bucket, Key=object_key)
            except PackNotFound:
                pass
            return
        self._require_probe(delete=True)
        for _ in range(MATCH_ROUNDS):
            found = self._get_ref(name)
            condition.require(name, None if found is None else found[0])
            assert found is not None  # match() never allows a missing ref
            try:
                with _mapped(what):
                    self.client.delete_object(Bucket=self.bucket, Key=object_key, IfMatch=found[1])
                return
            except (RefConflict, PackNotFound):
                continue  # changed (or deleted) since our read: the next read decides
        raise RefConflict(f"ref {name} kept changing while match() tried to delete it", name=name)

    def _list_refs(self, prefix: str) -> Iterable[tuple[str, Hash]]:
        """List with ``ListObjectsV2``; read a ref's value only when no ETag names it.

        Only under ``refs/``: the S3 prefix ends with "/" so it is a component
        boundary, and pack keys are never listed or fetched. A listed ETag this
        client has seen as the MD5 of a ref body (:class:`_RefBodies`) names that
        body: no GET. Of the other refs, one per distinct listed ETag is read first
        (``list_workers`` GETs at once: each waits on a round trip); a read whose
        ETag is the listed one then names the value of every ref listed with it.
        What is still unnamed (the ref changed since the listing, or the server's
        ETags are not MD5s) is read ref by ref.
        """
        head = self._key("")
        listed: list[tuple[str, str]] = []
        with _mapped(f"list refs under {prefix or 'refs'}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key((prefix or "refs") + "/")
            )
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"][len(head) : -len(REF_SUFFIX)]
                    if not item["Key"].endswith(REF_SUFFIX) or not is_valid_ref_name(name):
                        continue  # a foreign object (e.g. a console's folder marker)
                    if item.get("Size") != REF_VALUE_SIZE:
                        raise InvalidResponse(f"ref {name} is {item.get('Size')} bytes, not 65")
                    listed.append((name, str(item.get("ETag", ""))))
        # Values are taken as they are named, not looked up again at the end: the
        # bounded map may drop an ETag meanwhile (a listing of more than its limit).
        values: dict[str, Hash | None] = {}
        unknown: list[tuple[str, str]] = []
        for name, etag in listed:
            known = self._ref_bodies.recall(etag)
            if known is None:
                unknown.append((name, etag))
            else:
                values[name] = known
        if unknown:
            first = {etag: name for name, etag in reversed(unknown)}
            values.update(self._read_refs(list(first.values())))
            rest = []
            for name, etag in unknown:
                if name not in values:
                    known = self._ref_bodies.recall(etag)
                    if known is None:
                        rest.append(name)
                    else:
                        values[name] = known
            values.update(self._read_refs(rest))
        # A ref deleted between the listing and its GET is left out.
        return [(name, value) for name, _ in listed if (value := values[name]) is not None]

    def _read_refs(self, names: list[str]) -> dict[str, Hash | None]:
        """Read ``names`` ``list_workers`` at once (``None``: deleted since the listing)."""
        if not names:
            return {}
        with ThreadPoolExecutor(min(self.list_workers, len(names))) as pool:
            return dict(zip(names, pool.map(self._read_ref, names), strict=True))

    # -- probe -----------------------------------------------------------------------

    def probe(self) -> ProbeResult:
        """Check that the endpoint honours ``If-None-Match`` and ``If-Match`` on PUT.

        Writes, overwrites and deletes one small object under ``[prefix/]mkit-probe/``
        (never under ``refs/`` or ``packs/``): eight requests (nine if ``If-None-Match``
        is ignored).
        """
        object_key = self._key(f"mkit-probe/{uuid.uuid4().hex}")
        what = f"probe {object_key}"
        try:  # the first PUT too: a lost acknowledgement may have stored it
            etag = self._put(object_key, b"first", what, if_none_match="*")
            verdict = self._probe_steps(object_key, what, etag)
        except BaseException as failure:
            try:
                self._probe_cleanup(object_key)
            except TransportError as error:
                failure.add_note(str(error))  # the probe's own failure says more
            raise
        self._probe_cleanup(object_key)
        return verdict

    def _probe_steps(self, object_key: str, what: str, etag: str) -> ProbeResult:
        """The probe's conditional writes on its scratch object (which exists)."""
        notes = []

        def refused(**condition: str) -> bool:
            try:
                self._put(object_key, b"overwritten", what, **condition)
            except (RefConflict, PackNotFound):
                return True
            return False

        none_match = refused(if_none_match="*")
        if not none_match:
            notes.append("If-None-Match: * on an existing key was ignored")
            etag = self._put(object_key, b"first", what)
        match = refused(if_match='"0"' if etag != '"0"' else '"1"')
        if not match:
            notes.append("If-Match with a stale ETag was ignored")
        else:
            self._put(object_key, b"second", what, if_match=etag)
            reply = self._get_object(object_key, what)
            with _mapped(what), contextlib.closing(reply["Body"]) as body:
                if body.read() != b"second":
                    match = False
                    notes.append("If-Match with the current ETag did not write")
        delete_match = self._probe_delete(object_key, what)
        if not delete_match:
            notes.append("DeleteObject with a stale If-Match deleted")
        detail = "; ".join(notes) or "conditional writes honoured"
        return ProbeResult(none_match, match, detail, delete_if_match=delete_match)

    def _probe_cleanup(self, object_key: str) -> None:
        """Delete the probe's scratch object, retried; a failure is raised, never swallowed.

        Deleting is idempotent (an absent key is gone already), so the retry policy
        applies; a leftover object would otherwise pile up with every probe.
        """
        what = f"probe cleanup: {object_key} may be left behind"

        def delete() -> None:
            with _mapped(what):
                self.client.delete_object(Bucket=self.bucket, Key=object_key)

        with contextlib.suppress(PackNotFound):
            self._call(delete)

    def _probe_delete(self, object_key: str, what: str) -> bool:
        """Say whether a ``DeleteObject`` with a stale ``If-Match`` is refused."""
        try:
            with _mapped(what):
                self.client.delete_object(Bucket=self.bucket, Key=object_key, IfMatch='"0"')
        except (RefConflict, PackNotFound):
            return self._stored_size(object_key) is not None
        return False

    def _require_probe(self, *, delete: bool = False) -> None:
        """Refuse conditional writes on an endpoint that failed the probe (once per process).

        ``delete``: a conditional delete, which also needs ``If-Match`` on ``DeleteObject``.
        """
        if not self.probe_before_cas:
            return
        place = (self.endpoint, self.bucket)
        with _probe_lock:
            verdict = _probed.get(place)
            if verdict is None:
                verdict = _probed[place] = self.probe()
        if delete and not verdict.delete_if_match:
            raise RemoteError(
                f"{self.endpoint} ignores If-Match on DeleteObject ({verdict.detail}): "
                "a match delete_ref is refused; see spec/SPEC-S3.md about the probe"
            )
        if not verdict.ok:
            raise RemoteError(
                f"{self.endpoint} ignores conditional writes ({verdict.detail}): CAS refused; "
                "check the gateway, or see spec/SPEC-S3.md about the probe"
            )

    def close(self) -> None:
        """Close the client's connection pool."""
        self.client.close()
