"""The whole-tree lstat check of the stat cache (SYNC-60): C and Python agree.

:func:`mkit_transport.sync.lstatcheck.stale` is the C version when the package was
built with a compiler (CI's is: the test fails if not) and ``stale_python`` the
fallback; both get the same rows and must name the same stale paths, for every way an
entry can go stale.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest

from mkit_transport.sync import lstatcheck

_KEY = struct.Struct("<QqqQI")
#: Rows as the cache stores them: the key, then bytes the check must not read.
STRIDE = _KEY.size + 45


def _row(path: Path) -> bytes:
    st = path.lstat()
    return _KEY.pack(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode) + b"x" * 45


def _layout(root: Path) -> tuple[list[bytes], list[bytes]]:
    """A tree, its paths (directories end in "/", the top is empty) and their rows."""
    (root / "d" / "e").mkdir(parents=True)
    for name in ("a.txt", "d/b.txt", "d/e/c.txt", "gone.txt", "changed.txt", "touched.txt"):
        (root / name).write_text(name)
    (root / "linked").mkdir()
    (root / "dirlink").mkdir()
    os.symlink("a.txt", root / "link")
    rels = [b"", b"a.txt", b"d/", b"d/b.txt", b"d/e/", b"d/e/c.txt", b"gone.txt"]
    rels += [b"changed.txt", b"touched.txt", b"dirlink/", b"link", b"racy.txt", b"nothere"]
    (root / "racy.txt").write_text("racy")
    rows = [_row(root / os.fsdecode(rel).rstrip("/")) if rel else _row(root) for rel in rels[:-1]]
    rows.append(_KEY.pack(0, 0, 0, 0, 0) + b"x" * 45)  # a path that never existed
    return rels, rows


def test_the_c_and_python_checks_agree_on_every_way_to_go_stale(tmp_path: Path) -> None:
    if not lstatcheck.ACCELERATED:
        pytest.fail("the C lstat check (mkit_transport/sync/_lstat.c) is not built")
    root = tmp_path / "tree"
    rels, rows = _layout(root)
    trusted = time.time_ns() + 10_000_000_000  # every row trusted by its times
    racy = rels.index(b"racy.txt")
    record = bytearray(rows[racy])
    record[8:16] = struct.pack("<q", trusted)  # its recorded mtime is not older: racy
    rows[racy] = bytes(record)
    (root / "gone.txt").unlink()
    (root / "changed.txt").write_text("changed, and longer")
    (root / "touched.txt").chmod(0o600)  # only its ctime and mode move
    os.rmdir(root / "dirlink")
    os.symlink("linked", root / "dirlink")  # a directory's key is not followed
    paths, blob = b"\0".join(rels), b"".join(rows)
    # The top lost a name (its mtime moved); d/ and d/e/ did not change.
    expected = [rels.index(r) for r in (b"", b"gone.txt", b"changed.txt", b"touched.txt")]
    expected += [rels.index(b"dirlink/"), racy, rels.index(b"nothere")]
    for threads in (1, 2, 8):
        got = lstatcheck.stale(str(root), paths, len(rels), blob, STRIDE, trusted, threads)
        assert got == sorted(expected)
    assert lstatcheck.stale_python(str(root), paths, len(rels), blob, STRIDE, trusted) == sorted(
        expected
    )
    # Not one stale when nothing changed (and every row is trusted).
    there = [rel for rel in rels if os.path.lexists(root / os.fsdecode(rel))]
    fresh = b"".join(_row(root / os.fsdecode(rel).rstrip("/")) for rel in there)
    for check in (lstatcheck.stale, lstatcheck.stale_python):
        assert check(str(root), b"\0".join(there), len(there), fresh, STRIDE, trusted, 2) == []


def test_many_paths_are_checked_on_several_threads_with_the_same_answer(tmp_path: Path) -> None:
    """Enough paths that the C check splits them over threads; one stale in each part."""
    root = tmp_path / "many"
    root.mkdir()
    rels = [f"f{i:04}".encode() for i in range(2000)]
    for rel in rels:
        (root / rel.decode()).write_bytes(rel)
    rows = [_row(root / rel.decode()) for rel in rels]
    for index in (0, 700, 1999):
        (root / rels[index].decode()).write_bytes(b"other content")
    trusted = time.time_ns() + 10_000_000_000
    args = (str(root), b"\0".join(rels), len(rels), b"".join(rows), STRIDE, trusted)
    assert lstatcheck.stale(*args, 4) == lstatcheck.stale_python(*args) == [0, 700, 1999]


@pytest.mark.parametrize("check", [lstatcheck.stale, lstatcheck.stale_python])
def test_bad_arguments_are_refused(tmp_path: Path, check: object) -> None:
    assert callable(check)
    with pytest.raises(ValueError):
        check(str(tmp_path), b"a\0b", 2, b"x" * STRIDE, STRIDE, 0, 1)  # one row for two
    with pytest.raises(ValueError):
        check(str(tmp_path), b"a", 2, b"x" * STRIDE * 2, STRIDE, 0, 1)  # one path for two
    with pytest.raises(OSError):
        check(str(tmp_path / "missing"), b"a", 1, _KEY.pack(0, 0, 0, 0, 0), _KEY.size, 1, 1)
