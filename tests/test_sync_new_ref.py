"""A push to a new ref borrows what other refs' tips hold (spec/SPEC-SYNC.md, SYNC-59).

git negotiates a new branch against every ref the remote advertises; a backup tool
dedups a new snapshot against the ones stored. Without this, a push to a new ref of
a tree the store already holds under another name sent every object again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mkit_transport import MemoryTransport, PackNotFound, Transport
from mkit_transport.sync import pull, push
from tests.support.sync_fixtures import describe, record_of

MAIN = "refs/heads/main"
FEATURE = "refs/heads/feature"


def test_a_branch_of_a_pushed_tree_sends_only_what_differs(
    sync_remote: Transport, source_tree: Path, tmp_path: Path, cache: Callable[[], str]
) -> None:
    first = push(source_tree, sync_remote, MAIN, stat_cache=False)
    (source_tree / "d2" / "e1" / "f7.txt").write_text("a change on the branch")
    report = push(source_tree, sync_remote, FEATURE, stat_cache=False)
    # the blob, then its trees: e1, d2 and the root
    assert (report.old, report.objects_sent) == (None, 4)
    assert report.objects_skipped == first.objects_sent - 4
    assert report.packs_uploaded == 2  # one tree pack, one blob pack
    record, main = record_of(sync_remote, FEATURE), record_of(sync_remote, MAIN)
    assert record.parent is None  # a new history: the branch's first record
    assert {p.key for p in main.packs} <= {p.key for p in record.packs}
    pull(sync_remote, FEATURE, tmp_path / "out", cache_dir=cache())
    assert describe(tmp_path / "out") == describe(source_tree)


def test_the_same_tree_under_a_new_name_sends_no_object(
    sync_remote: Transport, source_tree: Path, tmp_path: Path, cache: Callable[[], str]
) -> None:
    push(source_tree, sync_remote, MAIN)
    report = push(source_tree, sync_remote, "refs/tags/v1")  # no sibling: every ref is read
    assert (report.objects_sent, report.packs_uploaded, report.raw_bytes_sent) == (0, 0, 0)
    assert record_of(sync_remote, "refs/tags/v1").root == record_of(sync_remote, MAIN).root
    pull(sync_remote, "refs/tags/v1", tmp_path / "out", cache_dir=cache())
    assert describe(tmp_path / "out") == describe(source_tree)


def test_without_siblings_every_ref_is_read(source_tree: Path) -> None:
    remote = MemoryTransport()
    push(source_tree, remote, "refs/backups/a/main", stat_cache=False)
    (source_tree / "new.txt").write_text("only this is new")
    report = push(source_tree, remote, "refs/heads/main", stat_cache=False)
    assert report.objects_sent == 2  # new.txt and the root tree


class _Sweeping(MemoryTransport):
    """A store where gc sweeps ``swept`` right after the record is uploaded."""

    swept: Any = None

    def upload_blob(self, data: bytes, key: Any) -> None:
        super().upload_blob(data, key)
        if self.swept is not None and data[:4] != b"MKIX":
            self.delete_pack(self.swept)
            self.swept = None


def test_a_borrowed_pack_swept_before_the_cas_fails_the_push_and_writes_no_ref(
    source_tree: Path,
) -> None:
    remote = _Sweeping()
    push(source_tree, remote, MAIN, stat_cache=False)
    borrowed = record_of(remote, MAIN).packs[-1].key  # a blob pack: the branch needs it
    (source_tree / "new.txt").write_text("only this is new")
    remote.swept = borrowed
    with pytest.raises(PackNotFound, match="push again"):
        push(source_tree, remote, FEATURE, stat_cache=False)
    assert remote.read_ref(FEATURE) is None
    assert not remote.pack_exists(borrowed)


def test_a_sibling_whose_record_is_gone_is_skipped(
    source_tree: Path, tmp_path: Path, cache: Callable[[], str]
) -> None:
    remote = MemoryTransport()
    first = push(source_tree, remote, MAIN, stat_cache=False)
    assert first.new is not None
    push(source_tree, remote, "refs/heads/other", stat_cache=False)
    from mkit_transport import PackKey

    remote.delete_pack(PackKey(bytes(first.new)))  # main's record: main is broken
    (source_tree / "new.txt").write_text("only this is new")
    report = push(source_tree, remote, FEATURE, stat_cache=False)
    assert report.objects_sent == 2  # "other" still lends everything else
    pull(remote, FEATURE, tmp_path / "out", cache_dir=cache())
    assert describe(tmp_path / "out") == describe(source_tree)


def test_a_dry_run_to_a_new_ref_reports_the_same_send_set(
    sync_remote: Transport, source_tree: Path
) -> None:
    push(source_tree, sync_remote, MAIN, stat_cache=False)
    (source_tree / "d0" / "e0" / "f0.txt").write_text("changed")
    dry = push(source_tree, sync_remote, FEATURE, dry_run=True, stat_cache=False)
    assert sync_remote.read_ref(FEATURE) is None
    real = push(source_tree, sync_remote, FEATURE, stat_cache=False)
    assert dry.dry_run and (dry.objects_sent, dry.raw_bytes_sent) == (
        real.objects_sent,
        real.raw_bytes_sent,
    )
    assert real.objects_sent == 4
