"""Pushes racing gc in real processes (spec/SPEC-GC.md, GC-3), for every transport.

One race, run by the file, HTTP and S3 tests alike: pusher processes push a new
tree each round onto their own ref and onto a shared one (the losers of the shared
ref's CAS races leave orphans), and plant an orphan each round; a collector process
runs gc over and over meanwhile, and once more after the pushers stop. Then every
ref must pull, and a gc after the grace period must leave no orphan.

Where the store is a file tree the test can reach (file, and the HTTP server's file
backend) each planted orphan is aged past the grace period, so the collector sweeps
while the pushes run and the tally of what it swept is exact. An S3 server stamps
``LastModified`` with its own clock, so there the planted orphans stay young and the
race proves the other half: nothing younger than the grace period goes, even as
gc lists and marks between the pushes' uploads and their CAS.

Also the small helpers the gc tests share: :func:`tree`, :func:`stored`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from mkit_transport import FileTransport, PackKey, RefConflict, Transport, open_transport
from mkit_transport.sync import pull, push
from mkit_transport.sync.gc import gc, reachable

__all__ = ["GRACE", "RaceStore", "race_pushes_against_gc", "stored", "tree"]

#: Bounds how long the pushers run (a safety net: the rounds end them on any sane machine).
BUDGET = 240.0
#: Longer than the whole race, so no orphan a push leaves (young by construction) can
#: age past it while the collector runs, however slow the machine: the tallies are
#: exact. Far longer than any push of these small trees between uploads and CAS.
GRACE = BUDGET + 360.0


def tree(root: Path, label: str, files: int = 3) -> Path:
    """A small tree of ``files`` files whose contents name ``label``."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"f{i}.txt").write_bytes(f"{label} file {i}\n".encode() * (50 + i))
    return root


def stored(transport: Transport) -> set[PackKey]:
    """Every key the store lists."""
    return {info.key for info in transport.list_packs()}


@dataclass(frozen=True)
class RaceStore:
    """Where the race runs, picklable for the worker processes.

    ``backend`` is the file store behind ``url`` (itself for ``mkit+file``, the
    project's directory for an HTTP server with a file backend), whose pack files
    the pushers age; ``None`` where the store keeps its own clock (S3).
    """

    url: str
    options: dict[str, object] = field(default_factory=dict)
    backend: str | None = None

    def open(self) -> Transport:
        return open_transport(self.url, **self.options)


def _pusher(store: RaceStore, root: str, worker: int, rounds: int, done: str) -> None:
    """Push a new tree each round onto its own ref and onto a shared one (lost races
    leave orphans), and plant an orphan each round, aged where the store allows."""
    layout = FileTransport(store.backend) if store.backend is not None else None
    deadline = time.monotonic() + BUDGET
    finished = 0
    with store.open() as transport:
        for i in range(rounds):
            if time.monotonic() > deadline:
                break
            label = f"worker {worker} round {i}"
            source = tree(Path(root) / f"w{worker}-{i}", label, files=2)
            push(source, transport, f"refs/heads/w{worker}")
            with contextlib.suppress(RefConflict):
                push(source, transport, "refs/heads/shared")
            junk = f"planted orphan {worker} {i}".encode()
            transport.upload_pack(junk, PackKey.of(junk))
            if layout is not None:
                os.utime(layout.pack_path(PackKey.of(junk)), (1, 1))
            finished += 1
    Path(done).write_text(str(finished))


def _collector(store: RaceStore, stop: str, tally: str) -> None:
    """Collect over and over while the pushers run, and once more after they stop."""
    swept = 0
    with store.open() as transport:
        while True:
            last = os.path.exists(stop)
            swept += gc(transport, grace=GRACE).swept
            if last:
                break
    Path(tally).write_text(str(swept))


def race_pushes_against_gc(store: RaceStore, workdir: Path, pushers: int, rounds: int) -> None:
    """Race ``pushers`` processes of ``rounds`` pushes each against a gc loop; check it.

    Asserts: every process exits cleanly; every ref pulls afterwards; where orphans
    are aged, the collector swept exactly the planted ones (none of the young
    orphans of lost races), else nothing at all; after the grace period a gc leaves
    no unreachable key, and every ref still pulls.
    """
    tally, stop = workdir / "swept", workdir / "stop"
    context = multiprocessing.get_context("spawn")
    done = [workdir / f"done-{w}" for w in range(pushers)]
    workers = [
        context.Process(target=_pusher, args=(store, str(workdir / "src"), w, rounds, str(done[w])))
        for w in range(pushers)
    ]
    collector = context.Process(target=_collector, args=(store, str(stop), str(tally)))
    for process in [collector, *workers]:
        process.start()
    try:
        for process in workers:
            process.join(BUDGET + 120)
            assert process.exitcode == 0, f"a pusher failed (exit {process.exitcode})"
    finally:
        stop.touch()
        collector.join(BUDGET + 120)
        for process in [collector, *workers]:
            if process.is_alive():
                process.kill()
    assert collector.exitcode == 0, f"the collector failed (exit {collector.exitcode})"
    planted = sum(int(path.read_text()) for path in done)
    assert planted > 0
    swept = int(tally.read_text())
    assert swept == (planted if store.backend is not None else 0)
    cache = str(workdir / "cache")
    with store.open() as transport:
        refs = transport.list_refs("refs/heads")
        assert {ref.name for ref in refs} >= {f"w{w}" for w in range(pushers)} | {"shared"}
        for ref in refs:
            pull(transport, f"refs/heads/{ref.name}", workdir / "out" / ref.name, cache_dir=cache)
        # Once the grace period is over, the orphans go (planted and of lost races),
        # and only they.
        report = gc(transport, grace=GRACE, now=time.time() + 3600)
        if store.backend is None:
            assert report.swept >= planted, "the young planted orphans go once old"
        live, _, _ = reachable(transport)
        assert stored(transport) <= live, "no orphan is left"
        for ref in refs:
            pull(transport, f"refs/heads/{ref.name}", workdir / "again" / ref.name, cache_dir=cache)
