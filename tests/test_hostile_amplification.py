"""Crafted snapshots that expand: a DAG of trees naming one child many times, deep nesting,
declared sizes no disk holds (issue 15 item 2), more packs than open files (item 7), and the
staging directories killed pulls leave (issue 14).

A store is a DAG: a tree may legally name the same subtree twice, so 40 small trees expand to
2**41 entries. ``pull`` and ``show`` count the expansion first (memoised, iteratively) and
refuse beyond their limits with one clear ``PayloadTooLarge`` naming the keyword that raises
them; nothing is written, not even a staging directory (spec/SPEC-SYNC.md SYNC-30..33).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mkit_transport import FileTransport, InvalidArgument, PayloadTooLarge, RefWriteCondition
from mkit_transport.cli import main
from mkit_transport.cli.output import EXIT_CODES
from mkit_transport.hashes import PackKey
from mkit_transport.pack import KIND_BLOB, KIND_TREE, PackFile, PackWriter
from mkit_transport.sync import pull, push, show
from mkit_transport.sync import restore as restore_module
from mkit_transport.sync.common import ref_value
from mkit_transport.sync.model import (
    TYPE_CHUNKED,
    TYPE_DIR,
    TYPE_FILE,
    PackRef,
    Record,
    TreeEntry,
    encode_index,
    encode_record,
    encode_tree,
)
from mkit_transport.sync.objects import PackObjects
from mkit_transport.sync.restore import remove_tree, sweep_stages

REF = "refs/heads/main"
#: A hang guard only: each refusal below takes milliseconds.
DEADLINE = 60.0


def oid_of(data: bytes) -> bytes:
    return bytes(PackKey.of(data))


def crafted_store(root_dir: Path, objects: list[tuple[int, bytes]], root: bytes) -> FileTransport:
    """A store holding ``objects`` in one pack and a record naming tree ``root`` (as a
    hostile pusher would write it, with the model's own encoders)."""
    out = io.BytesIO()
    writer = PackWriter(out)
    rows: dict[bytes, int] = {}
    for kind, data in objects:
        if oid_of(data) not in rows:
            writer.add_bytes(kind, data)
            rows[oid_of(data)] = kind
    writer.finish()
    pack = out.getvalue()
    key = PackKey.of(pack)
    index = encode_index(key, list(rows.items()))
    record = encode_record(
        Record(root, None, 0, (PackRef(key, PackKey.of(index), len(pack), len(rows)),))
    )
    remote = FileTransport(root_dir)
    remote.init_store()
    remote.upload_pack(pack, key)
    remote.upload_blob(index, PackKey.of(index))
    remote.upload_blob(record, PackKey.of(record))
    remote.update_ref(REF, RefWriteCondition.MISSING, ref_value(PackKey.of(record)))
    return remote


def doubling(levels: int) -> tuple[list[tuple[int, bytes]], bytes]:
    """``levels`` trees each naming its child twice (``a`` and ``b``), over one file."""
    blob = b"x"
    tree = encode_tree([TreeEntry(b"f", TYPE_FILE, 0o644, 1, oid_of(blob))])
    objects = [(KIND_BLOB, blob), (KIND_TREE, tree)]
    for _ in range(levels):
        child = oid_of(tree)
        tree = encode_tree([TreeEntry(n, TYPE_DIR, 0o755, 0, child) for n in (b"a", b"b")])
        objects.append((KIND_TREE, tree))
    return objects, oid_of(tree)


def nested(depth: int) -> tuple[list[tuple[int, bytes]], bytes]:
    """``depth`` directories, each the only entry of its parent."""
    tree = encode_tree([])
    objects = [(KIND_TREE, tree)]
    for _ in range(depth):
        tree = encode_tree([TreeEntry(b"d", TYPE_DIR, 0o755, 0, oid_of(tree))])
        objects.append((KIND_TREE, tree))
    return objects, oid_of(tree)


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def refused_and_untouched(
    tmp_path: Path,
    remote: FileTransport,
    max_entries: int | None = None,
    max_depth: int | None = None,
) -> str:
    """Pull into ``tmp_path/out/dest``: refused, nothing at all written beside it."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "dest").mkdir(exist_ok=True)
    before = listing(out)
    start = time.monotonic()
    with pytest.raises(PayloadTooLarge) as caught:
        pull(
            remote,
            REF,
            out / "dest",
            cache_dir=str(tmp_path / "cache"),
            max_entries=max_entries,
            max_depth=max_depth,
        )
    assert time.monotonic() - start < DEADLINE
    assert listing(out) == before  # no staging directory left, nothing beside dest
    assert listing(out / "dest") == []  # dest unchanged
    return str(caught.value)


def test_forty_trees_naming_their_child_twice_are_refused_by_pull_and_show(
    tmp_path: Path,
) -> None:
    objects, root = doubling(40)
    remote = crafted_store(tmp_path / "remote", objects, root)
    message = refused_and_untouched(tmp_path, remote)
    assert "10000000 entries" in message and "max_entries=" in message
    message = refused_and_untouched(tmp_path, remote, max_entries=10**9)
    assert "1000000000 entries" in message
    start = time.monotonic()
    with pytest.raises(PayloadTooLarge, match="max_entries="):
        show(remote, REF, cache_dir=str(tmp_path / "cache"))
    assert time.monotonic() - start < DEADLINE


def test_the_expansion_is_counted_exactly_and_a_legal_dag_pulls(tmp_path: Path) -> None:
    # 3 doubling levels: 3 * 2**3 - 2 == 22 entries, 8 files (the same subtree, written 8 times).
    objects, root = doubling(3)
    remote = crafted_store(tmp_path / "remote", objects, root)
    refused_and_untouched(tmp_path, remote, max_entries=21)
    with pytest.raises(PayloadTooLarge):
        show(remote, REF, cache_dir=str(tmp_path / "cache"), max_entries=21)
    dest = tmp_path / "pulled"
    report = pull(remote, REF, dest, cache_dir=str(tmp_path / "cache"), max_entries=22)
    assert report.files == 8
    assert (dest / "a" / "b" / "a" / "f").read_bytes() == b"x"
    entries = show(remote, REF, cache_dir=str(tmp_path / "cache"), max_entries=22).entries
    assert len(entries) == 22


def test_ten_thousand_nested_directories_are_a_clear_error_never_a_recursion_error(
    tmp_path: Path,
) -> None:
    objects, root = nested(10_000)
    remote = crafted_store(tmp_path / "remote", objects, root)
    cache = str(tmp_path / "cache")
    assert "deeper than 512" in refused_and_untouched(tmp_path, remote)
    with pytest.raises(PayloadTooLarge, match="max_depth="):
        show(remote, REF, cache_dir=cache)
    # Raised, show lists all of it; pull still cannot write a 20,000-byte path: refused first.
    entries = show(remote, REF, cache_dir=cache, max_depth=10_000).entries
    assert len(entries) == 10_000 and entries[-1].path == "/".join(["d"] * 10_000)
    message = refused_and_untouched(tmp_path, remote, max_depth=10_000)
    assert "path limit" in message
    with pytest.raises(PayloadTooLarge, match="deeper than 9999"):
        show(remote, REF, cache_dir=cache, max_depth=9_999)


def test_a_push_and_pull_of_a_directory_nested_past_the_recursion_limit(tmp_path: Path) -> None:
    depth = sys.getrecursionlimit() + 200
    src, dest = tmp_path / "src", tmp_path / "dest"
    path = str(src)
    os.mkdir(path)
    for _ in range(depth):
        path = os.path.join(path, "d")
        os.mkdir(path)
    Path(path, "leaf").write_bytes(b"deep")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"kept")
    os.symlink(outside, os.path.join(path, "link-out"))
    try:
        remote = FileTransport(tmp_path / "remote")
        remote.init_store()
        push(src, remote, REF)
        cache = str(tmp_path / "c")
        assert pull(remote, REF, dest, cache_dir=cache, max_depth=depth).files == 1
        deep_leaf = Path(path.replace(str(src), str(dest)), "leaf")
        assert deep_leaf.read_bytes() == b"deep"
        # Replacing moves the deep tree aside and removes it: no RecursionError, nothing left.
        assert pull(remote, REF, dest, cache_dir=cache, max_depth=depth, replace=True).files == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "c",
            "dest",
            "outside",
            "remote",
            "src",
        ]
    finally:
        remove_tree(str(src))  # pytest's own cleanup recurses (shutil.rmtree on 3.11)
        remove_tree(str(dest))
    assert not src.exists() and not dest.exists()
    assert (outside / "keep").read_bytes() == b"kept"  # the symlink was removed, not followed


@pytest.mark.parametrize("kind", [TYPE_FILE, TYPE_CHUNKED], ids=["file", "chunked"])
def test_a_declared_size_larger_than_the_free_disk_is_refused_before_writing(
    tmp_path: Path, kind: int
) -> None:
    blob = b"tiny"
    huge = 1 << 62  # what the tree claims; no disk has it
    tree = encode_tree([TreeEntry(b"big", kind, 0o644, huge, oid_of(blob))])
    remote = crafted_store(
        tmp_path / "remote", [(KIND_BLOB, blob), (KIND_TREE, tree)], oid_of(tree)
    )
    message = refused_and_untouched(tmp_path, remote)
    assert f"declares {huge} bytes" in message and "free" in message


def test_the_free_disk_check_is_against_the_declared_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}").write_bytes(b"z" * 1000)
    remote = FileTransport(tmp_path / "remote")
    remote.init_store()
    push(src, remote, REF)
    real = shutil.disk_usage

    def free(n: int) -> None:
        def usage(path: str) -> object:
            return real(path)._replace(free=n)

        monkeypatch.setattr(shutil, "disk_usage", usage)

    free(3999)
    assert "declares 4000 bytes" in refused_and_untouched(tmp_path, remote)
    free(4000)
    assert pull(remote, REF, tmp_path / "dest", cache_dir=str(tmp_path / "cache")).files == 4


@pytest.mark.parametrize(("entries", "depth"), [(0, None), (None, -1), (True, None)])
def test_a_bad_limit_is_invalid_argument_before_any_io(
    tmp_path: Path, entries: int | None, depth: int | None
) -> None:
    remote = FileTransport(tmp_path / "absent")  # never initialised: any I/O would fail
    with pytest.raises(InvalidArgument, match="positive whole number"):
        pull(remote, REF, tmp_path / "dest", max_entries=entries, max_depth=depth)
    with pytest.raises(InvalidArgument, match="positive whole number"):
        show(remote, REF, max_entries=entries, max_depth=depth)
    assert not (tmp_path / "dest").exists()


def test_the_cli_refuses_in_one_line_and_takes_the_limit_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    objects, root = doubling(3)
    remote = crafted_store(tmp_path / "remote", objects, root)
    url = f"mkit+file://{remote.root}"
    cache = ["--cache-dir", str(tmp_path / "cache")]
    dest = tmp_path / "dest"
    code = main(["pull", url, REF, str(dest), *cache, "--max-entries", "21"], out=io.StringIO())
    err = capsys.readouterr().err
    assert code == EXIT_CODES["PayloadTooLarge"], err
    assert err.count("\n") == 1 and err.startswith("mkit_transport: PayloadTooLarge: ")
    assert not dest.exists()
    code = main(["show", url, REF, *cache, "--max-depth", "2"], out=io.StringIO())
    assert code == EXIT_CODES["PayloadTooLarge"]
    capsys.readouterr()
    out = io.StringIO()
    assert main(["show", url, REF, *cache, "--max-entries", "22"], out=out) == 0
    assert len(out.getvalue().splitlines()) == 22
    assert main(["pull", url, REF, str(dest), *cache, "--max-depth", "3"], out=io.StringIO()) == 0
    assert (dest / "b" / "b" / "b" / "f").read_bytes() == b"x"


# -- more packs than open files (issue 15 item 7) ---------------------------------------------


def many_packs(tmp_path: Path, files: int) -> FileTransport:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(files):
        (src / f"f{i:04}").write_bytes(os.urandom(3000))
    remote = FileTransport(tmp_path / "remote")
    remote.init_store()
    push(src, remote, REF, pack_size=4096)
    return remote


_PULL_UNDER_LIMIT = """
import os, resource, sys
from mkit_transport import FileTransport
from mkit_transport.sync import pull
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
remote = FileTransport(sys.argv[1])
for dest in ("first", "again"):  # downloaded, then from the cache
    report = pull(remote, "refs/heads/main", os.path.join(sys.argv[2], dest),
                  cache_dir=os.path.join(sys.argv[2], "cache"), cache_limit=1 << 30)
    print(dest, report.files, report.packs_downloaded, report.packs_cached)
"""


def test_a_pull_of_more_packs_than_the_open_file_limit(tmp_path: Path) -> None:
    remote = many_packs(tmp_path, 150)
    packs = len(list(remote.list_packs()))
    assert packs > 100  # over the child's limit of 64 open files
    run = subprocess.run(
        [sys.executable, "-c", _PULL_UNDER_LIMIT, str(remote.root), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=DEADLINE * 4,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split("\n")
    assert lines[0].split()[:2] == ["first", "150"] and lines[1].split()[:2] == ["again", "150"]
    assert lines[1].split()[2] == "0"  # the second pull read every pack from the cache
    for i in (0, 77, 149):
        name = f"f{i:04}"
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "src" / name).read_bytes()


def test_pack_objects_keeps_at_most_its_budget_open(tmp_path: Path) -> None:
    remote = many_packs(tmp_path, 12)
    cache = tmp_path / "cache"
    pull(remote, REF, tmp_path / "dest", cache_dir=str(cache))
    objects = PackObjects(max_open=3)
    ids: list[bytes] = []
    for entry in sorted((cache / "packs").iterdir()):
        pack = PackFile(entry)
        ids.extend(pack.ids())
        objects.add(pack)
        assert objects.open_count() <= 3
    try:
        for oid in ids * 2:
            parts: list[bytes] = []
            objects.read_object(oid, parts.append)
            assert oid_of(b"".join(parts)) == oid
            assert objects.open_count() <= 3
    finally:
        objects.close()
    assert objects.open_count() == 0


# -- staging directories of killed pulls (issue 14) -------------------------------------------


def dead_pid() -> int:
    """A pid no process can have: above the kernel's pid_max."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def test_a_pull_sweeps_killed_pulls_stages_and_keeps_live_ones(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_bytes(b"content")
    remote = FileTransport(tmp_path / "remote")
    remote.init_store()
    push(src, remote, REF)
    out = tmp_path / "out"
    out.mkdir()
    hour_ago = time.time() - 7200
    planted = {
        f".dest.pull-{dead_pid()}-abcdefgh": (hour_ago, False),  # killed: swept
        ".dest.pull-qrstuvwx": (hour_ago, False),  # an older pull's name, no pid: swept
        f".dest.pull-{os.getpid()}-abcdefgh": (hour_ago, True),  # live pid, a long pull: kept
        f".dest.pull-{dead_pid()}-ijklmnop": (time.time(), True),  # fresh: kept
        f".other.pull-{dead_pid()}-abcdefgh": (hour_ago, True),  # another destination's
        f".dest.pull-{dead_pid()}-abcdefgh-x": (hour_ago, True),  # not a stage's name
    }
    for name, (mtime, _kept) in planted.items():
        (out / name).mkdir()
        (out / name / "half-written").write_bytes(b"...")
        os.utime(out / name, (mtime, mtime))
    link = out / f".dest.pull-{dead_pid()}-zzzzzzzz"
    link.symlink_to(out / "dest-target-absent")
    os.utime(link, (hour_ago, hour_ago), follow_symlinks=False)
    pull(remote, REF, out / "dest", cache_dir=str(tmp_path / "cache"))
    kept = sorted(n for n, (_m, keep) in planted.items() if keep)
    assert listing(out) == sorted([*kept, "dest", link.name])
    assert (out / "dest" / "file").read_bytes() == b"content"
    assert sweep_stages(str(out / "dest")) == []  # nothing else to sweep


def test_a_pull_s_own_stage_names_its_pid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real = restore_module.swap_in

    def spy(stage: str, dest: str, replace: bool) -> None:
        seen.append(os.path.basename(stage))
        real(stage, dest, replace)

    monkeypatch.setattr(restore_module, "swap_in", spy)
    src = tmp_path / "src"
    src.mkdir()
    remote = FileTransport(tmp_path / "remote")
    remote.init_store()
    push(src, remote, REF)
    pull(remote, REF, tmp_path / "dest", cache_dir=str(tmp_path / "cache"))
    assert len(seen) == 1 and seen[0].startswith(f".dest.pull-{os.getpid()}-")
