"""Race workers: plain functions that run in separate processes (or threads).

They live in their own module so ``multiprocessing`` (spawn) can import them in a
child by name. Each opens its own transport, synchronises with its peers on a
barrier, and returns plain tuples that pickle.

Time never decides a race test's verdict. A worker that loops (the counter, the
ANY-versus-match writers) stops at its target or when the run's budget (a
:class:`Limits`) is spent, whichever comes first, and reports what it did; the suite
then checks that what was reported adds up (no lost update, one winner), not how much got done. A
slow machine therefore finishes fewer increments, never a failed test. The only
time-based failure is a stall: the counter not moving for ``Limits.stall`` seconds
while CAS writes keep conflicting (a livelock), which the worker reports at once.
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
    open_transport,
    register_transport,
)
from mkit_transport.urls import BUILTIN_SCHEMES

__all__ = [
    "Limits",
    "Opener",
    "UrlOpener",
    "check_counter",
    "counter_count",
    "counter_value",
    "run_workers",
]

#: How long a worker waits on a barrier for its peers, in seconds (the first wait
#: also covers starting the worker processes on a loaded machine); the default of
#: ``Harness.race_wait``.
WAIT = 120.0
#: Looping workers start no new operation after this many seconds from the start
#: barrier: it bounds a test's duration, never its verdict. (WAIT + BUDGET + STALL
#: stays under pytest-timeout's 300 s, so a slow start-up cannot become a timeout.)
BUDGET = 90.0
#: How long the counter may stay unchanged while workers keep trying before the race
#: is called a livelock (the default of ``Harness.race_stall``).
STALL = 30.0


@dataclass(frozen=True)
class Limits:
    """A race's time bounds: ``wait`` for peers, ``stall`` for progress, ``budget`` for work."""

    wait: float = WAIT
    stall: float = STALL
    budget: float = BUDGET


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


def counter_value(ns: str, count: int, worker: int = 0) -> Hash:
    """The counter's value after ``count`` increments, the last one by ``worker``.

    The count is readable from the value (:func:`counter_count`), and each writer's
    values are its own. That matters: when a retried CAS ends in a conflict, the
    transport reads the ref back and takes "it holds my value" as "my earlier
    attempt landed". Were two workers' values for the same count equal, a worker
    whose attempt never landed would see a peer's equal value and count an
    increment that did not happen.
    """
    return Hash(
        bytes(Hash.of(ns.encode()))[:20] + count.to_bytes(8, "big") + worker.to_bytes(4, "big")
    )


def counter_count(ns: str, current: Hash) -> int:
    """The count a :func:`counter_value` encodes (asserting it is one, for ``ns``)."""
    raw = bytes(current)
    assert raw[:20] == bytes(Hash.of(ns.encode()))[:20], f"{current.hex()[:12]} is not a counter"
    return int.from_bytes(raw[20:28], "big")


def _wait(barrier: _Barrier, limits: Limits) -> None:
    """Wait for the peers; a peer that never arrives is reported as no progress."""
    try:
        barrier.wait(limits.wait)
    except threading.BrokenBarrierError as error:
        raise AssertionError(
            f"no progress: a peer did not reach the barrier within {limits.wait:.0f} s "
            "(hung or failed; see the other workers' errors)"
        ) from error


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
            _wait(barrier, limits)
            seen = transport.read_ref(f"{ns}/match")
            _wait(barrier, limits)  # nobody writes before everybody has read
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
            _wait(barrier, limits)  # every write of this round is done before the next reads
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

    Each increment is one :meth:`~mkit_transport.Transport.update_ref_with`, the
    library's read-modify-CAS loop: it starts from the value this worker wrote last
    (read only when unknown), and after a lost write it starts again from the value
    the conflict reports, after a short random wait (SPEC-REFS 3.1).

    Stops after ``increments`` successes or when ``limits.budget`` is spent; returns
    ``("counter", worker, done, conflicts, started, ended)``, the last two on the
    monotonic clock (shared by the processes of one machine), from the barrier to
    the last increment, so a rate leaves process start-up out. A livelock (the
    counter staying at one value for ``limits.stall`` seconds while this worker
    keeps trying) fails at once, naming what was seen, rather than running out the
    budget.
    """
    done = 0
    calls = 0
    with opener() as transport:
        _wait(barrier, limits)
        started = time.monotonic()
        deadline = started + limits.budget
        last_seen: Hash | None = None
        last_move = started
        current: Hash | None = None

        def increment(seen: Hash | None) -> Hash:
            nonlocal calls, last_seen, last_move
            calls += 1
            assert seen is not None, "the counter ref vanished"
            now = time.monotonic()
            if seen != last_seen:
                last_seen, last_move = seen, now
            elif now - last_move > limits.stall:
                raise AssertionError(
                    f"livelock: the counter stayed at one value for {limits.stall:g} s while "
                    f"this worker's compare-and-swap writes kept conflicting ({calls - done - 1} "
                    "conflicts, none succeeded meanwhile): a match write must succeed when "
                    "the ref holds the expected value"
                )
            return counter_value(ns, counter_count(ns, seen) + 1, worker)

        while done < increments and time.monotonic() < deadline:
            current = transport.update_ref_with(
                f"{ns}/counter", increment, current=current, known=current is not None,
                attempts=1_000_000,  # the stall check and the budget bound the loop
            )  # fmt: skip
            done += 1
            last_move = time.monotonic()
        ended = time.monotonic()
    return [("counter", worker, done, calls - done, started, ended)]


def check_counter(rows: list[tuple[Any, ...]], final: Hash | None, ns: str) -> int:
    """Check a counter race's outcome; return the number of increments that landed.

    Fails on a lost update (the counter does not equal the sum of the increments its
    writers saw succeed); a livelock has already failed in the worker. How many
    increments got done in the time is never checked.
    """
    succeeded = sum(row[2] for row in rows)
    assert succeeded > 0, f"no increment succeeded: {rows}"
    assert final is not None, "the counter ref vanished"
    landed = counter_count(ns, final)
    assert landed == succeeded, (
        f"lost update: {succeeded} increments succeeded but the counter reads {landed}: {rows}"
    )
    return landed


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
        _wait(barrier, limits)
        deadline = time.monotonic() + limits.budget
        if worker == 0:
            try:
                for j in range(writes):
                    if j and time.monotonic() >= deadline:
                        break  # the budget bounds the run; what was written is checked
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
        while not event.is_set() and time.monotonic() < deadline + limits.stall:
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
    """Run ``workers`` copies of ``fn`` at once, in processes or threads; return results.

    Waits at most the start barrier plus the budget plus a stall for the reports
    (every worker stops by then unless it hangs inside one call), and names the
    workers that never reported.
    """
    limit = limits.wait + limits.budget + limits.stall
    deadline = time.monotonic() + limit
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
                collected.append(results.get(timeout=max(1.0, deadline - time.monotonic())))
        except queue.Empty:
            pass  # the silent workers are named below
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
                daemon=True,  # a hung worker must not keep the test process alive
            )
            for i in range(workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        collected = []
        while not results.empty():
            collected.append(results.get_nowait())
    silent = sorted(set(range(workers)) - {i for i, _, _ in collected})
    if silent:
        raise AssertionError(f"race workers {silent} hung: no report within {limit:.0f} s")
    errors = [f"worker {i}: {detail}" for i, status, detail in collected if status != "ok"]
    if errors:
        raise AssertionError("race workers failed:\n" + "\n".join(errors))
    return [detail for _, _, detail in sorted(collected, key=lambda item: item[0])]
