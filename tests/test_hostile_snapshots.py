"""A crafted snapshot: symlink targets no file system can hold.

A remote holds whatever a pusher built, so a snapshot whose symlink entry's target is
empty or holds a NUL byte must fail ``pull`` with ``InvalidResponse`` (not a raw
``ValueError`` / ``FileNotFoundError``) and write nothing (spec/SPEC-THREATS.md).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from mkit_transport import FileTransport, InvalidResponse
from mkit_transport.cli import main
from mkit_transport.cli.output import EXIT_CODES
from mkit_transport.sync import pull, push

REF = "refs/heads/main"


def crafted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: bytes) -> FileTransport:
    """Push a tree whose one symlink is recorded with ``target`` (how a hostile pusher would)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_bytes(b"content")
    (src / "link").symlink_to("file")
    with monkeypatch.context() as patch:
        patch.setattr(os, "readlink", lambda path, *a, **kw: os.fsdecode(target))
        remote = FileTransport(tmp_path / "remote")
        remote.init_store()
        push(src, remote, REF)
    return remote


@pytest.mark.parametrize("target", [b"", b"a\0b", b"\0"], ids=["empty", "nul", "only-nul"])
def test_a_symlink_target_with_nul_or_empty_fails_pull_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: bytes
) -> None:
    remote = crafted(tmp_path, monkeypatch, target)
    dest = tmp_path / "dest"
    with pytest.raises(InvalidResponse, match="symlink target is empty or holds a NUL"):
        pull(remote, REF, dest, cache_dir=str(tmp_path / "cache"))
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "remote", "src"]  # no stage left


def test_the_cli_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = crafted(tmp_path, monkeypatch, b"a\0b")
    dest = tmp_path / "dest"
    cache = str(tmp_path / "cache")
    code = main(
        ["pull", f"mkit+file://{remote.root}", REF, str(dest), "--cache-dir", cache],
        out=io.StringIO(),
    )
    err = capsys.readouterr().err
    assert code == EXIT_CODES["InvalidResponse"], err
    assert err.count("\n") == 1 and err.startswith("mkit_transport: InvalidResponse: ")
    assert not dest.exists()
