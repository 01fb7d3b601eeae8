"""Fixtures for the sync tests (loaded by tests/conftest.py).

Helpers build small trees deterministically, describe a tree exactly (content,
mode, symlink target, empty directories) so two trees can be compared, and count
the public transport calls a sync makes.
"""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mkit_transport import FileTransport, MemoryTransport, PackKey, Transport
from mkit_transport.sync.model import Record, decode_record


def write_tree(root: Path, seed: int = 0, files: int = 40, large: int = 0) -> Path:
    """Write a deterministic tree: nested dirs, small files, modes, symlinks, empty dirs.

    ``large`` adds that many 3 MiB files (over the one-shot compression size), half
    compressible, half random.
    """
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        sub = root / f"d{i % 5}" / f"e{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        words = " ".join(rng.choice(["alpha", "beta", "gamma", str(i)]) for _ in range(50 + i))
        (sub / f"f{i}.txt").write_text(words)
    (root / "empty" / "deeper").mkdir(parents=True, exist_ok=True)
    (root / "zero.bin").write_bytes(b"")
    script = root / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    (root / "readonly.txt").write_text("ro")
    (root / "readonly.txt").chmod(0o444)
    os.symlink("d0/e0/f0.txt", root / "link-in")
    os.symlink("../../outside/secret", root / "link-out")
    os.symlink("/etc/passwd", root / "link-abs")
    for i in range(large):
        data = rng.randbytes(3 << 20) if i % 2 else (b"compressible %d " % i) * ((3 << 20) // 16)
        (root / f"large{i}.bin").write_bytes(data)
    return root


def describe(root: Path) -> dict[str, Any]:
    """Everything a pull must reproduce, keyed by relative path (symlinks not followed)."""
    found: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                found[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
    return found


def record_of(transport: Transport, ref: str) -> Record:
    """The snapshot record ``ref`` points at (asserting the ref is set)."""
    value = transport.read_ref(ref)
    assert value is not None
    return decode_record(transport.download_blob(PackKey(bytes(value))))


class CountingTransport(MemoryTransport):
    """A memory transport that counts its public verb calls (what a sync asks for)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def _count(self, name: str) -> None:
        self.calls.append(name)

    def upload_pack(self, data: bytes, key: Any) -> None:
        self._count("upload_pack")
        super().upload_pack(data, key)

    def download_pack(self, key: Any) -> bytes:
        self._count("download_pack")
        return super().download_pack(key)

    def pack_exists(self, key: Any) -> bool:
        self._count("pack_exists")
        return super().pack_exists(key)

    def upload_pack_stream(self, key: Any, chunks: Any, total: int) -> None:
        self._count("upload_pack_stream")
        super().upload_pack_stream(key, chunks, total)

    def download_pack_stream(self, key: Any) -> Iterator[bytes]:
        self._count("download_pack_stream")
        return super().download_pack_stream(key)

    def read_ref(self, name: str) -> Any:
        self._count("read_ref")
        return super().read_ref(name)

    def update_ref(self, name: str, condition: Any, value: Any) -> None:
        self._count("update_ref")
        super().update_ref(name, condition, value)


@pytest.fixture(autouse=True, scope="session")
def _private_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point ``XDG_CACHE_HOME`` into the run's temp directory for the whole run.

    Every push keeps a stat cache there by default (and a pull its pack cache):
    tests leave nothing in the user's ``~/.cache``.
    """
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(params=["memory", "file"])
def sync_remote(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Transport]:
    """A fresh remote over each local transport."""
    transport: Transport = (
        MemoryTransport() if request.param == "memory" else FileTransport(tmp_path / "remote")
    )
    with transport:
        yield transport


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    """A small tree with every kind of entry."""
    return write_tree(tmp_path / "src")


@pytest.fixture
def cache(tmp_path: Path) -> Callable[[], str]:
    """Fresh pack-cache directories (each call: a new, empty cache)."""
    counter = iter(range(1_000_000))
    return lambda: str(tmp_path / f"cache{next(counter)}")


def push_after_barrier(url: str, src: str, ref: str, barrier: Any) -> tuple[str, str | None]:
    """Push ``src``, waiting on ``barrier`` just before the ref CAS (a real race)."""
    from mkit_transport import RefConflict, open_transport
    from mkit_transport.sync import Progress, push

    def progress(event: Progress) -> None:
        if event.phase == "commit":
            barrier.wait(120)  # a hang guard: the peer may start slowly on a loaded machine

    with open_transport(url) as transport:
        try:
            report = push(src, transport, ref, progress=progress)
        except RefConflict as lost:
            current = lost.current.hex() if lost.current is not None else None
            return (f"lost: {lost}", current)
    assert report.new is not None
    return ("won", report.new.hex())


def race_two_pushers(url: str, tmp_path: Path, ref: str) -> None:
    """Two processes push different edits of one pushed base to ``url`` at once.

    Both wait on a barrier just before their ref CAS. Asserts exactly one wins, the
    other gets a non-fast-forward carrying the winner's value, and a third pull is
    byte-identical to the winner's tree.
    """
    import multiprocessing
    import shutil

    from mkit_transport import open_transport
    from mkit_transport.sync import pull, push

    base = write_tree(tmp_path / "base", files=30)
    with open_transport(url) as transport:
        push(base, transport, ref)
    trees = []
    for i in range(2):
        tree = tmp_path / f"tree{i}"
        shutil.copytree(base, tree, symlinks=True)
        (tree / f"mine{i}.txt").write_text(f"pusher {i}")
        trees.append(tree)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(2) as pool:
        barrier = manager.Barrier(2)
        results = pool.starmap(push_after_barrier, [(url, str(t), ref, barrier) for t in trees])
    won = [i for i, (outcome, _) in enumerate(results) if outcome == "won"]
    assert len(won) == 1, results
    winner, loser = won[0], 1 - won[0]
    assert results[loser][0].startswith("lost: non-fast-forward")
    with open_transport(url) as transport:
        current = transport.read_ref(ref)
        assert current is not None
        assert results[loser][1] == results[winner][1] == current.hex()
        pull(transport, ref, tmp_path / "third", cache_dir=str(tmp_path / "cache"))
    assert describe(tmp_path / "third") == describe(trees[winner])
