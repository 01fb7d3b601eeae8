"""What only the file transport promises: layout, symlinks, temp files, crashes, processes."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mkit_transport import (
    FileTransport,
    Hash,
    PackKey,
    ProtocolError,
    RemoteError,
)
from testbed.crash_loop import run as crash_loop


def test_layout(tmp_path: Path) -> None:
    t = FileTransport(tmp_path)
    data = b"pack bytes"
    key = PackKey.of(data)
    t.upload_pack(data, key)
    t.write_ref("refs/heads/main", Hash.of(b"v"))
    assert (tmp_path / "packs" / key.hex()[:2] / key.hex()).read_bytes() == data
    assert (tmp_path / "refs/heads/main/.ref").read_bytes() == Hash.of(b"v").hex().encode() + b"\n"
    assert (tmp_path / "refs.lock").exists()


def test_symlink_escape_refused_for_writes_and_reads(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "x").mkdir(parents=True)
    (outside / "x" / ".ref").write_bytes(Hash.of(b"outside").hex().encode() + b"\n")
    root = tmp_path / "store"
    (root / "refs").mkdir(parents=True)
    os.symlink(outside, root / "refs" / "evil")
    t = FileTransport(root)
    with pytest.raises(RemoteError, match="escapes"):
        t.write_ref("refs/evil/y", Hash.of(b"v"))
    with pytest.raises(RemoteError, match="escapes"):
        t.read_ref("refs/evil/x")
    assert sorted(p.name for p in outside.rglob("*")) == [".ref", "x"], "outside untouched"
    assert t.list_refs() == [], "symlinked directories are not followed when listing"


def test_symlinked_root_is_fine(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    t = FileTransport(tmp_path / "link")
    t.write_ref("refs/heads/main", Hash.of(b"v"))
    assert t.read_ref("refs/heads/main") == Hash.of(b"v")


def test_temp_files_are_invisible(tmp_path: Path) -> None:
    t = FileTransport(tmp_path)
    t.write_ref("refs/heads/main", Hash.of(b"v"))
    (tmp_path / "refs/heads/main/.ref.tmp.1.2").write_bytes(b"garbage")
    (tmp_path / "refs/heads/.x.tmp.1.2").mkdir()
    (tmp_path / "refs/heads/not a ref").mkdir()
    assert [r.name for r in t.list_refs()] == ["refs/heads/main"]


def test_rejected_upload_leaves_the_tree_as_it_was(tmp_path: Path) -> None:
    t = FileTransport(tmp_path)
    t.upload_pack(b"first", PackKey.of(b"first"))
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(ProtocolError):
        t.upload_pack_stream(PackKey.of(b"other"), [b"data"], 4)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_damaged_pack_is_replaced_by_a_reupload(tmp_path: Path) -> None:
    t = FileTransport(tmp_path)
    data = b"x" * 1000
    key = PackKey.of(data)
    t.upload_pack(data, key)
    Path(t.pack_path(key)).write_bytes(b"x" * 10)  # truncated by some accident
    t.upload_pack(data, key)
    assert t.download_pack(key) == data


def test_unchanged_value_is_not_rewritten(tmp_path: Path) -> None:
    t = FileTransport(tmp_path)
    t.write_ref("refs/heads/main", Hash.of(b"v"))
    inode = os.stat(tmp_path / "refs/heads/main/.ref").st_ino
    t.write_ref("refs/heads/main", Hash.of(b"v"))
    assert os.stat(tmp_path / "refs/heads/main/.ref").st_ino == inode


def _hammer(root: str, value: str, rounds: int) -> None:
    t = FileTransport(root)
    for _ in range(rounds):
        t.write_ref("refs/heads/main", Hash.of(value.encode()))


def test_readers_never_see_a_torn_or_empty_ref(tmp_path: Path) -> None:
    t = FileTransport(tmp_path)
    t.write_ref("refs/heads/main", Hash.of(b"a"))
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_hammer, args=(str(tmp_path), v, 300)) for v in "ab"]
    for w in writers:
        w.start()
    seen = set()
    while any(w.is_alive() for w in writers):
        seen.add(t.read_ref("refs/heads/main"))  # raises on a torn value
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert seen <= {Hash.of(b"a"), Hash.of(b"b")}


def test_a_directory_a_failed_writer_takes_back_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that made ``packs/`` and failed removes it if empty, which can fall
    between another writer finding it and creating its temp file there (a client's
    retry of a cut upload into a new store; seen as an HTTP 500 "No such file or
    directory"). The second writer makes it again and stores its pack."""
    store = tmp_path / "new-store"
    real = FileTransport._create_temp
    taken: list[str] = []

    def racing(stage: str, base: str) -> tuple[str, int]:
        if not taken:  # the failed writer's clean-up lands now, once
            os.rmdir(stage)
            taken.append(stage)
        return real(stage, base)

    monkeypatch.setattr(FileTransport, "_create_temp", staticmethod(racing))
    t = FileTransport(store)
    data = b"pack bytes" * 1000
    t.upload_pack_stream(PackKey.of(data), [data], len(data))
    assert taken == [str(store / "packs")]
    assert t.download_pack(PackKey.of(data)) == data


def _upload_rounds(root: str, good: bool, rounds: int) -> None:
    """Upload into fresh stores ``root/<n>``: a good pack, or a mis-hashed stream."""
    data = b"good pack" * 10_000
    for n in range(rounds):
        t = FileTransport(os.path.join(root, str(n)))
        if good:
            t.upload_pack_stream(PackKey.of(data), [data[:50_000], data[50_000:]], len(data))
        else:
            with pytest.raises(ProtocolError):
                t.upload_pack_stream(PackKey.of(b"other"), [data], len(data))


def test_good_and_failing_writers_racing_into_new_stores(tmp_path: Path) -> None:
    """Processes race failed and good uploads into new stores: every good one lands."""
    ctx = multiprocessing.get_context("spawn")
    rounds = 60
    writers = [
        ctx.Process(target=_upload_rounds, args=(str(tmp_path), good, rounds))
        for good in (True, False, True, False)
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=120)
        assert w.exitcode == 0
    data = b"good pack" * 10_000
    for n in range(rounds):
        assert FileTransport(tmp_path / str(n)).download_pack(PackKey.of(data)) == data


@pytest.mark.slow
def test_kill_9_never_leaves_a_torn_ref_or_a_bad_pack(tmp_path: Path) -> None:
    runs = int(os.environ.get("MKIT_CRASH_RUNS", "25"))  # `make bench` asks for 200
    result = crash_loop(tmp_path, runs=runs, seed=7)
    assert result["problems"] == 0, result
    assert result["runs"] == runs and result["packs_stored"] > 0


def test_separate_processes_share_one_lock(tmp_path: Path) -> None:
    """Two interpreters' MISSING writes to one name: exactly one succeeds."""
    code = (
        "import sys\n"
        "from mkit_transport import FileTransport, Hash, RefWriteCondition, RefConflict\n"
        "t = FileTransport(sys.argv[1])\n"
        "wins = 0\n"
        "for i in range(200):\n"
        "    try:\n"
        "        value = Hash.of(sys.argv[2].encode())\n"
        "        t.update_ref(f'refs/r/{i}', RefWriteCondition.MISSING, value)\n"
        "        wins += 1\n"
        "    except RefConflict:\n"
        "        pass\n"
        "print(wins)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path), tag], stdout=subprocess.PIPE)
        for tag in ("p1", "p2", "p3")
    ]
    wins = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert sum(wins) == 200
    t = FileTransport(tmp_path)
    assert len(t.list_refs("refs/r")) == 200
    assert t.read_ref("refs/r/0") in {Hash.of(tag.encode()) for tag in ("p1", "p2", "p3")}


def test_stale_temp_files_are_swept(tmp_path: Path) -> None:
    t = FileTransport(tmp_path)
    t.write_ref("refs/heads/main", Hash.of(b"v"))
    t.upload_pack(b"x", PackKey.of(b"x"))
    old = [tmp_path / "packs" / ".abc.tmp.1.1", tmp_path / "refs/heads/main/.ref.tmp.1.2"]
    fresh = tmp_path / "packs" / ".def.tmp.1.3"
    for path in [*old, fresh]:
        path.write_bytes(b"partial")
    for path in old:
        os.utime(path, (1, 1))  # a crash long ago
    FileTransport(tmp_path).upload_pack(b"y", PackKey.of(b"y"))  # sweeps packs/ once
    assert not old[0].exists() and old[1].exists() and fresh.exists()
    assert t.remove_stale_temp_files() == 1
    assert not old[1].exists() and fresh.exists(), "a write in progress is never touched"
    assert t.read_ref("refs/heads/main") == Hash.of(b"v")
