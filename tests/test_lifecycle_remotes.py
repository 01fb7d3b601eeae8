"""The store lifecycle on every network transport, against real servers (issue 14).

gc, fsck, repair and repack need only the public :class:`Transport` verbs, so the
memory and file tests prove the machinery; these prove it end to end over the wire,
on the real gunicorn pack server, moto and SeaweedFS, and OpenSSH's sshd:

* gc: an orphan planted next to a pushed tree (with a > 4 MiB file, so chunk packs)
  is counted by a dry run that changes nothing, then swept at grace 0; the ref still
  pulls byte for byte;
* fsck: a pack a ref needs rotted in the backing store (a byte flipped in the
  server's file, or the S3 object overwritten) and another deleted are both found,
  with the ref each breaks, by the command line (exit 4) run as a real process;
  ``fsck --repair --from`` a file store mirror heals them, fsck is clean, pulls work;
* repack on S3 and SSH (HTTP's is in tests/test_repack.py): two pushes of an edited
  chunked file, ``gc(keep_last=1, max_unused=...)``, the ref pulls byte for byte.

The servers stamp each key's time with their own clock: gc's ``now`` is set a few
seconds ahead so grace 0 means "every orphan is old", whatever a server's time
resolution (S3's ``LastModified`` has whole seconds), never depending on speed.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mkit_transport import (
    FileTransport,
    InvalidResponse,
    PackKey,
    PayloadTooLarge,
    RefWriteCondition,
    Transport,
    open_transport,
)
from mkit_transport.sync import mirror, pull, push
from mkit_transport.sync.fsck import fsck
from mkit_transport.sync.gc import gc, reachable
from testbed.http_server import HttpServer
from testbed.s3_servers import BUCKET, S3Server
from testbed.ssh_server import SshServer
from tests.support.s3_fixtures import S3Store
from tests.support.sync_fixtures import describe, record_of

#: Every test here talks to real servers, reached through getfixturevalue.
pytestmark = pytest.mark.server

MAIN, OTHER, GONE = "refs/heads/main", "refs/heads/other", "refs/heads/gone"
NETWORK = ["http", "moto", "seaweedfs", "ssh"]
#: Over the chunking threshold (4 MiB): the file is cut into chunks listed by a chunk list.
BIG = 5 << 20
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Remote:
    """One fresh store on a running server, and a way behind the transport's back."""

    kind: str
    url: str
    options: dict[str, object]
    #: The same credentials for a command line run as a separate process.
    env: dict[str, str]
    #: Rot one byte of a stored key in the backing store (same size), as a bad disk would.
    rot: Callable[[PackKey], None] = field(compare=False)

    def open(self) -> Transport:
        return open_transport(self.url, **self.options)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m mkit_transport ARGS`` as a real process, bounded in time."""
        return subprocess.run(
            [sys.executable, "-m", "mkit_transport", *args],
            env={**os.environ, **self.env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


def _flip_file(path: Path) -> None:
    """Flip one bit in the middle of a file, keeping its size (a pack may be read-only)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def _file_backed(root: Path) -> Callable[[PackKey], None]:
    """Rot keys of the file store at ``root`` (what an HTTP or SSH server serves)."""
    return lambda key: _flip_file(Path(FileTransport(root).pack_path(key)))


def _s3_backed(store: S3Store) -> Callable[[PackKey], None]:
    """Rot keys by overwriting their objects with boto3, as the transport never would."""

    def rot(key: PackKey) -> None:
        client = store.server.client()
        name = store.key(f"packs/{key.hex()}")  # spec/SPEC-S3.md, section 2
        data = bytearray(client.get_object(Bucket=store.bucket, Key=name)["Body"].read())
        data[len(data) // 2] ^= 0x40
        client.put_object(Bucket=store.bucket, Key=name, Body=bytes(data))

    return rot


def _fresh(request: pytest.FixtureRequest, kind: str) -> Remote:
    """A new, empty store on the session's server of ``kind``."""
    name = f"life-{uuid.uuid4().hex[:12]}"
    if kind == "http":
        http: HttpServer = request.getfixturevalue("http_server")
        return Remote(kind, http.url(name), {}, {}, _file_backed(http.root / name))
    if kind == "ssh":
        sshd: SshServer = request.getfixturevalue("sshd")
        root = sshd.store(name)
        options = sshd.options()
        env = {
            f"MKIT_SSH_{option.upper()}": str(options[option])
            for option in ("identity_file", "known_hosts_file", "remote_command", "config_file")
        }
        return Remote(kind, sshd.url(root), options, env, _file_backed(root))
    s3: S3Server = request.getfixturevalue(f"{kind}_server")
    store = S3Store(s3, BUCKET, name)
    env = {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
    return Remote(kind, store.url, store.options, env, _s3_backed(store))


@pytest.fixture(params=NETWORK)
def remote(request: pytest.FixtureRequest) -> Remote:
    """A fresh store on each network server in turn."""
    return _fresh(request, request.param)


def _tree(root: Path, seed: int) -> Path:
    """A few small files, a subdirectory, and one random file over the chunking size."""
    rng = random.Random(seed)
    (root / "sub").mkdir(parents=True)
    for i in range(4):
        (root / f"f{i}.txt").write_text(f"tree {seed} file {i}\n" * (20 + i))
    (root / "sub" / "note.txt").write_text(f"note {seed}\n")
    (root / "big.bin").write_bytes(rng.randbytes(BIG))
    return root


def _small_tree(root: Path, label: str) -> Path:
    root.mkdir(parents=True)
    for i in range(3):
        (root / f"{label}{i}.txt").write_text(f"{label} {i}\n" * 30)
    return root


def _pulled(store: Transport, ref: str, dest: Path) -> object:
    pull(store, ref, dest, cache_dir=str(dest.parent / f"{dest.name}.cache"))
    return describe(dest)


def _later() -> float:
    """A gc ``now`` past every key's server time: grace 0 then counts every orphan old."""
    return time.time() + 10


def _packs(store: Transport) -> dict[PackKey, int]:
    return {info.key: info.size for info in store.list_packs(page_size=3)}


def _refs(store: Transport) -> dict[str, bytes]:
    return {ref.name: bytes(ref.hash) for ref in store.list_refs("")}


def test_gc_dry_run_changes_nothing_and_grace_zero_sweeps_the_orphans(
    remote: Remote, tmp_path: Path
) -> None:
    """GC-3, GC-4 on every network transport: the orphans of a deleted ref and a planted
    pack are counted exactly by a dry run that changes nothing, then swept; the chunked
    snapshot the ref names is untouched and pulls byte for byte."""
    src = _tree(tmp_path / "src", 1)
    with remote.open() as store:
        push(src, store, MAIN)
        assert any(store.pack_size(p.key) > 4 << 20 for p in record_of(store, MAIN).packs)
        push(_small_tree(tmp_path / "gone", "gone"), store, GONE)
        value = store.read_ref(GONE)
        assert value is not None
        store.delete_ref(GONE, RefWriteCondition.match(value))
        planted = b"an orphan pack planted next to the snapshot"
        store.upload_pack(planted, PackKey.of(planted))
        packs, refs = _packs(store), _refs(store)
        live, _refs_count, _records = reachable(store)
        orphans = {key: size for key, size in packs.items() if key not in live}
        assert PackKey.of(planted) in orphans and len(orphans) >= 4  # record, pack, index

        assert gc(store).swept == 0, "every orphan is younger than the default day"
        dry = gc(store, grace=0, dry_run=True, now=_later())
        assert (dry.swept, dry.swept_bytes) == (len(orphans), sum(orphans.values()))
        assert (_packs(store), _refs(store)) == (packs, refs), "a dry run changes nothing"

        done = gc(store, grace=0, now=_later())
        assert (done.swept, done.swept_bytes) == (dry.swept, dry.swept_bytes)
        assert _packs(store) == {k: s for k, s in packs.items() if k not in orphans}
        assert not store.pack_exists(PackKey.of(planted))
        assert _refs(store) == refs
        assert _pulled(store, MAIN, tmp_path / "out") == describe(src)


def test_fsck_finds_rot_and_loss_and_repair_from_a_mirror_heals(
    remote: Remote, tmp_path: Path
) -> None:
    """FSCK-2, FSCK-3, FSCK-6, FSCK-8 on every network transport, by the command line:
    a rotted chunk pack and a deleted pack are each reported with the ref they break
    (exit 4); ``--repair --from`` a file store mirror puts them back; fsck is clean."""
    src, other = _tree(tmp_path / "src", 2), _small_tree(tmp_path / "other", "other")
    good = FileTransport(tmp_path / "good")
    with remote.open() as store:
        push(src, store, MAIN)
        push(other, store, OTHER)
        for ref in (MAIN, OTHER):
            mirror(store, good, ref)
        rotten = max(record_of(store, MAIN).packs, key=lambda p: store.pack_size(p.key)).key
        lost = record_of(store, OTHER).packs[0].key
        remote.rot(rotten)
        store.delete_pack(lost)
        with pytest.raises((InvalidResponse, PayloadTooLarge)):
            pull(store, MAIN, tmp_path / "broken", cache_dir=str(tmp_path / "broken.cache"))

        found = remote.cli("fsck", remote.url, "--json")
        assert found.returncode == 4, found.stderr
        report = json.loads(found.stdout)
        assert report["ok"] is False
        assert [(d["key"], d["what"], d["refs"]) for d in report["corrupt"]] == [
            (rotten.hex(), "pack", [MAIN])
        ]
        assert [(d["key"], d["what"], d["reason"], d["refs"]) for d in report["missing"]] == [
            (lost.hex(), "pack", "missing", [OTHER])
        ]

        fixed = remote.cli("fsck", remote.url, "--repair", "--from", str(good.root), "--json")
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        result = json.loads(fixed.stdout)
        assert result["repaired"] is True
        assert {d["key"] for d in result["repairs"][0]["repaired"]} == {rotten.hex(), lost.hex()}
        clean = remote.cli("fsck", remote.url)
        assert (clean.returncode, clean.stdout.splitlines()[-1], clean.stderr) == (0, "ok", "")

        assert fsck(store).ok
        assert _pulled(store, MAIN, tmp_path / "main-out") == describe(src)
        assert _pulled(store, OTHER, tmp_path / "other-out") == describe(other)


def _edit(path: Path, seed: int) -> None:
    """Rewrite a few hundred bytes in two places: most chunks stay, some go unused."""
    rng = random.Random(seed)
    data = bytearray(path.read_bytes())
    for at in (len(data) // 5, 3 * len(data) // 4):
        data[at : at + 300] = rng.randbytes(300)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["moto", "seaweedfs", "ssh"])
def test_repack_keeps_the_ref_pulling(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """GC-11, GC-13 over S3 and SSH (HTTP: tests/test_repack.py): after two pushes of an
    edited chunked file, gc keeping the last record rewrites the first push's packs,
    moves the ref to a record with the same root, time and parent, frees space; the
    ref pulls byte for byte and fsck is clean."""
    src = _tree(tmp_path / "src", 3)
    with _fresh(request, kind).open() as store:
        push(src, store, MAIN)
        _edit(src / "big.bin", 4)
        push(src, store, MAIN)
        before, old = sum(_packs(store).values()), record_of(store, MAIN)
        report = gc(store, grace=0, keep_last=1, max_unused=5, now=_later())
        assert report.repack is not None
        assert (report.repack.refs_moved, report.repack.refs_conflicted) == (1, 0)
        assert report.repack.packs_rewritten >= 1 and report.swept >= 1
        assert sum(_packs(store).values()) < before
        new = record_of(store, MAIN)
        assert (new.root, new.created_ns, new.parent) == (old.root, old.created_ns, old.parent)
        assert new.packs != old.packs
        assert _pulled(store, MAIN, tmp_path / "out") == describe(src)
        assert fsck(store).ok
        assert reachable(store)[2] == 1  # the rewritten record alone: its parent was dropped
