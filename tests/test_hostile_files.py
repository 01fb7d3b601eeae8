"""Planted symlinks in a file store: every path the file transport opens is confined.

Someone who can write into the store's directory (a shared volume, an unpacked
archive, a compromised peer) plants a symlink where the transport will open or create
a file: the lock, a ref, a pack, a temporary name, a directory. Each case plants one,
runs the verb, and asserts a clean taxonomy error (or a safe success) and that the
symlink's target outside the store is unchanged or was never created
(spec/SPEC-THREATS.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from mkit_transport import FileTransport, Hash, PackKey, RefWriteCondition, RemoteError
from mkit_transport.errors import ProtocolError
from mkit_transport.transports import file as file_module

_DATA = b"pack bytes for the hostile file tests"
_KEY = PackKey.of(_DATA)
_REF = "refs/heads/main"


@pytest.fixture
def store(tmp_path: Path) -> FileTransport:
    t = FileTransport(tmp_path / "store")
    t.init_store()
    return t


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the store holding one file, ``victim``."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "victim").write_bytes(b"do not touch")
    return out


def _outside_state(outside: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(outside)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(outside.rglob("*"))
    }


PRISTINE = {"victim": b"do not touch"}


@pytest.mark.parametrize("target", ["victim", "created-by-lock"])
def test_a_planted_refs_lock_symlink_is_refused(
    store: FileTransport, outside: Path, target: str
) -> None:
    os.symlink(outside / target, Path(store.root) / "refs.lock")
    with pytest.raises(RemoteError, match=r"refs\.lock is a symlink"):
        store.write_ref(_REF, Hash.of(b"v"))
    with pytest.raises(RemoteError, match=r"refs\.lock is a symlink"):
        store.delete_ref(_REF, RefWriteCondition.ANY)
    assert _outside_state(outside) == PRISTINE
    assert store.read_ref(_REF) is None


def test_a_planted_ref_file_symlink_is_refused(store: FileTransport, outside: Path) -> None:
    ref_dir = Path(store.root) / "refs" / "heads" / "main"
    ref_dir.mkdir(parents=True)
    os.symlink(outside / "victim", ref_dir / ".ref")
    with pytest.raises(RemoteError):
        store.write_ref(_REF, Hash.of(b"v"))
    with pytest.raises(RemoteError):
        store.read_ref(_REF)
    with pytest.raises(RemoteError):
        store.delete_ref(_REF, RefWriteCondition.ANY)
    assert _outside_state(outside) == PRISTINE


@pytest.mark.parametrize(
    ("inner", "verb"),
    [
        ("refs", lambda t: t.write_ref(_REF, Hash.of(b"v"))),
        ("refs", lambda t: t.delete_ref(_REF, RefWriteCondition.ANY)),
        ("packs", lambda t: t.upload_pack(_DATA, _KEY)),
        ("packs", lambda t: t.repair_pack(_DATA, _KEY)),
        ("packs", lambda t: t.delete_pack(_KEY)),
    ],
    ids=["write-ref", "delete-ref", "upload", "repair", "delete-pack"],
)
def test_a_planted_top_directory_symlink_is_not_followed_for_writes(
    tmp_path: Path, outside: Path, inner: str, verb: Callable[[FileTransport], object]
) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / ("packs" if inner == "refs" else "refs")).mkdir()
    os.symlink(outside, root / inner)
    with pytest.raises(RemoteError, match="escapes"):
        verb(FileTransport(root))
    assert _outside_state(outside) == PRISTINE


def test_a_planted_fanout_directory_symlink_is_not_followed(
    store: FileTransport, outside: Path
) -> None:
    os.symlink(outside, Path(store.root) / "packs" / _KEY.hex()[:2])
    with pytest.raises(RemoteError, match="escapes"):
        store.upload_pack(_DATA, _KEY)
    assert _outside_state(outside) == PRISTINE


@pytest.mark.parametrize("where", ["outside", "inside"])
def test_a_planted_pack_file_symlink_is_refused(
    store: FileTransport, outside: Path, where: str
) -> None:
    path = Path(store.pack_path(_KEY))
    path.parent.mkdir()
    inside = Path(store.root) / "refs" / "decoy"
    inside.write_bytes(_DATA)  # the right bytes: only the symlink itself is wrong
    os.symlink(outside / "victim" if where == "outside" else inside, path)
    verbs: list[Callable[[], object]] = [
        lambda: store.download_pack(_KEY),
        lambda: store.pack_size(_KEY),
        lambda: list(store.relay_pack_stream(_KEY)),
    ]
    for verb in verbs:
        with pytest.raises(RemoteError):
            verb()
    if where == "outside":
        with pytest.raises(RemoteError, match="escapes"):
            store.upload_pack(_DATA, _KEY)
    else:
        store.upload_pack(_DATA, _KEY)  # safe success: the symlink is replaced, not followed
        assert not path.is_symlink() and path.read_bytes() == _DATA
    assert _outside_state(outside) == PRISTINE
    assert inside.read_bytes() == _DATA


def test_planted_temporary_names_are_never_followed(store: FileTransport, outside: Path) -> None:
    """Temp names are predictable (pid, counter): a symlink there must not be opened."""
    seq = next(file_module._temp_seq)
    packs = Path(store.root) / "packs"
    ref_dir = Path(store.root) / "refs" / "heads" / "main"
    ref_dir.mkdir(parents=True)
    for n in range(seq + 1, seq + 40):
        os.symlink(outside / f"p{n}", packs / f".{_KEY.hex()}.tmp.{os.getpid()}.{n}")
        os.symlink(outside / "victim", ref_dir / f"..ref.tmp.{os.getpid()}.{n}")
    store.upload_pack(_DATA, _KEY)  # safe success under another name
    store.write_ref(_REF, Hash.of(b"v"))
    assert store.download_pack(_KEY) == _DATA
    assert store.read_ref(_REF) == Hash.of(b"v")
    assert _outside_state(outside) == PRISTINE


def test_a_refused_upload_creates_no_directory(tmp_path: Path) -> None:
    root = tmp_path / "bare"
    root.mkdir()  # a store directory without packs/ yet
    t = FileTransport(root)
    with pytest.raises(ProtocolError):
        t.upload_pack_stream(_KEY, iter([b"not what the key says"]), len(_DATA))
    with pytest.raises(ProtocolError):
        t.upload_pack_stream(_KEY, iter([_DATA[:-1] + b"?"]), len(_DATA))
    assert list(root.iterdir()) == []
