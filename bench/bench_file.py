"""File transport: streaming upload/download vs shutil.copyfile, peak RSS, CAS throughput.

Usage: ``python bench/bench_file.py [--quick]``. Every figure is a ratio against a
baseline measured in the same run on the same bytes:

* upload:   ``upload_pack_stream`` from a file (verifies BLAKE3, writes, fsyncs)
            vs ``shutil.copyfile`` (no hashing) and vs ``copyfile`` + ``fsync``
            (the same durability as the transport);
* download: ``download_pack_stream`` into a file (verifies BLAKE3)
            vs ``shutil.copyfile`` of the stored pack;
* memory:   peak RSS growth of a 1 GiB streaming upload and download (child process);
* CAS:      8 processes x 100 read-modify-CAS increments on one ref.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    MIB,
    Figure,
    FileChunks,
    Results,
    cas_counter_figures,
    child_peak_rss,
    make_source,
    median_interleaved,
    median_pair,
)
from mkit_transport import FileTransport, PackKey, RefWriteCondition
from mkit_transport.conformance.workers import UrlOpener, counter_value, counter_worker, run_workers


def copy_durable(src: str, dst: str) -> None:
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def _fresh(root: str) -> FileTransport:
    shutil.rmtree(root, ignore_errors=True)
    return FileTransport(root)


def upload_op(root: str, src: str, key_hex: str, size: str) -> Callable[[], None]:
    """Child-process entry: a 1 GiB streaming upload (for peak RSS)."""
    transport = _fresh(root)
    key = PackKey.from_hex(key_hex)
    return lambda: transport.upload_pack_stream(key, FileChunks(src), int(size))


def download_op(root: str, dst: str, key_hex: str) -> Callable[[], None]:
    """Child-process entry: a 1 GiB streaming download into a file (for peak RSS)."""
    transport = FileTransport(root)
    key = PackKey.from_hex(key_hex)

    def run() -> None:
        with open(dst, "wb") as out:
            for chunk in transport.download_pack_stream(key):
                out.write(chunk)

    return run


def _remove(path: str) -> None:
    """Delete an output: a file, or a store directory (an upload's)."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def bench_size(tmp: str, size: int, repeat: int, rss: bool) -> list[Figure]:
    src, dst, root = f"{tmp}/src.bin", f"{tmp}/dst.bin", f"{tmp}/store"
    key = make_source(src, size)
    fresh = itertools.count()
    outputs: list[str] = []

    def out() -> str:
        # Every run writes a new file (truncating a large file in place discards its
        # blocks during the run that truncates it).
        outputs.append(f"{tmp}/out-{next(fresh)}")
        return outputs[-1]

    def settle() -> None:
        # Untimed, before every run. No output is read back, so the previous run's
        # is deleted here: disk use stays at one output instead of one per run (25
        # runs of 1 GiB at full size). Deleting a large file discards its blocks on
        # these VMs; the sync after it forces the journal commit that issues those
        # discards and writes back the previous run's dirty pages, so neither lands
        # in the next timed run.
        while outputs:
            _remove(outputs.pop())
        os.sync()

    def upload() -> None:
        FileTransport(out()).upload_pack_stream(key, FileChunks(src), size)

    copy, durable, up = median_interleaved(
        [lambda: shutil.copyfile(src, out()), lambda: copy_durable(src, out()), upload],
        repeat,
        settle=settle,
    )
    transport = FileTransport(root)
    transport.upload_pack_stream(key, FileChunks(src), size)

    def download() -> None:
        with open(out(), "wb") as f:
            for chunk in transport.download_pack_stream(key):
                f.write(chunk)

    copy_back, down = median_pair(
        lambda: shutil.copyfile(transport.pack_path(key), out()), download, repeat, settle=settle
    )
    settle()
    label = f"{size // MIB} MiB"

    def mbps(seconds: float) -> int:
        return round(size / seconds / 1e6)

    figures = [
        Figure(
            f"upload {label}",
            mbps(up),
            "MB/s",
            repeats=repeat,
            detail={"copyfile_MBps": mbps(copy), "copyfile_fsync_MBps": mbps(durable)},
        ),
        Figure(f"upload vs copyfile {label}", round(copy / up, 2), "x", repeats=repeat),
        Figure(f"upload vs copyfile+fsync {label}", round(durable / up, 2), "x", repeats=repeat),
        Figure(
            f"download {label}",
            mbps(down),
            "MB/s",
            repeats=repeat,
            detail={"copyfile_MBps": mbps(copy_back)},
        ),
        Figure(f"download vs copyfile {label}", round(copy_back / down, 2), "x", repeats=repeat),
    ]
    if rss:
        up_rss = child_peak_rss("bench.bench_file:upload_op", root, src, key.hex(), str(size))
        down_rss = child_peak_rss("bench.bench_file:download_op", root, dst, key.hex())
        figures += [
            Figure(f"upload peak RSS growth {label}", round(up_rss / MIB, 1), "MiB", kind="memory"),
            Figure(
                f"download peak RSS growth {label}", round(down_rss / MIB, 1), "MiB", kind="memory"
            ),
        ]
    for path in (src, dst):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    shutil.rmtree(root, ignore_errors=True)
    return figures


def bench_cas(tmp: str, workers: int, increments: int) -> list[Figure]:
    root = f"{tmp}/cas"
    url, ns = f"mkit+file://{root}", f"refs/bench/{uuid.uuid4().hex}"
    FileTransport(root).update_ref(f"{ns}/counter", RefWriteCondition.MISSING, counter_value(ns, 0))
    start = time.perf_counter()
    results = run_workers(counter_worker, UrlOpener(url), ns, workers, increments, processes=True)
    elapsed = time.perf_counter() - start
    final = FileTransport(root).read_ref(f"{ns}/counter")
    total = workers * increments
    return cas_counter_figures(
        ns, final, results, elapsed, total, {"workers": workers, "increments_each": increments}
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    args = parser.parse_args()
    sizes = [16 * MIB] if args.quick else [256 * MIB, 1024 * MIB]
    results = Results("file", args.quick)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for s in sizes:
            figures = bench_size(tmp, s, 1 if args.quick else 5, rss=s >= 1024 * MIB or args.quick)
            results.section("file_transport", figures)
        results.section("file_cas", bench_cas(tmp, 8, 10 if args.quick else 100))
    results.finish()  # the CAS counter must be exact


if __name__ == "__main__":
    main()
