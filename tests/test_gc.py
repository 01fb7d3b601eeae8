"""gc (spec/SPEC-SYNC.md, "Garbage collection"): mark from every ref, sweep old orphans.

Real stores (memory and file) and real pushes; time is aged with gc's ``now``
rather than by sleeping, so no assertion depends on the machine's speed.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
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
    RefConflict,
    RefWriteCondition,
    Transport,
    open_transport,
)
from mkit_transport.cli import main
from mkit_transport.sync import Progress, pull, push
from mkit_transport.sync.common import fetch_record
from mkit_transport.sync.gc import gc, reachable

HOUR = 3600.0


def _tree(root: Path, label: str, files: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"f{i}.txt").write_bytes(f"{label} file {i}\n".encode() * (50 + i))
    return root


def _stored(transport: Transport) -> set[PackKey]:
    return {info.key for info in transport.list_packs()}


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Transport:
    if request.param == "memory":
        return MemoryTransport()
    return FileTransport(tmp_path / "store")


def test_gc_sweeps_old_orphans_keeps_history_and_young_orphans(
    store: Transport, tmp_path: Path
) -> None:
    push(_tree(tmp_path / "v1", "one"), store, "refs/heads/main")
    push(_tree(tmp_path / "v2", "two"), store, "refs/heads/main")  # v1 is its parent
    push(_tree(tmp_path / "other", "other"), store, "refs/heads/other")
    live = _stored(store)
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
    assert _stored(store) == live | {PackKey.of(orphan)}
    done = gc(store, grace=HOUR, now=later)
    assert done.swept == 1 and done.listed == len(live) + 1
    assert _stored(store) == live, "only the orphan went; the parent's packs stayed"
    for ref in ("refs/heads/main", "refs/heads/other"):
        pull(store, ref, tmp_path / ref.replace("/", "-"), cache_dir=str(tmp_path / "cache"))
    assert (tmp_path / "refs-heads-main" / "f0.txt").read_bytes().startswith(b"two")
    assert gc(store, grace=0, now=later).swept == 0, "nothing reachable is ever swept"


def test_gc_after_a_ref_is_deleted_frees_only_what_it_alone_held(
    store: Transport, tmp_path: Path
) -> None:
    push(_tree(tmp_path / "a", "shared"), store, "refs/heads/a")
    push(_tree(tmp_path / "a", "shared"), store, "refs/heads/b")  # same content
    push(_tree(tmp_path / "c", "only-c"), store, "refs/heads/c")
    before = _stored(store)
    value = store.read_ref("refs/heads/c")
    assert value is not None
    c_packs = {p.key for p in fetch_record(store, value).packs}
    store.delete_ref("refs/heads/c", RefWriteCondition.match(value))
    report = gc(store, grace=0, now=time.time() + 1)
    assert report.swept >= len(c_packs)
    remaining = _stored(store)
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
    before = _stored(store)
    with pytest.raises(InvalidResponse, match="refs/heads/odd"):
        gc(store, grace=0, now=time.time() + HOUR)
    assert _stored(store) == before


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
        push(_tree(tmp_path / "v1", "one"), store, "refs/heads/main")
        orphan = b"orphan"
        store.upload_pack(orphan, PackKey.of(orphan))
        os.utime(FileTransport(tmp_path / "store").pack_path(PackKey.of(orphan)), (1, 1))
        live = _stored(store)
    out = io.StringIO()
    assert main(["gc", url, "--dry-run", "--json"], out=out) == 0
    report = json.loads(out.getvalue())
    assert (report["swept"], report["dry_run"], report["url"]) == (1, True, url)
    assert main(["gc", url, "--grace", "2h"], out=(text := io.StringIO())) == 0
    assert "deleted 1 unreachable" in text.getvalue()
    with open_transport(url) as store:
        assert _stored(store) == live - {PackKey.of(orphan)}
    assert main(["gc", url, "--grace", "soon"], out=io.StringIO()) == 21  # InvalidArgument
    assert "InvalidArgument" in capsys.readouterr().err


def test_a_push_fails_cleanly_when_gc_swept_a_pack_it_found_stored(
    store: Transport, tmp_path: Path
) -> None:
    """Window 2 of SPEC-GC: a push reuses an old orphan pack, and gc sweeps it."""
    tree = _tree(tmp_path / "same", "same content")
    push(tree, store, "refs/heads/gone")
    store.delete_ref("refs/heads/gone", RefWriteCondition.ANY)  # its packs are orphans now
    push(_tree(tmp_path / "kept", "kept"), store, "refs/heads/kept")

    def sweep_at_commit(event: Progress) -> None:
        if event.phase == "commit":  # after the push found its packs stored, before its CAS
            gc(store, grace=HOUR, now=time.time() + 2 * HOUR)

    with pytest.raises(PackNotFound, match="push again"):
        push(tree, store, "refs/heads/new", progress=sweep_at_commit)
    assert store.read_ref("refs/heads/new") is None, "nothing committed"
    pull(store, "refs/heads/kept", tmp_path / "kept-out", cache_dir=str(tmp_path / "c"))
    report = push(tree, store, "refs/heads/new")  # pushing again uploads the packs anew
    assert report.packs_uploaded >= 1
    pull(store, "refs/heads/new", tmp_path / "new-out", cache_dir=str(tmp_path / "c2"))
    assert (tmp_path / "new-out" / "f0.txt").read_bytes().startswith(b"same content")


def _pusher(url: str, root: str, worker: int, rounds: int) -> None:
    """Push a new tree each round onto its own ref and onto a shared one (lost races
    leave orphans), and plant an aged orphan each round for the collector to sweep."""
    layout = FileTransport(url.removeprefix("mkit+file://"))
    with open_transport(url) as store:
        for i in range(rounds):
            tree = _tree(Path(root) / f"w{worker}-{i}", f"worker {worker} round {i}", files=2)
            push(tree, store, f"refs/heads/w{worker}")
            with contextlib.suppress(RefConflict):
                push(tree, store, "refs/heads/shared")
            junk = f"aged orphan {worker} {i}".encode()
            store.upload_pack(junk, PackKey.of(junk))
            os.utime(layout.pack_path(PackKey.of(junk)), (1, 1))


def _collector(url: str, stop: str, tally: str) -> None:
    """Collect over and over while the pushers run, and once more after they stop."""
    swept = 0
    with open_transport(url) as store:
        while True:
            last = os.path.exists(stop)
            swept += gc(store, grace=GRACE).swept
            if last:
                break
    Path(tally).write_text(str(swept))


#: Far longer than any push of these small trees between its uploads and its CAS.
GRACE = 60.0


def test_pushes_racing_gc_on_file_never_break_a_ref(tmp_path: Path) -> None:
    """Real processes: two pushers (50 rounds each) and a collector sweeping meanwhile."""
    url = f"mkit+file://{tmp_path / 'store'}"
    rounds, tally, stop = 50, tmp_path / "swept", tmp_path / "stop"
    context = multiprocessing.get_context("spawn")
    pushers = [
        context.Process(target=_pusher, args=(url, str(tmp_path / "src"), w, rounds))
        for w in range(2)
    ]
    collector = context.Process(target=_collector, args=(url, str(stop), str(tally)))
    for process in [collector, *pushers]:
        process.start()
    for process in pushers:
        process.join(600)
        assert process.exitcode == 0
    stop.touch()
    collector.join(600)
    assert collector.exitcode == 0
    # Every aged orphan was swept, once; no orphan of a lost race (all younger than
    # the grace period) was.
    assert int(tally.read_text()) == 2 * rounds
    cache = str(tmp_path / "cache")
    with open_transport(url) as store:
        for ref in store.list_refs("refs/heads"):
            pull(store, f"refs/heads/{ref.name}", tmp_path / "out" / ref.name, cache_dir=cache)
        # Once the grace period is over, the orphans of lost races go, and only they.
        gc(store, grace=GRACE, now=time.time() + HOUR)
        live, _, _ = reachable(store)
        assert _stored(store) <= live, "no orphan is left"
        for ref in store.list_refs("refs/heads"):
            pull(store, f"refs/heads/{ref.name}", tmp_path / "again" / ref.name, cache_dir=cache)


def test_spec_ids_are_all_mapped_to_existing_tests() -> None:
    """Every [GC-n] of spec/SPEC-GC.md is in its MUST table, and every test named exists."""
    import re

    root = Path(__file__).resolve().parent.parent
    spec = (root / "spec" / "SPEC-GC.md").read_text(encoding="utf-8")
    body, _, table = spec.partition("## 4. MUST -> test")
    tagged = set(re.findall(r"\[(GC-\d+)\]", body))
    rows = dict(re.findall(r"^\| (GC-\d+) \|[^|]*\|(.*)\|$", table, flags=re.MULTILINE))
    assert tagged == set(rows), f"tagged but not mapped, or back: {tagged ^ set(rows)}"
    source = Path(__file__).read_text(encoding="utf-8")
    remotes = (root / "tests" / "test_gc_remotes.py").read_text(encoding="utf-8")
    for ident, cell in rows.items():
        for test in re.findall(r"(test_\w+)", re.sub(r"test_gc\w*\.py", "", cell)):
            assert f"def {test}(" in source + remotes, f"{ident}: no test named {test}"


def test_gc_sweeps_old_debris_of_killed_writers_on_file(tmp_path: Path) -> None:
    store = FileTransport(tmp_path / "store")
    push(_tree(tmp_path / "v1", "one"), store, "refs/heads/main")
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
