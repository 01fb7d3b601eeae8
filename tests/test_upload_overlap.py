"""A big streamed upload is hashed beside its consumer, never ahead of what it checks."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import cast

import pytest

import mkit_transport.transport as transport_module
from mkit_transport import MemoryTransport, PackKey, ProtocolError
from mkit_transport.hashes import Hasher
from mkit_transport.limits import CHUNK_SIZE

#: Enough chunks to be past the size from which hashing overlaps the consumer.
_CHUNKS = 12


class _Consumer(MemoryTransport):
    """A store that says when it holds the first chunk of a streamed upload."""

    def __init__(self) -> None:
        super().__init__()
        self.holding_first = threading.Event()

    def _put_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        def watched() -> Iterable[bytes]:
            for chunk in chunks:
                self.holding_first.set()
                yield chunk

        super()._put_pack_stream(key, watched(), total)


def test_a_big_upload_hashes_a_chunk_while_the_transport_consumes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hashing each chunk before handing it on left the wire idle (issue 17)."""
    store = _Consumer()
    waited: list[bool] = []

    class Watching(Hasher):
        def update(self, chunk: bytes | bytearray | memoryview) -> None:
            if not waited:  # the first chunk: its hash waits for the consumer to have it
                waited.append(store.holding_first.wait(timeout=60))
            super().update(chunk)

    monkeypatch.setattr(transport_module, "Hasher", Watching)
    data = bytes(range(256)) * (_CHUNKS * CHUNK_SIZE // 256)
    chunks = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
    store.upload_pack_stream(PackKey.of(data), chunks, len(data))
    assert waited == [True]
    assert store.download_pack(PackKey.of(data)) == data


def test_a_reused_buffer_is_hashed_as_it_was_handed_on() -> None:
    """The source is not asked for the next chunk before this one is hashed."""
    data = bytes(range(256)) * (_CHUNKS * CHUNK_SIZE // 256)

    def reusing() -> Iterable[bytes]:
        buffer = bytearray(CHUNK_SIZE)
        for start in range(0, len(data), CHUNK_SIZE):
            buffer[:] = data[start : start + CHUNK_SIZE]
            yield cast(bytes, buffer)  # any bytes-like chunk is taken at run time

    store = MemoryTransport()
    store.upload_pack_stream(PackKey.of(data), reusing(), len(data))
    assert store.download_pack(PackKey.of(data)) == data
    with pytest.raises(ProtocolError):
        store.upload_pack_stream(PackKey.of(data + b"x"), reusing(), len(data))
