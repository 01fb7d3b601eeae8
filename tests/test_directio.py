"""Large packs written around the page cache: same bytes, every size, every fallback."""

from __future__ import annotations

import errno
import fcntl
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mkit_transport import FileTransport, PackKey, ProtocolError, directio
from mkit_transport.directio import DIRECT_MIN, write_chunks

MIB = 1 << 20
BUF = 4 * MIB  # directio's staging buffer


def _chunks(data: bytes, seed: int) -> Iterator[bytes]:
    """``data`` in chunks of uneven sizes (some larger than the staging buffer)."""
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        n = rng.choice([1, 4095, 65536, 3 * MIB + 1, BUF + 513])
        yield data[pos : pos + n]
        pos += n


def _write(path: Path, data: bytes, *, direct: bool, seed: int = 0) -> bool:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        return write_chunks(fd, _chunks(data, seed), direct=direct)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "size", [0, 1, 4095, 4096, 4097, BUF - 1, BUF, BUF + 1, 2 * BUF + 4096, 20 * MIB + 123]
)
def test_every_size_is_written_exactly(tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(size)
    used = _write(tmp_path / "f", data, direct=True, seed=size)
    assert (tmp_path / "f").read_bytes() == data
    assert used == (size >= 4096)  # tmp_path is ext4 here: O_DIRECT is taken up


def test_plain_writes_when_not_asked(tmp_path: Path) -> None:
    data = os.urandom(BUF + 5)
    assert _write(tmp_path / "f", data, direct=False) is False
    assert (tmp_path / "f").read_bytes() == data


def test_a_file_system_that_refuses_the_flag_gets_plain_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fcntl.fcntl

    def refuse(fd: int, cmd: int, arg: Any = 0) -> Any:
        if cmd == fcntl.F_SETFL and arg & directio._O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, cmd, arg)

    monkeypatch.setattr(fcntl, "fcntl", refuse)
    data = os.urandom(3 * BUF + 77)
    assert _write(tmp_path / "f", data, direct=True) is False
    assert (tmp_path / "f").read_bytes() == data


def test_a_refused_direct_write_falls_back_without_losing_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    refused: list[int] = []

    def write(fd: int, data: Any) -> int:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        if flags & directio._O_DIRECT and not refused:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    data = os.urandom(2 * BUF + 4096 * 3 + 5)
    assert _write(tmp_path / "f", data, direct=True) is False
    assert refused == [BUF]
    assert (tmp_path / "f").read_bytes() == data


def test_other_write_errors_propagate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space"):
        _write(tmp_path / "f", os.urandom(BUF), direct=True)


@pytest.mark.parametrize("direct_io", [True, False])
def test_file_transport_stores_the_same_large_pack_either_way(
    tmp_path: Path, direct_io: bool
) -> None:
    data = os.urandom(DIRECT_MIN + 12345)
    key = PackKey.of(data)
    store = FileTransport(tmp_path / "s", direct_io=direct_io)
    store.upload_pack_stream(key, _chunks(data, 1), len(data))
    assert store.download_pack(key) == data
    assert (tmp_path / "s" / "packs" / key.hex()[:2] / key.hex()).read_bytes() == data


def test_file_url_option(tmp_path: Path) -> None:
    assert FileTransport.from_url(f"mkit+file://{tmp_path}").direct_io is True
    assert FileTransport.from_url(f"mkit+file://{tmp_path}?direct_io=false").direct_io is False


def test_a_refused_large_upload_changes_nothing(tmp_path: Path) -> None:
    """A stream that does not hash to its key is refused after the direct writes."""
    data = os.urandom(DIRECT_MIN * 2)
    wrong = PackKey.of(b"something else")
    store = FileTransport(tmp_path / "s")
    with pytest.raises(ProtocolError):
        store.upload_pack_stream(wrong, _chunks(data, 2), len(data))
    assert not store.pack_exists(wrong)
    leftovers = [p for p in (tmp_path / "s").rglob("*") if p.is_file()]
    assert leftovers == []
