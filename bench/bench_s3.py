"""S3 transport: pack throughput vs raw boto3, peak RSS of 1 GiB, parallel listing.

Usage: ``python bench/bench_s3.py [--quick]``. Starts moto_server and SeaweedFS
(``weed mini``) on loopback, as the tests do, and on each server measures ratios
against a baseline taken in the same run on the same bytes:

* upload:   ``upload_pack`` (BLAKE3 check + one PUT) and ``upload_pack_stream``
            (over 16 MiB and up to ``upload_cutoff``, 256 MiB: one PUT signed frame
            by frame, SPEC-S3 S3-32; above it multipart, 16 MiB parts, three in
            flight) vs raw boto3 ``put_object`` of the same bytes (goal >= 0.9x);
* download: ``download_pack`` and ``download_pack_stream`` (both verify BLAKE3) vs
            raw ``get_object(...)["Body"].read()``;
  (the raw client uses the same tuned config as the transport: no boto3 retries,
  ``when_required`` checksums, path style; default boto3 would be slower);
* memory:   peak RSS growth of a 1 GiB streaming upload (multipart) then download
            (child process);
* listing:  ``list_refs`` of 2,000 refs vs a serial ``get_object`` of each, by a
            client that listed them before (refs it has seen, named by their ETag,
            are not read again: SPEC-S3 S3-31; goal >= 5x) and by a fresh client:
            refs that all hold one value (one GET, the rest named by its ETag;
            goal >= 5x) and refs that hold distinct values (a GET per ref,
            ``list_workers`` at once: reported, the floor of a cold listing).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    MIB,
    Figure,
    FileChunks,
    Results,
    child_peak_rss,
    make_source,
    median_pair,
    mib,
)
from mkit_transport import Hash, PackKey, open_transport
from mkit_transport.transports.s3 import S3Transport
from testbed.s3_servers import BUCKET, S3Server, raw_client, start_moto, start_seaweedfs


def _open(port: int, access: str, secret: str, prefix: str) -> S3Transport:
    url = f"mkit+s3+http://127.0.0.1:{port}/{BUCKET}/{prefix}"
    transport = open_transport(url, access_key_id=access, secret_access_key=secret)
    assert isinstance(transport, S3Transport)
    return transport


def rss_op(
    port: str, access: str, secret: str, src: str, key_hex: str, size: str
) -> Callable[[], None]:
    """Child-process target: prepare a transport, return a streamed 1 GiB round trip."""
    key, total = PackKey.from_hex(key_hex), int(size)
    s3 = _open(int(port), access, secret, f"rss-{uuid.uuid4().hex[:8]}")
    s3.pack_exists(key)  # connect and warm up before measuring

    def run() -> None:
        s3.upload_pack_stream(key, FileChunks(src), total)
        received = sum(len(chunk) for chunk in s3.download_pack_stream(key))
        assert received == total

    return run


def bench_packs(server: S3Server, src: str, key: PackKey, size: int, repeat: int) -> list[Figure]:
    data = Path(src).read_bytes()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    raw = raw_client(server.endpoint, server.access_key, server.secret_key)
    raw_key = f"{prefix}/raw/{key.hex()}"

    def raw_upload() -> None:
        raw.put_object(Bucket=BUCKET, Key=raw_key, Body=data)

    def raw_download() -> bytes:
        return raw.get_object(Bucket=BUCKET, Key=raw_key)["Body"].read()

    with _open(server.port, server.access_key, server.secret_key, prefix) as s3:
        raw_put, put = median_pair(raw_upload, lambda: s3.upload_pack(data, key), repeat)
        # upload_pack_stream skips a pack that is already stored: delete it, untimed,
        # before each run (the last run, ours, leaves it stored for the downloads).
        raw_put_2, put_streamed = median_pair(
            raw_upload,
            lambda: s3.upload_pack_stream(key, FileChunks(src), size),
            repeat,
            settle=lambda: raw.delete_object(Bucket=BUCKET, Key=s3.pack_key(key)),
        )
        raw_get, get = median_pair(raw_download, lambda: s3.download_pack(key), repeat)
        raw_get_2, get_streamed = median_pair(
            raw_download, lambda: sum(map(len, s3.download_pack_stream(key))), repeat
        )
    label = f"{server.name} {mib(size)}"
    mibps = size / MIB
    return [
        Figure(
            f"upload_pack vs raw put {label}",
            round(raw_put / put, 2),
            "x",
            repeats=repeat,
            detail={"raw_put_MiBps": round(mibps / raw_put)},
        ),
        Figure(
            f"upload_pack_stream vs raw put {label}",
            round(raw_put_2 / put_streamed, 2),
            "x",
            ">= 0.9",
            repeats=repeat,
        ),
        Figure(
            f"download_pack vs raw get {label}",
            round(raw_get / get, 2),
            "x",
            repeats=repeat,
            detail={"raw_get_MiBps": round(mibps / raw_get)},
        ),
        Figure(
            f"download_pack_stream vs raw get {label}",
            round(raw_get_2 / get_streamed, 2),
            "x",
            repeats=repeat,
        ),
    ]


def bench_listing(server: S3Server, refs: int, repeat: int, distinct: bool) -> list[Figure]:
    """``distinct``: every ref holds its own value, so a fresh client GETs each one."""
    prefix = f"list-{uuid.uuid4().hex[:8]}"
    raw = raw_client(server.endpoint, server.access_key, server.secret_key)
    keys = [f"{prefix}/refs/heads/r{i:05d}/.ref" for i in range(refs)]
    for i, object_key in enumerate(keys):
        body = Hash.of(b"%d" % i if distinct else b"v").hex().encode() + b"\n"
        raw.put_object(Bucket=BUCKET, Key=object_key, Body=body)
    values = "distinct values" if distinct else "one value"

    def serial() -> None:
        for object_key in keys:
            raw.get_object(Bucket=BUCKET, Key=object_key)["Body"].read()

    figures = []
    if not distinct:  # warm: every ref's ETag seen, whatever the values; measured once
        with _open(server.port, server.access_key, server.secret_key, prefix) as s3:
            assert len(s3.list_refs("refs/heads")) == refs
            baseline, listed = median_pair(serial, lambda: s3.list_refs("refs/heads"), repeat)
        figures.append(
            Figure(
                f"list_refs vs serial get {server.name} {refs} refs",
                round(baseline / listed, 2),
                "x",
                ">= 5",
                repeats=repeat,
                detail={"list_refs_s": round(listed, 3), "serial_get_s": round(baseline, 3)},
            )
        )
    # Cold: a client opened (untimed) for each run, which has seen none of the refs.
    fresh = [
        _open(server.port, server.access_key, server.secret_key, prefix) for _ in range(repeat)
    ]
    unused = iter(fresh)
    try:
        cold_base, cold = median_pair(serial, lambda: next(unused).list_refs("refs/heads"), repeat)
    finally:
        for client in fresh:
            client.close()
    figures.append(
        Figure(
            f"list_refs (fresh client, {values}) vs serial get {server.name} {refs} refs",
            round(cold_base / cold, 2),
            "x",
            # One value: a fresh client reads one ref and names the rest by their
            # ETag (S3-31). Distinct values: a GET per ref, reported (the cost floor).
            None if distinct else ">= 5",
            repeats=repeat,
            detail={"list_refs_s": round(cold, 3), "serial_get_s": round(cold_base, 3)},
        )
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    args = parser.parse_args()
    size = 16 * MIB if args.quick else 256 * MIB
    rss_size = 32 * MIB if args.quick else 1024 * MIB
    refs = 200 if args.quick else 2000
    repeat = 1 if args.quick else 3
    results = Results("s3", args.quick)
    packs: list[Figure] = []
    memory: list[Figure] = []
    listing: list[Figure] = []
    servers = [start_moto(), start_seaweedfs()]
    try:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            src, big = f"{tmp}/src.bin", f"{tmp}/big.bin"
            # Memory first: each measurement runs in a fresh child (bench.common).
            big_key = make_source(big, rss_size)
            for server in servers:
                growth = child_peak_rss(
                    "bench.bench_s3:rss_op",
                    str(server.port),
                    server.access_key,
                    server.secret_key,
                    big,
                    big_key.hex(),
                    str(rss_size),
                )
                memory.append(
                    Figure(
                        f"round trip peak RSS growth {server.name} {mib(rss_size)}",
                        round(growth / MIB, 1),
                        "MiB",
                        "<= 64",
                        kind="memory",
                    )
                )
            os.unlink(big)
            key = make_source(src, size)
            for server in servers:
                packs += bench_packs(server, src, key, size, repeat)
                for distinct in (False, True):
                    listing += bench_listing(server, refs, repeat, distinct)
    finally:
        for server in servers:
            server.stop()
    results.section("s3_packs", packs)
    results.section("s3_memory", memory)
    results.section("s3_listing", listing)
    results.finish()


if __name__ == "__main__":
    main()
