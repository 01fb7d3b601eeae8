"""One file of a remote snapshot on demand: bytes downloaded and peak RSS (issue 13).

Usage: ``python bench/bench_reader.py [--quick]``. Figures:

* bytes downloaded to read one 1 MiB file (random bytes) from a snapshot of 1 MiB
  files packed into 64 MiB packs (``--quick``: 16 MiB packs), through
  ``open_snapshot(...).read`` over the file transport and over HTTP (a real gunicorn
  server, ``testbed.http_server``, file backend). Counted by the reader
  (``RemoteSnapshot.bytes_in``: record, index ranges and object ranges; HTTP headers
  not counted). Goal: <= 2 MiB, an exact claim (spec/SPEC-SYNC.md SYNC-41);
* peak RSS growth of reading a 256 MiB chunked file (``--quick``: 32 MiB) through
  ``RemoteSnapshot.open`` in 1 MiB reads, in a child process (file transport).
  Goal: <= 128 MiB (SYNC-44).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import MIB, Figure, Results, child_peak_rss
from mkit_transport import FileTransport, Transport, open_transport
from mkit_transport.sync import open_snapshot, push
from testbed.http_server import running_http_server

REF = "refs/heads/main"
TARGET = "f0042.bin"


def _small_files(root: Path, count: int) -> None:
    root.mkdir(parents=True)
    for i in range(count):
        (root / f"f{i:04}.bin").write_bytes(os.urandom(MIB))


def _one_file(transport: Transport, want: bytes) -> int:
    """Read ``TARGET`` from ``transport``'s snapshot; return the bytes downloaded."""
    snapshot = open_snapshot(transport, REF)
    got = snapshot.read(TARGET)
    if got != want:
        raise SystemExit(f"read {TARGET} returned other bytes")
    return snapshot.bytes_in


def rss_open(store: str, path: str) -> Callable[[], object]:
    """Child-process entry: stream ``path`` out of the snapshot in 1 MiB reads."""
    snapshot = open_snapshot(FileTransport(store, durable=False), REF)

    def run() -> int:
        total = 0
        with snapshot.open(path) as f:
            while piece := f.read(MIB):
                total += len(piece)
        return total

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small packs and file (smoke run)")
    args = parser.parse_args()
    pack_size, files, big = (16 * MIB, 48, 32 * MIB) if args.quick else (64 * MIB, 160, 256 * MIB)
    results = Results("reader", args.quick)
    with tempfile.TemporaryDirectory(prefix="mkit-bench-reader-") as tmp:
        work = Path(tmp)
        tree = work / "tree"
        _small_files(tree, files)
        want = (tree / TARGET).read_bytes()
        store = FileTransport(work / "store", durable=False)
        push(tree, store, REF, pack_size=pack_size)
        on_file = _one_file(store, want)
        with (
            running_http_server(work / "http-root") as server,
            open_transport(server.url("bench")) as http,
        ):
            push(tree, http, REF, pack_size=pack_size)
            on_http = _one_file(http, want)
        detail = {"files": files, "pack_size_mib": pack_size // MIB, "file_bytes": MIB}

        large = work / "large"
        large.mkdir()
        with open(large / "big.bin", "wb") as f:
            for _ in range(big // MIB):
                f.write(os.urandom(MIB))
        push(large, FileTransport(work / "large-store", durable=False), REF)
        rss = child_peak_rss("bench.bench_reader:rss_open", str(work / "large-store"), "big.bin")
    label = f"{pack_size // MIB} MiB packs"
    results.section(
        "one file on demand",
        [
            Figure(
                f"read one 1 MiB file, {label}, file: downloaded",
                round(on_file / MIB, 4),
                "MiB",
                "<= 2",
                kind="exact",
                detail={**detail, "downloaded_bytes": on_file},
            ),
            Figure(
                f"read one 1 MiB file, {label}, HTTP: downloaded",
                round(on_http / MIB, 4),
                "MiB",
                "<= 2",
                kind="exact",
                detail={**detail, "downloaded_bytes": on_http},
            ),
            Figure(
                f"open() of a {big // MIB} MiB chunked file: peak RSS growth",
                round(rss / MIB, 1),
                "MiB",
                "<= 128",
                kind="memory",
            ),
        ],
    )
    results.finish()


if __name__ == "__main__":
    main()
