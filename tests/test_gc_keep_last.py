"""``gc --keep-last N`` (spec/SPEC-GC.md, GC-9..GC-11): history retention.

Real stores (memory and file) and real pushes; time is aged with gc's ``now``.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

from mkit_transport import (
    FileTransport,
    Hash,
    InvalidArgument,
    MemoryTransport,
    PackKey,
    RefWriteCondition,
    Transport,
    open_transport,
)
from mkit_transport.cli import main
from mkit_transport.sync import log, pull, push
from mkit_transport.sync.common import fetch_record, record_key
from mkit_transport.sync.fsck import fsck
from mkit_transport.sync.gc import gc
from mkit_transport.sync.history import HISTORY_TRUNCATED
from tests.support.gc_race import stored

REF = "refs/heads/main"


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Transport:
    if request.param == "memory":
        return MemoryTransport()
    return FileTransport(tmp_path / "store")


def _push_history(store: Transport, tmp_path: Path, count: int = 5) -> list[Hash]:
    """Push ``count`` snapshots of one tree: a file that never changes (its pack is
    shared by every record) and one that changes each time; oldest first."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "same.txt").write_bytes(b"unchanged in every snapshot\n" * 64)
    values = []
    for i in range(count):
        (source / "changing.txt").write_bytes(f"version {i}\n".encode() * 64)
        new = push(source, store, REF).new
        assert new is not None
        values.append(new)
    return values


def _keys(store: Transport, value: Hash) -> set[PackKey]:
    """The record blob ``value`` names and every pack and index blob it lists."""
    record = fetch_record(store, value)
    return {record_key(value)} | {k for p in record.packs for k in (p.key, p.index)}


def _pulls(store: Transport, value: Hash, dest: Path) -> bytes:
    """Pull the snapshot ``value`` (through a ref of its own) and return changing.txt."""
    store.write_ref("refs/check/pull", value)
    pull(store, "refs/check/pull", dest, cache_dir=str(dest.parent / f"{dest.name}-cache"))
    store.delete_ref("refs/check/pull", RefWriteCondition.ANY)
    return (dest / "changing.txt").read_bytes()


def test_keep_last_drops_old_records_and_what_only_they_held(
    store: Transport, tmp_path: Path
) -> None:
    values = _push_history(store, tmp_path)
    kept = _keys(store, values[4]) | _keys(store, values[3])
    dropped = set().union(*(_keys(store, v) for v in values[:3])) - kept
    assert dropped and kept & set().union(*(_keys(store, v) for v in values[:3])), (
        "the history both drops packs and shares some with the kept records"
    )
    before = stored(store)
    assert before == kept | dropped
    later = time.time() + 1

    dry = gc(store, grace=0, now=later, keep_last=2, dry_run=True)
    assert (dry.swept, dry.records, dry.keep_last) == (len(dropped), 2, 2)
    assert stored(store) == before, "a dry run deletes nothing"
    assert len(log(store, REF)) == 5

    report = gc(store, grace=0, now=later, keep_last=2)
    assert (report.swept, report.swept_bytes) == (dry.swept, dry.swept_bytes)
    assert stored(store) == kept, "what only the dropped records held went; shared packs stayed"
    entries = log(store, REF)
    assert [e.key for e in entries] == [record_key(v) for v in (values[4], values[3])]
    assert [e.parent_missing for e in entries] == [False, True]
    assert _pulls(store, values[4], tmp_path / "latest").startswith(b"version 4")
    assert _pulls(store, values[3], tmp_path / "second").startswith(b"version 3")
    again = gc(store, grace=0, now=later, keep_last=2)
    assert again.swept == 0, "a second pass finds nothing more"


def test_a_ref_joining_another_history_keeps_its_own_last_records(
    store: Transport, tmp_path: Path
) -> None:
    """``refs/heads/old`` names the 2nd-newest record of main: keeping 2 of each keeps
    three records in all (a walk that stopped where main's walk had been would keep
    only main's two, and cut old's history to one)."""
    values = _push_history(store, tmp_path)
    store.write_ref("refs/heads/old", values[3])  # listed after refs/heads/main
    report = gc(store, grace=0, now=time.time() + 1, keep_last=2)
    assert report.records == 3
    assert [e.key for e in log(store, "refs/heads/old")] == [
        record_key(v) for v in (values[3], values[2])
    ]
    assert stored(store) == set().union(*(_keys(store, v) for v in values[2:]))


def test_keep_last_keeps_young_records_until_the_grace_period_is_over(
    store: Transport, tmp_path: Path
) -> None:
    _push_history(store, tmp_path, count=3)
    before = stored(store)
    report = gc(store, grace=3600, now=time.time(), keep_last=1)
    # The young dropped records stay with everything they list (GC-19): marked, as
    # part of the history, not merely spared by age.
    assert report.swept == 0 and report.records == 3
    assert stored(store) == before and len(log(store, REF)) == 3


@pytest.mark.parametrize("keep_last", [0, -1, True, 1.5, "2"])
def test_keep_last_must_be_a_positive_int(store: Transport, keep_last: object) -> None:
    orphan = b"orphan"
    store.upload_pack(orphan, PackKey.of(orphan))
    with pytest.raises(InvalidArgument, match="keep_last"):
        gc(store, grace=0, now=time.time() + 1, keep_last=keep_last)  # type: ignore[arg-type]
    assert stored(store) == {PackKey.of(orphan)}, "nothing deleted"


def test_cli_keep_last_and_the_truncated_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"mkit+file://{tmp_path / 'store'}"
    with open_transport(url) as store:
        values = _push_history(store, tmp_path)
        before = stored(store)
    assert main(["gc", url, "--keep-last", "0", "--grace", "0"], out=io.StringIO()) == 2
    assert "--keep-last must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["gc", url, "--keep-last", "two"], out=io.StringIO())
    assert usage.value.code == 2
    capsys.readouterr()
    out = io.StringIO()
    dry_run = ["gc", url, "--keep-last", "2", "--grace", "0", "--dry-run", "--json"]
    assert main(dry_run, out=out) == 0
    dry = json.loads(out.getvalue())
    assert (dry["keep_last"], dry["records"], dry["dry_run"]) == (2, 2, True) and dry["swept"] > 0
    with open_transport(url) as store:
        assert stored(store) == before
    text = io.StringIO()
    assert main(["gc", url, "--keep-last", "2", "--grace", "0"], out=text) == 0
    assert "2 records (the last 2 of each ref)" in text.getvalue()
    assert f"deleted {dry['swept']} unreachable" in text.getvalue()

    text = io.StringIO()
    assert main(["log", url, REF], out=text) == 0
    lines = text.getvalue().splitlines()
    assert len(lines) == 3 and lines[-1] == HISTORY_TRUNCATED
    assert lines[0].startswith(record_key(values[4]).hex())
    assert "gc --keep-last" in HISTORY_TRUNCATED
    rows = io.StringIO()
    assert main(["log", url, REF, "--json"], out=rows) == 0
    history = json.loads(rows.getvalue())
    assert [r["key"] for r in history] == [record_key(v).hex() for v in (values[4], values[3])]
    assert history[-1]["history_truncated"] == HISTORY_TRUNCATED
    assert "history_truncated" not in history[0]


def test_an_untruncated_log_has_no_mark(tmp_path: Path) -> None:
    url = f"mkit+file://{tmp_path / 'store'}"
    with open_transport(url) as store:
        _push_history(store, tmp_path, count=2)
    text = io.StringIO()
    assert main(["log", url, REF], out=text) == 0
    assert len(text.getvalue().splitlines()) == 2 and HISTORY_TRUNCATED not in text.getvalue()


def test_a_young_dropped_record_keeps_what_it_lists(tmp_path: Path) -> None:
    """GC-19: the record past the kept history, younger than the grace period, keeps
    its packs: a ref's chain never reaches a record whose packs were swept."""
    root = tmp_path / "store"
    store = FileTransport(root)
    values = _push_history(store, tmp_path, count=4)
    then = time.time() - 7200
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))
    cut = record_key(values[-2])  # the parent of the one record keep_last=1 keeps
    cut_file = root / "packs" / cut.hex()[:2] / cut.hex()
    cut_file.touch()  # young: written within the grace period
    report = gc(store, grace=3600, now=time.time(), keep_last=1)
    assert report.swept > 0  # the older records and what only they held
    assert fsck(store).ok
    assert [entry.key for entry in log(store, REF)] == [record_key(v) for v in values[:1:-1]]
    assert _keys(store, values[-2]) <= stored(store)
    pull(store, REF, tmp_path / "out", cache_dir=str(tmp_path / "cache"))


def test_the_cut_record_goes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GC-19: a gc killed after its first delete leaves each history cut where it ends,
    never a dropped record whose packs are gone (fsck clean, every ref pulls)."""
    store = FileTransport(tmp_path / "store")
    values = _push_history(store, tmp_path, count=4)
    calls: list[list[PackKey]] = []

    def first_batch_only(keys: list[PackKey]) -> None:
        calls.append(list(keys))
        if len(calls) == 1:
            FileTransport.delete_packs(store, keys)
        else:
            raise KeyboardInterrupt  # the gc is "killed" before its second delete

    monkeypatch.setattr(store, "delete_packs", first_batch_only)
    with pytest.raises(KeyboardInterrupt):
        gc(store, grace=0, now=time.time() + 1, keep_last=1)
    assert calls[0] == [record_key(values[-2])]
    monkeypatch.undo()
    assert fsck(store).ok
    assert [entry.key for entry in log(store, REF)] == [record_key(values[-1])]
    pull(store, REF, tmp_path / "out", cache_dir=str(tmp_path / "cache"))
