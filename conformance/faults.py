"""A fault-injecting wrapper: a Transport whose primitives fail on a script.

It wraps a real client (opened with retries off) and lets a test script failures
per primitive call: fail *before* the inner call (the request never arrived), fail
*after* it (the request landed but its acknowledgement was lost), or break a
download stream after some bytes. The wrapper's own public verbs run the base
policy, so tests see exactly what the retry layer does with the real transport.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from mkit_transport import Hash, PackKey, RefWriteCondition, RetryPolicy, Transport
from mkit_transport.errors import TransportError
from mkit_transport.transport import PackInfo

__all__ = ["Fault", "FaultyTransport"]


@dataclass
class Fault:
    """One scripted failure for the next call of ``verb`` (``"*"``: any verb)."""

    error: Callable[[], TransportError]
    when: str = "before"  # "before" | "after" (lost acknowledgement) | "midstream"
    verb: str = "*"
    after_bytes: int = 0
    #: Runs after the inner call of an "after" fault (e.g. another writer moves the ref).
    then: Callable[[], None] | None = None


@dataclass
class FaultyTransport(Transport):
    """Delegates to ``inner`` through its public verbs, failing as ``plan`` says."""

    inner: Transport
    retry: RetryPolicy
    plan: list[Fault] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    drops: int = 0

    def __post_init__(self) -> None:
        super().__init__(retry=self.retry)

    def _next(self, verb: str) -> Fault | None:
        self.calls.append(verb)
        for i, fault in enumerate(self.plan):
            if fault.verb in ("*", verb):
                return self.plan.pop(i)
        return None

    def _run(self, verb: str, op: Callable[[], object]) -> object:
        fault = self._next(verb)
        if fault is not None and fault.when == "before":
            raise fault.error()
        result = op()
        if fault is not None and fault.when == "after":
            if fault.then is not None:
                fault.then()
            raise fault.error()
        return result

    def _put_pack(self, key: PackKey, data: bytes) -> None:
        self._run("put_pack", lambda: self.inner.upload_pack(data, key))

    def _put_pack_stream(self, key: PackKey, chunks: Iterable[bytes], total: int) -> None:
        self._run("put_pack_stream", lambda: self.inner.upload_pack_stream(key, chunks, total))

    def _get_pack(self, key: PackKey) -> bytes:
        return self._run("get_pack", lambda: self.inner.download_pack(key))  # type: ignore[return-value]

    def _get_pack_range(self, key: PackKey, offset: int, length: int) -> bytes:
        return self._run(  # type: ignore[return-value]
            "get_pack_range", lambda: self.inner.read_pack_range(key, offset, length)
        )

    def _has_pack(self, key: PackKey) -> bool:
        return self._run("has_pack", lambda: self.inner.pack_exists(key))  # type: ignore[return-value]

    def _pack_size(self, key: PackKey) -> int:
        return self._run("pack_size", lambda: self.inner.pack_size(key))  # type: ignore[return-value]

    def _init_store(self) -> bool:
        return self._run("init_store", self.inner.init_store)  # type: ignore[return-value]

    def _read_ref(self, name: str) -> Hash | None:
        return self._run("read_ref", lambda: self.inner.read_ref(name))  # type: ignore[return-value]

    def _update_ref(self, name: str, condition: RefWriteCondition, value: Hash) -> None:
        self._run("update_ref", lambda: self.inner.update_ref(name, condition, value))

    def _list_refs(self, prefix: str) -> Iterable[tuple[str, Hash]]:
        refs = self._run("list_refs", lambda: self.inner.list_refs(prefix))
        base = f"{prefix}/" if prefix else ""
        return [(base + ref.name, ref.hash) for ref in refs]  # type: ignore[attr-defined]

    def _list_packs(self, after: PackKey | None, limit: int) -> list[PackInfo]:
        listing = self.inner.list_packs(after=after, page_size=limit)
        return self._run("list_packs", lambda: list(itertools.islice(listing, limit)))  # type: ignore[return-value]

    def _delete_pack(self, key: PackKey) -> None:
        self._run("delete_pack", lambda: self.inner.delete_pack(key))

    def _delete_ref(self, name: str, condition: RefWriteCondition) -> None:
        self._run("delete_ref", lambda: self.inner.delete_ref(name, condition))

    def _open_pack_stream(self, key: PackKey, offset: int) -> Iterator[bytes]:
        self.offsets.append(offset)
        fault = self._next("open_pack_stream")
        if fault is not None and fault.when == "before":
            raise fault.error()
        data = self.inner.download_pack(key)[offset:]

        def chunks() -> Iterator[bytes]:
            sent = 0
            for start in range(0, len(data), 4096):
                piece = data[start : start + 4096]
                if fault is not None and fault.when == "midstream":
                    if sent + len(piece) > fault.after_bytes:
                        yield piece[: fault.after_bytes - sent]
                        raise fault.error()
                sent += len(piece)
                yield piece

        return chunks()

    def _drop_connection(self, error: BaseException) -> None:
        self.drops += 1
