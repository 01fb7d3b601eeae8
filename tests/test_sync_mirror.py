"""mirror's sync_snapshot contract (issue 12): bandwidth cap, dry-run figures, progress
totals, and the fast path of a snapshot the destination already holds.

Every test runs over the local transports (``sync_remote``: memory and file); the
bandwidth cap is checked against a fake clock put under the limiter, so what is
asserted is the limiter's accounting (every byte sent waited for its slot), never
the wall time.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from mkit_transport import (
    FileTransport,
    MemoryTransport,
    RefConflict,
    RefWriteCondition,
    Transport,
)
from mkit_transport.cli import main
from mkit_transport.sync import Progress, TransferOptions, mirror, push
from mkit_transport.sync import progress as progress_module
from tests.support.sync_fixtures import CountingTransport, record_of, write_tree

REF = "refs/heads/main"


class FakeClock:
    """``time.monotonic`` and ``time.sleep`` for the limiter: sleeping moves the clock.

    Nothing else moves it, so after a throttled copy with one worker the clock reads
    exactly the bytes the limiter was asked for, divided by the rate.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def monotonic(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += max(seconds, 0.0)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(progress_module, "time", fake)
    return fake


def _snapshot_in_two_versions(src: Transport, tmp_path: Path) -> tuple[Path, Transport]:
    """``src`` holds a second version of a tree; the returned ``dst`` holds the first."""
    tree = write_tree(tmp_path / "tree", seed=5, files=60, large=1)
    push(tree, src, REF, concurrency=1)
    dst = FileTransport(tmp_path / "dst")
    mirror(src, dst, REF)
    (tree / "d1" / "e1" / "f1.txt").write_text("second version")
    (tree / "new.bin").write_bytes(b"n" * 100_000)
    push(tree, src, REF, concurrency=1)
    return tree, dst


@pytest.mark.parametrize("spelling", ["keyword", "options"])
def test_bwlimit_paces_every_byte_the_mirror_sends(
    sync_remote: Transport, tmp_path: Path, clock: FakeClock, spelling: str
) -> None:
    push(write_tree(tmp_path / "tree", seed=2, large=1), sync_remote, REF)
    rate = 1_000_000.0
    dst = MemoryTransport()
    if spelling == "keyword":
        report = mirror(sync_remote, dst, REF, bwlimit=rate, concurrency=1)
    else:
        options = TransferOptions(bwlimit=rate, concurrency=1)
        report = mirror(sync_remote, dst, REF, options=options)
    assert report.updated and report.bytes_uploaded > 10_000
    # Every byte sent (packs, index blobs, the record) waited its slot at 1 MB/s.
    assert clock.now * rate == pytest.approx(report.bytes_uploaded)
    before = clock.now
    mirror(sync_remote, MemoryTransport(), REF)
    assert clock.now == before, "no cap: the limiter never waits"


def test_bwlimit_on_the_command_line(tmp_path: Path, clock: FakeClock) -> None:
    src = FileTransport(tmp_path / "src")
    push(write_tree(tmp_path / "tree"), src, REF)
    out = io.StringIO()
    dst_url = f"mkit+file://{tmp_path / 'dst'}"
    code = main(
        ["mirror", f"mkit+file://{tmp_path / 'src'}", dst_url, REF, "--bwlimit", "5e5"], out=out
    )
    assert code == 0, out.getvalue()
    sent = record_of(FileTransport(tmp_path / "dst"), REF)
    assert sent.packs and clock.now > 0  # the cap from the flag reached the limiter


def test_dry_run_reports_what_the_real_run_then_copies_and_changes_nothing(
    sync_remote: Transport, tmp_path: Path
) -> None:
    _, dst = _snapshot_in_two_versions(sync_remote, tmp_path)
    # An index blob the destination lost is planned (and copied) as well.
    held = record_of(dst, REF).packs[0]
    dst.delete_pack(held.index)
    refs, packs = dst.list_refs(), list(dst.list_packs())
    dry = mirror(sync_remote, dst, REF, dry_run=True)
    assert (dst.list_refs(), list(dst.list_packs())) == (refs, packs)
    real = mirror(sync_remote, dst, REF)
    assert dry.dry_run and not dry.updated and real.updated
    figures = ("objects_sent", "objects_skipped", "packs_uploaded", "packs_skipped")
    assert [getattr(dry, f) for f in figures] == [getattr(real, f) for f in figures]
    assert dry.bytes_uploaded == real.bytes_uploaded > 0
    assert dry.packs_uploaded > 0 and dry.packs_skipped > 0
    assert dst.pack_exists(held.index)


def test_progress_totals_come_first_and_skips_match_the_report(
    sync_remote: Transport, tmp_path: Path
) -> None:
    _, dst = _snapshot_in_two_versions(sync_remote, tmp_path)
    events: list[Progress] = []
    report = mirror(sync_remote, dst, REF, progress=events.append, concurrency=1)
    moving = [e for e in events if e.bytes_out > 0]
    assert moving, "the mirror copied something"
    first = events.index(moving[0])
    planned = events[first - 1]
    assert planned.bytes_total == report.bytes_uploaded > 0
    assert planned.objects_total == report.objects_sent + report.objects_skipped
    assert report.objects_skipped > 0
    assert all(e.objects_skipped == report.objects_skipped for e in events[first - 1 :])
    assert all(e.bytes_total == report.bytes_uploaded for e in events[first - 1 :])
    last = events[-1]
    assert last.phase == "done" and last.bytes_out == last.bytes_total
    assert last.objects_done + last.objects_skipped == last.objects_total
    dry: list[Progress] = []
    again = mirror(sync_remote, MemoryTransport(), REF, progress=dry.append, dry_run=True)
    assert dry[-1].bytes_total == again.bytes_uploaded and dry[-1].bytes_out == 0


def test_a_snapshot_held_under_another_ref_moves_only_the_ref(
    sync_remote: Transport, tmp_path: Path
) -> None:
    push(write_tree(tmp_path / "tree"), sync_remote, REF)
    value = sync_remote.read_ref(REF)
    assert value is not None
    sync_remote.update_ref("refs/tags/v1", RefWriteCondition.MISSING, value)
    dst = CountingTransport()
    mirror(sync_remote, dst, REF)
    dst.calls.clear()
    with pytest.raises(RefConflict):  # CAS as usual on the fast path too
        mirror(sync_remote, dst, "refs/tags/v1", expect=RefWriteCondition.match(value))
    dry = mirror(sync_remote, dst, "refs/tags/v1", dry_run=True)
    report = mirror(sync_remote, dst, "refs/tags/v1")
    assert (dry.bytes_uploaded, dry.packs_uploaded) == (0, 0)
    assert report.updated and report.bytes_uploaded == 0 and report.packs_uploaded == 0
    assert report.packs_skipped == len(record_of(sync_remote, REF).packs)
    assert dst.read_ref("refs/tags/v1") == value
    assert not {"upload_pack", "upload_pack_stream", "download_pack_stream"} & set(dst.calls)
