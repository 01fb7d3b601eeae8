"""HTTP transport: streaming vs plain requests, peak RSS both ends, CAS through the server.

Usage: ``python bench/bench_http.py [--quick]``. One real server process
(``python -m mkit_transport serve http``, gunicorn, 2 threaded workers, file backend)
on loopback; every figure is a ratio against a baseline measured in the same run:

* upload:   ``upload_pack_stream`` (client BLAKE3, sized streaming body)
            vs a plain ``requests.put`` of the same bytes, same chunking, to the same
            URL (the server verifies and fsyncs both; each run is a fresh project,
            after an ``os.sync()``; 7 interleaved runs, the disk's speed varies);
            goal >= 0.9 (issue 17);
* download: ``download_pack_stream`` (client BLAKE3) vs ``requests.get(stream=True)``;
* memory:   peak RSS growth of a 1 GiB streaming upload and download, in a child
            client process and in the server's workers (goal <= 64 MiB each);
* CAS:      8 client processes x 100 read-modify-CAS increments on one ref, each an
            ``update_ref_with`` (SPEC-REFS 3.1: jittered backoff after a lost write);
            increments per second from the start barrier, goal >= 150 (issue 17).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests

from bench.common import (
    MIB,
    Figure,
    FileChunks,
    Results,
    cas_counter_figures,
    child_peak_rss,
    make_source,
    median_pair,
    proc_status,
)
from mkit_transport import PackKey, RefWriteCondition, open_transport
from mkit_transport.conformance.workers import UrlOpener, counter_value, counter_worker, run_workers
from testbed.http_server import HttpServer, running_http_server

CHUNK = MIB


def upload_op(url: str, src: str, key_hex: str, size: str) -> Callable[[], None]:
    """Child-process entry: one streaming upload (for the client's peak RSS)."""
    transport = open_transport(url)
    transport.pack_exists(PackKey.of(b"warm up"))
    key = PackKey.from_hex(key_hex)
    return lambda: transport.upload_pack_stream(key, FileChunks(src), int(size))


def download_op(url: str, key_hex: str) -> Callable[[], None]:
    """Child-process entry: one streaming download, discarded (for peak RSS)."""
    transport = open_transport(url)
    transport.pack_exists(PackKey.of(b"warm up"))
    key = PackKey.from_hex(key_hex)

    def run() -> None:
        for _ in transport.download_pack_stream(key):
            pass

    return run


def _workers(server: HttpServer) -> list[int]:
    pid = server.process.pid
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def bench_throughput(
    server: HttpServer, src: str, key: PackKey, size: int, repeat: int
) -> list[Figure]:
    def fresh_url() -> str:
        return server.url(f"bench-{uuid.uuid4().hex[:12]}")

    def plain_put() -> None:
        url = fresh_url().replace("mkit+http", "http") + f"/packs/{key.hex()}"
        response = requests.put(url, data=FileChunks(src), timeout=600)
        assert response.status_code == 204, response.text

    def transport_put() -> None:
        with open_transport(fresh_url()) as transport:
            transport.upload_pack_stream(key, FileChunks(src), size)

    stored = fresh_url()
    with open_transport(stored) as transport:
        transport.upload_pack_stream(key, FileChunks(src), size)
    get_url = stored.replace("mkit+http", "http") + f"/packs/{key.hex()}"

    def plain_get() -> None:
        with requests.get(get_url, stream=True, timeout=600) as response:
            got = sum(len(c) for c in response.iter_content(CHUNK))
        assert got == size

    def transport_get() -> None:
        with open_transport(stored) as transport:
            got = sum(len(c) for c in transport.download_pack_stream(key))
        assert got == size

    # Each upload is written and fsynced by the server, whose disk varies run to run
    # (0.3-0.7 s for the same 256 MiB here): sync before each, and more repetitions.
    put_plain, put_ours = median_pair(plain_put, transport_put, repeat, os.sync)
    get_plain, get_ours = median_pair(plain_get, transport_get, repeat)
    label = f"{size // MIB} MiB"

    def mbps(seconds: float) -> int:
        return round(size / seconds / 1e6)

    return [
        Figure(
            f"upload {label}",
            mbps(put_ours),
            "MB/s",
            repeats=repeat,
            detail={"plain_put_MBps": mbps(put_plain)},
        ),
        Figure(
            f"upload vs plain put {label}",
            round(put_plain / put_ours, 2),
            "x",
            ">= 0.9",  # issue 17
            repeats=repeat,
        ),
        Figure(
            f"download {label}",
            mbps(get_ours),
            "MB/s",
            repeats=repeat,
            detail={"plain_get_MBps": mbps(get_plain)},
        ),
        Figure(
            f"download vs plain get {label}", round(get_plain / get_ours, 2), "x", repeats=repeat
        ),
    ]


def bench_rss(tmp: str, src: str, key: PackKey, size: int) -> list[Figure]:
    with running_http_server(Path(tmp) / "rss-root") as server:
        url = server.url("rss")
        requests.get(f"{server.base}/healthz", timeout=10)
        workers = _workers(server)
        before = {pid: proc_status("VmRSS", pid) for pid in workers}
        client_up = child_peak_rss("bench.bench_http:upload_op", url, src, key.hex(), str(size))
        client_down = child_peak_rss("bench.bench_http:download_op", url, key.hex())
        server_growth = max(proc_status("VmHWM", pid) - before[pid] for pid in workers)
    label = f"{size // MIB} MiB"
    return [
        Figure(
            f"{who} peak RSS growth {label}", round(growth / MIB, 1), "MiB", "<= 64", kind="memory"
        )
        for who, growth in (
            ("client upload", client_up),
            ("client download", client_down),
            ("server worker", server_growth),
        )
    ]


def bench_cas(server: HttpServer, workers: int, increments: int) -> list[Figure]:
    url, ns = server.url("cas"), f"refs/bench/{uuid.uuid4().hex}"
    with open_transport(url) as transport:
        transport.update_ref(f"{ns}/counter", RefWriteCondition.MISSING, counter_value(ns, 0))
    start = time.perf_counter()
    results = run_workers(counter_worker, UrlOpener(url), ns, workers, increments, processes=True)
    elapsed = time.perf_counter() - start
    with open_transport(url) as transport:
        final = transport.read_ref(f"{ns}/counter")
    total = workers * increments
    return cas_counter_figures(
        ns,
        final,
        results,
        elapsed,
        total,
        {"clients": workers, "server_workers": 2, "increments_each": increments},
        ">= 150",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    args = parser.parse_args()
    size = 16 * MIB if args.quick else 256 * MIB
    rss_size = 32 * MIB if args.quick else 1024 * MIB
    results = Results("http", args.quick)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        src, big = f"{tmp}/src.bin", f"{tmp}/big.bin"
        key = make_source(src, size)
        with running_http_server(Path(tmp) / "root") as server:
            throughput = bench_throughput(server, src, key, size, 1 if args.quick else 7)
            results.section("http_transport", throughput)
            results.section("http_cas", bench_cas(server, 8, 10 if args.quick else 100))
        os.unlink(src)
        big_key = make_source(big, rss_size)
        results.section("http_rss", bench_rss(tmp, big, big_key, rss_size))
    results.finish()  # the CAS counter must be exact


if __name__ == "__main__":
    main()
