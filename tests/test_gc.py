"""gc (spec/SPEC-SYNC.md, "Garbage collection"): mark from every ref, sweep old orphans.

Real stores (memory and file) and real pushes; time is aged with gc's ``now``
rather than by sleeping, so no assertion depends on the machine's speed.
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
    InvalidResponse,
    MemoryTransport,
    PackKey,
    PackNotFound,
    RefWriteCondition,
    Transport,
    open_transport,
)
from mkit_transport.cli import main
from mkit_transport.sync import Progress, pull, push
from mkit_transport.sync.common import fetch_record
from mkit_transport.sync.gc import gc
from tests.support.gc_race import RaceStore, race_pushes_against_gc, stored, tree

HOUR = 3600.0


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Transport:
    if request.param == "memory":
        return MemoryTransport()
    return FileTransport(tmp_path / "store")


def test_gc_sweeps_old_orphans_keeps_history_and_young_orphans(
    store: Transport, tmp_path: Path
) -> None:
    push(tree(tmp_path / "v1", "one"), store, "refs/heads/main")
    push(tree(tmp_path / "v2", "two"), store, "refs/heads/main")  # v1 is its parent
    push(tree(tmp_path / "other", "other"), store, "refs/heads/other")
    live = stored(store)
    orphan = b"an orphan of a push that lost its race"
    store.upload_pack(orphan, PackKey.of(orphan))
    later = time.time() + 2 * HOUR

    # An orphan younger than the grace period is kept (a push may be about to name it).
    young = gc(store, grace=HOUR, now=time.time())
    assert (young.swept, young.kept_young) == (0, 1)
    assert young.refs == 2 and young.records == 3
    # A dry run changes nothing but says what would go.
    dry = gc(store, grace=HOUR, dry_run=True, now=later)
    assert (dry.swept, dry.swept_bytes, dry.dry_run) == (1, len(orphan), True)
    assert dry.swept_keys == [PackKey.of(orphan).hex()]  # named, not only counted
    assert stored(store) == live | {PackKey.of(orphan)}
    done = gc(store, grace=HOUR, now=later)
    assert done.swept == 1 and done.listed == len(live) + 1
    assert done.swept_keys == dry.swept_keys
    assert stored(store) == live, "only the orphan went; the parent's packs stayed"
    for ref in ("refs/heads/main", "refs/heads/other"):
        pull(store, ref, tmp_path / ref.replace("/", "-"), cache_dir=str(tmp_path / "cache"))
    assert (tmp_path / "refs-heads-main" / "f0.txt").read_bytes().startswith(b"two")
    assert gc(store, grace=0, now=later).swept == 0, "nothing reachable is ever swept"


def test_gc_after_a_ref_is_deleted_frees_only_what_it_alone_held(
    store: Transport, tmp_path: Path
) -> None:
    push(tree(tmp_path / "a", "shared"), store, "refs/heads/a")
    push(tree(tmp_path / "a", "shared"), store, "refs/heads/b")  # same content
    push(tree(tmp_path / "c", "only-c"), store, "refs/heads/c")
    before = stored(store)
    value = store.read_ref("refs/heads/c")
    assert value is not None
    c_packs = {p.key for p in fetch_record(store, value).packs}
    store.delete_ref("refs/heads/c", RefWriteCondition.match(value))
    report = gc(store, grace=0, now=time.time() + 1)
    assert report.swept >= len(c_packs)
    remaining = stored(store)
    assert not (c_packs & remaining)
    assert remaining < before
    pull(store, "refs/heads/a", tmp_path / "pa", cache_dir=str(tmp_path / "cache"))
    pull(store, "refs/heads/b", tmp_path / "pb", cache_dir=str(tmp_path / "cache"))


def test_gc_refuses_a_ref_it_cannot_read_and_deletes_nothing(store: Transport) -> None:
    junk = b"not a snapshot record"
    store.upload_pack(junk, PackKey.of(junk))
    store.write_ref("refs/heads/odd", Hash(bytes(PackKey.of(junk))))
    orphan = b"orphan"
    store.upload_pack(orphan, PackKey.of(orphan))
    before = stored(store)
    with pytest.raises(InvalidResponse, match="refs/heads/odd"):
        gc(store, grace=0, now=time.time() + HOUR)
    assert stored(store) == before


def test_a_ref_naming_no_blob_reaches_nothing(store: Transport) -> None:
    store.write_ref("refs/heads/plain", Hash.of(b"no blob has this key"))
    orphan = b"orphan"
    store.upload_pack(orphan, PackKey.of(orphan))
    assert gc(store, grace=0, now=time.time() + HOUR).swept == 1


@pytest.mark.parametrize("grace", [-1, float("nan"), float("inf"), "1h", True])
def test_bad_arguments_are_refused(store: Transport, grace: object) -> None:
    with pytest.raises(InvalidArgument):
        gc(store, grace=grace)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        gc(store, dry_run="yes")  # type: ignore[arg-type]


def test_cli_gc(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"mkit+file://{tmp_path / 'store'}"
    with open_transport(url) as store:
        push(tree(tmp_path / "v1", "one"), store, "refs/heads/main")
        orphan = b"orphan"
        store.upload_pack(orphan, PackKey.of(orphan))
        os.utime(FileTransport(tmp_path / "store").pack_path(PackKey.of(orphan)), (1, 1))
        live = stored(store)
    out = io.StringIO()
    assert main(["gc", url, "--dry-run", "--json"], out=out) == 0
    report = json.loads(out.getvalue())
    assert (report["swept"], report["dry_run"], report["url"]) == (1, True, url)
    assert report["swept_keys"] == [PackKey.of(orphan).hex()]
    assert main(["gc", url, "--dry-run"], out=(dry := io.StringIO())) == 0
    assert f"would delete {PackKey.of(orphan).hex()}" in dry.getvalue()
    assert main(["gc", url, "--grace", "2h"], out=(text := io.StringIO())) == 0
    assert "deleted 1 unreachable" in text.getvalue()
    with open_transport(url) as store:
        assert stored(store) == live - {PackKey.of(orphan)}
    assert main(["gc", url, "--grace", "soon"], out=io.StringIO()) == 21  # InvalidArgument
    assert "InvalidArgument" in capsys.readouterr().err


def test_a_push_fails_cleanly_when_gc_swept_a_pack_it_found_stored(
    store: Transport, tmp_path: Path
) -> None:
    """Window 2 of SPEC-GC: a push reuses an old orphan pack, and gc sweeps it."""
    same = tree(tmp_path / "same", "same content")
    push(same, store, "refs/heads/gone")
    store.delete_ref("refs/heads/gone", RefWriteCondition.ANY)  # its packs are orphans now
    push(tree(tmp_path / "kept", "kept"), store, "refs/heads/kept")

    def sweep_at_commit(event: Progress) -> None:
        if event.phase == "commit":  # after the push found its packs stored, before its CAS
            gc(store, grace=HOUR, now=time.time() + 2 * HOUR)

    with pytest.raises(PackNotFound, match="push again"):
        push(same, store, "refs/heads/new", progress=sweep_at_commit)
    assert store.read_ref("refs/heads/new") is None, "nothing committed"
    pull(store, "refs/heads/kept", tmp_path / "kept-out", cache_dir=str(tmp_path / "c"))
    report = push(same, store, "refs/heads/new")  # pushing again uploads the packs anew
    assert report.packs_uploaded >= 1
    pull(store, "refs/heads/new", tmp_path / "new-out", cache_dir=str(tmp_path / "c2"))
    assert (tmp_path / "new-out" / "f0.txt").read_bytes().startswith(b"same content")


def test_pushes_racing_gc_on_file_never_break_a_ref(tmp_path: Path) -> None:
    """Real processes: two pushers (50 rounds each) and a collector sweeping meanwhile."""
    store = RaceStore(f"mkit+file://{tmp_path / 'store'}", backend=str(tmp_path / "store"))
    race_pushes_against_gc(store, tmp_path, pushers=2, rounds=50)


def test_spec_ids_are_all_mapped_to_existing_tests() -> None:
    """Every [GC-n] of spec/SPEC-GC.md is in its MUST table, and every test named exists."""
    import re

    root = Path(__file__).resolve().parent.parent
    spec = (root / "spec" / "SPEC-GC.md").read_text(encoding="utf-8")
    body, _, table = spec.partition(". MUST -> test\n")
    tagged = set(re.findall(r"\[(GC-\d+)\]", body))
    rows = dict(re.findall(r"^\| (GC-\d+) \|[^|]*\|(.*)\|$", table, flags=re.MULTILINE))
    assert tagged == set(rows), f"tagged but not mapped, or back: {tagged ^ set(rows)}"
    files = sorted((root / "tests").glob("test_*.py"))
    source = "".join(p.read_text(encoding="utf-8") for p in files)
    for ident, cell in rows.items():
        for test in re.findall(r"(test_\w+)", re.sub(r"tests/\w+\.py", "", cell)):
            assert f"def {test}(" in source, f"{ident}: no test named {test}"
    assert table, "the MUST -> test table is missing"


def test_gc_sweeps_old_debris_of_killed_writers_on_file(tmp_path: Path) -> None:
    store = FileTransport(tmp_path / "store")
    push(tree(tmp_path / "v1", "one"), store, "refs/heads/main")
    old_temp = tmp_path / "store" / "packs" / ".deadbeef.tmp.123.4"
    old_ref_temp = tmp_path / "store" / "refs" / "heads" / "main" / "..ref.tmp.9.9"
    young_temp = tmp_path / "store" / "packs" / ".cafe.tmp.5.6"
    for path in (old_temp, old_ref_temp, young_temp):
        path.write_bytes(b"half written by a killed writer")
    for path in (old_temp, old_ref_temp):
        os.utime(path, (1, 1))
    assert gc(store, grace=HOUR, dry_run=True).debris == 0
    assert old_temp.exists(), "a dry run sweeps nothing"
    assert gc(store, grace=HOUR).debris == 2
    assert not old_temp.exists() and not old_ref_temp.exists()
    assert young_temp.exists(), "young debris may be a write in progress"
    pull(store, "refs/heads/main", tmp_path / "out", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(InvalidArgument):
        store.sweep_debris(-1)
