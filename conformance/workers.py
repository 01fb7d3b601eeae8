"""Race workers: plain functions that run in separate processes (or threads).

They live in their own module so ``multiprocessing`` (spawn) can import them in a
child by name. Each opens its own transport, synchronises with its peers on a
barrier, and returns plain tuples that pickle.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mkit_transport import (
    Hash,
    RefConflict,
    RefWriteCondition,
    Transport,
    TransportError,
    open_transport,
    register_transport,
)
from mkit_transport.urls import BUILTIN_SCHEMES

__all__ = ["Limits", "Opener", "UrlOpener", "run_workers"]

#: How long any worker waits on a barrier or its whole run, in seconds (the default of
#: ``Harness.race_wait``).
WAIT = 120.0
#: How long the counter may stay unchanged while workers keep trying before the race is
#: called a livelock (the default of ``Harness.race_stall``).
STALL = 30.0


@dataclass(frozen=True)
class Limits:
    """A race's time bounds: ``wait`` for peers and the whole run, ``stall`` for progress."""

    wait: float = WAIT
    stall: float = STALL


class _Barrier(Protocol):
    def wait(self, timeout: float | None = None) -> int: ...


class _Event(Protocol):
    def set(self) -> None: ...
    def is_set(self) -> bool: ...


class Opener(Protocol):
    """Something that opens a new client on the store under test."""

    def __call__(self) -> Transport: ...


@dataclass(frozen=True)
class UrlOpener:
    """Opens ``open_transport(url, **options)``; picklable, so processes can use it.

    ``target`` is the ``"module:attr"`` that opens the URL's scheme (see
    :func:`~mkit_transport.urls.scheme_target`): a child started with ``spawn`` does
    not inherit a :func:`~mkit_transport.urls.register_transport` made in the parent,
    so the opener registers the scheme again, by name, before opening.
    """

    url: str
    options: dict[str, object] = field(default_factory=dict)
    target: str | None = None

    def __call__(self) -> Transport:
        scheme = self.url.split("://", 1)[0]
        if self.target is not None and scheme not in BUILTIN_SCHEMES:
            register_transport(scheme, self.target)
        return open_transport(self.url, **self.options)


def value(label: str) -> Hash:
    return Hash.of(label.encode())


def one_winner_worker(
    opener: Opener,
    barrier: _Barrier,
    event: _Event,
    ns: str,
    worker: int,
    rounds: int,
    limits: Limits = Limits(),
) -> list[tuple[Any, ...]]:
    """Each round: all read the ref, then all try ``match(read)``; also a MISSING race."""
    out: list[tuple[Any, ...]] = []
    with opener() as transport:
        for r in range(rounds):
            barrier.wait(limits.wait)
            seen = transport.read_ref(f"{ns}/match")
            barrier.wait(limits.wait)  # nobody writes before everybody has read
            mine = value(f"{ns}/match/{r}/{worker}")
            try:
                assert seen is not None
                transport.update_ref(f"{ns}/match", RefWriteCondition.match(seen), mine)
                out.append(("match", r, worker, seen, True, None, False))
            except RefConflict as lost:
                out.append(("match", r, worker, seen, False, lost.current, lost.known))
            mine = value(f"{ns}/missing/{r}/{worker}")
            try:
                transport.update_ref(f"{ns}/missing/{r}", RefWriteCondition.MISSING, mine)
                out.append(("missing", r, worker, None, True, None, False))
            except RefConflict as lost:
                out.append(("missing", r, worker, None, False, lost.current, lost.known))
            barrier.wait(limits.wait)  # every write of this round is done before the next reads
    return out


def counter_worker(
    opener: Opener,
    barrier: _Barrier,
    event: _Event,
    ns: str,
    worker: int,
    increments: int,
    limits: Limits = Limits(),
) -> list[tuple[Any, ...]]:
    """Read-modify-CAS increments of a counter whose values encode the count.

    A livelock (every CAS conflicting while the counter stays where it is) fails after
    ``limits.stall`` seconds without progress, naming what was seen, rather than
    running out the whole wait.
    """
    total = 1_000_000
    table: dict[Hash, int] = {}
    done = 0
    conflicts = 0
    deadline = time.monotonic() + limits.wait
    last_seen: Hash | None = None
    last_change = time.monotonic()
    with opener() as transport:
        barrier.wait(limits.wait)
        while done < increments and time.monotonic() < deadline:
            current = transport.read_ref(f"{ns}/counter")
            assert current is not None
            now = time.monotonic()
            if current != last_seen:
                last_seen, last_change = current, now
            elif now - last_change > limits.stall:
                raise AssertionError(
                    f"livelock: the counter stayed at one value for {limits.stall:g} s while "
                    f"this worker's compare-and-swap writes kept conflicting ({conflicts} "
                    "conflicts, none succeeded meanwhile): a match write must succeed when "
                    "the ref holds the expected value"
                )
            if current not in table:
                # Values are value(f"{ns}/counter/{n}"); grow the lookup table lazily.
                for n in range(len(table), min(total, len(table) + 4096)):
                    table[value(f"{ns}/counter/{n}")] = n
            count = table[current]
            try:
                transport.update_ref(
                    f"{ns}/counter",
                    RefWriteCondition.match(current),
                    value(f"{ns}/counter/{count + 1}"),
                )
                done += 1
            except RefConflict:
                conflicts += 1
    return [("counter", worker, done, conflicts)]


def any_vs_match_worker(
    opener: Opener,
    barrier: _Barrier,
    event: _Event,
    ns: str,
    worker: int,
    writes: int,
    limits: Limits = Limits(),
) -> list[tuple[Any, ...]]:
    """Worker 0 writes with ANY and reads back; the others increment with ``match``."""
    out: list[tuple[Any, ...]] = []
    name = f"{ns}/mixed"
    with opener() as transport:
        barrier.wait(limits.wait)
        if worker == 0:
            try:
                for j in range(writes):
                    mine = value(f"{ns}/any/{j}")
                    transport.update_ref(name, RefWriteCondition.ANY, mine)
                    # Let any match write that read the value before ours land first:
                    # if it overwrites ours without expecting it, the read-back shows it.
                    time.sleep(0.002)
                    out.append(("any", mine, transport.read_ref(name)))
            finally:
                event.set()
            return out
        seq = 0
        deadline = time.monotonic() + limits.wait
        while not event.is_set() and time.monotonic() < deadline:
            current = transport.read_ref(name)
            assert current is not None
            seq += 1
            mine = value(f"{ns}/inc/{worker}/{seq}")
            with contextlib.suppress(RefConflict):
                transport.update_ref(name, RefWriteCondition.match(current), mine)
                out.append(("match", current, mine))
    return out


Worker = Callable[[Opener, _Barrier, _Event, str, int, int, Limits], list[tuple[Any, ...]]]


def _process_main(
    result_queue: Any,
    fn: Worker,
    opener: Opener,
    barrier: Any,
    event: Any,
    ns: str,
    i: int,
    n: int,
    limits: Limits,
) -> None:
    try:
        result_queue.put((i, "ok", fn(opener, barrier, event, ns, i, n, limits)))
    except BaseException as error:  # report everything, including assertion failures
        result_queue.put((i, "error", f"{type(error).__name__}: {error}"))
        with contextlib.suppress(Exception):
            barrier.abort()  # release the peers waiting for this worker


def run_workers(
    fn: Worker,
    opener: Opener,
    ns: str,
    workers: int,
    n: int,
    *,
    processes: bool,
    limits: Limits = Limits(),
) -> list[list[tuple[Any, ...]]]:
    """Run ``workers`` copies of ``fn`` at once, in processes or threads; return results."""
    if processes:
        ctx = multiprocessing.get_context("spawn")
        results: Any = ctx.Queue()
        barrier: Any = ctx.Barrier(workers)
        event: Any = ctx.Event()
        procs = [
            ctx.Process(
                target=_process_main, args=(results, fn, opener, barrier, event, ns, i, n, limits)
            )
            for i in range(workers)
        ]
        for p in procs:
            p.start()
        collected = []
        try:
            for _ in procs:
                collected.append(results.get(timeout=limits.wait + 60))
        except queue.Empty as error:
            raise TransportError("a race worker did not report within its time limit") from error
        finally:
            for p in procs:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
    else:
        results = queue.Queue()
        barrier = threading.Barrier(workers)
        event = threading.Event()
        threads = [
            threading.Thread(
                target=_process_main,
                args=(results, fn, opener, barrier, event, ns, i, n, limits),
            )
            for i in range(workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=limits.wait + 60)
        collected = [results.get_nowait() for _ in threads]
    errors = [f"worker {i}: {detail}" for i, status, detail in collected if status != "ok"]
    if errors:
        raise AssertionError("race workers failed:\n" + "\n".join(errors))
    return [detail for _, _, detail in sorted(collected, key=lambda item: item[0])]
