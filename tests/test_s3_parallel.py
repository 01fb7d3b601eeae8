"""S3 at the speed of its wire: concurrent multipart parts, bounded; listings that skip GETs.

Against real moto and SeaweedFS. Concurrency is shown without timing: an
instrumented client holds each call until the expected number are in flight at
once (a bounded wait that, on a sequential client, ends with the count short), and
counts the calls it forwards to the server. Memory is measured in a child process.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from mkit_transport import (
    AccessDenied,
    ConnectionFailed,
    Hash,
    InvalidArgument,
    InvalidResponse,
    PackKey,
    RefWriteCondition,
    RetryPolicy,
    open_transport,
)
from mkit_transport.transports._s3_multipart import DEFAULT_PART_SIZE, UPLOAD_BUFFER_BUDGET
from mkit_transport.transports.s3 import MIN_PART_SIZE, S3Transport, _RefBodies
from tests.support.faultproxy import FaultProxy
from tests.support.s3_fixtures import S3Store

MIB = 1 << 20
PART = MIN_PART_SIZE
#: How long an instrumented call waits for its peers; reached at once when the code
#: under test is concurrent, so it only bounds how long a failing run takes.
HOLD = 60.0
REPO = Path(__file__).resolve().parents[1]
#: What one transfer may hold (issue 17, SPEC-S3 S3-28): the part buffers and the rest.
TRANSFER_BOUND = 64 * MIB


def _open(store: S3Store, **options: object) -> S3Transport:
    transport = open_transport(store.url, probe="false", **store.options, **options)
    assert isinstance(transport, S3Transport)
    return transport


def _pack(size: int, label: bytes) -> tuple[bytes, PackKey]:
    block = Hash.of(label + size.to_bytes(8, "big")).hex().encode()
    data = (block * (size // len(block) + 1))[:size]
    return data, PackKey.of(data)


class Gate:
    """Counts calls in flight; holds each until ``want`` are in flight (or HOLD passes).

    Once ``want`` were in flight together, or a wait timed out (a sequential
    caller), nobody is held any more: a failing run ends after one HOLD.
    """

    def __init__(self, want: int) -> None:
        self.want = want
        self.active = 0
        self.peak = 0
        self.calls = 0
        self.open = False
        self.cond = threading.Condition()

    def around(self, real: Any) -> Any:
        def call(**request: Any) -> Any:
            with self.cond:
                self.calls += 1
                self.active += 1
                self.peak = max(self.peak, self.active)
                if self.active >= self.want:
                    self.open = True
                    self.cond.notify_all()
                elif not self.cond.wait_for(lambda: self.open, HOLD):
                    self.open = True  # sequential: stop holding anyone
                    self.cond.notify_all()
            try:
                return real(**request)
            finally:
                with self.cond:
                    self.active -= 1

        return call


class CountingChunks:
    """A one-shot stream of 1 MiB chunks that records how far it has been read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        for at in range(0, len(self.data), MIB):
            self.read = at + len(self.data[at : at + MIB])
            yield self.data[at : at + MIB]


# -- uploads ---------------------------------------------------------------------------


def test_parts_are_in_flight_at_once_and_the_stream_waits_for_a_free_buffer(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3-27: ``upload_workers`` parts go at once, never more; the stream waits.

    Seven 5 MiB parts through three buffers: the first three are held until all
    three are in flight (the old uploader sent one at a time, so it never got
    there). While they are held, the stream cannot have been read past the three
    buffers (plus the chunk being copied).
    """
    data, key = _pack(7 * PART - MIB, b"parallel parts")
    chunks = CountingChunks(data)
    with _open(s3_store, part_size=str(PART), upload_workers="3", upload_cutoff="0") as s3:
        gate = Gate(3)
        read_when_full: list[int] = []
        held = gate.around(s3.client.upload_part)

        def upload_part(**request: Any) -> Any:
            with gate.cond:
                if not gate.open and gate.active + 1 >= gate.want:
                    read_when_full.append(chunks.read)  # three held, none finished
            return held(**request)

        monkeypatch.setattr(s3.client, "upload_part", upload_part)
        s3.upload_pack_stream(key, iter(chunks), len(data))
        assert gate.peak == 3, "three parts in flight at once, never a fourth"
        assert gate.calls == 7
        assert read_when_full == [3 * PART], "the stream waits for a free buffer"
        assert s3.download_pack(key) == data


def test_the_default_depth_fills_the_budget() -> None:
    """S3-27: by default ``UPLOAD_BUFFER_BUDGET // part_size`` buffers, at least two."""
    s3 = S3Transport("http://127.0.0.1:9", "bucket", probe=False)
    assert s3._upload_depth(DEFAULT_PART_SIZE) == UPLOAD_BUFFER_BUDGET // DEFAULT_PART_SIZE
    assert s3._upload_depth(PART) == UPLOAD_BUFFER_BUDGET // PART
    assert s3._upload_depth(UPLOAD_BUFFER_BUDGET) == 2
    assert S3Transport("http://127.0.0.1:9", "b", upload_workers=5)._upload_depth(PART) == 5


@pytest.mark.parametrize("bad", ["0", "-1", "many"])
def test_upload_workers_must_be_a_positive_count(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        open_transport(f"mkit+s3+http://127.0.0.1:9/bucket?upload_workers={bad}")


def test_a_failed_part_among_parts_in_flight_aborts_the_upload(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3-29: one part refused while others are in flight: no object, no upload left."""
    data, key = _pack(6 * PART, b"one part refused")
    with _open(s3_store, part_size=str(PART), upload_workers="3", upload_cutoff="0") as s3:
        real = s3.client.upload_part
        sent: list[int] = []

        def upload_part(**request: Any) -> Any:
            sent.append(int(request["PartNumber"]))
            if request["PartNumber"] == 2:
                refusal = {"Error": {"Code": "AccessDenied", "Message": "no"}}
                raise ClientError(refusal, "UploadPart")  # type: ignore[arg-type]
            return real(**request)

        monkeypatch.setattr(s3.client, "upload_part", upload_part)
        with pytest.raises(AccessDenied):
            s3.upload_pack_stream(key, CountingChunks(data), len(data))
        assert s3.pack_exists(key) is False
        assert 2 in sent
    raw = s3_store.server.client()
    listed = raw.list_multipart_uploads(Bucket=s3_store.bucket, Prefix=s3_store.prefix + "/")
    assert listed.get("Uploads", []) == [], "the multipart upload was aborted"


_CHILD = """
import json, sys
from mkit_transport import Hash, PackKey, open_transport
from mkit_transport.hashes import Hasher

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmHWM")

url, access, secret, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
options = json.loads(sys.argv[5])
block = bytes(range(256)) * 4096  # 1 MiB

def chunks():
    for n in range(size // len(block)):
        yield n.to_bytes(8, "big") + block[8:]

hasher = Hasher()
for chunk in chunks():
    hasher.update(chunk)
key = hasher.pack_key()
s3 = open_transport(url, access_key_id=access, secret_access_key=secret, probe="false", **options)
s3.pack_exists(key)  # connect and import everything before measuring
before = hwm()
s3.upload_pack_stream(key, chunks(), size)
print(json.dumps({"growth": hwm() - before, "stored": s3.pack_size(key)}))
"""


@pytest.mark.parametrize("way", ["multipart", "one signed PUT"])
def test_a_streamed_upload_holds_at_most_the_part_budget(s3_store: S3Store, way: str) -> None:
    """S3-28, S3-32: peak RSS growth of a 192 MiB streamed upload stays within 64 MiB (a child).

    Default settings: by multipart (``upload_cutoff=0``), three 16 MiB part buffers in
    flight and the client's overhead; in one signed PUT (the default under 256 MiB
    on plain http), a frame or two.
    """
    size = 192 * MIB
    options = {"upload_cutoff": "0"} if way == "multipart" else {}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, s3_store.url, s3_store.server.access_key,
         s3_store.server.secret_key, str(size), json.dumps(options)],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    result = json.loads(out.stdout)
    assert result["stored"] == size
    assert result["growth"] <= TRANSFER_BOUND, f"grew {result['growth'] / MIB:.1f} MiB"


# -- listings ----------------------------------------------------------------------------


@pytest.fixture
def gets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Wrap a transport's ``get_object`` in a :class:`Gate` (see :func:`_watch`)."""
    yield lambda s3, want: _watch(monkeypatch, s3, want)


def _watch(monkeypatch: pytest.MonkeyPatch, s3: S3Transport, want: int) -> Gate:
    gate = Gate(want)
    monkeypatch.setattr(s3.client, "get_object", gate.around(s3.client.get_object))
    return gate


def test_a_cold_listing_reads_refs_concurrently(s3_store: S3Store, gets: Any) -> None:
    """S3-30: a client that has seen none of the refs GETs them ``list_workers`` at once."""
    values = {f"r{i:02d}": Hash.of(b"%d" % i) for i in range(24)}
    with _open(s3_store) as writer:
        for name, value in values.items():
            writer.write_ref(f"refs/heads/{name}", value)
    with _open(s3_store, list_workers="6") as s3:
        gate = gets(s3, 6)
        listed = {ref.name: ref.hash for ref in s3.list_refs("refs/heads")}
    assert listed == values
    assert gate.calls == 24 and gate.peak == 6


def test_a_listing_reads_only_the_refs_whose_etag_it_has_not_seen(
    s3_store: S3Store, gets: Any
) -> None:
    """S3-31: a ref whose listed ETag is the MD5 of the body this client last saw is not read.

    Written or read by this client: no GET. Changed behind its back: read again,
    and its new value listed. Rewritten with the same bytes: same MD5, no GET.
    Deleted: gone without a GET.
    """
    raw = s3_store.server.client()
    values = {f"r{i:02d}": Hash.of(b"%d" % i) for i in range(20)}
    with _open(s3_store) as s3:
        for name, value in values.items():
            s3.write_ref(f"refs/heads/{name}", value)
        raw.put_object(
            Bucket=s3_store.bucket, Key=s3_store.ref_key("refs/heads/x"),
            Body=Hash.of(b"x").hex().encode() + b"\n",
        )  # fmt: skip
        gate = gets(s3, 1)
        first = {ref.name: ref.hash for ref in s3.list_refs("refs/heads")}
        assert first == {**values, "x": Hash.of(b"x")}
        assert gate.calls == 1, "only the ref another client wrote is read"

        changed, behind = Hash.of(b"changed"), Hash.of(b"behind")
        raw.put_object(
            Bucket=s3_store.bucket, Key=s3_store.ref_key("refs/heads/r03"),
            Body=behind.hex().encode() + b"\n",
        )  # fmt: skip
        raw.put_object(
            Bucket=s3_store.bucket, Key=s3_store.ref_key("refs/heads/r04"),
            Body=values["r04"].hex().encode() + b"\n",
        )  # fmt: skip
        raw.delete_object(Bucket=s3_store.bucket, Key=s3_store.ref_key("refs/heads/r05"))
        s3.update_ref("refs/heads/r06", RefWriteCondition.match(values["r06"]), changed)
        gate = gets(s3, 1)
        second = {ref.name: ref.hash for ref in s3.list_refs("refs/heads")}
        expected = {**first, "r03": behind, "r06": changed}
        del expected["r05"]
        assert second == expected
        assert gate.calls == 1, "only the ref changed behind the client's back is read"


def test_a_damaged_ref_is_refused_even_after_its_value_was_seen(s3_store: S3Store) -> None:
    """S3-17 still holds with S3-31: new bytes have a new ETag, so they are read and checked."""
    raw = s3_store.server.client()
    with _open(s3_store) as s3:
        s3.write_ref("refs/heads/main", Hash.of(b"main"))
        assert len(s3.list_refs("refs/heads")) == 1
        raw.put_object(
            Bucket=s3_store.bucket, Key=s3_store.ref_key("refs/heads/main"), Body=b"z" * 65
        )
        with pytest.raises(InvalidResponse):
            s3.list_refs("refs/heads")


def test_only_an_md5_etag_names_a_value() -> None:
    """S3-31: an ETag that is not the MD5 of the body keeps nothing; the bound holds."""
    value = Hash.of(b"v")
    body = value.hex().encode() + b"\n"
    md5 = f'"{hashlib.md5(body).hexdigest()}"'
    known = _RefBodies(limit=2)
    known.remember('"0123456789abcdef0123456789abcdef"', body, value)
    assert known.recall('"0123456789abcdef0123456789abcdef"') is None
    known.remember(md5, body, value)
    assert known.recall(md5) == value
    assert known.recall(md5.upper()) is None
    others = [Hash.of(b"%d" % i) for i in range(2)]
    for other in others:
        wire = other.hex().encode() + b"\n"
        known.remember(f'"{hashlib.md5(wire).hexdigest()}"', wire, other)
    assert known.recall(md5) is None, "the oldest is dropped past the limit"
    last = others[-1].hex().encode() + b"\n"
    assert known.recall(f'"{hashlib.md5(last).hexdigest()}"') == others[-1]


def test_a_fresh_listing_reads_one_ref_per_value(s3_store: S3Store, gets: Any) -> None:
    """S3-31: refs listed with one ETag share the value one GET read (MD5 ETags)."""
    values = {f"r{i:02d}": Hash.of(b"%d" % (i % 3)) for i in range(18)}
    with _open(s3_store) as writer:
        for name, value in values.items():
            writer.write_ref(f"refs/heads/{name}", value)
    with _open(s3_store) as s3:
        gate = gets(s3, 1)
        listed = {
            ref.name.removeprefix("refs/heads/"): ref.hash for ref in s3.list_refs("refs/heads")
        }
    assert listed == values
    assert gate.calls == 3, "one GET per distinct value"


def test_a_ref_changed_after_the_listing_names_nothing_for_the_others(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3-31: a GET that finds a new body names only its own ref; its peers are read.

    Every ref holds one value; the first GET finds its ref moved (changed by another
    writer right after the listing), so its ETag is not the listed one: the others
    are read one by one and listed with the value they hold, the moved one with its
    new value.
    """
    raw = s3_store.server.client()
    old, new = Hash.of(b"old"), Hash.of(b"new")
    names = [f"r{i}" for i in range(5)]
    with _open(s3_store) as writer:
        for name in names:
            writer.write_ref(f"refs/heads/{name}", old)
    with _open(s3_store) as s3:
        real = s3.client.get_object
        asked: list[str] = []
        lock = threading.Lock()

        def get_object(**request: Any) -> Any:
            with lock:
                first = not asked
                asked.append(request["Key"])
            if first:  # the first GET: its ref moves just before it is read
                raw.put_object(
                    Bucket=request["Bucket"], Key=request["Key"], Body=new.hex().encode() + b"\n"
                )
            return real(**request)

        monkeypatch.setattr(s3.client, "get_object", get_object)
        listed = {ref.name: ref.hash for ref in s3.list_refs("refs/heads")}
    moved = next(name for name in names if s3_store.ref_key(f"refs/heads/{name}") == asked[0])
    assert listed == {name: new if name == moved else old for name in names}
    assert len(asked) == len(names)


def test_parts_in_flight_share_the_operations_one_ladder(
    s3_store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3-13 with S3-27: two parts always cut, in flight together, cost one ladder.

    Each part's first attempt, then the policy's five retries in all (whichever part
    takes them): seven sends, the sleeps 1..16 once each, then the upload is aborted.
    """
    data, key = _pack(12 * MIB, b"two stuck parts")
    sleeps: list[float] = []
    with FaultProxy("127.0.0.1", s3_store.server.port) as proxy:
        proxy.set_fault("reset", after_bytes=4 * MIB, direction="up")  # both parts cut
        url = f"mkit+s3+http://127.0.0.1:{proxy.port}/{s3_store.bucket}/{s3_store.prefix}"
        retry = RetryPolicy(sleep=sleeps.append)
        options = {
            "part_size": str(8 * MIB),
            "upload_workers": "2",
            "upload_cutoff": "0",
            **s3_store.options,
        }
        with open_transport(url, retry=retry, probe="false", **options) as s3:
            assert isinstance(s3, S3Transport)
            sent: list[int] = []
            real = s3.client.upload_part

            def upload_part(**request: Any) -> Any:
                sent.append(int(request["PartNumber"]))
                return real(**request)

            monkeypatch.setattr(s3.client, "upload_part", upload_part)
            chunks = [data[i : i + MIB] for i in range(0, len(data), MIB)]
            with pytest.raises(ConnectionFailed):
                s3.upload_pack_stream(key, chunks, len(data))
    assert len(sent) == 7 and set(sent) == {1, 2}
    assert sorted(sleeps) == [1, 2, 4, 8, 16]
    raw = s3_store.server.client()
    listed = raw.list_multipart_uploads(Bucket=s3_store.bucket, Prefix=s3_store.prefix + "/")
    assert listed.get("Uploads", []) == [], "the multipart upload was aborted"
