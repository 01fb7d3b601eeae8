"""fsck and repair (spec/SPEC-FSCK.md): find missing and corrupt keys, blame refs, heal.

Real stores (memory and file, and one HTTP server) and real pushes; damage is planted
behind the transport's back (the file system, or the memory store's back door), the
way rot or a bad disk would leave it.
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mkit_transport import (
    FileTransport,
    Hash,
    InvalidArgument,
    InvalidResponse,
    MemoryTransport,
    PackKey,
    PayloadTooLarge,
    RefNotFound,
    RefWriteCondition,
    Transport,
    open_transport,
)
from mkit_transport.cli import main
from mkit_transport.sync import pull, push
from mkit_transport.sync.fsck import FsckReport, fsck, repair_from
from testbed.http_server import HttpServer
from tests.support.sync_fixtures import CountingTransport, describe, record_of

MAIN, OTHER, COPY = "refs/heads/main", "refs/heads/other", "refs/heads/copy"


def _tree(root: Path, label: str, files: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (root / f"f{i}.txt").write_bytes(f"{label} file {i}\n".encode() * (80 + i))
    return root


@pytest.fixture(params=["memory", "file"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL the CLI can open too (a named memory store, or a file store)."""
    if request.param == "memory":
        yield f"mkit+memory://fsck-{uuid.uuid4().hex[:12]}"
    else:
        yield f"mkit+file://{tmp_path / 'store'}"


@pytest.fixture
def store(url: str) -> Iterator[Transport]:
    with open_transport(url) as transport:
        transport.init_store()
        yield transport


def _flip(store: Transport, key: PackKey) -> None:
    """Rot one byte in the middle of a stored key, behind the transport (same size)."""
    if isinstance(store, MemoryTransport):
        data = bytearray(store.store.packs[key])
        data[len(data) // 2] ^= 0x40
        store.store.packs[key] = bytes(data)
        return
    assert isinstance(store, FileTransport)
    _flip_file(Path(store.pack_path(key)))


def _flip_file(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def _state(store: Transport) -> object:
    """Every byte the store holds (packs, refs), to prove fsck wrote nothing."""
    if isinstance(store, MemoryTransport):
        return dict(store.store.packs), dict(store.store.refs)
    assert isinstance(store, FileTransport)
    root = Path(store.root)
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _history(store: Transport, tmp_path: Path) -> None:
    """main: v1 then v2; copy: v1 again (sharing v1's packs); other: its own tree."""
    push(_tree(tmp_path / "v1", "one"), store, MAIN)
    push(_tree(tmp_path / "v2", "two"), store, MAIN)
    push(_tree(tmp_path / "v1", "one"), store, COPY)
    push(_tree(tmp_path / "other", "other"), store, OTHER)


def _first_record(store: Transport, ref: str) -> PackKey:
    value = store.read_ref(ref)
    assert value is not None
    return PackKey(bytes(value))


def test_a_clean_store_passes_and_fsck_reads_only(store: Transport, tmp_path: Path) -> None:
    _history(store, tmp_path)
    before = _state(store)
    seen: list[FsckReport] = []
    report = fsck(store, progress=seen.append)
    assert report.ok and (report.missing, report.corrupt) == ((), ())
    assert sorted(report.refs) == [COPY, MAIN, OTHER]
    assert report.records == 4  # main's two, copy's one, other's one
    packs = {p.key for ref in (MAIN, COPY, OTHER) for p in record_of(store, ref).packs}
    packs |= {p.key for p in record_of(store, COPY).packs}  # v1, main's parent
    assert report.packs_checked == len(packs) and report.blobs_checked == len(packs)
    assert len(seen) == report.packs_checked
    assert report.bytes_checked >= sum(store.pack_size(k) for k in packs)
    assert _state(store) == before


def test_a_corrupt_pack_is_found_and_blames_every_ref_that_reaches_it(
    store: Transport, tmp_path: Path
) -> None:
    _history(store, tmp_path)
    shared = record_of(store, COPY).packs[-1].key  # in v1: main's parent, and copy's tip
    assert shared in {p.key for p in record_of(store, COPY).packs}
    _flip(store, shared)
    before = _state(store)
    report = fsck(store)
    assert not report.ok and report.missing == ()
    assert [(d.key, d.what, d.refs) for d in report.corrupt] == [
        (shared.hex(), "pack", (COPY, MAIN))
    ]
    assert report.corrupt[0].reason and report.corrupt[0].reason != "missing"
    assert _state(store) == before, "fsck changes nothing, even when it finds damage"
    with pytest.raises((InvalidResponse, PayloadTooLarge)):  # as the rot decodes
        pull(store, COPY, tmp_path / "out", cache_dir=str(tmp_path / "cache"))


def test_a_rotted_index_blob_is_corrupt_and_names_its_pack(
    store: Transport, tmp_path: Path
) -> None:
    """An index blob that rots is corrupt too, and names its pack."""
    push(_tree(tmp_path / "v1", "one"), store, MAIN)
    pack = record_of(store, MAIN).packs[0]
    _flip(store, pack.index)
    report = fsck(store)
    assert [(d.key, d.what, d.of, d.refs) for d in report.corrupt] == [
        (pack.index.hex(), "index", pack.key.hex(), (MAIN,))
    ]


def test_deleted_packs_and_blobs_are_missing(store: Transport, tmp_path: Path) -> None:
    _history(store, tmp_path)
    own = record_of(store, OTHER).packs
    store.delete_pack(own[0].key)
    store.delete_pack(own[-1].index)
    report = fsck(store)
    assert report.corrupt == ()
    assert {(d.key, d.what, d.reason, d.refs) for d in report.missing} == {
        (own[0].key.hex(), "pack", "missing", (OTHER,)),
        (own[-1].index.hex(), "index", "missing", (OTHER,)),
    }


def test_ref_restricts_the_check(store: Transport, tmp_path: Path) -> None:
    _history(store, tmp_path)
    _flip(store, record_of(store, OTHER).packs[0].key)
    assert fsck(store, refs=[MAIN, COPY]).ok
    only = fsck(store, refs=[OTHER])
    assert only.refs == (OTHER,) and [d.refs for d in only.corrupt] == [(OTHER,)]
    with pytest.raises(RefNotFound):
        fsck(store, refs=["refs/heads/nope"])
    with pytest.raises(InvalidArgument):
        fsck(store, refs=MAIN)  # a string, not a list of names


def test_unreadable_and_absent_records_are_reported_not_crashed_on(
    store: Transport, tmp_path: Path
) -> None:
    push(_tree(tmp_path / "v1", "one"), store, MAIN)
    junk = b"not a snapshot record"
    store.upload_blob(junk, PackKey.of(junk))
    store.update_ref("refs/heads/junk", RefWriteCondition.MISSING, Hash(bytes(PackKey.of(junk))))
    nowhere = Hash(bytes(PackKey.of(b"never stored")))
    store.update_ref("refs/heads/gone", RefWriteCondition.MISSING, nowhere)
    report = fsck(store)
    assert [(d.key, d.what, d.refs) for d in report.corrupt] == [
        (PackKey.of(junk).hex(), "record", ("refs/heads/junk",))
    ]
    assert [(d.key, d.what, d.refs) for d in report.missing] == [
        (nowhere.hex(), "record", ("refs/heads/gone",))
    ]
    assert fsck(store, refs=[MAIN]).ok


def test_fsck_streams_packs_never_whole(tmp_path: Path) -> None:
    store = CountingTransport()
    push(_tree(tmp_path / "v1", "one"), store, MAIN)
    store.calls.clear()
    report = fsck(store)
    assert report.ok
    assert "download_pack_stream" in store.calls
    assert store.calls.count("download_pack_stream") == report.packs_checked
    # Whole downloads only for small blobs: the index blobs and the record.
    assert store.calls.count("download_pack") == report.blobs_checked + report.records


# -- repair ---------------------------------------------------------------------------


def _good_copy(url: str, store: Transport, tmp_path: Path) -> str:
    """A second store holding the same keys (a plain directory for file, a URL else)."""
    if isinstance(store, FileTransport):
        shutil.copytree(store.root, tmp_path / "good")
        return str(tmp_path / "good")
    assert isinstance(store, MemoryTransport)
    good = f"mkit+memory://good-{uuid.uuid4().hex[:12]}"
    with open_transport(good) as copy:
        for key, data in store.store.packs.items():
            copy.upload_pack(data, key)
    return good


def test_cli_fsck_repair_from_a_good_copy_makes_pull_work(
    url: str, store: Transport, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _history(store, tmp_path)
    source = _good_copy(url, store, tmp_path)
    rotten, lost = record_of(store, MAIN).packs[0], record_of(store, OTHER).packs[0]
    _flip(store, rotten.key)
    store.delete_pack(lost.key)
    with pytest.raises((InvalidResponse, PayloadTooLarge)):
        pull(store, MAIN, tmp_path / "before", cache_dir=str(tmp_path / "c1"))

    out = io.StringIO()
    assert main(["fsck", url, "--json"], out=out) == 4
    found = json.loads(out.getvalue())
    assert found["ok"] is False
    assert [(d["key"], d["refs"]) for d in found["corrupt"]] == [(rotten.key.hex(), [MAIN])]
    assert [(d["key"], d["refs"]) for d in found["missing"]] == [(lost.key.hex(), [OTHER])]
    assert main(["fsck", url], out=(text := io.StringIO())) == 4
    assert f"pack {rotten.key.hex()} (breaks {MAIN})" in text.getvalue()

    out = io.StringIO()
    assert main(["fsck", url, "--repair", "--from", source, "--json"], out=out) == 0, out.getvalue()
    fixed = json.loads(out.getvalue())
    assert fixed["repaired"] is True
    assert {d["key"] for d in fixed["repairs"][0]["repaired"]} == {
        rotten.key.hex(),
        lost.key.hex(),
    }
    assert main(["fsck", url], out=io.StringIO()) == 0
    pull(store, MAIN, tmp_path / "after", cache_dir=str(tmp_path / "c2"))
    assert describe(tmp_path / "after") == describe(tmp_path / "v2")
    pull(store, OTHER, tmp_path / "other-out", cache_dir=str(tmp_path / "c3"))
    assert capsys.readouterr().err == ""


def test_a_source_that_lacks_the_pack_leaves_it_unrepaired(
    url: str, store: Transport, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    push(_tree(tmp_path / "v1", "one"), store, MAIN)
    rotten = record_of(store, MAIN).packs[0].key
    _flip(store, rotten)
    damaged = _state(store)
    empty = tmp_path / "empty"
    FileTransport(empty).init_store()
    assert main(["fsck", url, "--repair", "--from", str(empty)], out=(text := io.StringIO())) == 5
    assert f"unrepaired: pack {rotten.hex()}: the source lacks it" in text.getvalue()
    assert _state(store) == damaged
    # A source whose copy is damaged too: refused before anything is written.
    with open_transport(f"mkit+memory://bad-{uuid.uuid4().hex[:12]}") as bad:
        if isinstance(store, MemoryTransport):
            bad.store.packs[rotten] = store.store.packs[rotten]  # type: ignore[attr-defined]
        else:
            assert isinstance(store, FileTransport) and isinstance(bad, MemoryTransport)
            bad.store.packs[rotten] = Path(store.pack_path(rotten)).read_bytes()
        result = repair_from(store, bad, fsck(store))
    assert [d.reason.startswith("the source's copy is damaged too") for d in result.unrepaired] == [
        True
    ]
    assert _state(store) == damaged
    assert capsys.readouterr().err == ""


def test_a_rotted_record_is_repaired_and_what_it_lists_checked_after(
    url: str, store: Transport, tmp_path: Path
) -> None:
    _history(store, tmp_path)
    source = _good_copy(url, store, tmp_path)
    tip = _first_record(store, OTHER)
    lost = record_of(store, OTHER).packs[0].key
    _flip(store, tip)
    store.delete_pack(lost)  # behind the rotted record: no check can see it yet
    found = fsck(store)
    assert [(d.key, d.what, d.refs) for d in found.corrupt] == [(tip.hex(), "record", (OTHER,))]
    assert found.missing == ()
    out = io.StringIO()
    assert main(["fsck", url, "--repair", "--from", source, "--json"], out=out) == 0
    rounds = json.loads(out.getvalue())["repairs"]
    assert [[d["key"] for d in r["repaired"]] for r in rounds] == [[tip.hex()], [lost.hex()]]
    assert fsck(store).ok
    pull(store, OTHER, tmp_path / "out", cache_dir=str(tmp_path / "cache"))
    assert describe(tmp_path / "out") == describe(tmp_path / "other")


def test_cli_repair_needs_from(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fsck", url, "--repair"], out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert err == "mkit_transport: fsck --repair needs --from DIR_OR_URL\n"
    assert main(["fsck", url, "--from", "/tmp"], out=io.StringIO()) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["fsck", url, "--repair", "--from", "/no/such/dir"], out=io.StringIO()) == 21


def test_push_repair_heals_a_rotted_pack(url: str, store: Transport, tmp_path: Path) -> None:
    tree = _tree(tmp_path / "v1", "one")
    push(tree, store, MAIN)
    rotten = record_of(store, MAIN).packs[0]
    _flip(store, rotten.key)
    _flip(store, rotten.index)
    with pytest.raises(InvalidArgument):
        push(tree, store, MAIN, repair="yes")  # type: ignore[arg-type]
    plain = push(tree, store, MAIN)  # unchanged tree: trusts what is stored
    assert not plain.updated and not fsck(store).ok
    assert main(["push", str(tree), url, MAIN, "--repair"], out=io.StringIO()) == 0
    report = fsck(store)
    assert report.ok, report
    pull(store, MAIN, tmp_path / "out", cache_dir=str(tmp_path / "cache"))
    assert describe(tmp_path / "out") == describe(tree)


def test_push_without_repair_leaves_a_rotted_copy_in_place(
    store: Transport, tmp_path: Path
) -> None:
    tree = _tree(tmp_path / "v1", "one")
    push(tree, store, MAIN)
    rotten = record_of(store, MAIN).packs[0].key
    _flip(store, rotten)
    # A first push of another ref borrows main's packs (SYNC-59) and trusts them unread.
    again = push(tree, store, COPY)
    assert (again.objects_sent, again.packs_uploaded) == (0, 0)
    assert [d.key for d in fsck(store).corrupt] == [rotten.hex()]


@pytest.mark.server
def test_fsck_over_http_finds_a_planted_corrupt_pack(
    http_server: HttpServer, tmp_path: Path
) -> None:
    project = f"fsck-{uuid.uuid4().hex[:8]}"
    with open_transport(http_server.url(project)) as store:
        push(_tree(tmp_path / "v1", "one"), store, MAIN)
        push(_tree(tmp_path / "other", "other"), store, OTHER)
        rotten = record_of(store, MAIN).packs[0].key
        backend = FileTransport(http_server.root / project)
        _flip_file(Path(backend.pack_path(rotten)))
        report = fsck(store)
        assert [(d.key, d.what, d.refs) for d in report.corrupt] == [
            (rotten.hex(), "pack", (MAIN,))
        ]
        assert fsck(store, refs=[OTHER]).ok
    assert main(["fsck", http_server.url(project)], out=io.StringIO()) == 4
