"""The file store deletes a batch with one fsync per touched directory (SPEC-TRANSPORT).

gc of a store of 100k packs spent most of its time fsyncing the fan-out directory after
each delete; ``delete_packs`` (and so gc) fsyncs each directory once a batch. The fsync
calls are counted (and still made) on a real, durable file store.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mkit_transport import FileTransport, PackKey
from mkit_transport.sync.gc import gc


def _orphans(store: FileTransport, count: int) -> list[PackKey]:
    keys = []
    for i in range(count):
        data = b"orphan %d" % i
        key = PackKey.of(data)
        store.upload_blob(data, key)
        keys.append(key)
    return keys


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counted(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counted)
    return calls


def test_delete_packs_fsyncs_each_touched_directory_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileTransport(tmp_path / "store")
    keys = _orphans(store, 300)
    folders = {os.path.dirname(store.pack_path(key)) for key in keys}
    assert len(folders) < len(keys)  # some directories hold several: batching pays
    calls = _count_fsyncs(monkeypatch)
    store.delete_packs(keys)
    assert len(calls) == len(folders)
    assert not any(store.pack_exists(key) for key in keys)
    store.delete_packs(keys)  # nothing left to delete: nothing to fsync
    assert len(calls) == len(folders)


def test_gc_deletes_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileTransport(tmp_path / "store")
    keys = _orphans(store, 300)
    folders = {os.path.dirname(store.pack_path(key)) for key in keys}
    calls = _count_fsyncs(monkeypatch)
    report = gc(store, grace=0, now=time.time() + 10)
    assert report.swept == len(keys)
    assert len(calls) == len(folders)  # one batch: one fsync per fan-out directory
