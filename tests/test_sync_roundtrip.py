"""Push, pull, mirror, log and show round trips over memory and file (public API only)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mkit_transport import (
    FileTransport,
    Hash,
    MemoryTransport,
    PackKey,
    RefConflict,
    RefWriteCondition,
    Transport,
)
from mkit_transport.pack import KIND_TREE, PackVerifier
from mkit_transport.sync import Progress, log, mirror, pull, push, show
from mkit_transport.sync.model import PackRef, decode_index, decode_record
from tests.support.sync_fixtures import CountingTransport, describe, write_tree

REF = "refs/heads/main"


def records_packs(transport: Transport, value: Hash | None) -> list[PackRef]:
    assert value is not None
    return list(decode_record(transport.download_blob(PackKey(bytes(value)))).packs)


def test_round_trip_every_kind_of_entry(
    sync_remote: Transport, source_tree: Path, tmp_path: Path, cache: Callable[[], str]
) -> None:
    report = push(source_tree, sync_remote, REF)
    assert report.updated and report.old is None and report.new == sync_remote.read_ref(REF)
    pulled = pull(sync_remote, REF, tmp_path / "out", cache_dir=cache())
    assert describe(tmp_path / "out") == describe(source_tree)
    assert pulled.files == report.files == 43
    assert os.readlink(tmp_path / "out" / "link-out") == "../../outside/secret"
    assert (tmp_path / "out" / "empty" / "deeper").is_dir()


def test_round_trip_many_small_and_large_files(
    sync_remote: Transport, tmp_path: Path, cache: Callable[[], str]
) -> None:
    src = write_tree(tmp_path / "src", seed=3, files=1500, large=2)
    report = push(src, sync_remote, REF, pack_size=2 << 20)
    assert report.packs_uploaded > 3  # the pack size splits the send-set
    pull(sync_remote, REF, tmp_path / "out", cache_dir=cache())
    assert describe(tmp_path / "out") == describe(src)


def test_round_trip_names_of_any_bytes(
    sync_remote: Transport, tmp_path: Path, cache: Callable[[], str]
) -> None:
    """A POSIX name is any bytes but "/" and NUL: not UTF-8, newlines, dashes, spaces."""
    src = tmp_path / "src"
    names = [
        b"\xff\xfe",
        b"caf\xe9",
        b"a\nb",
        b"-rf",
        b" lead",
        b"trail ",
        b"\x01ctl",
        b"\xe2\x82\xac",
    ]
    for i, raw in enumerate(names):
        folder = src / os.fsdecode(raw)
        folder.mkdir(parents=True)
        (folder / os.fsdecode(raw + b".f")).write_bytes(b"%d" % i)
    push(src, sync_remote, REF)
    pull(sync_remote, REF, tmp_path / "out", cache_dir=cache())
    assert describe(tmp_path / "out") == describe(src)
    assert sorted(os.listdir(os.fsencode(tmp_path / "out"))) == sorted(names)


def test_unchanged_repush_sends_nothing_in_at_most_three_calls(
    source_tree: Path,
) -> None:
    remote = CountingTransport()
    push(source_tree, remote, REF)
    remote.calls.clear()
    report = push(source_tree, remote, REF)
    # The ref; the record blob is read from the local copy the first push kept
    # (spec/SPEC-SYNC.md, SYNC-55).
    assert remote.calls == ["read_ref"]
    assert (report.updated, report.objects_sent, report.bytes_uploaded) == (False, 0, 0)
    assert report.new == report.old


def test_one_changed_file_sends_it_and_the_trees_on_its_path(
    sync_remote: Transport, source_tree: Path, tmp_path: Path, cache: Callable[[], str]
) -> None:
    first = push(source_tree, sync_remote, REF)
    target = source_tree / "d2" / "e1" / "f7.txt"
    target.write_text("a new body")
    report = push(source_tree, sync_remote, REF)
    # the blob, then its trees: e1, d2 and the root
    assert report.objects_sent == 4
    assert report.objects_skipped == first.objects_sent - 4  # the old blob is not needed
    assert report.new is not None
    record = sync_remote.download_blob(PackKey(bytes(report.new)))
    # the bound: that file and its trees (here raw, above compressed) + record + 1 KiB
    assert report.bytes_uploaded <= report.raw_bytes_sent + len(record) + 1024
    assert report.packs_uploaded == 2  # one tree pack, one blob pack
    packs = records_packs(sync_remote, report.new)
    assert len(packs) == 4  # the old packs still hold live objects, the new ones the rest
    pull(sync_remote, REF, tmp_path / "out", cache_dir=cache())
    assert describe(tmp_path / "out") == describe(source_tree)


def test_push_from_a_machine_that_never_saw_the_remote_fetches_metadata_only(
    source_tree: Path, tmp_path: Path
) -> None:
    remote = CountingTransport()
    push(source_tree, remote, REF)
    copy = tmp_path / "elsewhere"
    shutil.copytree(source_tree, copy, symlinks=True)
    (copy / "new.txt").write_text("only this is new")
    remote.calls.clear()
    report = push(copy, remote, REF)
    assert "download_pack_stream" not in remote.calls  # no pack was read
    assert report.objects_sent == 2  # new.txt and the root tree
    assert report.bytes_downloaded < 4096  # the record and the index blobs


def test_dry_run_reports_and_writes_nothing(sync_remote: Transport, source_tree: Path) -> None:
    report = push(source_tree, sync_remote, REF, dry_run=True)
    assert report.dry_run and not report.updated and report.objects_sent > 40
    assert report.packs_uploaded == report.bytes_uploaded == 0
    assert sync_remote.read_ref(REF) is None
    real = push(source_tree, sync_remote, REF)
    assert real.objects_sent == report.objects_sent
    assert real.raw_bytes_sent == report.raw_bytes_sent


def test_stale_expectation_is_non_fast_forward_and_force_overrides(
    sync_remote: Transport, source_tree: Path, tmp_path: Path
) -> None:
    first = push(source_tree, sync_remote, REF)
    other = write_tree(tmp_path / "other", seed=9, files=5)
    assert first.new is not None
    stale = RefWriteCondition.MISSING
    with pytest.raises(RefConflict, match="non-fast-forward") as caught:
        push(other, sync_remote, REF, expect=stale)
    assert caught.value.current == first.new
    assert sync_remote.read_ref(REF) == first.new
    forced = push(other, sync_remote, REF, expect=RefWriteCondition.ANY)
    assert forced.updated and sync_remote.read_ref(REF) == forced.new


def test_progress_reports_phases_in_order(sync_remote: Transport, source_tree: Path) -> None:
    events: list[Progress] = []
    push(source_tree, sync_remote, REF, progress=events.append)
    phases = [e.phase for e in events]
    assert phases[0] == "plan" and phases[-1] == "done"
    assert phases.index("upload") < phases.index("commit") < phases.index("done")
    assert events[-1].bytes_out > 0 and events[-1].objects_done == events[-1].objects_total


def test_bandwidth_limit_applies(source_tree: Path, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    (big / "noise").write_bytes(os.urandom(300_000))
    remote = MemoryTransport()
    start = time.monotonic()
    report = push(big, remote, REF, bwlimit=1_000_000)
    assert report.bytes_uploaded > 300_000
    assert time.monotonic() - start >= 0.25  # 300 kB at 1 MB/s cannot take less


def test_pull_uses_its_cache(
    sync_remote: Transport, source_tree: Path, tmp_path: Path, cache: Callable[[], str]
) -> None:
    push(source_tree, sync_remote, REF)
    shared = cache()
    first = pull(sync_remote, REF, tmp_path / "a", cache_dir=shared, cache_limit=1 << 30)
    assert first.packs_downloaded == 2 and first.packs_cached == 0
    (source_tree / "d0" / "e0" / "f0.txt").write_text("edited")
    push(source_tree, sync_remote, REF)
    second = pull(sync_remote, REF, tmp_path / "b", cache_dir=shared, cache_limit=1 << 30)
    assert (second.packs_downloaded, second.packs_cached) == (2, 2)
    assert describe(tmp_path / "b") == describe(source_tree)


def test_pull_refuses_a_non_empty_destination_unless_replacing(
    sync_remote: Transport, source_tree: Path, tmp_path: Path, cache: Callable[[], str]
) -> None:
    push(source_tree, sync_remote, REF)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--replace"):
        pull(sync_remote, REF, dest, cache_dir=cache())
    assert describe(dest) == {"keep.txt": ("file", 0o644, b"mine")}
    pull(sync_remote, REF, dest, cache_dir=cache(), replace=True)
    assert describe(dest) == describe(source_tree)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dest")] == []


def test_mirror_copies_through_memory_and_skips_what_is_there(
    sync_remote: Transport, source_tree: Path, tmp_path: Path, cache: Callable[[], str]
) -> None:
    push(source_tree, sync_remote, REF)
    dst = FileTransport(tmp_path / "mirror")
    dry = mirror(sync_remote, dst, REF, dry_run=True)
    assert dry.dry_run and dry.objects_sent > 0 and dst.read_ref(REF) is None
    first = mirror(sync_remote, dst, REF)
    assert first.updated and first.packs_uploaded == 2 and dst.read_ref(REF) == first.new
    assert mirror(sync_remote, dst, REF).updated is False
    (source_tree / "d2" / "e2" / "f2.txt").write_text("changed for the mirror")
    push(source_tree, sync_remote, REF)
    second = mirror(sync_remote, dst, REF)
    assert (second.packs_uploaded, second.packs_skipped) == (2, 2)
    pull(dst, REF, tmp_path / "out", cache_dir=cache())
    assert describe(tmp_path / "out") == describe(source_tree)
    assert [e.parent_missing for e in log(dst, REF)] == [False, False]


def test_log_walks_records_and_marks_a_missing_parent(
    sync_remote: Transport, source_tree: Path
) -> None:
    values = []
    for i in range(3):
        (source_tree / "counter").write_text(str(i))
        values.append(push(source_tree, sync_remote, REF).new)
    entries = log(sync_remote, REF)
    assert [e.key.hex() for e in entries] == [str(v) for v in reversed(values)]
    assert entries[-1].parent is None and entries[0].parent == entries[1].key
    assert len(log(sync_remote, REF, limit=2)) == 2
    lone = MemoryTransport()
    mirror(sync_remote, lone, REF)
    mirrored = log(lone, REF)
    assert len(mirrored) == 1 and mirrored[0].parent_missing


def test_show_lists_files_from_tree_packs_only(source_tree: Path, tmp_path: Path) -> None:
    remote = CountingTransport()
    push(source_tree, remote, REF)
    remote.calls.clear()
    listing = show(remote, REF, cache_dir=str(tmp_path / "c"))
    assert remote.calls.count("download_pack_stream") == 1  # the tree pack, not the blobs
    paths = {e.path: e for e in listing.entries}
    assert paths["run.sh"].mode == 0o755 and paths["link-abs"].type == "symlink"
    assert paths["empty/deeper"].type == "dir"
    under = show(remote, REF, "d1/e1", cache_dir=str(tmp_path / "c"))
    assert {e.path for e in under.entries} == {
        str(p.relative_to(source_tree)) for p in (source_tree / "d1" / "e1").iterdir()
    }
    one = show(remote, REF, "run.sh", cache_dir=str(tmp_path / "c"))
    assert [e.path for e in one.entries] == ["run.sh"]
    with pytest.raises(FileNotFoundError):
        show(remote, REF, "nope", cache_dir=str(tmp_path / "c"))


def test_trees_live_in_their_own_packs(sync_remote: Transport, source_tree: Path) -> None:
    report = push(source_tree, sync_remote, REF)
    packs = records_packs(sync_remote, report.new)
    kinds = []
    for pack in packs:
        rows = decode_index(sync_remote.download_blob(pack.index), pack.key)
        kinds.append({kind for _, kind in rows})
        verifier = PackVerifier()
        for chunk in sync_remote.download_pack_stream(pack.key):
            verifier.feed(chunk)
        assert {(e.oid, e.kind) for e in verifier.finish().entries} == set(rows)
    assert kinds[0] == {KIND_TREE} and all(KIND_TREE not in k for k in kinds[1:])


def test_index_blobs_with_unsorted_repeated_or_unknown_rows_are_refused() -> None:
    """decode_index checks every row (in C-level passes): sorted, unique, known kinds."""
    from mkit_transport.errors import InvalidResponse
    from mkit_transport.pack import KIND_BLOB, KIND_TREE
    from mkit_transport.sync.model import encode_index

    pack = PackKey(bytes(range(32)))
    a, b, c = (bytes([n]) * 32 for n in (1, 2, 3))
    good = encode_index(pack, [(b, KIND_TREE), (a, KIND_BLOB), (c, KIND_BLOB)])
    assert decode_index(good, pack) == [(a, KIND_BLOB), (b, KIND_TREE), (c, KIND_BLOB)]
    head, rows = (
        good[: len(good) - 3 * 33],
        [good[len(good) - 33 * (3 - i) :][:33] for i in range(3)],
    )
    for bad_rows in (
        [rows[1], rows[0], rows[2]],  # unsorted
        [rows[0], rows[0], rows[2]],  # an id twice
        [rows[0], rows[1], bytes([9]) + c],  # an unknown kind
    ):
        with pytest.raises(InvalidResponse, match="unsorted"):
            decode_index(head + b"".join(bad_rows), pack)
