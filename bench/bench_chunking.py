"""Measure chunker parameter sets: speed, chunk count, and bytes an edit re-sends.

Usage: ``python bench/bench_chunking.py [--mib N | --quick]``. For each FastCDC parameter set
(min/avg/max) it cuts N MiB of random bytes (chunking plus BLAKE3 of the file and of
each chunk, as the scan will), then counts the bytes of chunks that are new after one
byte flipped in the middle and after 100 bytes inserted at the start. The figures
behind the choice in spec/SPEC-SYNC.md section 8. A report, not a gate.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mkit_transport.sync.chunking import ChunkParams, chunk_file

_SETS = [
    ChunkParams(256 << 10, 1 << 20, 4 << 20),
    ChunkParams(512 << 10, 1 << 20, 8 << 20),
    ChunkParams(512 << 10, 2 << 20, 8 << 20),
]


def _new_bytes(path: str, data: bytes, params: ChunkParams, old: set[bytes]) -> int:
    Path(path).write_bytes(data)
    return sum(length for cid, length in chunk_file(path, params).chunks if cid not in old)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=128)
    # run.py passes --quick to every bench_*.py (CI's bench-quick)
    parser.add_argument("--quick", action="store_true", help="16 MiB (CI smoke run)")
    args = parser.parse_args()
    data = random.Random(3).randbytes((16 if args.quick else args.mib) << 20)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "f")
        print("min KiB  avg KiB  max KiB  chunks  MB/s  flip KiB  insert KiB")
        for params in _SETS:
            Path(path).write_bytes(data)
            start = time.perf_counter()
            base = chunk_file(path, params)
            speed = len(data) / 1e6 / (time.perf_counter() - start)
            old = {cid for cid, _ in base.chunks}
            flip = _new_bytes(path, bytes(flipped), params, old)
            insert = _new_bytes(path, b"x" * 100 + data, params, old)
            print(
                f"{params.min_size >> 10:7}  {params.avg_size >> 10:7}  {params.max_size >> 10:7}"
                f"  {len(base.chunks):6}  {speed:4.0f}  {flip >> 10:8}  {insert >> 10:10}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
