"""Crash loop: kill -9 a file-transport writer mid-upload and mid-ref-write, many times.

After every kill the store must hold: no torn ref (every ``.ref`` is exactly 65
valid bytes), no pack whose bytes do not hash to its name, and no temp file that
``list_refs`` shows. ``tests/test_file_transport.py`` runs it (25 runs, or
``MKIT_CRASH_RUNS``; ``make bench`` asks for 200).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from mkit_transport import FileTransport, Hash, PackKey, RefWriteCondition

WRITER = r"""
import os, sys
from mkit_transport import FileTransport, Hash, PackKey, RefWriteCondition
root, seed = sys.argv[1], int(sys.argv[2])
t = FileTransport(root)
print("ready", flush=True)
i = 0
while True:
    i += 1
    chunk = os.urandom(1 << 16)
    chunks = [chunk] * 64          # a 4 MiB pack, streamed
    from mkit_transport.hashes import Hasher
    h = Hasher(); h.update_all(chunks)
    t.upload_pack_stream(h.pack_key(), chunks, h.length)
    current = t.read_ref("refs/heads/main")
    value = Hash.of(f"{seed}-{i}".encode())
    cond = RefWriteCondition.MISSING if current is None else RefWriteCondition.match(current)
    t.update_ref("refs/heads/main", cond, value)
    t.write_ref(f"refs/tags/t{i % 7}", value)
    print("stored", i, flush=True)
"""


def check_store(root: Path) -> list[str]:
    """Everything wrong with a store after a crash (empty when it is sound)."""
    problems: list[str] = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        data = path.read_bytes()
        if path.name == ".ref":
            if len(data) != 65 or data[64:] != b"\n":
                problems.append(f"torn ref {rel}: {data!r}")
        elif rel.startswith("packs/") and not path.name.startswith("."):
            if PackKey.of(data).hex() != path.name:
                problems.append(f"pack {rel} does not hash to its name")
    transport = FileTransport(root)
    for ref in transport.list_refs():
        if ".tmp." in ref.name or ref.name.split("/")[-1].startswith("."):
            problems.append(f"list_refs shows a temp file: {ref.name}")
        transport.read_ref(ref.name)  # must parse
    main = transport.read_ref("refs/heads/main")
    if main is not None:
        transport.update_ref("refs/heads/main", RefWriteCondition.match(main), Hash.of(b"after"))
    return problems


def run(root: Path, runs: int, seed: int = 0) -> dict[str, int]:
    """Kill a writer ``runs`` times at random moments; return counts of what was found."""
    rng = random.Random(seed)
    problems: list[str] = []
    for n in range(runs):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(n)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready": imports are done, the loop starts now
        if n == 0:
            # One whole iteration first, however slow the machine: the store then holds
            # a pack and refs for every later kill to damage (the random kills below
            # may all land before the first ref write on a loaded machine).
            proc.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.08))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.returncode != -signal.SIGKILL:
            raise RuntimeError(f"the writer exited by itself ({proc.returncode}): it is broken")
        problems += check_store(root)
    packs = [p for p in (root / "packs").rglob("*") if p.is_file() and not p.name.startswith(".")]
    refs = FileTransport(root).list_refs()
    if not packs or not refs:
        raise RuntimeError("the writer never stored a pack and a ref: the loop tested nothing")
    return {
        "runs": runs,
        "problems": len(problems),
        # Left by kills mid-write; invisible to every verb, swept once a day old.
        "temp_files_left": sum(1 for _ in root.rglob(".*.tmp.*")),
        "packs_stored": len(packs),
        "refs": len(refs),
    }
